"""multicloud: a contract-aware scheduler for AI training and inference across clouds."""

from __future__ import annotations

__version__ = "0.1.0"

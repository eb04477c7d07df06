"""Test helpers shipped with the package: builders, a fake clock, the adapter conformance suite."""

from __future__ import annotations

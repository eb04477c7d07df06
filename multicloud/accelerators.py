"""The accelerator vocabulary: canonical names, aliases and "did you mean" hints.

Clouds and users spell accelerators many ways (``a100-80gb``, ``A100_80GB``, ``v5litepod``,
``trn1``). Everything inside multicloud uses the canonical names defined here.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Accelerator:
    """One kind of accelerator.

    Attributes:
        name: Canonical name used everywhere in multicloud.
        vendor: ``nvidia``, ``google``, ``aws``, ``amd``, or ``generic`` for plain CPUs.
        memory_gb: Memory per device in GB (0 when the device has none of its own).
        aliases: Other spellings accepted on input.
    """

    name: str
    vendor: str
    memory_gb: int
    aliases: tuple[str, ...] = ()


ACCELERATORS: tuple[Accelerator, ...] = (
    Accelerator("GB200", "nvidia", 192, ("gb200-nvl72",)),
    Accelerator("B300", "nvidia", 288, ("b300-sxm",)),
    Accelerator("B200", "nvidia", 180, ("b200-sxm", "b200-sxm6")),
    Accelerator("GH200", "nvidia", 96, ()),
    Accelerator("H200", "nvidia", 141, ("h200-sxm", "h200-141gb")),
    Accelerator("H100", "nvidia", 80, ("h100-sxm", "h100-80gb", "h100-mega", "h100-sxm5")),
    Accelerator("A100-80GB", "nvidia", 80, ("a100-80g", "a100-sxm4-80gb", "a100_80gb")),
    Accelerator("A100", "nvidia", 40, ("a100-40gb", "a100-sxm4-40gb", "a100-40g")),
    Accelerator("L40S", "nvidia", 48, ()),
    Accelerator("L40", "nvidia", 48, ()),
    Accelerator("L4", "nvidia", 24, ()),
    Accelerator("A10G", "nvidia", 24, ()),
    Accelerator("A10", "nvidia", 24, ()),
    Accelerator("A6000", "nvidia", 48, ("rtx-a6000",)),
    Accelerator("RTXPRO6000", "nvidia", 96, ("rtx-pro-6000",)),
    Accelerator("V100-32GB", "nvidia", 32, ("v100-32g",)),
    Accelerator("V100", "nvidia", 16, ()),
    Accelerator("T4", "nvidia", 16, ()),
    Accelerator("MI300X", "amd", 192, ()),
    Accelerator("TPU-v5e", "google", 16, ("v5e", "tpu-v5-lite", "v5litepod", "tpu-v5litepod")),
    Accelerator("TPU-v5p", "google", 95, ("v5p", "tpu-v5")),
    Accelerator("TPU-v6e", "google", 32, ("v6e", "trillium")),
    Accelerator("Trainium", "aws", 32, ("trainium1", "trn1")),
    Accelerator("Trainium2", "aws", 96, ("trn2",)),
    Accelerator("Inferentia2", "aws", 32, ("inf2",)),
    # No accelerator at all: what the `local` provider offers, so that a job can ask for
    # `accelerator: cpu` and run on this machine. No cloud catalog row sells it.
    Accelerator("CPU", "generic", 0, ("cpu",)),
)


def _key(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", text.strip().lower())


_BY_KEY: dict[str, str] = {}
for _acc in ACCELERATORS:
    _BY_KEY[_key(_acc.name)] = _acc.name
    for _alias in _acc.aliases:
        _BY_KEY[_key(_alias)] = _acc.name

CANONICAL_NAMES: tuple[str, ...] = tuple(a.name for a in ACCELERATORS)

# The spellings in the table as written, looked up before any normalising: a large job
# file names the same few accelerators thousands of times, mostly spelled this way.
_AS_WRITTEN: dict[str, str] = {
    spelling: acc.name for acc in ACCELERATORS for spelling in (acc.name, *acc.aliases)
}


def suggest(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """Return the closest choice to ``word``, if one is close enough to suggest.

    Args:
        word: What the user wrote.
        choices: The valid spellings.

    Returns:
        The best match, or None when nothing is close.
    """
    lowered = {c.lower(): c for c in choices}
    hit = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[hit[0]] if hit else None


def canonical(name: str) -> str:
    """Map any accepted spelling to the canonical accelerator name.

    Args:
        name: An accelerator name or alias, any case.

    Returns:
        The canonical name.

    Raises:
        ValueError: If the name is unknown; the message carries a "did you mean".
    """
    hit = _AS_WRITTEN.get(name) or _BY_KEY.get(_key(name))
    if hit is not None:
        return hit
    hint = suggest(name, CANONICAL_NAMES)
    tail = f"; did you mean '{hint}'?" if hint else f"; known: {', '.join(CANONICAL_NAMES)}"
    raise ValueError(f"unknown accelerator '{name}'{tail}")

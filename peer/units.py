"""Quantities as people write and read them: byte sizes in messages, durations in options.

One duration grammar serves every option that takes one (``peer invite
--ttl``, ``--since``): a number with a unit, several in a row, or a bare
number of seconds.
"""

from __future__ import annotations

import re

__all__ = ["DURATION_HELP", "human_size", "parse_duration"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(w|d|h|m|s)")
_UNIT_SECONDS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
#: How the grammar is shown in messages.
DURATION_HELP = "90s, 15m, 12h, 7d, 2w or 1d12h"


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``90`` or ``90s``, ``15m``, ``1.5h``, ``7d``, ``2w``, ``1d12h``.

    Raises ValueError for anything else (a unit word, a sign, an empty text).
    """
    compact = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", compact):
        return float(compact)
    if not compact or _DURATION_PART.sub("", compact) != "":
        raise ValueError(f"{text!r} is not a duration; write it like {DURATION_HELP}")
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(compact))


def human_size(n: int) -> str:
    """``388 B``, ``25.1 kB``, ``200.7 MB``, ``1.2 GB`` (powers of 1000)."""
    size = float(n)
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"

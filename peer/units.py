"""Quantities, times and field lists as people write and read them.

Byte sizes and times in messages sit below every layer that describes a
result (``describe()`` methods), so the text a command prints is built next
to the data and the CLI only chooses between it and the JSON. One duration
grammar serves every option that takes one (``peer invite --ttl``,
``--since``): a number with a unit, several in a row, or a bare number of
seconds.
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from collections.abc import Iterable

from protocol import PeerError

__all__ = [
    "DURATION_HELP",
    "fields_text",
    "human_size",
    "local_minute",
    "parse_duration",
    "parse_since",
    "plural",
]

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


def parse_since(text: str, *, now: float | None = None) -> float:
    """"Since when", as Unix seconds: a duration back from now (``90m``, ``12h``, ``7d``, ``1d12h``) or an ISO date/time.

    Naive dates are local time, as people mean them. Raises PeerError for anything else.
    """
    now = time.time() if now is None else now
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        return _dt.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise PeerError(
            f"{text!r} is neither a duration ({DURATION_HELP}) nor a date (2026-01-31, 2026-01-31T09:00)"
        ) from None


def human_size(n: int) -> str:
    """``388 B``, ``25.1 kB``, ``200.7 MB``, ``1.2 GB`` (powers of 1000)."""
    size = float(n)
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def local_minute(timestamp: float) -> str:
    """``2026-11-22 05:30``: a Unix time in this machine's time zone, to the minute."""
    return _dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def fields_text(rows: Iterable[tuple[str, object]]) -> str:
    """``key  value`` lines with the values aligned in one column."""
    rows = list(rows)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in rows)


def plural(n: int, one: str, many: str | None = None) -> str:
    """``1 memory``, ``2 memories``, ``1,024 versions``: a count with the word that agrees with it."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"

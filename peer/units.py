"""Numbers, times and field lists as people read them in peer's messages.

Below every layer that describes a result (``describe()`` methods), so the
text a command prints is built next to the data, and the CLI only chooses
between it and the JSON.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable

__all__ = ["fields_text", "human_size", "local_minute"]


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

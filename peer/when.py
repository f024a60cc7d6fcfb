"""Reading "since when" as people (and models) write it: ``90m``, ``7d``, ``1d12h``, ``2026-01-31``.

Shared by ``peer list --since`` and the MCP server's ``since`` parameters.
"""

from __future__ import annotations

import datetime as _dt
import re
import time

from protocol.errors import PeerError

__all__ = ["parse_since"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)")
_UNIT_SECONDS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_since(text: str, *, now: float | None = None) -> float:
    """A duration back from now (``90m``, ``12h``, ``7d``, ``2w``, ``1d12h``) or an ISO date/time, as epoch seconds."""
    now = time.time() if now is None else now
    compact = text.strip().lower().replace(" ", "")
    if compact and _DURATION_PART.sub("", compact) == "" and _DURATION_PART.match(compact):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(compact))
        return now - seconds
    try:
        when = _dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise PeerError(
            f"{text!r} is neither a duration (30m, 12h, 7d, 2w) nor a date (2026-01-31, 2026-01-31T09:00)"
        ) from None
    return when.timestamp()  # naive dates are local time, as people mean them

"""What kind a memory is: the known kinds, and the rule for any other.

A module of its own, importing nothing: the CLI checks ``--kind`` before it
knows whether the command runs in process or is answered by the agent, and
must not load the records (and with them the cryptography) to do it.
"""

from __future__ import annotations

import re

__all__ = ["KINDS", "DEFAULT_KIND", "valid_kind"]

KINDS = (
    "fact",
    "decision",
    "procedure",
    "error",
    "preference",
    "observation",
    "session_summary",
    "note",
)
DEFAULT_KIND = "note"
_KIND_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,39}$")


def valid_kind(kind: str) -> bool:
    """Known kinds and any other short lowercase identifier are accepted."""
    return bool(_KIND_RE.match(kind))

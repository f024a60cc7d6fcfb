"""Reading a running agent's state from outside, as `peer status` does."""

from __future__ import annotations

from peer.home import Home
from peer.sync import read_status

__all__ = ["synced_with_every_peer"]


def synced_with_every_peer(home: Home) -> bool:
    """Whether ``home``'s running agent has completed a sync with each peer it knows (per its status file)."""
    status = read_status(home)
    return status is not None and bool(status["peers"]) and all(p["last_sync"] is not None for p in status["peers"])

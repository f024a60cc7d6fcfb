"""The SQLite store: versions, winners, membership, peers (see :mod:`peer.store.store`)."""

from .store import (
    KEEP,
    SCHEMA_VERSION,
    ApplyResult,
    ImportedVersion,
    KnownPeer,
    NowMs,
    Rejected,
    Store,
    StoreStats,
    wall_clock_ms,
)

__all__ = [
    "KEEP",
    "SCHEMA_VERSION",
    "ApplyResult",
    "ImportedVersion",
    "KnownPeer",
    "NowMs",
    "Rejected",
    "Store",
    "StoreStats",
    "wall_clock_ms",
]

"""The SQLite store: versions, winners, membership, peers.

:mod:`.store` holds :class:`Store` and the records it hands out (its theory
of operation opens that module); :mod:`.schema` the migrations, the SQL text
and the meta keys; :mod:`.rows` the row converters, field checks and
keyword-query building.
"""

from .pipeline import ApplyPipeline
from .rows import check_content
from .schema import SCHEMA_VERSION
from .store import (
    BULK_WRITE_BYTES,
    BULK_WRITE_VERSIONS,
    KEEP,
    ApplyResult,
    CheckedBatch,
    ImportedVersion,
    KnownPeer,
    NowMs,
    Rejected,
    Store,
    StoreLayout,
    StoreStats,
    wall_clock_ms,
)

__all__ = [
    "check_content",
    "BULK_WRITE_BYTES",
    "BULK_WRITE_VERSIONS",
    "KEEP",
    "SCHEMA_VERSION",
    "ApplyPipeline",
    "ApplyResult",
    "CheckedBatch",
    "ImportedVersion",
    "KnownPeer",
    "NowMs",
    "Rejected",
    "Store",
    "StoreLayout",
    "StoreStats",
    "wall_clock_ms",
]

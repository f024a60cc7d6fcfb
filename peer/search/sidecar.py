"""What the saved index covers, read from its sidecar alone.

The sidecar (``index.json`` beside the hnswlib graph) records the index's
watermark, size and embedder. Reading it needs neither hnswlib nor numpy, so
``peer stats`` and the decision "is there an index to catch up after a sync"
cost a small JSON read, not a graph load.
"""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["SIDECAR_FILE", "IndexState", "Coverage", "index_state"]

#: The index's sidecar file, in the index directory.
SIDECAR_FILE: Final = "index.json"


class Coverage(enum.Enum):
    """How the saved index stands against the store."""

    MISSING = "missing"
    DAMAGED = "damaged"
    CURRENT = "current"
    BEHIND = "behind"


@dataclass(frozen=True, slots=True)
class IndexState:
    coverage: Coverage
    vectors: int
    watermark: int
    behind: int
    embedder: str | None

    @property
    def exists(self) -> bool:
        """Whether an index was ever built here (a missing one is built by the first search)."""
        return self.coverage is not Coverage.MISSING

    def describe(self) -> str:
        if self.coverage is Coverage.MISSING:
            return "not built yet (the next search builds it)"
        if self.coverage is Coverage.DAMAGED:
            return "unreadable (the next search rebuilds it; or run `peer reindex`)"
        if self.behind == 0:
            return f"{self.vectors:,} vectors, up to date"
        return f"{self.vectors:,} vectors, {self.behind:,} changes behind the store (caught up on the next search)"

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.coverage.value,
            "vectors": self.vectors,
            "watermark": self.watermark,
            "behind": self.behind,
            "embedder": self.embedder,
            "summary": self.describe(),
        }


def index_state(index_dir: os.PathLike[str] | str, store_seq: int) -> IndexState:
    """What the saved index in ``index_dir`` covers, against a store at change ``store_seq``."""
    path = os.path.join(index_dir, SIDECAR_FILE)
    try:
        with open(path, "rb") as f:
            sidecar = json.load(f)
        watermark = int(sidecar["watermark"])
        vectors = int(sidecar["elements"]) - int(sidecar.get("deleted", 0))
        embedder = str(sidecar["embedder"])
    except FileNotFoundError:
        return IndexState(Coverage.MISSING, 0, 0, store_seq, None)
    except (OSError, ValueError, KeyError, TypeError):
        return IndexState(Coverage.DAMAGED, 0, 0, store_seq, None)
    behind = max(0, store_seq - watermark)
    return IndexState(Coverage.CURRENT if behind == 0 else Coverage.BEHIND, vectors, watermark, behind, embedder)

"""What the saved index covers, read from its sidecar alone.

The sidecar (``index.json`` beside the hnswlib graph) records the index's
watermark, size and embedder. Reading it needs neither hnswlib nor numpy, so
``peer stats`` and the decision "is there an index to catch up after a sync"
cost a small JSON read, not a graph load.

It also holds :func:`graph_file_problem`, a structural check of the graph
file that reads its header and link-list sizes with nothing but ``struct``:
hnswlib's own loader trusts its input, and its saver does not report a short
write (a full disk), so neither can be asked whether a file is whole.
"""

from __future__ import annotations

import enum
import fcntl
import json
import os
import struct
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["SIDECAR_FILE", "GRAPH_FILE", "IndexState", "Coverage", "index_state", "graph_file_problem"]

#: The index's sidecar file, in the index directory.
SIDECAR_FILE: Final = "index.json"
#: hnswlib's graph file, in the index directory.
GRAPH_FILE: Final = "hnsw.bin"
#: Held while the index files are written (exclusive) or read (shared); see peer.search.index.
LOCK_FILE: Final = "lock"

# hnswlib's saveIndex header (hnswalg.h): six size_t (offsetLevel0, max_elements,
# cur_element_count, size_data_per_element, label_offset, offsetData), an int
# (maxlevel), a uint32 (enterpoint), three size_t (maxM, maxM0, M), a double
# (mult), a size_t (ef_construction). Then cur_element_count fixed-size level-0
# records, then per element a uint32 byte count and that many bytes of upper links.
_HNSW_HEADER: Final = struct.Struct("<QQQQQQiIQQQdQ")
_LINK_SIZE: Final = struct.Struct("<I")


def graph_file_problem(path: os.PathLike[str] | str, elements: int | None = None) -> str | None:
    """Why the hnswlib file at ``path`` is not whole (None when its structure adds up to its size).

    ``elements``, when given, is the element count its sidecar claims. Only
    the header and the link-list sizes are read, never the vectors: cheap,
    and safe on any input. Raises OSError when the file cannot be read.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(_HNSW_HEADER.size)
        if len(head) < _HNSW_HEADER.size:
            return f"it holds {size:,} bytes, less than hnswlib's header"
        fields = _HNSW_HEADER.unpack(head)
        count, per_element = fields[2], fields[3]
        if elements is not None and count != elements:
            return f"it holds {count:,} elements, its description says {elements:,}"
        at = _HNSW_HEADER.size + count * per_element
        if at > size:
            return f"it is truncated ({size:,} bytes; its {count:,} elements need more than {at:,})"
        f.seek(at)
        tail = f.read(size - at)  # the link lists: a few bytes per element
    pos = 0
    for _ in range(count):
        if pos + 4 > len(tail):
            return f"it is truncated ({size:,} bytes)"
        (links,) = _LINK_SIZE.unpack_from(tail, pos)
        pos += 4 + links
    if pos > len(tail):
        return f"it is truncated ({size:,} bytes)"
    if pos != len(tail):
        return f"it has {len(tail) - pos:,} bytes after its end"
    return None


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
    # Under the index's lock (shared), as a load: a save that runs meanwhile
    # would show a new sidecar beside an old graph, which is no damage.
    try:
        fd = os.open(os.path.join(index_dir, LOCK_FILE), os.O_RDONLY)
    except OSError:
        return _index_state(index_dir, store_seq)  # never saved (or saved by a peer without the lock)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        return _index_state(index_dir, store_seq)
    finally:
        os.close(fd)


def _index_state(index_dir: os.PathLike[str] | str, store_seq: int) -> IndexState:
    path = os.path.join(index_dir, SIDECAR_FILE)
    try:
        with open(path, "rb") as f:
            sidecar = json.load(f)
        watermark = int(sidecar["watermark"])
        vectors = int(sidecar["elements"]) - int(sidecar.get("deleted", 0))
        embedder = str(sidecar["embedder"])
        graph_bytes = int(sidecar["files"][GRAPH_FILE]["bytes"])
    except FileNotFoundError:
        return IndexState(Coverage.MISSING, 0, 0, store_seq, None)
    except (OSError, ValueError, KeyError, TypeError):
        return IndexState(Coverage.DAMAGED, 0, 0, store_seq, None)
    # A stat and the header, not the whole file: a sidecar must not vouch for a
    # graph that is missing, another size, or shorter than its own header says.
    try:
        graph = os.path.join(index_dir, GRAPH_FILE)
        if os.stat(graph).st_size != graph_bytes or _header_problem(graph, int(sidecar["elements"])):
            return IndexState(Coverage.DAMAGED, 0, 0, store_seq, None)
    except (OSError, ValueError, KeyError, TypeError):
        return IndexState(Coverage.DAMAGED, 0, 0, store_seq, None)
    behind = max(0, store_seq - watermark)
    return IndexState(Coverage.CURRENT if behind == 0 else Coverage.BEHIND, vectors, watermark, behind, embedder)


def _header_problem(path: str, elements: int) -> bool:
    """The cheap half of :func:`graph_file_problem`: the header's count and the level-0 block fit."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(_HNSW_HEADER.size)
    if len(head) < _HNSW_HEADER.size:
        return True
    fields = _HNSW_HEADER.unpack(head)
    return bool(fields[2] != elements or _HNSW_HEADER.size + fields[2] * fields[3] + 4 * fields[2] > size)

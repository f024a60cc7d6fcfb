"""The semantic search index: hnswlib over the embeddings of live winners.

Theory of operation
-------------------
The store numbers every change the index must see with a ``seq`` and hands
them out in order as :class:`~peer.memory.IndexChange` records: "version
row ``label`` is live now" (it is its memory's winner and not a tombstone)
or "it is not". The index holds one hnswlib element per live label and
remembers the highest ``seq`` it reflects, the *watermark*. Catching up is
reading the changes after the watermark and applying them; each change
states where its label must end up, not a delta, so replaying changes the
index already reflects is harmless. That is what makes a rebuild simple:
note the store's current ``seq``, load every live winner, then catch up
from the noted ``seq`` to pick up whatever changed meanwhile.

A label that stops being live is *marked deleted* in hnswlib (it stays in
the graph as a waypoint but is never returned); if the same label becomes
live again (a sibling that wins again after a concurrent delete) it is
unmarked: a version's content never changes, so neither does its vector.
When deleted elements outnumber live ones the graph is compacted: the live
vectors are copied into a fresh graph, without running the model again.

Vectors come from the versions themselves when they carry one made by the
index's embedder; otherwise (no embedding, or one from another embedder)
the content is embedded again here.

On disk, in ``HOME/index/``: ``hnsw.bin`` (hnswlib's own format),
``deleted.i64`` (the deleted labels, which hnswlib's Python API cannot
list) and ``index.json``, a sidecar with the format version, the embedder
id and dimension, the watermark, the element counts and the SHA-256 of the
two other files. Files are written to a temporary name, fsynced and renamed,
the sidecar last, so a crash leaves either the old complete set or a sidecar
whose checksums no longer match. hnswlib's loader trusts its input (a
damaged file can crash the process), so a file is only given to it after
its checksum verified and its structure adds up to its size
(:func:`~peer.search.sidecar.graph_file_problem`); anything that does not
verify, or was built by another embedder, is rebuilt from the store, with a
warning saying why. hnswlib's saver does not report a short write (a full
disk), so a save walks the file it wrote the same way before any checksum
is taken: a sidecar never vouches for a file that is not whole, and the
save fails instead, leaving the previous files in place.

The index holds one element per live winner, so its size must equal the
store's live count. Rows the store deletes (the versions of a revoked
device) leave no change record behind; their labels would stay live here
(never returned: the store never hands a label out again). A catch-up with
nothing new that finds the counts apart therefore rebuilds (from the stored
vectors, without the model).

Concurrency: hnswlib is not safe for an add and a query at the same time.
A :class:`SearchIndex` belongs to one trio task (the agent's index task, or
the CLI's one-shot command); its methods also serialise on an internal
lock, so a stray concurrent call waits rather than corrupting the graph.
Blocking work (hnswlib, the model, hashing, file I/O) runs in worker
threads through ``trio.to_thread.run_sync``, one call at a time.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import hnswlib
import numpy as np
import trio
from numpy.typing import NDArray

from peer.errors import SearchIndexError
from peer.files import fsync_path, write_atomic
from peer.memory import IndexChange
from peer.search.embedder import Embedder
from peer.search.sidecar import GRAPH_FILE, LOCK_FILE, SIDECAR_FILE, graph_file_problem

__all__ = [
    "IndexFeed",
    "SearchIndex",
    "SearchIndexError",
    "Progress",
    "FORMAT_VERSION",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

DELETED_FILE = "deleted.i64"

# Graph parameters. M=16 links per node (32 on the bottom layer) is the
# usual sweet spot for a few hundred dimensions: recall@10 above 0.95 at
# modest ef, about 130 bytes of links per element beside its 1.5 kB vector.
# ef_construction=100 builds the graph twice as fast as 200 for a loss of
# recall of well under a point on text embeddings (which have a much lower
# intrinsic dimension than their 384). ef=64 at query time keeps a k=10
# query well under a millisecond at 100k elements; a larger k raises ef to
# at least k (hnswlib does that anyway).
M = 16
EF_CONSTRUCTION = 100
EF_SEARCH = 64

INITIAL_CAPACITY = 1024
#: Changes read from the store per round trip, and vectors per add_items:
#: large enough that hnswlib's threads stay busy, small enough to checkpoint.
BATCH = 4096
#: Texts per model call, so progress moves and cancellation gets a chance
#: while a batch of versions without vectors is embedded.
EMBED_CHUNK = 128
#: A long catch-up saves its work this often (in changes), so an
#: interruption does not start from zero.
SAVE_EVERY = 50_000
#: Held while an index is built from the store (see _one_build_at_a_time), beside LOCK_FILE.
BUILD_LOCK_FILE = "build.lock"
#: Seconds between tries of a build lock another process holds.
BUILD_POLL_S = 0.2
#: A builder touches the build lock after every batch; one that has not for this long (a
#: stopped process) is not waited for any more.
BUILD_STALE_S = 30.0
#: Compact when deleted elements exceed live ones and at least this many.
COMPACT_MIN_DELETED = 10_000
#: How many candidates a filtered query asks for per wanted result at first.
OVERFETCH = 4

#: ``progress(done, total)``: called from the task running the index.
Progress = Callable[[int, int], None]


class IndexFeed(Protocol):
    """What the index needs from the store.

    ``changes_since(seq, limit)`` returns at most ``limit`` changes with
    ``seq`` above the given one, in increasing ``seq`` order. ``max_seq``
    is the highest ``seq`` handed out so far (0 for an empty store).
    ``live_winners(batch_size)`` yields every version that must be in the
    index now (``live=True``), in batches; ``count_live`` says how many
    there are, for progress.
    """

    async def changes_since(self, seq: int, limit: int) -> list[IndexChange]: ...

    async def max_seq(self) -> int: ...

    async def count_live(self) -> int: ...

    def live_winners(self, batch_size: int) -> AsyncIterator[list[IndexChange]]: ...


@dataclass(frozen=True, slots=True)
class CatchUpResult:
    """What one catch-up or rebuild did."""

    added: int  # labels that became searchable
    removed: int  # labels that stopped being searchable
    embedded: int  # versions whose content the model embedded here
    watermark: int
    rebuilt: bool


def _hnsw(dim: int) -> hnswlib.Index:
    return hnswlib.Index(space="cosine", dim=dim)


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _fingerprint(path: Path) -> list[int]:
    """What changes whenever the file's bytes could have: inode, device, size, and modification and change times.

    ``st_ctime_ns`` cannot be set back by a program (utime sets only the
    modification time), so a file written behind the sidecar's back, or
    replaced by another, no longer matches.
    """
    st = path.stat()
    return [st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


# LOCK_FILE is held while the index files are written (exclusive) or read (shared): several
# processes keep their own index of one home (the agent, `peer mcp` servers,
# `peer search`) and each saves it; without the lock two saves interleave their
# temporary files and renames, and a reader can see one save's graph with
# another's sidecar.


@contextlib.contextmanager
def _files_locked(directory: Path, *, exclusive: bool) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.asynccontextmanager
async def _one_build_at_a_time(directory: Path) -> AsyncIterator[Callable[[], None]]:
    """Held while the index of ``directory`` is built from the store, by whichever process builds it.

    The agent builds a new device's index in the background; a `peer mcp`
    server or a `peer search` asking meanwhile would build a second copy at
    the same time, each taking twice as long. The second waits here instead
    (polling, so that it stays cancellable), then uses what the first saved.
    Yields what the builder calls after every batch to show it is making
    progress: a waiter stops waiting for a builder that stopped.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / BUILD_LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() - os.fstat(fd).st_mtime > BUILD_STALE_S:
                    # A builder that stopped (SIGSTOP, a debugger) must not stop every search here.
                    log.warning("the search index in %s has been building elsewhere without progress for %g s;"
                                " building it here", directory, BUILD_STALE_S)
                    break
                if not waited:
                    log.info("another process is building the search index in %s; waiting for it", directory)
                    waited = True
                await trio.sleep(BUILD_POLL_S)
        _beat(fd)
        yield partial(_beat, fd)
    finally:
        os.close(fd)  # releases the lock (if it was taken)


def _beat(fd: int) -> None:
    """Mark the build lock as held by a builder making progress (see BUILD_STALE_S)."""
    try:
        os.utime(fd)
    except OSError:
        pass


class _Graph:
    """The hnswlib graph and the label bookkeeping Python must keep beside it.

    Blocking and not thread-safe: only :class:`SearchIndex` calls it, from
    one worker thread at a time.
    """

    def __init__(self, dim: int, capacity: int = INITIAL_CAPACITY) -> None:
        self.dim = dim
        self.hnsw = _hnsw(dim)
        self.hnsw.init_index(max_elements=max(capacity, 16), M=M, ef_construction=EF_CONSTRUCTION)
        self.hnsw.set_ef(EF_SEARCH)
        self.hnsw.set_num_threads(_threads())
        self.present: set[int] = set()  # every label in the graph, deleted or not
        self.deleted: set[int] = set()

    @property
    def live_count(self) -> int:
        return len(self.present) - len(self.deleted)

    def add(self, labels: NDArray[np.uint64], vectors: NDArray[np.float32]) -> None:
        """Add new labels with one add_items call (hnswlib spreads it over its threads)."""
        if len(labels) == 0:
            return
        needed = self.hnsw.element_count + len(labels)
        capacity = self.hnsw.get_max_elements()
        if needed > capacity:
            # Doubling keeps the total copying linear in the final size.
            self.hnsw.resize_index(max(needed, 2 * capacity))
        self.hnsw.add_items(vectors, labels)
        self.present.update(labels.tolist())

    def remove(self, label: int) -> bool:
        if label not in self.present or label in self.deleted:
            return False
        self.hnsw.mark_deleted(label)
        self.deleted.add(label)
        return True

    def revive(self, label: int) -> None:
        self.hnsw.unmark_deleted(label)
        self.deleted.discard(label)

    def compacted(self) -> _Graph:
        """A fresh graph holding only the live elements (vectors copied, not re-embedded)."""
        live = np.fromiter(self.present - self.deleted, dtype=np.uint64)
        fresh = _Graph(self.dim, capacity=max(INITIAL_CAPACITY, len(live) + len(live) // 8))
        for start in range(0, len(live), BATCH * 4):
            part = live[start : start + BATCH * 4]
            vectors = np.asarray(self.hnsw.get_items(part, return_type="numpy"), dtype=np.float32)
            fresh.add(part, vectors)
        return fresh

    def query(self, vector: NDArray[np.float32], fetch: int) -> list[tuple[int, float]]:
        """Up to ``fetch`` nearest live labels with their cosine similarity."""
        fetch = min(fetch, self.live_count)
        ef = max(EF_SEARCH, fetch)
        while fetch > 0:
            self.hnsw.set_ef(ef)
            try:
                labels, distances = self.hnsw.knn_query(vector, k=fetch, num_threads=1)
            except RuntimeError:
                # hnswlib found fewer than ``fetch`` live elements from where
                # it entered the graph (likely with many deleted elements):
                # look further, and past the whole graph, ask for fewer.
                if ef < self.live_count:
                    ef = min(ef * 4, max(self.live_count, EF_SEARCH))
                else:
                    fetch //= 2
                continue
            finally:
                self.hnsw.set_ef(EF_SEARCH)
            return [
                (int(label), 1.0 - float(distance))
                for label, distance in zip(labels[0].tolist(), distances[0].tolist())
            ]
        return []

    def query_many(self, vectors: NDArray[np.float32], fetch: int) -> list[list[tuple[int, float]]]:
        """:meth:`query` for many vectors in one hnswlib call on every core (one by one if it balks)."""
        fetch = min(fetch, self.live_count)
        if fetch <= 0 or len(vectors) == 0:
            return [[] for _ in range(len(vectors))]
        self.hnsw.set_ef(max(EF_SEARCH, fetch))
        try:
            labels, distances = self.hnsw.knn_query(vectors, k=fetch, num_threads=_threads())
        except RuntimeError:
            return [self.query(vectors[i : i + 1], fetch) for i in range(len(vectors))]
        finally:
            self.hnsw.set_ef(EF_SEARCH)
        return [
            [(int(label), 1.0 - float(distance)) for label, distance in zip(row_labels, row_distances, strict=True)]
            for row_labels, row_distances in zip(labels.tolist(), distances.tolist(), strict=True)
        ]

    def save(self, directory: Path, sidecar: dict[str, Any]) -> None:
        with _files_locked(directory, exclusive=True):
            self._save(directory, sidecar)

    def _save(self, directory: Path, sidecar: dict[str, Any]) -> None:
        graph = directory / GRAPH_FILE
        tmp = graph.with_name(GRAPH_FILE + ".tmp")
        try:
            self.hnsw.save_index(str(tmp))
            fsync_path(tmp)
            problem = graph_file_problem(tmp, len(self.present))
            if problem is not None:
                # hnswlib ignores short writes; the usual cause is a full disk.
                raise OSError(errno.ENOSPC, f"the graph file was not written whole ({problem})")
            # Hashed from the file as written (read back from the page cache), so
            # the checksum covers exactly what the next load will read.
            graph_sha, graph_size = _sha256_file(tmp)
            os.replace(tmp, graph)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        graph_stat = _fingerprint(graph)

        deleted_bytes = np.array(sorted(self.deleted), dtype="<i8").tobytes()
        write_atomic(directory / DELETED_FILE, deleted_bytes)

        sidecar = dict(sidecar)
        sidecar.update(
            elements=len(self.present),
            deleted=len(self.deleted),
            files={
                GRAPH_FILE: {"bytes": graph_size, "sha256": graph_sha, "stat": graph_stat},
                DELETED_FILE: {
                    "bytes": len(deleted_bytes),
                    "sha256": hashlib.sha256(deleted_bytes).hexdigest(),
                },
            },
        )
        write_atomic(directory / SIDECAR_FILE, json.dumps(sidecar, indent=2).encode())
        try:
            fd = os.open(directory, os.O_RDONLY)
        except OSError:  # directories cannot be opened on some systems
            return
        try:
            os.fsync(fd)  # make the renames themselves durable
        finally:
            os.close(fd)


class _Unusable(Exception):
    """Why a saved index cannot be used (becomes a warning, then a rebuild)."""


def _load(directory: Path, embedder_id: str, dim: int, *, full_check: bool = False) -> tuple[_Graph, int]:
    """The saved graph and its watermark; raises _Unusable (or FileNotFoundError).

    The graph (the big file: 168 MB at 100,000 memories, 0.1 s to hash) is
    hashed only when its fingerprint differs from the one taken when it was
    saved, or with ``full_check`` (``peer doctor``); the small files always are.
    """
    if not directory.exists():
        raise FileNotFoundError(directory / SIDECAR_FILE)
    with _files_locked(directory, exclusive=False):
        return _load_files(directory, embedder_id, dim, full_check=full_check)


def _load_files(directory: Path, embedder_id: str, dim: int, *, full_check: bool) -> tuple[_Graph, int]:
    sidecar_path = directory / SIDECAR_FILE
    if not sidecar_path.exists():
        if (directory / GRAPH_FILE).exists():
            raise _Unusable("its description file index.json is missing")
        raise FileNotFoundError(sidecar_path)
    try:
        sidecar = json.loads(sidecar_path.read_bytes())
        fmt = sidecar["format"]
        saved_embedder = sidecar["embedder"]
        saved_dim = sidecar["dim"]
        watermark = sidecar["watermark"]
        elements = sidecar["elements"]
        files = sidecar["files"]
        graph_meta = files[GRAPH_FILE]
        deleted_meta = files[DELETED_FILE]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _Unusable(f"its description file index.json is unreadable ({e})") from e
    if fmt != FORMAT_VERSION:
        raise _Unusable(f"it has format {fmt!r}, this peer uses format {FORMAT_VERSION}")
    if saved_embedder != embedder_id:
        raise _Unusable(f"it was built with the embedder {saved_embedder!r}, this store uses {embedder_id!r}")
    if saved_dim != dim:
        raise _Unusable(f"it has {saved_dim!r} dimensions, the embedder makes {dim}")
    if not isinstance(watermark, int) or not isinstance(elements, int) or watermark < 0:
        raise _Unusable("its description file index.json is inconsistent")

    def verify(name: str, meta: Any) -> Path:
        path = directory / name
        try:
            size = path.stat().st_size
            if not isinstance(meta, dict) or size != meta.get("bytes"):
                raise _Unusable(f"{name} has the wrong size (damaged or from another save)")
            if not full_check and "stat" in meta and meta["stat"] == _fingerprint(path):
                return path  # the very file whose checksum was taken when it was saved
            digest, _ = _sha256_file(path)
        except OSError as e:
            raise _Unusable(f"{name} cannot be read ({e.strerror or e})") from e
        if digest != meta.get("sha256"):
            raise _Unusable(f"{name} does not match its checksum (damaged or from another save)")
        return path

    graph_path = verify(GRAPH_FILE, graph_meta)
    try:
        problem = graph_file_problem(graph_path, elements)
    except OSError as e:
        raise _Unusable(f"{GRAPH_FILE} cannot be read ({e.strerror or e})") from e
    if problem is not None:
        # A sidecar written before saves checked this may vouch for a short file (a full disk).
        raise _Unusable(f"{GRAPH_FILE} is not whole: {problem}")
    deleted_raw = verify(DELETED_FILE, deleted_meta).read_bytes()
    if len(deleted_raw) % 8:
        raise _Unusable(f"{DELETED_FILE} is inconsistent")

    # Only now, with the checksum verified, may hnswlib parse the file.
    graph = _Graph.__new__(_Graph)
    graph.dim = dim
    graph.hnsw = _hnsw(dim)
    try:
        graph.hnsw.load_index(str(graph_path))
    except (RuntimeError, ValueError, MemoryError) as e:
        raise _Unusable(f"hnswlib cannot read it ({e})") from e
    graph.hnsw.set_ef(EF_SEARCH)
    graph.hnsw.set_num_threads(_threads())
    graph.present = set(graph.hnsw.get_ids_list())
    graph.deleted = set(np.frombuffer(deleted_raw, dtype="<i8").tolist())
    if len(graph.present) != elements or not graph.deleted <= graph.present:
        raise _Unusable("its element counts do not match its description")
    return graph, watermark


class SearchIndex:
    """The search index of one store. See the module docstring for the rules.

    Open it with :meth:`open`, then :meth:`catch_up` with the store before
    querying (which rebuilds when :meth:`open` found nothing usable).
    """

    def __init__(self, directory: Path, embedder: Embedder, graph: _Graph, watermark: int, needs_rebuild: bool) -> None:
        self._dir = directory
        self._embedder = embedder
        self._graph = graph
        self._watermark = watermark
        self._needs_rebuild = needs_rebuild
        #: Nothing usable was saved when this opened: a build may use what another process saves meanwhile.
        self._opened_empty = needs_rebuild
        self._lock = trio.Lock()
        #: A catch-up saves the files once this many applied changes are unsaved. 1 (save after
        #: every catch-up that changed something) suits one-shot commands; a long-lived process
        #: (`peer mcp`) sets more, since a save writes the whole graph, and saves when it closes.
        self.save_threshold = 1
        self._unsaved = 0

    # --- opening and saving ---------------------------------------------------

    @classmethod
    async def open(
        cls, directory: Path, embedder: Embedder, *, full_check: bool = False
    ) -> tuple[SearchIndex, list[str]]:
        """Load the index saved in ``directory`` (``HOME/index``).

        The graph's checksum is verified unless the file is provably the one
        saved (see :func:`_load`); ``full_check`` verifies it always.

        Returns the index and the warnings for the user: why a saved index
        could not be used. When there is nothing usable the index is empty
        and the next :meth:`catch_up` rebuilds it from the store.
        """
        directory = Path(directory)
        warnings: list[str] = []
        try:
            graph, watermark = await trio.to_thread.run_sync(
                partial(_load, directory, embedder.id, embedder.dim, full_check=full_check)
            )
            return cls(directory, embedder, graph, watermark, needs_rebuild=False), warnings
        except FileNotFoundError:
            pass  # a new store: nothing to warn about
        except _Unusable as e:
            warnings.append(f"The search index in {directory} cannot be used: {e}; rebuilding it from the store.")
            log.warning("search index in %s unusable: %s; rebuilding", directory, e)
        return cls(directory, embedder, _Graph(embedder.dim), 0, needs_rebuild=True), warnings

    async def save(self) -> None:
        """Write the index to its directory (atomically; the sidecar last)."""
        async with self._lock:
            await self._save()

    async def _save(self) -> None:
        sidecar = {
            "format": FORMAT_VERSION,
            "embedder": self._embedder.id,
            "dim": self._embedder.dim,
            "watermark": self._watermark,
            "params": {"M": M, "ef_construction": EF_CONSTRUCTION, "ef": EF_SEARCH},
        }
        try:
            await trio.to_thread.run_sync(self._graph.save, self._dir, sidecar)
            self._unsaved = 0
        except OSError as e:
            raise SearchIndexError(
                f"Cannot save the search index in {self._dir} ({e.strerror or e}); "
                f"check the free space and permissions there."
            ) from e

    # --- what callers can read ------------------------------------------------

    @property
    def watermark(self) -> int:
        """The highest store ``seq`` the index reflects."""
        return self._watermark

    @property
    def unsaved(self) -> int:
        """Changes applied since the files were last written."""
        return self._unsaved

    @property
    def needs_rebuild(self) -> bool:
        return self._needs_rebuild

    @property
    def embedder_id(self) -> str:
        return self._embedder.id

    def __len__(self) -> int:
        """How many labels a query can return."""
        return self._graph.live_count

    def __contains__(self, label: object) -> bool:
        return label in self._graph.present and label not in self._graph.deleted

    @property
    def deleted_count(self) -> int:
        return len(self._graph.deleted)

    # --- keeping up with the store -------------------------------------------

    async def catch_up(
        self, store: IndexFeed, embedder: Embedder | None = None, progress: Progress | None = None
    ) -> CatchUpResult:
        """Apply every change after the watermark (or rebuild if the index needs it)."""
        self._check_embedder(embedder)
        async with self._lock:
            if not self._needs_rebuild:
                store_seq = await store.max_seq()
                if self._watermark > store_seq:
                    # The index saw changes this store does not have (the store
                    # was restored from an older backup): its labels may name
                    # other versions now, so none of it can be trusted.
                    log.warning(
                        "search index is ahead of the store (change %d > %d); rebuilding",
                        self._watermark,
                        store_seq,
                    )
                    self._needs_rebuild = True
            if self._needs_rebuild:
                return await self._rebuild(store, progress, best_effort=True, adopt=self._opened_empty)
            start = self._watermark
            result = await self._catch_up(store, progress, best_effort=True)
            if self._watermark == start:
                live = await store.count_live()
                if live != len(self) and await store.max_seq() == self._watermark:
                    # Rows the store deleted (see the module docstring). Only
                    # with nothing to catch up, before and after the count: a
                    # count taken while another process writes may differ for no harm.
                    log.warning("search index holds %d vectors, the store %d live memories; rebuilding", len(self), live)
                    return await self._rebuild(store, progress, best_effort=True)
            return result

    async def rebuild(
        self, store: IndexFeed, embedder: Embedder | None = None, progress: Progress | None = None
    ) -> CatchUpResult:
        """Build the index again from the store's live winners, then catch up."""
        self._check_embedder(embedder)
        async with self._lock:
            return await self._rebuild(store, progress)

    def _check_embedder(self, embedder: Embedder | None) -> None:
        if embedder is not None and embedder.id != self._embedder.id:
            # A programming error, not a user's: the index is per embedder.
            raise ValueError(f"index made for {self._embedder.id!r} given embedder {embedder.id!r}")

    async def _catch_up(
        self, store: IndexFeed, progress: Progress | None, *, force_save: bool = False, best_effort: bool = False
    ) -> CatchUpResult:
        """Apply the changes after the watermark, saving as it goes.

        With ``best_effort`` (a search's catch-up) a save that fails (a full
        disk) is logged and left for the next catch-up: the index in memory
        is whole, and the files on disk stay the last complete save, so the
        search still answers. A rebuild asked for (``peer reindex``,
        ``doctor --repair``) raises instead.
        """
        start = self._watermark
        total = max(await store.max_seq() - start, 0)
        done = added = removed = embedded = 0
        unsaved = 0
        while True:
            changes = await store.changes_since(self._watermark, BATCH)
            if not changes:
                break
            a, r, e = await self._apply(changes, done, total, progress)
            added, removed, embedded = added + a, removed + r, embedded + e
            done += len(changes)
            unsaved += len(changes)
            self._watermark = max(self._watermark, changes[-1].seq)
            total = max(total, done)
            if progress is not None:
                progress(done, total)
            if unsaved >= SAVE_EVERY and await self._save_now(best_effort):
                self._unsaved, unsaved = 0, 0
            if len(changes) < BATCH:
                break
        if self._should_compact():
            log.info("compacting the search index: %d deleted, %d live", self.deleted_count, len(self))
            self._graph = await trio.to_thread.run_sync(self._graph.compacted)
            unsaved += 1
        self._unsaved += unsaved
        if force_save or (self._unsaved and self._unsaved >= self.save_threshold):
            await self._save_now(best_effort)
        if progress is not None:
            progress(total, total)
        return CatchUpResult(added, removed, embedded, self._watermark, rebuilt=False)

    async def _save_now(self, best_effort: bool) -> bool:
        """Save; with ``best_effort`` a failure is logged, not raised. Returns whether the files were written."""
        try:
            await self._save()
        except SearchIndexError as e:
            if not best_effort:
                raise
            log.warning("%s; searching with the index in memory, the next catch-up saves again", e.message)
            return False
        return True

    async def _rebuild(
        self, store: IndexFeed, progress: Progress | None, *, best_effort: bool = False, adopt: bool = False
    ) -> CatchUpResult:
        """Build the graph from the store's live winners, one process at a time (see _one_build_at_a_time).

        With ``adopt`` (nothing usable was saved when this index opened), a
        whole index that another process saved meanwhile is loaded and
        caught up instead of built again.
        """
        async with _one_build_at_a_time(self._dir) as beat:
            if adopt:
                adopted = await self._adopt_saved(store, progress)
                if adopted is not None:
                    return adopted
            return await self._build(store, progress, best_effort=best_effort, beat=beat)

    async def _adopt_saved(self, store: IndexFeed, progress: Progress | None) -> CatchUpResult | None:
        try:
            graph, watermark = await trio.to_thread.run_sync(
                partial(_load, self._dir, self._embedder.id, self._embedder.dim)
            )
        except (FileNotFoundError, _Unusable):
            return None  # nobody built it meanwhile (or what was saved is no use): build it here
        if watermark > await store.max_seq():
            return None
        log.info("using the search index another process built in %s meanwhile", self._dir)
        self._graph, self._watermark = graph, watermark
        self._needs_rebuild = self._opened_empty = False
        return await self._catch_up(store, progress, best_effort=True)

    async def _build(
        self, store: IndexFeed, progress: Progress | None, *, best_effort: bool, beat: Callable[[], None]
    ) -> CatchUpResult:
        # Noted before reading: whatever changes while the winners are read
        # has a higher seq and is replayed by the catch-up below.
        watermark = await store.max_seq()
        total = await store.count_live()
        self._graph = _Graph(self._embedder.dim, capacity=max(INITIAL_CAPACITY, total + total // 8))
        self._watermark = 0
        self._needs_rebuild = True  # until the whole build is done
        done = added = embedded = 0
        # The next batch is read (and its vectors decrypted from the sealed
        # versions, in a worker thread) while hnswlib adds this one.
        send, receive = trio.open_memory_channel[list[IndexChange]](1)

        async def read() -> None:
            async with send:
                async for batch in store.live_winners(BATCH):
                    await send.send(batch)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            async with receive:
                async for batch in receive:
                    a, _, e = await self._apply(batch, done, total, progress)
                    beat()
                    added, embedded = added + a, embedded + e
                    done += len(batch)
                    total = max(total, done)
                    if progress is not None:
                        progress(done, total)
        self._watermark = watermark
        self._needs_rebuild = self._opened_empty = False
        after = await self._catch_up(store, None, force_save=True, best_effort=best_effort)
        return CatchUpResult(
            added + after.added, after.removed, embedded + after.embedded, self._watermark, rebuilt=True
        )

    def _should_compact(self) -> bool:
        deleted = len(self._graph.deleted)
        return deleted >= COMPACT_MIN_DELETED and deleted > self._graph.live_count

    async def _apply(
        self, changes: Sequence[IndexChange], done: int, total: int, progress: Progress | None
    ) -> tuple[int, int, int]:
        """Apply one batch of changes; returns (added, removed, embedded)."""
        # The last change of a label in the batch is its state.
        latest: dict[int, IndexChange] = {}
        for change in changes:
            latest[change.label] = change
        graph = self._graph
        dim = self._embedder.dim
        expected_bytes = 4 * dim
        own_id = self._embedder.id

        to_remove: list[int] = []
        to_revive: list[int] = []
        carried: list[IndexChange] = []  # new labels with a usable vector
        to_embed: list[IndexChange] = []  # new labels the model must embed
        for label, change in latest.items():
            if not change.live:
                if label in graph.present and label not in graph.deleted:
                    to_remove.append(label)
            elif label in graph.present:
                if label in graph.deleted:
                    to_revive.append(label)
            elif change.embedder == own_id and len(change.embedding) == expected_bytes:
                carried.append(change)
            else:
                to_embed.append(change)

        def apply_removals() -> None:
            for label in to_remove:
                graph.remove(label)
            for label in to_revive:
                graph.revive(label)

        if to_remove or to_revive:
            await trio.to_thread.run_sync(apply_removals)

        added = 0
        if carried:
            labels = np.fromiter((c.label for c in carried), dtype=np.uint64, count=len(carried))
            # One join and one view: no per-vector numpy calls.
            vectors = np.frombuffer(b"".join(c.embedding for c in carried), dtype="<f4").reshape(-1, dim)
            finite = np.isfinite(vectors).all(axis=1)
            if not finite.all():
                # A damaged vector would poison the graph: embed those again.
                to_embed.extend(c for c, ok in zip(carried, finite.tolist()) if not ok)
                labels, vectors = labels[finite], vectors[finite]
            await trio.to_thread.run_sync(graph.add, labels, vectors)
            added = len(labels)

        embedder = self._embedder
        for start in range(0, len(to_embed), EMBED_CHUNK):
            chunk = to_embed[start : start + EMBED_CHUNK]
            vectors = await trio.to_thread.run_sync(embedder.embed, [c.content for c in chunk])
            labels = np.fromiter((c.label for c in chunk), dtype=np.uint64, count=len(chunk))
            await trio.to_thread.run_sync(graph.add, labels, np.ascontiguousarray(vectors, dtype=np.float32))
            if progress is not None and len(to_embed) > EMBED_CHUNK:
                # Within a batch, count the embedded share: it dominates the time.
                share = len(changes) * (start + len(chunk)) // len(to_embed)
                progress(min(done + share, total), total)

        return added + len(to_embed) + len(to_revive), len(to_remove), len(to_embed)

    # --- searching -----------------------------------------------------------

    async def query_many(self, vectors: NDArray[np.float32], k: int) -> list[list[tuple[int, float]]]:
        """The ``k`` nearest live labels to each of ``vectors`` (rows), in one batch call; best first."""
        matrix = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self._embedder.dim)
        if k <= 0:
            return [[] for _ in range(len(matrix))]
        async with self._lock:
            graph = self._graph
            found = await trio.to_thread.run_sync(graph.query_many, matrix, k)
            return [[(label, s) for label, s in row if label not in graph.deleted] for row in found]

    async def query(
        self, vector: NDArray[np.float32] | Sequence[float], k: int, accept: Callable[[int], bool] | None = None
    ) -> list[tuple[int, float]]:
        """The ``k`` nearest live labels to ``vector``, as (label, cosine similarity), best first.

        ``accept`` narrows the results further (a project or kind filter,
        say): the index asks hnswlib for more candidates than ``k`` and
        widens the search until ``k`` accepted labels are found or the
        index is exhausted.
        """
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        if query.shape[1] != self._embedder.dim:
            raise ValueError(f"query vector has {query.shape[1]} dimensions, the index {self._embedder.dim}")
        if k <= 0:
            return []
        async with self._lock:
            graph = self._graph
            live = graph.live_count
            fetch = min(live, k if accept is None else k * OVERFETCH)
            while fetch > 0:
                found = await trio.to_thread.run_sync(graph.query, query, fetch)
                # hnswlib never returns deleted elements; checking the label is
                # still live is a cheap guard against the bookkeeping drifting.
                results = [
                    (label, similarity)
                    for label, similarity in found
                    if label not in graph.deleted and (accept is None or accept(label))
                ]
                if len(results) >= k or fetch >= live:
                    return results[:k]
                fetch = min(live, fetch * OVERFETCH)
            return []

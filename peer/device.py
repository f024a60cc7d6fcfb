"""The device hub: one home opened for use (store, keys, embedder, search index).

"Device" here means *this* machine's home, opened; everywhere else in peer
(device ids, ``peer devices``) a device is any member of the group. The CLI,
the agent and the features call this hub: whatever touches more than the
store alone (embedding what is added, keeping the index in step,
hybrid search, health checks) lives here, so that every caller does it the
same way.

The embedder and the index are opened on first use, never in
:meth:`Device.open`: ``peer stats`` or ``peer list`` must not pay for
loading a model or an hnswlib graph (nor even for importing numpy).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from peer.aio import CONNECT_TIMEOUT_S, DEFAULT_PORT, READ_TIMEOUT_S
from peer.search.fusion import (
    MIN_SIMILARITY,
    SearchResult,
    candidate_count,
    fuse,
    keyword_coverage,
    keyword_query,
    relevant,
    stemmed_coverage,
)
from peer.search.sidecar import Coverage, IndexState, index_state
from peer.store import KEEP, SCHEMA_VERSION, Store, StoreLayout, StoreStats, check_content
from peer.store.schema import PAGE_SIZE
from peer.sync import BUSY_ATTEMPTS, ProgressCallback, Syncer, SyncSummary
from peer.units import fields_text, human_size
from protocol import PeerBusy, PeerError, StoreError, format_device_id

from .home import Home
from .memory import Draft, Memory

if TYPE_CHECKING:
    from peer.search.embedder import Embedder
    from peer.search.index import SearchIndex

__all__ = ["Device", "SearchResult", "Check", "DoctorReport", "Progress", "ReindexResult", "StatsReport"]

log = logging.getLogger(__name__)

#: ``progress(done, total)``, called from the trio thread as work advances.
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Check:
    """One line of ``peer doctor``: what was checked, the finding, and what to do when it failed."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True, slots=True)
class DoctorReport:
    checks: tuple[Check, ...]

    @property
    def healthy(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "checks": [c.to_json() for c in self.checks]}

    def describe(self) -> str:
        lines: list[str] = []
        for check in self.checks:
            mark = "ok  " if check.ok else "FAIL"
            lines.append(f"{mark}  {check.name}: {check.detail}")
            if not check.ok and check.fix:
                lines.append(f"      fix: {check.fix}")
        lines.append("healthy" if self.healthy else "NOT healthy")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class StatsReport:
    """``peer stats``: the store's counts, where the device lives and what its search index covers."""

    store: StoreStats
    home: str
    schema_version: int
    index: IndexState

    def to_json(self) -> dict[str, Any]:
        return {
            **self.store.to_json(),
            "home": self.home,
            "schema_version": self.schema_version,
            "index": self.index.to_json(),
        }

    def describe(self) -> str:
        s = self.store
        return fields_text(
            [
                ("home", self.home),
                ("device", format_device_id(s.device_id)),
                ("group", s.group_id),
                ("memories", f"{s.memories:,} live, {s.forgotten:,} forgotten"),
                ("versions", f"{s.versions:,} ({s.tombstones:,} tombstones)"),
                ("conflicts", f"{s.conflicts:,}"),
                ("devices", f"{s.devices:,}"),
                ("store", human_size(s.db_bytes)),
                ("index", self.index.describe()),
            ]
        )


@dataclass(frozen=True, slots=True)
class ReindexResult:
    """``peer reindex``: how many memories the rebuilt index holds, and how long it took."""

    vectors: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"vectors": self.vectors, "seconds": self.seconds}

    def describe(self) -> str:
        return f"indexed {self.vectors:,} memories in {self.seconds:.1f} s"


def _vector_bytes(rows: Any) -> list[bytes]:
    """Rows of a float32 matrix as the little-endian bytes versions carry."""
    import numpy as np

    matrix = np.ascontiguousarray(rows, dtype="<f4")
    return [row.tobytes() for row in matrix]


class Device:
    """A home opened for use. Create with :meth:`open`; close with :meth:`close`."""

    def __init__(self, home: Home, store: Store, *, embedder: Embedder | None = None) -> None:
        self.home = home
        self.store = store
        # None: the default model, loaded on first use (a command that never embeds does not pay for it).
        self._embedder = embedder
        self._index: SearchIndex | None = None
        #: See SearchIndex.save_threshold: long-lived processes raise it (the index is saved on close).
        self.index_save_threshold = 1

    @classmethod
    async def open(cls, home: Home, *, embedder: Embedder | None = None) -> Device:
        return cls(home, await home.open_store(), embedder=embedder)

    async def close(self) -> None:
        # A one-shot command's index saved itself after its catch-up; a long-lived
        # process's may hold changes not written yet.
        index, self._index = self._index, None
        try:
            if index is not None and index.unsaved:
                await index.save()
        except PeerError as e:
            log.warning("%s (the next start catches the index up from the store)", e)
        finally:
            await self.store.close()

    async def __aenter__(self) -> Device:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # Embedding ----------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            from peer.search.embedder import default_embedder

            self._embedder = default_embedder()
        return self._embedder

    async def embed(self, texts: Sequence[str]) -> list[bytes]:
        """Embed texts in a worker thread; one little-endian float32 vector per text."""
        embedder = self.embedder
        matrix = await trio.to_thread.run_sync(embedder.embed, list(texts))
        return _vector_bytes(matrix)

    # Writes -------------------------------------------------------------------------
    async def add(self, drafts: Sequence[Draft]) -> list[str]:
        """Embed and add memories in one transaction; returns their ids in order."""
        if not drafts:
            return []
        for draft in drafts:
            if not draft.content.strip():
                raise StoreError("a memory needs some content")
        # Every limit first: the model takes minutes on a text that would be refused anyway.
        self.store.check_drafts(drafts)
        vectors = await self.embed([d.content for d in drafts])
        return await self.store.add_many(list(zip(drafts, vectors, strict=True)), self.embedder.id)

    async def edit(
        self,
        memory_id: str,
        *,
        content: str | None = None,
        kind: str | None = None,
        project: str | None = None,
        tags: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        importance: float | None = None,
    ) -> str:
        """A new version of a memory. ``metadata`` keys are merged into the current ones.

        A new text is embedded here so the version carries its vector (other
        devices with the same embedder then reuse it instead of re-running
        the model).
        """
        current = await self.store.get(memory_id)
        if current.deleted:
            # Let the store word this one: it knows how to bring it back.
            return await self.store.edit(current.id, content=content)
        # Merged by the store inside its write transaction: a merge made here,
        # from a read before it, would drop a key another process adds meanwhile.
        merged = None if metadata is None else dict(metadata)
        if content is not None and content != current.content:
            check_content(content)  # before the model runs on it
            (vector,) = await self.embed([content])
            return await self.store.edit(
                current.id,
                content=content,
                kind=kind,
                project=project,
                tags=tags,
                merge_metadata=merged,
                importance=KEEP if importance is None else importance,
                embedding=vector,
                embedder=self.embedder.id,
            )
        return await self.store.edit(
            current.id,
            kind=kind,
            project=project,
            tags=tags,
            merge_metadata=merged,
            importance=KEEP if importance is None else importance,
        )

    async def forget(self, memory_id: str) -> str:
        return await self.store.forget(memory_id)

    # Index ----------------------------------------------------------------------------
    async def prepare_index(self, progress: Progress | None = None) -> list[str]:
        """Open the search index and bring it up to date with the store; returns warnings.

        Cheap when nothing changed (one query for the store's seq). A
        missing, damaged or foreign index is rebuilt, with a warning.
        """
        from peer.search.index import SearchIndex

        warnings: list[str] = []
        if self._index is None:
            index, opened = await SearchIndex.open(self.home.index_dir, self.embedder)
            index.save_threshold = self.index_save_threshold
            warnings.extend(opened)
            self._index = index
        await self._index.catch_up(self.store, self.embedder, progress)
        return warnings

    async def catch_up_index(self) -> str | None:
        """After versions arrived from elsewhere, bring an existing index up to date.

        Called after a sync, a bundle import, a restore or a plaintext import.
        Vectors that travelled with the versions are reused when they come
        from this device's embedder; the others are embedded here, in
        batches. An index that was never built is left alone: the first
        search builds it, and an import should not pay for that. Returns a
        warning for the person when the index could not be updated (the next
        search catches up), else None.
        """
        if not index_state(self.home.index_dir, 0).exists:
            return None
        try:
            await self.prepare_index()
        except PeerError as e:
            return f"the search index was not updated ({e.message}); the next search catches up"
        return None

    async def sync_with(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        progress: ProgressCallback | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
    ) -> SyncSummary:
        """``peer sync HOST[:PORT]``: one sync with the member there, then the index catch-up.

        An agent there that is syncing with this device right now answers
        BUSY; that takes a moment, so the sync is retried a few times.
        """
        warnings: list[str] = []

        async def reindex(summary: SyncSummary) -> None:
            warning = await self.catch_up_index()
            if warning:
                warnings.append(warning)

        syncer = Syncer(
            self.store,
            self.home.identity().signing_key,
            after_sync=reindex,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        for attempt in range(BUSY_ATTEMPTS):
            try:
                summary = await syncer.sync_with(host, port, progress=progress)
            except PeerBusy:
                if attempt == BUSY_ATTEMPTS - 1:
                    raise
                await trio.sleep(random.uniform(0.3, 1.0))
            else:
                return dataclasses.replace(summary, warnings=tuple(warnings)) if warnings else summary
        raise AssertionError("unreachable")

    async def _ready_index(self) -> SearchIndex:
        if self._index is None:
            await self.prepare_index()
        assert self._index is not None
        return self._index

    async def ready_index(self) -> SearchIndex:
        """The search index, opened and brought up to date (for features that query it directly)."""
        await self.prepare_index()
        assert self._index is not None
        return self._index

    @property
    def unsaved_index_changes(self) -> int:
        """Changes the open index holds that its files lack (0 when no index is open)."""
        return 0 if self._index is None else self._index.unsaved

    async def save_index(self) -> None:
        """Write the open index's files now if they lack changes (long-lived processes, when idle)."""
        index = self._index
        if index is not None and index.unsaved:
            await index.save()

    async def reindex(self, progress: Progress | None = None) -> ReindexResult:
        """Rebuild the index from the store's vectors (embedding only what has none)."""
        from peer.search.index import SearchIndex

        started = time.monotonic()
        if self._index is None:
            self._index, _ = await SearchIndex.open(self.home.index_dir, self.embedder)
        await self._index.rebuild(self.store, self.embedder, progress)
        return ReindexResult(len(self._index), time.monotonic() - started)

    # Search -----------------------------------------------------------------------------
    async def search(
        self,
        query: str,
        *,
        k: int = 10,
        project: str | None = None,
        kind: str | None = None,
        min_similarity: float | None = MIN_SIMILARITY,
        tag: str | None = None,
        since: float | None = None,
        calibrated: bool = True,
    ) -> list[SearchResult]:
        """Hybrid search: the query's nearest vectors and its keyword matches, fused (see :mod:`peer.search`).

        Only live winners are returned, filtered by project and kind. When
        filters drop most vector candidates, more are fetched (up to the
        whole index) so a selective filter still finds its k answers.
        Results the keywords did not find and whose similarity is below
        ``min_similarity`` are dropped (None keeps them all), so a query
        with no answer returns nothing. With ``calibrated`` (the default
        rule), keyword evidence counts in any form of the query's words and
        partial evidence lowers the similarity needed (see
        :func:`peer.search.fusion.relevant`); without, a hit needs every
        query word exactly or ``min_similarity`` (``peer search --min-score``).
        """
        if k <= 0 or not query.strip():
            return []

        def wanted_memory(memory: Memory) -> bool:
            # The filters `peer list` has, applied to both kinds of candidates.
            return (
                (project is None or memory.project == project)
                and (kind is None or memory.kind == kind)
                and (tag is None or tag in memory.tags)
                and (since is None or memory.updated_at >= since)
            )

        index = await self._ready_index()
        wanted = candidate_count(k)
        keyword: list[tuple[str, float]] = []
        failed: list[PeerError] = []

        async def keyword_search() -> None:
            try:
                keyword.extend(
                    await self.store.fts_search(keyword_query(query), limit=wanted, project=project, kind=kind)
                )
            except PeerError as e:
                failed.append(e)  # re-raised below as itself, not inside an exception group

        # The model runs in a worker thread and SQLite in aiosqlite's: the
        # keyword search costs nothing extra while the query is embedded.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keyword_search)
            vectors = await trio.to_thread.run_sync(self.embedder.embed, [query])
        if failed:
            raise failed[0]
        vector = vectors[0]

        semantic: list[tuple[str, float]] = []
        memories: dict[str, Memory] = {}
        fetch = wanted
        while True:
            hits = await index.query(vector, fetch)
            by_label = await self.store.memories_for_labels([label for label, _ in hits])
            semantic = []
            for label, similarity in hits:
                memory = by_label.get(label)
                if memory is None or not wanted_memory(memory):
                    continue
                memories[memory.id] = memory
                semantic.append((memory.id, similarity))
            if len(semantic) >= wanted or len(hits) < fetch:
                break
            fetch *= 4

        # Fuse the whole candidate lists, then drop the irrelevant: a cut
        # before the filter would lose relevant hits ranked below k.
        fused = fuse(semantic, keyword, limit=wanted if min_similarity is not None else k)
        missing = [h.memory_id for h in fused if h.memory_id not in memories]
        if missing:
            memories.update(await self.store.get_many(missing))
        results: list[SearchResult] = []
        for hit in fused:
            memory = memories.get(hit.memory_id)
            # A memory forgotten or changed by another process between the
            # two reads is dropped rather than shown stale.
            if memory is None or memory.deleted or not wanted_memory(memory):
                continue
            coverage = keyword_coverage(query, memory.content) if hit.keyword_match else 0.0
            evidence = stemmed_coverage(query, memory.content) if calibrated else None
            if not relevant(hit, min_similarity, coverage, evidence, known_words=bool(keyword)):
                continue
            results.append(SearchResult(hit, memory))
            if len(results) == k:
                break
        return results

    # Health -----------------------------------------------------------------------------
    async def stats(self) -> StatsReport:
        """``peer stats``: the store's counts plus where things live and the index's state."""
        store_stats = await self.store.stats()
        return StatsReport(
            store_stats, str(self.home.path), SCHEMA_VERSION, index_state(self.home.index_dir, store_stats.max_seq)
        )

    def _key_file_checks(self) -> list[Check]:
        checks: list[Check] = []
        home = self.home
        for path, most in (
            (home.path, 0o700),
            (home.device_key_path, 0o600),
            (home.kex_key_path, 0o600),
            (home.store_path, 0o600),
        ):
            try:
                mode = stat.S_IMODE(os.stat(path).st_mode)
            except OSError as e:
                checks.append(Check(f"permissions of {path.name}", False, f"cannot stat {path}: {e.strerror}"))
                continue
            loose = mode & ~most
            if loose & 0o077:
                checks.append(
                    Check(
                        f"permissions of {path.name}",
                        False,
                        f"{path} is readable or writable by others (mode {mode:o})",
                        f"chmod {most:o} {path}",
                    )
                )
            else:
                checks.append(Check(f"permissions of {path.name}", True, f"mode {mode:o}"))
        return checks

    async def doctor(self, *, repair: bool = False, progress: Progress | None = None) -> DoctorReport:
        """Check everything a user would want checked; with ``repair``, rebuild a bad index."""

        checks: list[Check] = []
        problems = await self.store.integrity_check()
        checks.append(
            Check("store integrity", not problems, "; ".join(problems) or "ok",
                  "restore the store from a backup, or sync a fresh store from another device" if problems else "")
        )
        checks.append(Check("schema", True, f"version {SCHEMA_VERSION}"))
        checks.append(await self._limits_check(repair))
        checks.append(await self._file_check(repair))

        try:
            loader = getattr(self.embedder, "load", None)
            if loader is not None:
                await trio.to_thread.run_sync(loader)
            checks.append(Check("embedding model", True, f"{self.embedder.id} (file hash verified)"))
        except PeerError as e:
            checks.append(Check("embedding model", False, e.message, "reinstall peer and its model package"))
            model_ok = False
        else:
            model_ok = True

        checks.extend(self._key_file_checks())
        checks.append(self._config_check())

        if model_ok:
            checks.append(await self._index_check(repair, progress))
        return DoctorReport(tuple(checks))

    def _config_check(self) -> Check:
        """config.toml as the agent will read it: a typo shows here, not when the agent starts under systemd."""
        from .config import load_config
        from .errors import ConfigError

        path = self.home.path / "config.toml"
        try:
            load_config(path)
        except ConfigError as e:
            return Check("config.toml", False, e.message, f"edit {path} (the keys are in docs/cli.md, `config.toml`)")
        return Check("config.toml", True, "valid" if path.exists() else "none (every setting at its default)")

    async def _file_check(self, repair: bool) -> Check:
        """Space the store file wastes (old 4 kB pages, many free pages); with ``repair``, compact it.

        Never a failure: the store works as it is, only bigger than it need be.
        """
        layout = await self.store.layout()

        def describe(layout: StoreLayout) -> str:
            return (
                f"{human_size(layout.file_bytes)}, {layout.page_size // 1024} kB pages,"
                f" {human_size(layout.free_bytes)} free"
            )

        if not layout.worth_compacting:
            return Check("store file", True, describe(layout))
        why = (
            "its pages, from before schema 4, are too small for its rows"
            if layout.page_size < PAGE_SIZE
            else "much of it is free pages"
        )
        if not repair:
            return Check(
                "store file",
                True,
                f"{describe(layout)}: {why}; `peer doctor --repair` compacts it to about"
                f" {human_size(layout.compacted_bytes)} (stop the agent and MCP servers first)",
            )
        try:
            compacted = await self.store.compact()
        except StoreError as e:
            return Check("store file", True, f"{describe(layout)}; not compacted: {e.message}")
        return Check(
            "store file",
            True,
            f"compacted from {human_size(layout.file_bytes)} to {describe(compacted)}",
        )

    async def _limits_check(self, repair: bool) -> Check:
        """Versions no member can read (written before every receive limit was enforced on write)."""
        oversized = await self.store.oversized_versions()
        if not oversized:
            return Check("versions within limits", True, "ok")
        if repair:
            removed = await self.store.repair_oversized()
            return Check(
                "versions within limits",
                True,
                f"removed {removed} version(s) no other device could read; their memories were written again"
                " within the limits (their metadata key peer_doctor_cut says what was cut)",
            )
        memory_id, version, why = oversized[0]
        return Check(
            "versions within limits",
            False,
            f"{len(oversized)} version(s) no other device can read, so sync, bundles and backups fail on them"
            f" (memory {memory_id[:8]}, version {version}: {why})",
            "run `peer doctor --repair`: it removes them and writes those memories again within the limits,"
            " keeping everything else",
        )

    async def _index_check(self, repair: bool, progress: Progress | None) -> Check:
        """The saved index against the store: readable, built by this embedder, not ahead, same size."""
        from peer.search.index import SearchIndex

        feed = self.store
        index, warnings = await SearchIndex.open(self.home.index_dir, self.embedder, full_check=True)
        self._index = index
        max_seq = await self.store.max_seq()
        state = index_state(self.home.index_dir, max_seq)
        problem = "; ".join(warnings)
        if not problem and index.watermark > max_seq:
            # The store went back in time (restored from a backup): the index
            # names versions the store does not hold.
            problem = f"the index reflects store change {index.watermark} but the store is at {max_seq}"
        if not problem and state.coverage is Coverage.CURRENT:
            live = await feed.count_live()
            if len(index) != live:
                problem = f"the index holds {len(index):,} vectors for {live:,} live memories"
        if not problem:
            if repair and state.coverage is not Coverage.CURRENT:
                await index.catch_up(feed, self.embedder, progress)
                state = index_state(self.home.index_dir, max_seq)
            return Check("search index", True, state.describe())
        if not repair:
            return Check("search index", False, problem, "run `peer doctor --repair` (or `peer reindex`)")
        await index.rebuild(feed, self.embedder, progress)
        return Check("search index", True, f"{problem}; rebuilt: {index_state(self.home.index_dir, max_seq).describe()}")

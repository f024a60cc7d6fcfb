"""The search index, fed by a fake store implementing IndexFeed.

Vectors come from HashEmbedder (deterministic, not semantic): each memory's
content is a few random words, so its own vector is its nearest neighbour.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

import peer.search.index as index_module
from peer.memory import IndexChange
from peer.search.embedder import HashEmbedder
from peer.search.index import IndexFeed, SearchIndex

DIM = 64


class FakeStore:
    """A change log in seq order; a label may appear many times (the last one counts)."""

    def __init__(self, embedder: HashEmbedder) -> None:
        self.embedder = embedder
        self.log: list[IndexChange] = []
        self.content: dict[int, str] = {}
        self.calls: list[tuple[str, int]] = []
        self.during_winners: list[tuple[int, bool]] = []  # changes made while live_winners runs

    def _seq(self) -> int:
        return self.log[-1].seq if self.log else 0

    def record(self, label: int, live: bool, *, carry: str = "own", seq: int | None = None) -> None:
        """Record that ``label`` is (not) live. ``carry``: own / none / other / nan embedding."""
        content = self.content.setdefault(label, f"w{label} " + " ".join(f"x{random.getrandbits(40)}" for _ in range(3)))
        embedder, embedding = self.embedder.id, b""
        if carry == "own":
            embedding = self.embedder.embed([content])[0].astype("<f4").tobytes()
        elif carry == "other":
            embedder, embedding = "some-other-model@1", np.ones(DIM, "<f4").tobytes()
        elif carry == "nan":
            embedding = np.full(DIM, np.nan, "<f4").tobytes()
        else:
            embedder = ""
        self.log.append(
            IndexChange(
                seq=self._seq() + 1 if seq is None else seq,
                label=label,
                memory_id=f"m{label}",
                live=live,
                content=content,
                embedder=embedder,
                embedding=embedding,
            )
        )

    def vector(self, label: int) -> np.ndarray:
        vector: np.ndarray = self.embedder.embed([self.content[label]])[0]
        return vector

    def live_labels(self) -> set[int]:
        state: dict[int, bool] = {}
        for c in self.log:
            state[c.label] = c.live
        return {label for label, live in state.items() if live}

    async def changes_since(self, seq: int, limit: int) -> list[IndexChange]:
        self.calls.append(("changes_since", seq))
        return [c for c in self.log if c.seq > seq][:limit]

    async def max_seq(self) -> int:
        return self._seq()

    async def count_live(self) -> int:
        return len(self.live_labels())

    async def live_winners(self, batch_size: int) -> AsyncIterator[list[IndexChange]]:
        self.calls.append(("live_winners", batch_size))
        latest: dict[int, IndexChange] = {}
        for c in self.log:
            latest[c.label] = c
        live = [c for c in latest.values() if c.live]
        for i in range(0, len(live), batch_size):
            yield live[i : i + batch_size]
            for label, is_live in self.during_winners:
                self.record(label, is_live)
            self.during_winners = []


def _fake_store_is_an_index_feed(store: FakeStore) -> IndexFeed:
    # No test: `make check` runs mypy on tests, which fails here if FakeStore stops being an IndexFeed.
    return store


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder(DIM)


@pytest.fixture
def store(embedder: HashEmbedder) -> FakeStore:
    random.seed(7)
    return FakeStore(embedder)


async def open_index(directory: Path, embedder: HashEmbedder) -> tuple[SearchIndex, list[str]]:
    return await SearchIndex.open(directory, embedder)


async def all_results(index: SearchIndex, vector: np.ndarray) -> list[tuple[int, float]]:
    return await index.query(vector, k=max(len(index), 1) + 5)


async def assert_matches_store(index: SearchIndex, store: FakeStore, labels: Iterable[int] | None = None) -> None:
    """Every live label is its own nearest neighbour; nothing else ever comes back."""
    live = store.live_labels()
    assert len(index) == len(live)
    for label in sorted(live) if labels is None else labels:
        results = await index.query(store.vector(label), k=5)
        assert results[0][0] == label
        assert results[0][1] == pytest.approx(1.0, abs=1e-5)
        assert {r[0] for r in results} <= live
    if live:
        everything = await all_results(index, store.vector(min(live)))
        assert {r[0] for r in everything} == live


async def test_add_query_remove(tmp_path: Path, embedder: HashEmbedder, store: FakeStore) -> None:
    index, warnings = await open_index(tmp_path / "index", embedder)
    assert warnings == []  # a new store: nothing to warn about
    for label in range(1, 21):
        store.record(label, True)
    result = await index.catch_up(store, embedder)
    assert result.added == 20 and result.watermark == 20
    await assert_matches_store(index, store)

    store.record(5, False)
    store.record(6, False)
    result = await index.catch_up(store, embedder)
    assert result.removed == 2
    assert 5 not in index and 6 not in index and 7 in index
    for gone in (5, 6):
        found = await all_results(index, store.vector(gone))
        assert gone not in {label for label, _ in found}
        assert len(found) == 18
    await assert_matches_store(index, store)


async def test_empty_index_and_bad_queries(tmp_path: Path, embedder: HashEmbedder, store: FakeStore) -> None:
    index, _ = await open_index(tmp_path / "index", embedder)
    await index.catch_up(store, embedder)
    assert await index.query(np.ones(DIM, np.float32), k=10) == []
    store.record(1, True)
    await index.catch_up(store, embedder)
    assert await index.query(store.vector(1), k=0) == []
    assert [label for label, _ in await index.query(store.vector(1), k=10)] == [1]
    with pytest.raises(ValueError):
        await index.query(np.ones(DIM + 1, np.float32), k=1)


async def test_superseded_and_deleted_labels_never_come_back(
    tmp_path: Path, embedder: HashEmbedder, store: FakeStore
) -> None:
    rng = random.Random(11)
    index, _ = await open_index(tmp_path / "index", embedder)
    next_label = 1
    memory_label: dict[int, int] = {}  # memory -> its current winner's label
    for round_ in range(6):
        for _ in range(60):
            memory = rng.randrange(40)
            old = memory_label.get(memory)
            action = rng.random()
            if old is not None and action < 0.2:
                store.record(old, False)  # forgotten (tombstone wins)
                del memory_label[memory]
            else:
                # A new version supersedes the old winner.
                if old is not None:
                    store.record(old, False)
                store.record(next_label, True)
                memory_label[memory] = next_label
                next_label += 1
        await index.catch_up(store, embedder)
        assert store.live_labels() == set(memory_label.values())
        await assert_matches_store(index, store)
        if round_ == 3:  # and the same holds after a save and reload
            index, warnings = await open_index(tmp_path / "index", embedder)
            assert warnings == []
            await assert_matches_store(index, store)


async def test_a_label_that_comes_back_live_is_found_again(
    tmp_path: Path, embedder: HashEmbedder, store: FakeStore
) -> None:
    index, _ = await open_index(tmp_path / "index", embedder)
    for label in (1, 2, 3):
        store.record(label, True)
    await index.catch_up(store, embedder)
    store.record(2, False)  # a concurrent delete wins for now
    await index.catch_up(store, embedder)
    assert 2 not in index
    # Reopen from disk: the deleted mark must survive the save.
    index, _ = await open_index(tmp_path / "index", embedder)
    assert 2 not in index and len(index) == 2
    store.record(2, True)  # ...and the edit wins after all
    result = await index.catch_up(store, embedder)
    assert result.added == 1
    await assert_matches_store(index, store)
    # Dead and alive again within one batch: the last change counts.
    store.record(3, False)
    store.record(3, True)
    store.record(1, True)
    store.record(1, False)
    await index.catch_up(store, embedder)
    assert 3 in index and 1 not in index
    await assert_matches_store(index, store)


async def test_grows_past_its_initial_capacity(
    tmp_path: Path, embedder: HashEmbedder, store: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_module, "INITIAL_CAPACITY", 100)
    monkeypatch.setattr(index_module, "BATCH", 70)  # many small add_items calls
    index, _ = await open_index(tmp_path / "index", embedder)
    for label in range(1, 1001):
        store.record(label, True)
    await index.catch_up(store, embedder)
    assert len(index) == 1000
    await assert_matches_store(index, store, labels=range(1, 1001, 37))
    index, _ = await open_index(tmp_path / "index", embedder)
    assert len(index) == 1000 and index.watermark == 1000
    for label in range(1001, 1301):  # and keeps growing after a reload
        store.record(label, True)
    await index.catch_up(store, embedder)
    assert len(index) == 1300
    await assert_matches_store(index, store, labels=range(1, 1301, 41))


async def test_save_and_load_keep_the_watermark(tmp_path: Path, embedder: HashEmbedder, store: FakeStore) -> None:
    index, _ = await open_index(tmp_path / "index", embedder)
    for label in range(1, 51):
        store.record(label, True)
    store.record(10, False)
    await index.catch_up(store, embedder)
    assert index.watermark == 51
    before = await index.query(store.vector(20), k=10)

    reopened, warnings = await open_index(tmp_path / "index", embedder)
    assert warnings == []
    assert not reopened.needs_rebuild
    assert reopened.watermark == 51
    assert len(reopened) == 49 and 10 not in reopened
    assert await reopened.query(store.vector(20), k=10) == before
    sidecar = json.loads((tmp_path / "index" / "index.json").read_text())
    assert sidecar["embedder"] == embedder.id and sidecar["dim"] == DIM and sidecar["watermark"] == 51
    # Nothing to do: no change is read twice, the store is only asked from 51.
    store.calls.clear()
    result = await reopened.catch_up(store, embedder)
    assert result.added == result.removed == 0 and not result.rebuilt
    assert store.calls == [("changes_since", 51)]


async def test_catch_up_applies_only_changes_after_the_watermark(
    tmp_path: Path, embedder: HashEmbedder, store: FakeStore
) -> None:
    index, _ = await open_index(tmp_path / "index", embedder)
    for label in range(1, 11):
        store.record(label, True)
    await index.catch_up(store, embedder)
    assert index.watermark == 10

    # A change the index has already seen (seq <= watermark) must not be re-read:
    # slip one into the log with an old seq, claiming label 3 was removed.
    store.log.insert(5, IndexChange(5, 3, "m3", False, store.content[3], "", b""))
    for label in range(11, 16):
        store.record(label, True)
    store.record(4, False)
    reopened, _ = await open_index(tmp_path / "index", embedder)
    store.calls.clear()
    result = await reopened.catch_up(store, embedder)
    assert store.calls[0] == ("changes_since", 10)
    assert (result.added, result.removed, result.watermark) == (5, 1, 16)
    assert 3 in reopened  # the old-seq change was not applied
    assert 4 not in reopened
    assert len(reopened) == 14


async def test_versions_without_a_usable_vector_are_embedded(
    tmp_path: Path, embedder: HashEmbedder, store: FakeStore
) -> None:
    index, _ = await open_index(tmp_path / "index", embedder)
    store.record(1, True, carry="own")
    store.record(2, True, carry="none")
    store.record(3, True, carry="other")  # made by another embedder: ignored, re-embedded
    store.record(4, True, carry="nan")  # damaged: re-embedded rather than poisoning the graph
    result = await index.catch_up(store, embedder)
    assert result.added == 4 and result.embedded == 3
    await assert_matches_store(index, store)


async def test_filtered_query_overfetches(tmp_path: Path, embedder: HashEmbedder, store: FakeStore) -> None:
    index, _ = await open_index(tmp_path / "index", embedder)
    for label in range(1, 401):
        store.record(label, True)
    await index.catch_up(store, embedder)
    seen: list[int] = []

    def only_multiples_of_50(label: int) -> bool:
        seen.append(label)
        return label % 50 == 0

    results = await index.query(store.vector(7), k=5, accept=only_multiples_of_50)
    assert len(results) == 5
    assert all(label % 50 == 0 for label, _ in results)
    assert [s for _, s in results] == sorted((s for _, s in results), reverse=True)
    # Only 8 labels pass: asking for more returns those 8 and nothing else.
    results = await index.query(store.vector(7), k=20, accept=only_multiples_of_50)
    assert sorted(label for label, _ in results) == list(range(50, 401, 50))


async def test_many_deletions_compact_the_graph(
    tmp_path: Path, embedder: HashEmbedder, store: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_module, "COMPACT_MIN_DELETED", 50)
    index, _ = await open_index(tmp_path / "index", embedder)
    for label in range(1, 201):
        store.record(label, True)
    await index.catch_up(store, embedder)
    for label in range(1, 151):
        store.record(label, False)
    result = await index.catch_up(store, embedder)
    assert result.removed == 150
    assert index.deleted_count == 0 and len(index) == 50
    await assert_matches_store(index, store)
    reopened, warnings = await open_index(tmp_path / "index", embedder)
    assert warnings == [] and len(reopened) == 50
    await assert_matches_store(reopened, store)


class NoLoadSpy:
    """Wraps hnswlib.Index and records every load_index call."""

    loads: list[str] = []

    def __init__(self, real: Any) -> None:
        self._real = real

    def load_index(self, path: str, *args: Any) -> None:
        NoLoadSpy.loads.append(path)
        self._real.load_index(path, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.mark.parametrize("damage", ["flip", "flip-keeping-mtime", "truncate", "sidecar", "no-sidecar", "deleted-file"])
async def test_damaged_index_is_rebuilt_not_loaded(
    tmp_path: Path, embedder: HashEmbedder, store: FakeStore, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    directory = tmp_path / "index"
    index, _ = await open_index(directory, embedder)
    for label in range(1, 301):
        store.record(label, True)
    store.record(9, False)
    await index.catch_up(store, embedder)

    graph = directory / "hnsw.bin"
    if damage == "flip":
        data = bytearray(graph.read_bytes())
        for at in range(0, len(data), 997):  # scattered, header included
            data[at] ^= 0xFF
        graph.write_bytes(bytes(data))
    elif damage == "flip-keeping-mtime":
        # Written behind the sidecar's back, then the modification time set back: the change time still moves.
        before = graph.stat()
        data = bytearray(graph.read_bytes())
        data[len(data) // 2] ^= 0x01
        graph.write_bytes(bytes(data))
        os.utime(graph, ns=(before.st_atime_ns, before.st_mtime_ns))
    elif damage == "truncate":
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 3])
    elif damage == "sidecar":
        (directory / "index.json").write_text("{not json")
    elif damage == "no-sidecar":
        (directory / "index.json").unlink()
    else:
        (directory / "deleted.i64").write_bytes(b"\x00" * 8)

    real_hnsw = index_module._hnsw
    NoLoadSpy.loads = []
    monkeypatch.setattr(index_module, "_hnsw", lambda dim: NoLoadSpy(real_hnsw(dim)))
    index, warnings = await open_index(directory, embedder)
    assert NoLoadSpy.loads == []  # the damaged file never reached hnswlib
    assert len(warnings) == 1 and "rebuilding" in warnings[0] and str(directory) in warnings[0]
    expected_reason = {
        "flip": "checksum",
        "flip-keeping-mtime": "checksum",
        "truncate": "size",
        "sidecar": "unreadable",
        "no-sidecar": "missing",
        "deleted-file": "deleted.i64",
    }[damage]
    assert expected_reason in warnings[0]
    assert index.needs_rebuild and len(index) == 0

    store.calls.clear()
    result = await index.catch_up(store, embedder)
    assert result.rebuilt and ("live_winners", index_module.BATCH) in store.calls
    await assert_matches_store(index, store)
    # The rebuilt index was saved and now loads cleanly (through hnswlib).
    index, warnings = await open_index(directory, embedder)
    assert warnings == [] and NoLoadSpy.loads == [str(graph)]
    assert index.watermark == 301
    await assert_matches_store(index, store)


async def test_index_of_another_embedder_is_rebuilt(tmp_path: Path, store: FakeStore) -> None:
    directory = tmp_path / "index"
    old = HashEmbedder(32)
    old_store = FakeStore(old)
    for label in range(1, 21):
        old_store.record(label, True)
    index, _ = await SearchIndex.open(directory, old)
    await index.catch_up(old_store, old)

    new = HashEmbedder(DIM)  # another id and another dimension
    for label in range(1, 21):
        store.record(label, True, carry="other")  # vectors by another model: embedded again
    index, warnings = await SearchIndex.open(directory, new)
    assert len(warnings) == 1 and "hash-32" in warnings[0] and "hash-64" in warnings[0]
    result = await index.catch_up(store, new)
    assert result.rebuilt and result.embedded == 20
    await assert_matches_store(index, store)
    with pytest.raises(ValueError):
        await index.catch_up(store, old)  # an index only takes vectors of its own embedder


async def test_rebuild_picks_up_changes_made_while_it_runs(
    tmp_path: Path, embedder: HashEmbedder, store: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_module, "BATCH", 10)
    for label in range(1, 41):
        store.record(label, True)
    # While the first batch of winners is being read, one winner is
    # superseded by a new version and another memory is added.
    store.during_winners = [(35, False), (41, True), (42, True)]
    index, _ = await open_index(tmp_path / "index", embedder)
    progress: list[tuple[int, int]] = []
    result = await index.rebuild(store, embedder, progress=lambda done, total: progress.append((done, total)))
    assert result.rebuilt
    assert index.watermark == store._seq()
    assert 35 not in index and 41 in index and 42 in index
    await assert_matches_store(index, store)
    assert progress and progress[-1][0] == progress[-1][1] == 40
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)


async def test_progress_reaches_its_total(tmp_path: Path, embedder: HashEmbedder, store: FakeStore) -> None:
    index, _ = await open_index(tmp_path / "index", embedder)
    await index.catch_up(store, embedder)
    for label in range(1, 301):
        store.record(label, True, carry="none")
    calls: list[tuple[int, int]] = []
    await index.catch_up(store, embedder, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (300, 300)
    assert all(0 <= d <= t for d, t in calls)


async def test_index_ahead_of_its_store_is_rebuilt(tmp_path: Path, embedder: HashEmbedder, store: FakeStore) -> None:
    index, _ = await open_index(tmp_path / "index", embedder)
    for label in range(1, 31):
        store.record(label, True)
    await index.catch_up(store, embedder)
    # The store is restored from an older backup: it has only its first 10 changes.
    store.log = store.log[:10]
    result = await index.catch_up(store, embedder)
    assert result.rebuilt and result.watermark == 10
    await assert_matches_store(index, store)


async def test_an_untouched_graph_is_not_hashed_again_unless_asked(
    tmp_path: Path, embedder: HashEmbedder, store: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "index"
    index, _ = await open_index(directory, embedder)
    for label in range(1, 101):
        store.record(label, True)
    await index.catch_up(store, embedder)
    hashed: list[str] = []
    real = index_module._sha256_file

    def counting(path: Path) -> tuple[str, int]:
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(index_module, "_sha256_file", counting)

    index, warnings = await open_index(directory, embedder)
    assert warnings == [] and len(index) == 100
    assert "hnsw.bin" not in hashed  # the sidecar vouches for the very file it hashed when saving

    hashed.clear()
    index, warnings = await index_module.SearchIndex.open(directory, embedder, full_check=True)
    assert warnings == [] and len(index) == 100
    assert "hnsw.bin" in hashed  # `peer doctor` checks every byte


async def test_a_second_build_waits_for_the_first_and_uses_what_it_saved(
    tmp_path: Path, embedder: HashEmbedder, store: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent builds a new device's index; a search in another process meanwhile must not build a second."""
    for label in range(1, 31):
        store.record(label, True)
    directory = tmp_path / "index"
    first, _ = await open_index(directory, embedder)  # e.g. the agent's
    second, _ = await open_index(directory, embedder)  # e.g. a `peer mcp` server's: its own lock file descriptor
    assert first.needs_rebuild and second.needs_rebuild
    adds: list[int] = []
    building = threading.Event()
    release = threading.Event()
    real_add = index_module._Graph.add

    def slow_add(graph: Any, labels: Any, vectors: Any) -> None:
        adds.append(len(labels))
        building.set()
        assert release.wait(30)
        real_add(graph, labels, vectors)

    monkeypatch.setattr(index_module._Graph, "add", slow_add)
    results: dict[str, Any] = {}

    async def build(name: str, index: SearchIndex) -> None:
        results[name] = await index.catch_up(store, embedder)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(build, "first", first)
            await trio.to_thread.run_sync(building.wait)
            nursery.start_soon(build, "second", second)
            await trio.sleep(5 * index_module.BUILD_POLL_S)
            assert "second" not in results  # waiting for the first build, not building
            store.record(31, True)  # a change during the build: the first catches it up before it saves
            release.set()
    assert results["first"].rebuilt and not results["second"].rebuilt
    assert adds == [30, 1]  # every vector added by the first: the second loaded what it saved
    assert results["second"].added == 0
    assert second.watermark == first.watermark == store._seq() and not second.needs_rebuild
    await assert_matches_store(second, store)

    # Later changes are caught up by each from there, as usual.
    store.record(32, True)
    assert (await second.catch_up(store, embedder)).added == 1
    await assert_matches_store(second, store)


async def test_an_explicit_rebuild_builds_even_when_another_saved_meanwhile(
    tmp_path: Path, embedder: HashEmbedder, store: FakeStore
) -> None:
    """`peer reindex` (and doctor's repair) must build anew, not take the saved files it is meant to replace."""
    for label in range(1, 11):
        store.record(label, True)
    directory = tmp_path / "index"
    first, _ = await open_index(directory, embedder)
    second, _ = await open_index(directory, embedder)
    await first.catch_up(store, embedder)
    result = await second.rebuild(store, embedder)
    assert result.rebuilt and result.added == 10


async def test_a_builder_that_stopped_is_not_waited_for(
    tmp_path: Path, embedder: HashEmbedder, store: FakeStore
) -> None:
    """A build lock held by a process that makes no progress (stopped, say) must not stop searches here."""
    for label in range(1, 11):
        store.record(label, True)
    directory = tmp_path / "index"
    directory.mkdir()
    lock = directory / index_module.BUILD_LOCK_FILE
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held, as by a builder in another process...
        stale = time.time() - 2 * index_module.BUILD_STALE_S
        os.utime(lock, (stale, stale))  # ...that has not moved for a while
        index, _ = await open_index(directory, embedder)
        with trio.fail_after(10):
            result = await index.catch_up(store, embedder)
        assert result.rebuilt
        await assert_matches_store(index, store)
    finally:
        os.close(fd)

"""Issue 11, items 1, 4 and 5: the search index never lies, long imports lock nobody out, no key is lost.

Each test guards one finding of ``hostile-test-report.md`` (named in its
docstring) and failed on the code before the fix.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import resource
import signal
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

import peer.bundles as bundles
import peer.store.store as store_module
import protocol.records
from peer.bundles import export_bundle, import_bundle
from peer.device import Device
from peer.home import Home
from peer.memory import Draft
from peer.search.embedder import HashEmbedder
from peer.search.index import _Graph, _load
from peer.search.sidecar import Coverage, index_state
from peer.store import CheckedBatch, Store
from protocol import StoreError, VersionVector
from tests.support.cli_runner import peer
from tests.support.groups import admit, found
from tests.support.stores import sync

HASH = HashEmbedder(384)


@pytest.fixture
async def abc(aio_loop: object, tmp_path: Path) -> AsyncIterator[tuple[Home, Home, Home]]:
    """A founds the group and admits B and C (stores closed; each test opens what it needs)."""
    a = await found(tmp_path / "a", "laptop")
    b = await admit(a, tmp_path / "b", "desktop")
    c = await admit(a, tmp_path / "c", "phone")
    yield a, b, c


# Item 4 (hostile B7): a short graph write is never vouched for --------------------------------


def _save_under_file_size_limit(directory: str, limit: int, out: multiprocessing.SimpleQueue[str]) -> None:
    """Save a 300-element graph while no file may grow past ``limit`` bytes: a full disk, for hnswlib."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    graph = _Graph(HASH.dim)
    graph.add(np.arange(300, dtype=np.uint64), np.random.default_rng(1).random((300, HASH.dim), dtype=np.float32))
    try:
        graph.save(Path(directory), {"format": 1, "embedder": HASH.id, "dim": HASH.dim, "watermark": 300})
    except OSError as e:
        out.put(f"refused: {e}")
        return
    out.put("saved")


def test_a_graph_written_short_is_refused_and_the_previous_save_stays(tmp_path: Path) -> None:
    """B7: hnswlib does not report a short write; peer hashed the short file and wrote a sidecar vouching for it."""
    directory = tmp_path / "index"
    first = _Graph(HASH.dim)
    first.add(np.arange(20, dtype=np.uint64), np.random.default_rng(0).random((20, HASH.dim), dtype=np.float32))
    first.save(directory, {"format": 1, "embedder": HASH.id, "dim": HASH.dim, "watermark": 20})
    before = {p.name: p.read_bytes() for p in directory.iterdir()}

    # Room for the small files and the old graph, not for the new one (about 500 kB).
    context = multiprocessing.get_context("fork")
    out: multiprocessing.SimpleQueue[str] = context.SimpleQueue()
    child = context.Process(target=_save_under_file_size_limit, args=(str(directory), 200_000, out))
    child.start()
    child.join(60)
    outcome = out.get()
    print(outcome)
    assert outcome.startswith("refused:") and "not written whole" in outcome
    # Nothing vouches for a partial file: the previous save is intact and loads.
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    graph, watermark = _load(directory, HASH.id, HASH.dim, full_check=True)
    assert (len(graph.present), watermark) == (20, 20)


async def test_doctor_and_stats_see_a_graph_its_sidecar_vouches_for_but_that_is_not_whole(
    aio_loop: object, tmp_path: Path
) -> None:
    """B7: `peer stats` counted 901 vectors for a 0-byte graph, and doctor was left to hnswlib's loader."""
    home = Home(tmp_path / "h")
    await home.init("laptop")
    async with Device(home, await home.open_store(), embedder=HASH) as device:
        await device.add([Draft(f"memory number {i}") for i in range(50)])
        await device.prepare_index()
        assert (await device.stats()).index.coverage is Coverage.CURRENT
    graph = home.index_dir / "hnsw.bin"
    for data in (graph.read_bytes()[:-500], b""):
        # What an older peer left after a full disk: a short file and a sidecar with its checksum.
        graph.write_bytes(data)
        sidecar = json.loads((home.index_dir / "index.json").read_bytes())
        sidecar["files"]["hnsw.bin"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (home.index_dir / "index.json").write_text(json.dumps(sidecar))
        assert index_state(home.index_dir, 50).coverage is Coverage.DAMAGED
        async with Device(home, await home.open_store(), embedder=HASH) as device:
            assert (await device.stats()).index.coverage is Coverage.DAMAGED
            report = await device.doctor()
            check = next(c for c in report.checks if c.name == "search index")
            assert not check.ok and "not whole" in check.detail, check.detail
            repaired = await device.doctor(repair=True)
            assert next(c for c in repaired.checks if c.name == "search index").ok
            assert (await device.doctor()).healthy
            assert len(await device.search("memory number 7", k=3)) == 3


def _small_files_only() -> None:
    """In the child, before exec: no file may grow past 50 kB (what a full disk does to hnswlib's writes)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal; inherited across exec
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, hard))


def test_a_search_on_a_full_disk_answers_and_leaves_the_index_whole(tmp_path: Path) -> None:
    """B7: on a full disk the search failed (rc 1), or saved a short graph that every later command rebuilt."""
    import subprocess

    from tests.support.cli_runner import PEER, env

    home = tmp_path / "h"
    assert peer(home, "init", "--name", "laptop").returncode == 0
    lines = "".join(f"note {i}: the quarterly report draft number {i} is due on friday\n" for i in range(60))
    assert peer(home, "add", "--file", "-", input=lines).returncode == 0
    assert peer(home, "search", "quarterly report").returncode == 0  # builds and saves the index (about 100 kB)
    more = "".join(f"later note {i}: the budget review meeting moved to room {i}\n" for i in range(20))
    assert peer(home, "add", "--file", "-", input=more).returncode == 0
    saved = (home / "index" / "index.json").read_bytes()

    done = subprocess.run(
        [*PEER, "--home", str(home), "--json", "search", "budget review meeting"],
        capture_output=True,
        text=True,
        env=env(),
        timeout=300,
        preexec_fn=_small_files_only,
    )
    assert done.returncode == 0, done.stderr
    assert any("budget review" in hit["content"] for hit in json.loads(done.stdout)), done.stdout
    # The last complete save is still what is on disk, and it is whole.
    assert (home / "index" / "index.json").read_bytes() == saved
    assert not [p.name for p in (home / "index").iterdir() if p.name.endswith(".tmp")]
    doctor = peer(home, "doctor")
    assert doctor.returncode == 0, doctor.stdout


# Item 4 (hostile B6): labels are never reused after a revocation drops versions ---------------


async def test_a_dropped_version_never_lends_its_label_to_a_new_memory(abc: tuple[Home, Home, Home]) -> None:
    """B6: the row id of a dropped version was handed out again; the new memory inherited its vector.

    Also: the store's change number went back after the drop (doctor then said
    "the index is ahead of the store"), and doctor said ok over the reused label.
    """
    a_home, b_home, c_home = abc
    async with (
        await a_home.open_store() as a,
        await c_home.open_store() as c,
        Device(b_home, await b_home.open_store(), embedder=HASH) as device,
    ):
        b = device.store
        await device.add([Draft("the release checklist lives in the wiki")])
        await device.prepare_index()
        await b.apply_membership(a.membership.records())  # B learns of C
        # A revokes C; B receives C's later memory before it hears of that.
        await a.revoke(c.device_id)
        await c.add_many(
            [(Draft("zebras and giraffes graze on the savanna"), HASH.embed(["zebras"])[0].tobytes())], HASH.id
        )
        late = [v async for batch in c.missing_for(await b.vector()) for v in batch]
        assert (await b.apply(late)).added == 1
        await device.prepare_index()
        assert await b.count_live() == 2 and len(await device.ready_index()) == 2
        seq_before = await b.max_seq()
        await b.apply_membership(a.membership.records())  # the sync that brings the revocation drops it
        assert await b.max_seq() >= seq_before  # the change number never goes back
        assert await b.count_live() == 1

        # Doctor names the real problem: a vector for a memory that is gone, not "ahead of the store".
        check = next(c for c in (await device.doctor()).checks if c.name == "search index")
        assert not check.ok and "2 vectors for 1 live memories" in check.detail, check.detail

        (cafeteria,) = await device.add([Draft("the cafeteria opens at nine and serves breakfast until eleven")])
        labels = [int(r[0]) for r in await b._db.fetchall("SELECT id FROM versions ORDER BY id")]
        assert labels[-1] > max(labels[:-1]) + 1  # the dropped label was skipped, not handed out again

        # The next catch-up with nothing new rebuilds from the counts alone; search is right again.
        index = await device.ready_index()
        await index.catch_up(b)
        assert len(index) == await b.count_live() == 2
        hits = await device.search("cafeteria breakfast", k=1)
        assert [h.memory.id for h in hits] == [cafeteria]
        assert (await device.doctor()).healthy


# Item 5 (hostile B10): concurrent `edit --meta` never drops a key -----------------------------


async def test_concurrent_metadata_merges_keep_both_keys(aio_loop: object, tmp_path: Path) -> None:
    """B10: the merge was made from a read taken before the write transaction; one key was lost.

    Two devices on one home (two SQLite connections on one file, as two
    `peer edit --meta` processes have) edit one memory; the second edit lands
    between the first one's read and its write.
    """
    home = Home(tmp_path / "h")
    await home.init("laptop")
    async with (
        Device(home, await home.open_store(), embedder=HASH) as first,
        Device(home, await home.open_store(), embedder=HASH) as second,
    ):
        (memory_id,) = await first.add([Draft("a memory", metadata={"base": 0})])
        real_get = first.store.get

        async def get_then_let_the_other_edit(memory: str) -> Any:
            current = await real_get(memory)
            await second.edit(memory_id, metadata={"b": 2})
            return current

        first.store.get = get_then_let_the_other_edit  # type: ignore[method-assign,assignment]
        await first.edit(memory_id, metadata={"a": 1})
        first.store.get = real_get  # type: ignore[method-assign]
        assert (await first.store.get(memory_id)).metadata == {"base": 0, "a": 1, "b": 2}
        assert await first.store.conflicts() == []


def test_concurrent_edit_meta_processes_keep_every_key(tmp_path: Path) -> None:
    """B10 through the CLI: rounds of two `peer edit --meta` processes at once on one home."""
    import subprocess

    from tests.support.cli_runner import PEER, env

    home = tmp_path / "h"
    assert peer(home, "init", "--name", "laptop").returncode == 0
    memory_id = json.loads(peer(home, "--json", "add", "a memory edited from two shells").stdout)["id"]
    expected: dict[str, int] = {}
    for round_ in range(4):
        runs = [
            subprocess.Popen(
                [*PEER, "--home", str(home), "edit", memory_id, "--meta", f"{side}{round_}={n}"],
                env=env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for side, n in (("a", 1), ("b", 2))
        ]
        for run in runs:
            _, err = run.communicate(timeout=120)
            assert run.returncode == 0, err
        expected.update({f"a{round_}": 1, f"b{round_}": 2})
    shown = json.loads(peer(home, "--json", "show", memory_id).stdout)
    assert shown["metadata"] == expected


# Item 5 (hostile B9): a long import locks nobody out -----------------------------------------


def _begin_immediate_at_once(home: Home) -> bool:
    """Whether another connection can start a write this instant (busy timeout 0)."""
    other = sqlite3.connect(home.store_path, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:  # database is locked
        return False
    finally:
        other.close()


@pytest.mark.parametrize("held", [True, False], ids=["opened-versions-held", "opened-versions-spilled"])
async def test_a_bundle_import_verifies_outside_the_write_lock_and_writes_in_short_transactions(
    abc: tuple[Home, Home, Home], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held: bool
) -> None:
    """B9: every version was verified and decrypted inside ONE write transaction held for the whole import.

    Each time the import opens a version, and after each batch it writes,
    another connection tries to start a write at once (busy timeout 0): it
    must always get the lock, which is what lets `peer add` and the agent's
    syncs go on during a long import. Before the fix not one got through.
    """
    a_home, b_home, _ = abc
    async with await a_home.open_store() as a:
        await a.add_many([(Draft(f"memory {i}"), None) for i in range(1200)])
        await export_bundle(a, a_home.identity().signing_key, tmp_path / "big.bundle", device="desktop")
    opening: list[bool] = []
    writing: list[bool] = []

    probing = threading.Lock()  # batches are checked in two threads: one probe at a time, or they lock each other out

    def another_writer_gets_in() -> bool:
        with probing:
            return _begin_immediate_at_once(b_home)

    # Versions are opened one way when checked in this process and another when a
    # helper process checks their signatures (peer.signatures): probe at both.
    real_open_version = store_module.open_version  # type: ignore[attr-defined]
    real_unseal_version = store_module.unseal_version  # type: ignore[attr-defined]

    def open_version_while_another_writes(*args: Any, **kwargs: Any) -> Any:
        opening.append(another_writer_gets_in())
        return real_open_version(*args, **kwargs)

    def unseal_version_while_another_writes(*args: Any, **kwargs: Any) -> Any:
        opening.append(another_writer_gets_in())
        return real_unseal_version(*args, **kwargs)

    real_store_checked = Store.store_checked

    async def store_checked_then_another_writes(self: Store, batch: CheckedBatch, **kwargs: Any) -> Any:
        result = await real_store_checked(self, batch, **kwargs)
        writing.append(await trio.to_thread.run_sync(another_writer_gets_in))
        return result

    monkeypatch.setattr(store_module, "open_version", open_version_while_another_writes)
    monkeypatch.setattr(store_module, "unseal_version", unseal_version_while_another_writes)
    monkeypatch.setattr(Store, "store_checked", store_checked_then_another_writes)
    monkeypatch.setattr(bundles, "APPLY_BATCH", 200)
    monkeypatch.setattr(bundles, "BULK_WRITE_VERSIONS", 200)  # a transaction a batch: six chances to get in
    if not held:
        # A bundle too big to hold its opened versions in memory: they wait in a temporary file.
        monkeypatch.setattr(bundles, "KEEP_CHECKED_BYTES", 0)
    async with await b_home.open_store() as b:
        result = await import_bundle(b, tmp_path / "big.bundle")
        assert result.added == 1200
        assert len(await b.list(limit=2000)) == 1200
    # Every version opened once, before anything was written, and never inside a write transaction.
    assert len(opening) == 1200 and all(opening), f"{opening.count(False)} of {len(opening)} opens locked others out"
    assert len(writing) >= 6 and all(writing), f"{writing.count(False)} of {len(writing)} batches locked others out"


async def test_a_bad_version_late_in_a_big_bundle_changes_nothing(
    abc: tuple[Home, Home, Home], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Short transactions must not cost atomicity: every version is checked before the first write."""
    import uuid

    from protocol import Dot, MemoryBody, VersionHeader, seal
    from protocol.bundle import BundleWriter
    from protocol.errors import PeerError

    a_home, b_home, c_home = abc
    identity = a_home.identity()
    async with await a_home.open_store() as a:
        await a.add_many([(Draft(f"good {i}"), None) for i in range(50)])
        good = [v for batch in [b async for b in a.missing_for(VersionVector())] for v in batch]
        header = VersionHeader(
            group_id=a.group_id, epoch=0, memory_id=str(uuid.uuid4()), dot=Dot(a.replica_id, 2**61), context=(), hlc=1
        )
        body = MemoryBody(content="sealed under a wrong key", kind="note", created_at=1.0, updated_at=1.0)
        forged = seal(header, body, signing_key=identity.signing_key, group_key=os.urandom(32))
        writer = BundleWriter(
            signing_key=identity.signing_key, group_id=a.group_id, sender_vector=await a.vector(), created_ms=1
        )
        out = writer.header() + b"".join(writer.add_member_record(r) for r in a.membership.records())
        out += b"".join(writer.add_version(v) for v in [*good, forged]) + writer.finish()
    (tmp_path / "late.bundle").write_bytes(out)
    monkeypatch.setattr(bundles, "APPLY_BATCH", 10)
    monkeypatch.setattr(bundles, "KEEP_CHECKED_BYTES", 0)
    async with await b_home.open_store() as b:
        with pytest.raises(PeerError, match="nothing was imported"):
            await import_bundle(b, tmp_path / "late.bundle")
        assert await b.count_live() == 0
        assert not b.membership.is_member(c_home.identity().device_id)  # C's record, carried by the bundle


async def test_peer_add_and_a_sync_succeed_while_20000_versions_import(
    abc: tuple[Home, Home, Home], tmp_path: Path
) -> None:
    """B9 acceptance: a real `peer add` process and a sync into the same store, both during a big import."""
    a_home, b_home, c_home = abc
    async with await a_home.open_store() as a:
        for start in range(0, 20_000, 5000):
            await a.add_many([(Draft(f"imported memory {i}"), None) for i in range(start, start + 5000)])
        await export_bundle(a, a_home.identity().signing_key, tmp_path / "big.bundle", device="desktop")
    async with await c_home.open_store() as c:
        await c.add_many([(Draft(f"from the phone {i}"), None) for i in range(300)])

    started = trio.Event()
    done: dict[str, Any] = {}

    def progress(stage: str, at: int, total: int) -> None:
        if stage == "applying":
            started.set()

    async def importer() -> None:
        async with await b_home.open_store() as b:
            done["import"] = await import_bundle(b, tmp_path / "big.bundle", progress=progress)

    async def add_process() -> None:
        await started.wait()
        done["add"] = await trio.to_thread.run_sync(
            lambda: peer(b_home.path, "--json", "add", "written while a bundle imports")
        )

    async def syncing() -> None:
        await started.wait()
        async with await b_home.open_store() as b, await c_home.open_store() as c:
            await sync(c, b)
            done["synced"] = await b.count_live()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(importer)
        nursery.start_soon(add_process)
        nursery.start_soon(syncing)
    assert done["add"].returncode == 0, done["add"].stderr
    assert done["import"].added == 20_000
    async with await b_home.open_store() as b:
        assert await b.count_live() == 20_000 + 300 + 1
        assert (await b.get(json.loads(done["add"].stdout)["id"])).content == "written while a bundle imports"


async def test_a_write_failing_part_way_says_what_was_kept_and_the_rest_follows(
    abc: tuple[Home, Home, Home], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B9: with short transactions a failure part way keeps verified batches; the error must say so."""
    a_home, b_home, _ = abc
    async with await a_home.open_store() as a:
        await a.add_many([(Draft(f"memory {i}"), None) for i in range(1000)])
        await export_bundle(a, a_home.identity().signing_key, tmp_path / "big.bundle", device="desktop")
    real_store_checked = Store.store_checked
    calls = 0

    async def full_disk_on_the_third_batch(self: Store, batch: CheckedBatch, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise StoreError(f"the disk holding {self.path} is full; free some space and try again")
        return await real_store_checked(self, batch, **kwargs)

    monkeypatch.setattr(bundles, "APPLY_BATCH", 200)
    monkeypatch.setattr(bundles, "BULK_WRITE_VERSIONS", 200)  # a transaction a batch
    async with await b_home.open_store() as b:
        with monkeypatch.context() as m:
            m.setattr(Store, "store_checked", full_disk_on_the_third_batch)
            with pytest.raises(bundles.PartlyImported) as failed:
                await import_bundle(b, tmp_path / "big.bundle")
        print(failed.value.message)
        assert "is full" in failed.value.message
        assert "400 new versions were imported before that and are kept" in failed.value.message
        assert await b.count_live() == 400
        again = await import_bundle(b, tmp_path / "big.bundle")
        assert (again.added, again.duplicates, await b.count_live()) == (600, 400, 1000)
        assert again.vector_merged


# Item 1 (hostile B1): a store already holding an unreadable version is repaired by one command --


async def test_doctor_reports_and_repairs_a_version_written_before_the_limits(
    abc: tuple[Home, Home, Home], monkeypatch: pytest.MonkeyPatch
) -> None:
    """B1: doctor said healthy about a version no member can read (every sync then failed), and nothing fixed it."""
    a_home, b_home, _ = abc
    async with await a_home.open_store() as a:
        kept = await a.add(Draft("an ordinary memory", tags=("keep",)))
        # Written as peer did before the limits were enforced on write.
        with monkeypatch.context() as m:
            m.setattr(protocol.records, "_check_lengths", lambda body: None)
            m.setattr(protocol.records, "check_body_size", lambda body, reserve=0: None)
            poisoned = await a.add(Draft("a memory with a long tag", tags=("ok", "x" * 70_000)))
            long_project = await a.add(Draft("a memory filed under a long project", project="p" * 70_000))
        async with await b_home.open_store() as b:
            with pytest.raises(Exception, match="limit"):
                await sync(a, b)  # what every member saw: this device's syncs failed for good

    done = peer(a_home.path, "doctor")
    assert done.returncode == 1, done.stdout
    assert "2 version(s) no other device can read" in done.stdout and "--repair" in done.stdout, done.stdout
    report = json.loads(peer(a_home.path, "--json", "doctor").stdout)
    limits = next(c for c in report["checks"] if c["name"] == "versions within limits")
    assert report["healthy"] is False and limits["ok"] is False and "doctor --repair" in limits["fix"]

    repaired = json.loads(peer(a_home.path, "--json", "doctor", "--repair").stdout)
    limits = next(c for c in repaired["checks"] if c["name"] == "versions within limits")
    assert limits["ok"] and "removed 2 version(s)" in limits["detail"], limits
    assert peer(a_home.path, "doctor").returncode == 0

    async with await a_home.open_store() as a, await b_home.open_store() as b:
        await sync(a, b)
        for store in (a, b):
            memory = await store.get(poisoned)
            assert (memory.content, memory.tags) == ("a memory with a long tag", ("ok",))
            assert "tags over 65,536 bytes left out" in memory.metadata["peer_doctor_cut"]
            cut = await store.get(long_project)
            assert cut.project is None and "project name over 65,536 bytes left out" in cut.metadata["peer_doctor_cut"]
            assert (await store.get(kept)).tags == ("keep",)
            assert await store.count_live() == 3


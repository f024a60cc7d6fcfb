"""The store: local writes, reads, merging received versions, schema, bad files."""

from __future__ import annotations

import ctypes
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import peer.store.rows as rows_module
import peer.store.schema as schema_module
from peer.errors import NotAMember, StoreError, TrustError, WrongGroup
from peer.home import Home
from peer.memory import Draft
from peer.store import CheckedBatch, Store
from peer.store.store import BULK_CACHE_KIB, release_freed_memory
from protocol import (
    Dot,
    Membership,
    MemoryBody,
    SealedVersion,
    VersionHeader,
    VersionVector,
    device_id_for,
    raw_public_key,
    seal,
)
from tests.support.stores import FakeClock, make_pair, snapshot, sync, sync_one_way


@pytest.fixture
async def pair(aio_loop: object, tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    a, b = await make_pair(tmp_path)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


@pytest.fixture
async def store(pair: tuple[Store, Store]) -> Store:
    return pair[0]


# Local writes and reads ------------------------------------------------------------


async def test_add_get_list(store: Store) -> None:
    first = await store.add(Draft("the build uses make", kind="fact", project="peer", tags=("build", "make")))
    second = await store.add(Draft("prefer trio over asyncio", kind="preference", project="peer"))
    third = await store.add(Draft("lunch is at noon", tags=("life",), metadata={"source": "chat"}, importance=0.5))

    memory = await store.get(first[:8])
    assert memory.id == first
    assert memory.content == "the build uses make"
    assert memory.kind == "fact" and memory.project == "peer" and memory.tags == ("build", "make")
    assert memory.siblings == 0 and not memory.deleted
    assert (await store.get(third)).metadata == {"source": "chat"}
    assert (await store.get(third)).importance == 0.5

    assert [m.id for m in await store.list()] == [third, second, first]  # newest first
    assert {m.id for m in await store.list(project="peer")} == {first, second}
    assert [m.id for m in await store.list(kind="preference")] == [second]
    assert [m.id for m in await store.list(tag="life")] == [third]
    assert [m.id for m in await store.list(limit=1)] == [third]
    since = (await store.get(second)).updated_at
    assert {m.id for m in await store.list(since=since)} == {second, third}
    got = await store.get_many([first, third, "00000000-0000-0000-0000-000000000000"])
    assert set(got) == {first, third}


async def test_add_many_keeps_given_ids_and_refuses_duplicates(store: Store) -> None:
    given = "12345678-1234-5678-1234-567812345678"
    ids = await store.add_many([(Draft("one", id=given), None), (Draft("two"), None)])
    assert ids[0] == given and len(ids) == 2
    with pytest.raises(StoreError, match="already exists"):
        await store.add(Draft("again", id=given))
    assert (await store.stats()).memories == 2


async def test_bad_drafts_are_refused_with_a_reason(store: Store) -> None:
    with pytest.raises(StoreError, match="content"):
        await store.add(Draft("   "))
    with pytest.raises(StoreError, match="kind"):
        await store.add(Draft("x", kind="Not A Kind!"))
    with pytest.raises(StoreError, match="importance"):
        await store.add(Draft("x", importance=3.0))
    with pytest.raises(StoreError, match="embedder"):
        await store.add(Draft("x"), b"\0" * 16, "")
    assert (await store.stats()).versions == 0


async def test_edit_makes_a_new_winner_and_keeps_the_old_version(store: Store) -> None:
    mid = await store.add(Draft("the port is 7000", tags=("net",)), b"\0" * 16, "e1")
    await store.edit(mid, content="the port is 7847", project="peer")
    memory = await store.get(mid)
    assert memory.content == "the port is 7847" and memory.project == "peer" and memory.tags == ("net",)
    versions = await store.versions(mid)
    assert [v.state for v in versions] == ["winner", "superseded"]
    assert [v.content for v in versions] == ["the port is 7847", "the port is 7000"]
    assert [m for m, _ in await store.fts_search("7847")] == [mid]
    assert await store.fts_search("7000") == []
    # The old embedding no longer matches the text, so the new version carries none.
    change = (await store.changes_since(0))[-1]
    assert change.memory_id == mid and change.live and change.embedding == b""
    await store.edit(mid, project="")
    assert (await store.get(mid)).project is None


async def test_forget_writes_a_tombstone(store: Store) -> None:
    keep = await store.add(Draft("keep me"))
    mid = await store.add(Draft("forget me please"))
    await store.forget(mid[:10])
    memory = await store.get(mid)
    assert memory.deleted
    assert [m.id for m in await store.list()] == [keep]
    assert await store.get_many([mid]) == {}
    assert set(await store.get_many([mid], include_deleted=True)) == {mid}
    versions = await store.versions(mid)
    assert [(v.state, v.deleted) for v in versions] == [("winner", True), ("superseded", False)]
    assert await store.fts_search("forget") == []
    stats = await store.stats()
    assert (stats.memories, stats.versions, stats.tombstones, stats.forgotten) == (1, 3, 1, 1)


async def test_edit_after_forget_is_refused_and_resolve_brings_it_back(store: Store) -> None:
    mid = await store.add(Draft("a fact"))
    await store.forget(mid)
    with pytest.raises(StoreError, match="forgotten"):
        await store.edit(mid, content="changed")
    with pytest.raises(StoreError, match="already forgotten"):
        await store.forget(mid)
    before = [v for v in await store.versions(mid) if not v.deleted][0]
    await store.resolve(mid, before.version)
    memory = await store.get(mid)
    assert not memory.deleted and memory.content == "a fact"
    assert len(await store.versions(mid)) == 3


async def test_unknown_and_ambiguous_ids(store: Store) -> None:
    await store.add(Draft("one", id="abcdef00-0000-4000-8000-000000000001"))
    await store.add(Draft("two", id="abcdef00-0000-4000-8000-000000000002"))
    with pytest.raises(StoreError, match="ambiguous"):
        await store.get("abcdef")
    assert (await store.get("abcdef00-0000-4000-8000-000000000002")).content == "two"
    with pytest.raises(StoreError, match="no memory"):
        await store.get("ffff")
    with pytest.raises(StoreError, match="no memory"):
        await store.edit("00000000-0000-4000-8000-000000000000", content="x")
    with pytest.raises(StoreError, match="not a memory id"):
        await store.get("not-an-id!")
    with pytest.raises(StoreError, match="no version"):
        await store.resolve("abcdef00-0000-4000-8000-000000000001", f"{store.replica_id}:1")


async def test_fts_takes_any_user_text(store: Store) -> None:
    mid = await store.add(Draft('use "NEAR" and OR carefully: col:value * ^'))
    for hostile in ['"', "OR", "NEAR(", "a AND", "col:value", "*", "^", "'; DROP TABLE versions; --", ""]:
        await store.fts_search(hostile, limit=5)
    assert [m for m, _ in await store.fts_search('carefully"')] == [mid]
    assert await store.fts_search("carefully", project="elsewhere") == []


async def test_fts_leaves_out_words_that_are_everywhere(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows_module, "COMMON_WORD_DOCS", 2)
    await store.add_many([(Draft(f"the note number {i}"), None) for i in range(5)])
    special = await store.add(Draft("the Zürich note"))
    # "the" and "note" are in every memory: only "zurich" (folded) decides.
    assert [m for m, _ in await store.fts_search("the note about zurich")] == [special]
    # With nothing but common words, the rarest one is still searched.
    assert len(await store.fts_search("the note", limit=10)) == 6


async def test_changes_since_follows_state_changes(store: Store) -> None:
    mid = await store.add(Draft("v1"), b"\1" * 8, "e")
    base = await store.max_seq()
    await store.edit(mid, content="v2", embedding=b"\2" * 8, embedder="e")
    changes = await store.changes_since(base)
    assert [c.seq for c in changes] == sorted(c.seq for c in changes)
    by_label = {c.label: c for c in changes}
    assert len(by_label) == 2
    live = [c for c in changes if c.live]
    assert len(live) == 1 and live[0].content == "v2" and live[0].embedding == b"\2" * 8
    dead = [c for c in changes if not c.live]
    assert len(dead) == 1 and dead[0].content == ""
    assert await store.changes_since(await store.max_seq()) == []
    rebuilt = [c async for batch in store.all_live_embeddings(batch_size=1) for c in batch]
    assert [(c.label, c.content) for c in rebuilt] == [(live[0].label, "v2")]
    assert await store.count_live() == 1
    found = await store.memories_for_labels([live[0].label, dead[0].label])
    assert list(found) == [live[0].label] and found[live[0].label].content == "v2"


# Received versions -----------------------------------------------------------------


async def test_apply_versions_of_another_member_and_duplicates(pair: tuple[Store, Store]) -> None:
    a, b = pair
    ids = await a.add_many([(Draft(f"memory {i}", project="p"), b"\0" * 8) for i in range(7)], "e")
    assert await sync_one_way(a, b) == 7
    assert {m.id for m in await b.list()} == set(ids)
    assert (await b.get(ids[3])).content == "memory 3"
    assert [m for m, _ in await b.fts_search("memory", limit=10)] != []
    # Sending the same versions again is a no-op.
    batch = [v async for batch in a.missing_for(VersionVector()) for v in batch]
    result = await b.apply(batch + batch[:2])
    assert (result.added, result.duplicates) == (0, 9)
    assert (await b.stats()).versions == 7
    assert await b.vector() == await a.vector()


async def test_concurrent_edits_converge_to_the_same_siblings(pair: tuple[Store, Store]) -> None:
    a, b = pair
    mid = await a.add(Draft("the meeting is on monday"))
    await sync(a, b)
    await a.edit(mid, content="the meeting is on tuesday")
    await b.edit(mid, content="the meeting is on wednesday")
    await sync(a, b)
    assert await snapshot(a) == await snapshot(b)
    assert (await a.get(mid)).siblings == 1
    conflicts_a, conflicts_b = await a.conflicts(), await b.conflicts()
    assert [[v.version for v in g] for g in conflicts_a] == [[v.version for v in g] for g in conflicts_b]
    assert {v.content for v in conflicts_a[0]} == {"the meeting is on tuesday", "the meeting is on wednesday"}
    winner = (await a.get(mid)).content
    assert (await b.get(mid)).content == winner
    # Only the winner is searchable.
    assert len(await a.fts_search("meeting")) == 1
    # Resolving on one side settles both.
    loser = conflicts_a[0][1]
    await b.resolve(mid, loser.version)
    await sync(a, b)
    assert await a.conflicts() == [] and await b.conflicts() == []
    assert (await a.get(mid)).content == loser.content == (await b.get(mid)).content
    assert (await a.stats()).conflicts == 0


async def test_a_concurrent_edit_survives_a_concurrent_forget(pair: tuple[Store, Store]) -> None:
    a, b = pair
    mid = await a.add(Draft("draft plan"))
    await sync(a, b)
    await a.forget(mid)
    await b.edit(mid, content="final plan")
    await sync(a, b)
    for s in (a, b):
        memory = await s.get(mid)
        assert not memory.deleted and memory.content == "final plan" and memory.siblings == 1
    assert await snapshot(a) == await snapshot(b)


async def test_missing_for_returns_exactly_what_the_other_lacks(pair: tuple[Store, Store]) -> None:
    a, b = pair
    await a.add_many([(Draft(f"a{i}"), None) for i in range(5)])
    await sync(a, b)
    await b.add_many([(Draft(f"b{i}"), None) for i in range(4)])
    later = await a.add_many([(Draft(f"a-late{i}"), None) for i in range(3)])
    lacking = [v async for batch in a.missing_for(await b.vector(), batch_size=2) for v in batch]
    assert sorted(v.header.memory_id for v in lacking) == sorted(later)
    assert await a.count_missing_for(await b.vector()) == 3
    nothing = [v async for batch in a.missing_for(await a.vector()) for v in batch]
    assert nothing == []


async def test_missing_for_one_project(pair: tuple[Store, Store]) -> None:
    a, _ = pair
    inside = await a.add(Draft("in the project", project="peer"))
    await a.add(Draft("elsewhere", project="other"))
    await a.edit(inside, project="moved")  # its older version was in "peer": the memory still counts
    found = [v async for batch in a.missing_for(VersionVector(), project="peer") for v in batch]
    assert {v.header.memory_id for v in found} == {inside} and len(found) == 2


async def test_a_new_incarnation_writes_new_dots_that_sync(pair: tuple[Store, Store]) -> None:
    a, b = pair
    before = await a.add(Draft("before the restore"))
    replica = await a.start_new_incarnation()
    assert replica.startswith(f"{a.device_id}.") and replica == a.replica_id
    # Restoring the same backup twice must not give the same replica twice.
    assert await a.start_new_incarnation() != replica
    replica = a.replica_id
    after = await a.add(Draft("after the restore"))
    assert (await a.get(after)).version.startswith(f"{replica}:")
    await sync(a, b)
    assert {m.id for m in await b.list()} == {before, after}
    assert set(await b.vector()) == {a.device_id, replica}
    # The incarnation is kept in the store, not only in this handle.
    async with await Home(a.path.parent).open_store() as again:
        assert again.replica_id == replica


async def test_hlc_moves_past_received_versions(pair: tuple[Store, Store]) -> None:
    a, b = pair
    # B's clock runs ahead of A's: A's next versions must still be stamped later. An hour ahead:
    # a received time pulls a clock at most a day ahead (protocol.md 3.2; further is
    # tests/peer/store/test_clock.py), where this test used 3 years and pinned A's clock there.
    b._now_ms = FakeClock(1_800_000_000_000 + 3_600_000)
    mid = await b.add(Draft("from the future"))
    await sync(a, b)
    (received,) = await a.versions(mid)
    mine = await a.add(Draft("written after receiving it"))
    (written,) = await a.versions(mine)
    assert written.hlc > received.hlc
    # And that survives reopening the store.
    home = Home(a.path.parent)
    async with await home.open_store(now_ms=FakeClock(1_800_000_000_000)) as again:
        later = await again.add(Draft("and after a restart"))
        (after_restart,) = await again.versions(later)
    assert after_restart.hlc > written.hlc


def _forged(a: Store, signing_key: Ed25519PrivateKey, *, group_id: bytes | None = None) -> SealedVersion:
    raw = raw_public_key(signing_key)
    header = VersionHeader(
        group_id=group_id or a.group_id,
        epoch=0,
        memory_id="99999999-9999-4999-8999-999999999999",
        dot=Dot(device_id_for(raw), 1_800_000_000_000),
        context=(),
        hlc=1 << 40,
    )
    return seal(header, MemoryBody(content="sneaky"), signing_key=signing_key, group_key=a.group_keys[0])


async def test_a_version_from_a_non_member_is_rejected_and_nothing_is_written(pair: tuple[Store, Store]) -> None:
    a, b = pair
    await a.add(Draft("genuine"))
    genuine = [v async for batch in a.missing_for(VersionVector()) for v in batch]
    outsider = _forged(a, Ed25519PrivateKey.generate())
    with pytest.raises(NotAMember):
        await b.apply([*genuine, outsider])
    assert (await b.stats()).versions == 0
    with pytest.raises(WrongGroup):
        await b.apply([_forged(a, Ed25519PrivateKey.generate(), group_id=b"\7" * 16)])
    # Tampering with one byte of a member's version is caught too.
    data = bytearray(genuine[0].encode())
    data[-70] ^= 1
    with pytest.raises(TrustError):
        await b.apply([SealedVersion.decode(bytes(data))])
    assert (await b.stats()).versions == 0
    # Lenient mode (bundles): the good ones go in, the bad ones are reported.
    result = await b.apply([*genuine, outsider], strict=False)
    assert result.added == 1 and len(result.rejected) == 1
    assert "not a member" in result.rejected[0].reason
    assert [m.content for m in await b.list()] == ["genuine"]


async def test_versions_by_a_revoked_device_are_dropped_without_failing_the_batch(
    pair: tuple[Store, Store], tmp_path: Path
) -> None:
    a, b = pair
    await b.add(Draft("written by b before it was revoked"))
    from_b = [v async for batch in b.missing_for(VersionVector()) for v in batch]
    mine = await a.add(Draft("a's own"))
    from_a = [v async for batch in a.missing_for(VersionVector()) for v in batch]
    identity = Home(tmp_path / "a").identity()
    records, key = a.membership.revoke(
        identity.signing_key,
        identity.kex_key,
        device_id=b.device_id,
        now_ms=1_700_000_001_000,
        epoch_keys=a.group_keys,
    )
    await a.apply_membership(records)
    await a.save_group_keys({a.membership.current_epoch: key})
    assert a.membership.current_epoch == 1
    result = await a.apply([*from_b, *from_a])
    assert result.added == 0 and result.duplicates == 1 and len(result.rejected) == 1
    assert (await a.stats()).versions == 1
    # A revoked device cannot write any more either.
    async with await Home(tmp_path / "b").open_store() as b_again:
        await b_again.apply_membership(a.membership.records())
        with pytest.raises(StoreError, match="no longer a member|does not hold"):
            await b_again.add(Draft("after revocation"))
    # New versions of a are sealed under the new epoch, which b cannot open.
    await a.edit(mine, content="after the rotation")
    newest = [v async for batch in a.missing_for(VersionVector()) for v in batch]
    assert max(v.header.epoch for v in newest) == 1


async def test_a_revocation_keeps_what_the_revoker_held_and_drops_later_versions_everywhere(
    pair: tuple[Store, Store]
) -> None:
    a, b = pair
    first = await b.add(Draft("draft one of the plan"))
    await sync_one_way(b, a)
    held = (await b.versions(first))[0].version
    await b.edit(first, content="revised wording")
    late = await b.add(Draft("a late note from the stolen laptop"))
    records = await a.revoke(b.device_id)
    assert records and a.membership.is_revoked(b.device_id)
    assert a.membership.cutoff(b.device_id) == {b.replica_id: int(held.rsplit(":", 1)[1])}
    # Sent to the revoker: what it held is a duplicate, the rest is dropped without failing the batch.
    every = [v async for batch in b.missing_for(VersionVector()) for v in batch]
    result = await a.apply(every)
    assert result.added == 0 and result.duplicates == 1 and len(result.rejected) == 2
    assert all("revoked" in r.reason for r in result.rejected)
    # A store that held the later versions drops them once it learns of the revocation,
    # and its memories, keyword search and index feed follow.
    seq = await b.max_seq()
    await b.apply_membership(a.membership.records())
    assert await snapshot(b) == await snapshot(a)
    assert (await b.get(first)).content == "draft one of the plan"
    assert late not in {m.id for m in await b.list()}
    assert await b.fts_search("stolen") == [] and await b.fts_search("revised") == []
    assert [m for m, _ in await b.fts_search("draft one")] == [first]
    changes = await b.changes_since(seq)
    assert [(c.memory_id, c.live, c.content) for c in changes] == [(first, True, "draft one of the plan")]
    assert await b.integrity_check() == []
    assert (await b.stats()).versions == 1


async def test_big_batches_are_sealed_and_checked_off_the_event_loop(pair: tuple[Store, Store]) -> None:
    a, b = pair
    ids = await a.add_many([(Draft(f"bulk {i}", tags=("bulk",)), b"\0" * 8) for i in range(120)], "e")
    batch = [v async for batch in a.missing_for(await b.vector(), batch_size=500) for v in batch]
    assert len(batch) == 120
    with pytest.raises(NotAMember):
        await b.apply([*batch[:60], _forged(a, Ed25519PrivateKey.generate()), *batch[60:]])
    assert (await b.stats()).versions == 0
    result = await b.apply(batch)
    assert result.added == 120 and result.memories == 120
    assert {m.id for m in await b.list(tag="bulk")} == set(ids)


async def test_two_handles_on_one_store_see_each_other(pair: tuple[Store, Store], tmp_path: Path) -> None:
    a, _ = pair
    home = Home(tmp_path / "a")
    other = await home.open_store()
    try:
        first = await a.add(Draft("from the agent"))
        second = await other.add(Draft("from the cli"))
        assert {m.id for m in await a.list()} == {first, second}
        await other.edit(first, content="edited by the cli")
        assert (await a.get(first)).content == "edited by the cli"
        assert len(await a.versions(first)) == 2
    finally:
        await other.close()


async def test_stats_and_integrity(store: Store) -> None:
    await store.add_many([(Draft(f"m{i}"), None) for i in range(10)])
    stats = await store.stats()
    assert (stats.memories, stats.versions, stats.conflicts, stats.devices) == (10, 10, 0, 2)
    assert stats.vector == {store.replica_id: (await store.vector())[store.replica_id]}
    assert stats.db_bytes > 0
    assert await store.integrity_check() == []


# Files: schema versions, bad files -------------------------------------------------


async def test_a_store_from_a_newer_peer_is_refused(aio_loop: object, tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    await home.init("x")
    with sqlite3.connect(home.store_path) as conn:
        conn.execute(f"PRAGMA user_version = {schema_module.SCHEMA_VERSION + 5}")
    newer, ours = schema_module.SCHEMA_VERSION + 5, schema_module.SCHEMA_VERSION
    with pytest.raises(StoreError, match=rf"newer peer \(schema {newer} > {ours}\); upgrade peer"):
        await home.open_store()


async def test_migrations_run_in_order_on_open(
    aio_loop: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Home(tmp_path / "h")
    await home.init("x")
    async with await home.open_store() as s:
        mid = await s.add(Draft("made by the current schema"))
    steps = [*schema_module.MIGRATIONS, ["CREATE TABLE later (x)", "INSERT INTO later VALUES (42)"]]
    monkeypatch.setattr(schema_module, "MIGRATIONS", steps)
    monkeypatch.setattr(schema_module, "SCHEMA_VERSION", len(steps))
    async with await home.open_store() as s:
        assert (await s.get(mid)).content == "made by the current schema"
    with sqlite3.connect(home.store_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(steps)
        assert conn.execute("SELECT x FROM later").fetchall() == [(42,)]


@pytest.mark.parametrize(
    "content",
    [b"this is not a database at all" * 200, b"SQLite format 3\0" + b"\xff" * 4000],
    ids=["text", "damaged-header"],
)
async def test_a_file_that_is_not_a_store_gives_a_clear_error(
    aio_loop: object, tmp_path: Path, content: bytes
) -> None:
    home = Home(tmp_path / "h")
    await home.init("x")
    home.store_path.write_bytes(content)
    with pytest.raises(StoreError, match="not a peer store|damaged"):
        await home.open_store()


async def test_a_foreign_sqlite_file_is_not_a_store(aio_loop: object, tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    await home.init("x")
    home.store_path.unlink()
    with sqlite3.connect(home.store_path) as conn:
        conn.execute("CREATE TABLE notes (x)")
    with pytest.raises(StoreError, match="is not a peer store"):
        await home.open_store()



async def test_bulk_writes_raise_the_page_cache_while_any_runs_and_restore_it(aio_loop: object, tmp_path: Path) -> None:
    a, b = await make_pair(tmp_path)
    async with a, b:
        before = await b._db.fetchvalue("PRAGMA cache_size")
        async with b.bulk_writes():
            assert await b._db.fetchvalue("PRAGMA cache_size") == -BULK_CACHE_KIB
            async with b.bulk_writes():  # a second receive at the same time
                pass
            assert await b._db.fetchvalue("PRAGMA cache_size") == -BULK_CACHE_KIB  # the first still runs
        assert await b._db.fetchvalue("PRAGMA cache_size") == before


async def test_joined_batches_count_a_version_in_two_of_them_once(aio_loop: object, tmp_path: Path) -> None:
    a, b = await make_pair(tmp_path)
    async with a, b:
        await a.add_many([(Draft(f"note {i}"), None) for i in range(6)])
        [versions] = [batch async for batch in a.missing_for(await b.vector())]
        first = await b.check_received(versions[:4])
        second = await b.check_received(versions[2:])
        joined = CheckedBatch.joined([first, second])
        assert list(joined.opened) == [v.header.dot for v in versions]
        assert joined.in_batch_duplicates == 2 and joined.versions == 8
        result = await b.store_checked(joined)
        assert (result.added, result.duplicates) == (6, 2)
        other = CheckedBatch({}, (), 0, Membership(b.group_id))
        with pytest.raises(ValueError, match="same membership"):
            CheckedBatch.joined([first, other])


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


def test_memory_freed_by_a_big_receive_goes_back_to_the_system() -> None:
    """glibc keeps freed small blocks (SQLite's pages, versions' bytes); the end of a bulk write hands them back."""
    try:
        ctypes.CDLL(None).malloc_trim  # noqa: B018 - only asking whether it exists
    except (OSError, AttributeError):
        pytest.skip("not glibc: no malloc_trim to call (memory is given back by the allocator itself, if at all)")
    blocks = [bytes(16_000) + bytes([i % 256]) for i in range(12_000)]  # about 190 MB in 16 kB blocks
    keep = blocks[-1]
    del blocks
    before = _rss_mb()
    release_freed_memory()
    after = _rss_mb()
    assert keep and before - after > 100, (before, after)

"""Bundles: air-gapped sync through files, between real stores, through the real ``peer`` command.

No test here opens a socket: the devices pair with an invite file and
exchange bundle files, as two machines that never share a network would.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

import peer.bundles as bundles
from peer.bundles import BundleSource, export_bundle, import_bundle
from peer.home import Home
from peer.memory import Draft
from protocol import Dot, MemoryBody, SealedVersion, VersionHeader, VersionVector, seal
from protocol.bundle import BundleWriter
from protocol.errors import BundleError, NotAMember, PeerError, WrongGroup
from tests.support.cli_runner import assert_error, ok, ok_json, peer
from tests.support.groups import admit, found
from tests.support.stores import count_writes


async def snapshot(home: Home) -> dict[str, Any]:
    """Everything a user could look at in a store (not its file size, which WAL bookkeeping moves)."""
    async with await home.open_store() as store:
        stats = (await store.stats()).to_json()
        stats.pop("db_bytes")
        return {
            "stats": stats,
            "memories": [m.to_json() for m in await store.list()],
            "conflicts": [[v.version for v in c] for c in await store.conflicts()],
            "peers": [(p.device_id, p.vector.as_dict(), p.via) for p in await store.known_peers()],
            "members": sorted(store.membership.records()),
            "keys": store.group_keys,
        }


async def exchange(src: Home, dst: Home, path: Path, *, cli: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """``peer bundle export`` on ``src`` then ``peer bundle import`` on ``dst``: their JSON (CLI or in-process)."""
    if cli:
        return ok_json(src.path, "bundle", "export", str(path)), ok_json(dst.path, "bundle", "import", str(path))
    async with await src.open_store() as store:
        out = (await export_bundle(store, src.identity().signing_key, path)).to_json()
    async with await dst.open_store() as store:
        return out, (await import_bundle(store, path)).to_json()


# The acceptance scenario ---------------------------------------------------------------------


async def test_devices_without_a_network_pair_by_file_and_converge_over_five_rounds(
    tmp_path: Path, aio_loop: object
) -> None:
    a, b, usb = tmp_path / "desk", tmp_path / "laptop", tmp_path / "usb"
    usb.mkdir()
    ok(a, "init", "--name", "desk")
    invite = ok_json(a, "invite", "--file", str(usb / "invite.peer"), "--name", "laptop")
    joined = ok_json(b, "join", invite["code"], "--file", str(usb / "invite.peer"))
    assert joined["device_id"] == invite["new_device_id"] and joined["members"] == 2
    desk, laptop = Home(a), Home(b)

    ids: dict[str, str] = {}

    async def writes(home: Home, plan: list[tuple[str, str, str]]) -> int:
        """Apply (action, name, text) steps on the device; returns how many versions they wrote."""
        async with await home.open_store() as store:
            for action, name, text in plan:
                if action == "add":
                    ids[name] = await store.add(Draft(f"{text} ({name})", project="usb"))
                elif action == "edit":
                    await store.edit(ids[name], content=text)
                else:
                    await store.forget(ids[name])
        return len(plan)

    rounds: list[tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]] = [
        ([("add", "a1", "desk note one"), ("add", "a2", "desk note two")], [("add", "b1", "laptop note one")]),
        (
            [("add", "a3", "desk three"), ("add", "a4", "desk four"), ("edit", "b1", "laptop note one, seen at the desk")],
            [("add", "b2", "laptop two"), ("edit", "a1", "desk note one, edited on the laptop")],
        ),
        (
            # a2 is edited on both sides before they exchange: a conflict, the same on both.
            [("add", "a5", "desk five"), ("add", "a6", "desk six"), ("edit", "a2", "the desk's take on two")],
            [("add", "b3", "laptop three"), ("edit", "a2", "the laptop's take on two")],
        ),
        (
            [("add", "a7", "desk seven"), ("forget", "a3", "")],
            [("add", "b4", "laptop four"), ("edit", "b2", "laptop two, rewritten")],
        ),
        (
            [("add", "a8", "desk eight"), ("edit", "a4", "desk four, final")],
            [("add", "b5", "laptop five"), ("forget", "b3", "")],
        ),
    ]
    for number, (on_desk, on_laptop) in enumerate(rounds, start=1):
        written_desk = await writes(desk, on_desk)
        written_laptop = await writes(laptop, on_laptop)
        # Odd rounds through the real `peer` command, even ones in-process (the same code, minus start-up time).
        cli = number % 2 == 1
        to_laptop = usb / f"desk-{number}.bundle"
        out, got = await exchange(desk, laptop, to_laptop, cli=cli)
        back = usb / f"laptop-{number}.bundle"
        out_back, got_back = await exchange(laptop, desk, back, cli=cli)
        print(
            f"round {number}: desk -> laptop {out['versions']} versions, {out['bytes']} B;"
            f" laptop -> desk {out_back['versions']} versions, {out_back['bytes']} B"
        )
        # Each bundle holds exactly what the other side lacks: the versions written since the last round.
        assert out["versions"] == written_desk and got["added"] == written_desk
        assert out_back["versions"] == written_laptop and got_back["added"] == written_laptop
        assert got["vector_merged"] and got_back["vector_merged"]
        assert not out["full"] or number == 1
        assert to_laptop.stat().st_size == out["bytes"] and not list(usb.glob(".*.tmp"))

    listed = ok_json(a, "list")
    assert listed == ok_json(b, "list")
    assert len(listed) == 11  # 13 added, 2 forgotten
    desk_state, laptop_state = await snapshot(desk), await snapshot(laptop)
    assert desk_state["conflicts"] == laptop_state["conflicts"] and len(desk_state["conflicts"]) == 1
    assert desk_state["stats"]["vector"] == laptop_state["stats"]["vector"]
    async with await desk.open_store() as store:
        (conflict,) = await store.conflicts()
    assert conflict[0].memory_id == ids["a2"]
    assert sorted(v.content for v in conflict) == ["the desk's take on two", "the laptop's take on two"]
    # Nothing new: a small bundle that still acknowledges, and importing it adds nothing.
    ack, got = await exchange(desk, laptop, usb / "ack.bundle", cli=False)
    assert ack["versions"] == 0 and ack["nothing_new"] and ack["bytes"] < 4000
    assert got["nothing_new"]
    assert "nothing new" in ok(b, "bundle", "import", str(usb / "ack.bundle"))


# Tampering, exhaustively, through the real import code path -------------------------------------


async def test_every_flipped_byte_truncation_and_appended_garbage_is_refused_and_changes_nothing(
    tmp_path: Path, aio_loop: object
) -> None:
    a_home = await found(tmp_path / "a", "a")
    b_home = await admit(a_home, tmp_path / "b", "b")
    async with await a_home.open_store() as a:
        await a.add(Draft("a short secret note"))
        await export_bundle(a, a_home.identity().signing_key, tmp_path / "good.bundle")
    data = (tmp_path / "good.bundle").read_bytes()
    before = await snapshot(b_home)
    bad = tmp_path / "bad.bundle"
    refused = 0
    async with await b_home.open_store() as b:
        cases: list[bytes] = []
        for at in range(len(data)):
            flipped = bytearray(data)
            flipped[at] ^= 0xFF
            cases.append(bytes(flipped))
        cases += [data[:cut] for cut in range(len(data))]
        cases += [data + b"\x00", data + b"garbage", data + data]
        for case in cases:
            bad.write_bytes(case)
            with pytest.raises(PeerError, match="nothing was imported"):
                await import_bundle(b, bad)
            refused += 1
    print(f"{len(data)}-byte bundle: {refused} damaged copies refused")
    assert refused == 2 * len(data) + 3
    assert await snapshot(b_home) == before
    # The genuine file still imports.
    async with await b_home.open_store() as b:
        assert (await import_bundle(b, tmp_path / "good.bundle")).added == 1


async def test_bad_bundles_through_the_cli_give_one_error_and_change_nothing(tmp_path: Path, aio_loop: object) -> None:
    a_home = await found(tmp_path / "a", "alpha")
    b_home = await admit(a_home, tmp_path / "b", "beta")
    c_home = await admit(a_home, tmp_path / "c", "gamma")
    stranger = await found(tmp_path / "s", "stranger")
    a, b = a_home.path, b_home.path
    key_a = a_home.identity().signing_key
    good = tmp_path / "for-beta.bundle"
    async with await a_home.open_store() as store:
        await store.add(Draft("what the bundle carries"))
        await export_bundle(store, key_a, good, device="beta")
        await export_bundle(store, key_a, tmp_path / "for-gamma.bundle", device="gamma")
    async with await stranger.open_store() as store:
        await export_bundle(store, stranger.identity().signing_key, tmp_path / "stranger.bundle", full=True)
    data = good.read_bytes()
    (tmp_path / "flipped.bundle").write_bytes(data[:200] + bytes([data[200] ^ 1]) + data[201:])
    (tmp_path / "cut.bundle").write_bytes(data[:-10])
    (tmp_path / "longer.bundle").write_bytes(data + b"\n")

    before = await snapshot(b_home)
    for name, words in [
        ("flipped", ("damaged",)),
        ("cut", ("truncated",)),
        ("longer", ("unexpected bytes after its end",)),
        ("stranger", ("group",)),
        ("for-gamma", ("made for device", "not this one")),
        ("missing", ("cannot read",)),
    ]:
        assert_error(peer(b, "bundle", "import", str(tmp_path / f"{name}.bundle")), 1, *words, "nothing was imported")
    for name in ("flipped", "stranger"):
        assert_error(peer(b, "bundle", "import", "--dry-run", str(tmp_path / f"{name}.bundle")), 1, "nothing was changed")
    assert await snapshot(b_home) == before

    # A revoked device's bundle: its sender is not a member any more.
    async with await a_home.open_store() as store:
        await store.revoke(c_home.identity().device_id)
    async with await c_home.open_store() as store:
        await export_bundle(store, c_home.identity().signing_key, tmp_path / "from-gamma.bundle", device="alpha")
    before_a = await snapshot(a_home)
    assert_error(peer(a, "bundle", "import", str(tmp_path / "from-gamma.bundle")), 1, "not a member")
    assert await snapshot(a_home) == before_a

    # Export never overwrites a file that is not a bundle, and leaves no temporary file behind.
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert_error(peer(a, "bundle", "export", str(notes), "--for", "beta"), 1, "not a peer bundle")
    assert notes.read_text() == "mine"
    assert not list(tmp_path.glob(".*.tmp"))


async def test_importing_twice_or_replaying_an_old_bundle_is_a_no_op(tmp_path: Path, aio_loop: object) -> None:
    a_home = await found(tmp_path / "a", "a")
    b_home = await admit(a_home, tmp_path / "b", "b")
    key_a, key_b = a_home.identity().signing_key, b_home.identity().signing_key
    async with await a_home.open_store() as a, await b_home.open_store() as b:
        first = await a.add(Draft("first"))
        await export_bundle(a, key_a, tmp_path / "old.bundle")
        assert (await import_bundle(b, tmp_path / "old.bundle")).added == 1
        again = await import_bundle(b, tmp_path / "old.bundle")
        assert again.nothing_new and again.duplicates == 1
        # Later rounds, then the old bundle turns up again.
        await a.edit(first, content="first, edited")
        await export_bundle(a, key_a, tmp_path / "new.bundle")
        await import_bundle(b, tmp_path / "new.bundle")
        await export_bundle(b, key_b, tmp_path / "ack.bundle")
        await import_bundle(a, tmp_path / "ack.bundle")
    before = await snapshot(b_home)
    async with await b_home.open_store() as b:
        replay = await import_bundle(b, tmp_path / "old.bundle")
        assert replay.nothing_new and replay.added == 0
        assert (await b.get(first)).content == "first, edited"
        old_vector = replay.header.sender_vector
    after = await snapshot(b_home)
    assert {k: v for k, v in after.items() if k != "peers"} == {k: v for k, v in before.items() if k != "peers"}
    # What B knows of A is now the old bundle's vector: the next bundle to A carries more than A
    # lacks (never less), and A finds nothing new in it.
    assert after["peers"] == [(a_home.identity().device_id, old_vector.as_dict(), "bundle")]
    async with await a_home.open_store() as a, await b_home.open_store() as b:
        resent = await export_bundle(b, key_b, tmp_path / "resent.bundle")
        assert resent.written.versions == 1
        assert (await import_bundle(a, tmp_path / "resent.bundle")).nothing_new


async def test_dry_run_reports_what_an_import_would_add_and_changes_nothing(tmp_path: Path, aio_loop: object) -> None:
    a_home = await found(tmp_path / "a", "a")
    b_home = await admit(a_home, tmp_path / "b", "b")
    async with await a_home.open_store() as a:
        await a.add_many([(Draft(f"memory {i}"), None) for i in range(3)])
        await export_bundle(a, a_home.identity().signing_key, tmp_path / "ab.bundle")
    before = await snapshot(b_home)
    async with await b_home.open_store() as b:
        dry = await import_bundle(b, tmp_path / "ab.bundle", dry_run=True)
    assert dry.dry_run and dry.added == 3 and dry.versions == 3 and dry.vector_merged
    assert "would add 3" in dry.describe()
    assert await snapshot(b_home) == before
    text = ok(b_home.path, "bundle", "import", "--dry-run", str(tmp_path / "ab.bundle"))
    assert "would add 3" in text
    assert await snapshot(b_home) == before
    async with await b_home.open_store() as b:
        assert (await import_bundle(b, tmp_path / "ab.bundle")).added == 3


async def test_a_project_bundle_is_partial_and_the_next_one_brings_the_rest(tmp_path: Path, aio_loop: object) -> None:
    a_home = await found(tmp_path / "a", "a")
    b_home = await admit(a_home, tmp_path / "b", "b")
    key_a, key_b = a_home.identity().signing_key, b_home.identity().signing_key
    async with await a_home.open_store() as a, await b_home.open_store() as b:
        await a.add_many([(Draft("in x", project="x"), None), (Draft("in y", project="y"), None)])
        part = await export_bundle(a, key_a, tmp_path / "x.bundle", project="x")
        assert part.written.versions == 1 and part.written.header.partial
        got = await import_bundle(b, tmp_path / "x.bundle")
        assert got.added == 1 and not got.vector_merged
        assert [m.content for m in await b.list()] == ["in x"]
        # B's acknowledgement does not claim y's version, so the next bundle carries it.
        await export_bundle(b, key_b, tmp_path / "ack.bundle")
        await import_bundle(a, tmp_path / "ack.bundle")
        # x's version is sent again (B's vector could not claim it); importing it is a no-op.
        rest = await export_bundle(a, key_a, tmp_path / "rest.bundle")
        assert rest.written.versions == 2
        got = await import_bundle(b, tmp_path / "rest.bundle")
        assert got.vector_merged and got.added == 1 and got.duplicates == 1
        assert sorted(m.content for m in await b.list()) == ["in x", "in y"]
        assert await b.vector() == await a.vector()


async def test_who_a_bundle_is_for(tmp_path: Path, aio_loop: object) -> None:
    a_home = await found(tmp_path / "a", "alpha")
    key = a_home.identity().signing_key
    async with await a_home.open_store() as a:
        with pytest.raises(PeerError, match="no other device"):
            await export_bundle(a, key, tmp_path / "none.bundle")
        full = await export_bundle(a, key, tmp_path / "all.bundle", full=True)
        assert full.recipient is None and not full.written.header.base_vector
    b_home = await admit(a_home, tmp_path / "b", "beta")
    c_home = await admit(a_home, tmp_path / "c", "gamma")
    async with await a_home.open_store() as a:
        with pytest.raises(PeerError, match="2 other devices.*--for"):
            await export_bundle(a, key, tmp_path / "which.bundle")
        with pytest.raises(PeerError, match="this device"):
            await export_bundle(a, key, tmp_path / "self.bundle", device="alpha")
        for_c = await export_bundle(a, key, tmp_path / "c.bundle", device=c_home.identity().device_id[:6])
        assert for_c.recipient == c_home.identity().device_id
    async with await b_home.open_store() as b:
        with pytest.raises(BundleError, match="made for device"):
            await import_bundle(b, tmp_path / "c.bundle")
        # A full bundle made for nobody in particular: any member imports it.
        assert (await import_bundle(b, tmp_path / "all.bundle")).nothing_new
        await export_bundle(b, b_home.identity().signing_key, tmp_path / "mine.bundle", full=True)
        with pytest.raises(BundleError, match="made by this device"):
            await import_bundle(b, tmp_path / "mine.bundle")


async def test_a_version_that_fails_late_leaves_the_store_unchanged(
    tmp_path: Path, aio_loop: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version that fails late, after records and earlier batches were applied, rolls all of them back."""
    a_home = await found(tmp_path / "a", "a")
    b_home = await admit(a_home, tmp_path / "b", "b")
    d_home = await admit(a_home, tmp_path / "d", "d")  # a member B does not know yet: its record is in the bundle
    identity = a_home.identity()
    async with await a_home.open_store() as a:
        await a.add_many([(Draft(f"good {i}"), None) for i in range(5)])
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
    monkeypatch.setattr(bundles, "APPLY_BATCH", 2)
    before = await snapshot(b_home)
    async with await b_home.open_store() as b:
        assert not b.membership.is_member(d_home.identity().device_id)
        with pytest.raises(PeerError, match="nothing was imported"):
            await import_bundle(b, tmp_path / "late.bundle")
    assert await snapshot(b_home) == before
    async with await b_home.open_store() as b:
        assert not b.membership.is_member(d_home.identity().device_id)


async def test_a_bundle_inside_another_file_and_errors_by_type(tmp_path: Path, aio_loop: object) -> None:
    """The reader takes a slice of a file (what backups use); a foreign group and a stranger are TrustErrors."""
    a_home = await found(tmp_path / "a", "a")
    b_home = await admit(a_home, tmp_path / "b", "b")
    stranger = await found(tmp_path / "s", "s")
    async with await a_home.open_store() as a:
        await a.add(Draft("inside"))
        await export_bundle(a, a_home.identity().signing_key, tmp_path / "ab.bundle")
    data = (tmp_path / "ab.bundle").read_bytes()
    (tmp_path / "wrapped").write_bytes(b"HEAD" + data + b"TAIL")
    async with await b_home.open_store() as b:
        got = await import_bundle(b, BundleSource(tmp_path / "wrapped", 4, len(data)))
        assert got.added == 1
    async with await stranger.open_store() as s:
        with pytest.raises(WrongGroup):
            await import_bundle(s, tmp_path / "ab.bundle")
        # A bundle signed by a key that is no member of the stranger's group, claiming that group.
        writer = BundleWriter(
            signing_key=a_home.identity().signing_key, group_id=s.group_id, sender_vector=VersionVector(), created_ms=1
        )
    (tmp_path / "impostor.bundle").write_bytes(writer.header() + writer.finish())
    async with await stranger.open_store() as s:
        with pytest.raises(NotAMember):
            await import_bundle(s, tmp_path / "impostor.bundle")


async def test_a_spilled_version_comes_back_equal_to_what_was_checked(tmp_path: Path, aio_loop: object) -> None:
    """The spill file holds versions as plain tuples (_flat): they come back equal, with equal hashes and dots."""
    a_home = await found(tmp_path / "a", "a")
    async with await a_home.open_store() as a:
        first = await a.add(Draft("first", tags=("x", "y"), project="p", importance=0.5, metadata={"k": [1, "two"]}))
        await a.edit(first, content="second")  # a version with a context
        versions = [v for batch in [b async for b in a.missing_for(VersionVector())] for v in batch]
        opened = await a.check_received(versions)
    assert any(sealed.header.context for sealed, _ in opened.opened.values())
    spill = bundles._Spill(tmp_path)
    try:
        spill.add(opened)
        spill.rewind()
        back = spill.next_batch()
    finally:
        spill.close()
    assert back is not None and back.opened == opened.opened
    assert [hash(dot) for dot in back.opened] == [hash(dot) for dot in opened.opened]
    for sealed, body in back.opened.values():
        assert SealedVersion.decode(sealed.encode()) == sealed and MemoryBody.decode(body.encode()) == body


@pytest.mark.parametrize("kept", [True, False], ids=["in memory", "spilled"])
@pytest.mark.parametrize("bound", ["versions", "bytes"])
async def test_a_big_import_writes_few_big_transactions(
    tmp_path: Path, aio_loop: object, monkeypatch: pytest.MonkeyPatch, kept: bool, bound: str
) -> None:
    """Checked batches are joined up to BULK_WRITE_VERSIONS and BULK_WRITE_BYTES a transaction, kept or spilled.

    Big memories come a few to a batch: there the bound in bytes is the one that holds.
    """
    a_home = await found(tmp_path / "a", "a")
    b_home = await admit(a_home, tmp_path / "b", "b")
    text, count = ("note {}", 230) if bound == "versions" else ("memory {}: " + "a long text " * 2000, 40)
    async with await a_home.open_store() as a:
        await a.add_many([(Draft(text.format(i)), None) for i in range(count)])
        await export_bundle(a, a_home.identity().signing_key, tmp_path / "all.bundle", full=True)
        sizes = [len(v.header_bytes) + len(v.box) for batch in [x async for x in a.missing_for(VersionVector())] for v in batch]
    if bound == "versions":
        monkeypatch.setattr(bundles, "APPLY_BATCH", 20)
        monkeypatch.setattr(bundles, "BULK_WRITE_VERSIONS", 100)
        expected = [100, 100, 30]
    else:
        monkeypatch.setattr(bundles, "APPLY_BATCH", 5)
        monkeypatch.setattr(bundles, "BULK_WRITE_BYTES", 10 * max(sizes) + 1)  # two batches of five, whatever the count
        expected = [10, 10, 10, 10]
    if not kept:
        monkeypatch.setattr(bundles, "KEEP_CHECKED_BYTES", 0)
    writes = count_writes(monkeypatch)
    async with await b_home.open_store() as b:
        result = await import_bundle(b, tmp_path / "all.bundle")
        assert result.added == count and (await b.stats()).memories == count
    assert writes == expected

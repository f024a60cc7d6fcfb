"""Pairing: invite codes, the join exchange, devices and revoke.

The exchange is tested twice: over an in-memory stream pair (every refusal,
with injected time) and over real SSH on loopback (join, member lists
replicated by sync, revocation).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import trio
import trio.testing

from peer.errors import InviteRefused
from peer.home import Home, Identity
from peer.members import devices, find_device, revoke
from peer.pairing import (
    REFUSAL_MESSAGE,
    Invites,
    admitted_membership,
    make_invite,
    parse_ttl,
    prepare_join,
    request_join,
    serve_join,
)
from peer.store import Store
from protocol import InviteCode, MistypedCode, decode_code, encode_code
from protocol.errors import PeerError, StoreError, UnsupportedFormat
from protocol.frames import ErrorCode, FrameDecoder, JoinReject
from protocol.ids import device_id_for

T = TypeVar("T")


class Clock:
    """Injected wall-clock time, in ms."""

    def __init__(self, start_ms: int = 1_800_000_000_000) -> None:
        self.now = start_ms

    def __call__(self) -> int:
        return self.now


# Invite codes -------------------------------------------------------------------------


def _code(address: str = "192.0.2.7:7847") -> InviteCode:
    return InviteCode(
        device_id=device_id_for(bytes(range(32))),
        invite_id=bytes(range(8)),
        secret=bytes(range(100, 116)),
        expires_at=1_800_000_900,
        address=address,
    )


def test_code_round_trip() -> None:
    code = _code()
    text = encode_code(code)
    assert text.startswith("PEER1-")
    assert decode_code(text) == code
    # What people do to codes: lower case, spaces instead of dashes, line breaks.
    assert decode_code(text.lower()) == code
    assert decode_code(" " + text.replace("-", " ") + "\n") == code
    assert decode_code(encode_code(_code(address=""))).address == ""
    assert decode_code(encode_code(_code(address="[fe80::1]:9000"))).address == "[fe80::1]:9000"


def test_every_single_typo_is_caught() -> None:
    text = encode_code(_code())
    body_start = len("PEER1-")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    caught = 0
    for i in range(body_start, len(text)):
        if text[i] == "-":
            continue
        for replacement in alphabet[(alphabet.index(text[i]) + 1) % 32], alphabet[(alphabet.index(text[i]) + 7) % 32]:
            typo = text[:i] + replacement + text[i + 1 :]
            with pytest.raises(MistypedCode, match="mistyped|damaged"):
                decode_code(typo)
            caught += 1
    assert caught > 150
    # Every spelling of the last character, for codes of every length of address.
    for address in ("", "h:1", "ho:1", "hos:1", "host:1", "host1:1"):
        good = encode_code(_code(address=address))
        for replacement in alphabet:
            if replacement != good[-1]:
                with pytest.raises(MistypedCode):
                    decode_code(good[:-1] + replacement)
    # A character left out, or one too many.
    with pytest.raises(MistypedCode):
        decode_code(text[:-1])
    with pytest.raises(MistypedCode):
        decode_code(text + "A")
    with pytest.raises(MistypedCode, match="not a peer invite code"):
        decode_code("hello")
    with pytest.raises(MistypedCode, match="characters"):
        decode_code(text[:20] + "!" + text[21:])


def test_code_from_a_newer_peer_says_upgrade() -> None:
    text = encode_code(_code())
    with pytest.raises(UnsupportedFormat, match="newer peer"):
        decode_code("PEER2-" + text[len("PEER1-") :])


def test_ttl_parsing() -> None:
    assert parse_ttl("15m") == 900
    assert parse_ttl("90s") == 90
    assert parse_ttl("2h") == 7200
    assert parse_ttl("120") == 120
    for bad in ("", "15 minutes", "0s", "30d"):
        with pytest.raises(PeerError):
            parse_ttl(bad)


# The join exchange over an in-memory stream ---------------------------------------------


@dataclass
class Device:
    home: Home
    store: Store
    identity: Identity


async def _founder(tmp_path: Path, name: str, clock: Callable[[], int]) -> Device:
    home = Home(tmp_path / name)
    await home.init(name, now_ms=clock)
    store = await home.open_store(now_ms=clock)
    return Device(home, store, home.identity())


@dataclass
class _Side:
    """One end of a memory stream, with the device id its 'SSH client' authenticated as."""

    stream: trio.abc.Stream
    peer_device_id: str

    async def send_all(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        return bytes(await self.stream.receive_some(max_bytes))


async def _exchange(
    inviter: Device,
    joiner: Identity,
    code: InviteCode,
    clock: Callable[[], int],
    *,
    authenticated_as: str | None = None,
    name: str = "new",
) -> tuple[object, bool]:
    """Run both sides of one join over a memory stream: (what the joiner got, what the inviter returned)."""
    left, right = trio.testing.memory_stream_pair()
    outcome: list[object] = []
    admitted: list[bool] = []

    async def server() -> None:
        async with await Invites.open(inviter.home) as invites:
            admitted.append(
                await serve_join(
                    _Side(right, authenticated_as or joiner.device_id),
                    store=inviter.store,
                    identity=inviter.identity,
                    invites=invites,
                    now_ms=clock,
                )
            )

    async def client() -> None:
        try:
            request = prepare_join(joiner, code, name)
            outcome.append(await request_join(_Side(left, inviter.identity.device_id), request))
        except PeerError as e:
            outcome.append(e)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            nursery.start_soon(client)
    return outcome[0], admitted[0]


@pytest.fixture
async def inviter(tmp_path: Path, aio_loop: object) -> AsyncIterator[tuple[Device, Clock]]:
    clock = Clock()
    device = await _founder(tmp_path, "alpha", clock)
    try:
        yield device, clock
    finally:
        await device.store.close()


async def test_join_accepts_once_then_refuses_reuse(
    inviter: tuple[Device, Clock], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, clock = inviter
    code = (await make_invite(a.home, a.store, ttl_s=600, address="127.0.0.1:1", now_ms=clock)).code
    b = Home(tmp_path / "b").ensure_identity()
    accept, admitted = await _exchange(a, b, code, clock)
    assert admitted
    records, keys = admitted_membership(b, code, accept)  # type: ignore[arg-type]
    assert a.store.membership.is_member(b.device_id)
    assert keys == a.store.group_keys
    # Every record the inviter holds, so the joiner knows the whole group at once.
    assert sorted(records) == sorted(a.store.membership.records())

    c = Home(tmp_path / "c").ensure_identity()
    with caplog.at_level(logging.WARNING, logger="peer.pairing"):
        refused, admitted = await _exchange(a, c, code, clock)
    assert not admitted
    assert isinstance(refused, InviteRefused) and str(refused) == REFUSAL_MESSAGE
    assert not a.store.membership.is_member(c.device_id)
    assert "refused a join" in caplog.text


async def test_wrong_code_and_expired_code_are_refused_alike(inviter: tuple[Device, Clock], tmp_path: Path) -> None:
    a, clock = inviter
    code = (await make_invite(a.home, a.store, ttl_s=60, now_ms=clock)).code
    b = Home(tmp_path / "b").ensure_identity()
    wrong_secret = InviteCode(code.device_id, code.invite_id, bytes(16), code.expires_at, code.address)
    wrong_id = InviteCode(code.device_id, bytes(8), code.secret, code.expires_at, code.address)
    answers = []
    for bad in (wrong_secret, wrong_id):
        refused, admitted = await _exchange(a, b, bad, clock)
        assert not admitted
        answers.append(str(refused))
    clock.now += 61_000
    refused, admitted = await _exchange(a, b, code, clock)  # the right code, a minute too late
    assert not admitted
    answers.append(str(refused))
    # One message whatever was wrong: a refusal tells nothing about the invite.
    assert answers == [REFUSAL_MESSAGE] * 3
    assert not a.store.membership.is_member(b.device_id)


async def test_wrong_code_does_not_burn_the_invite(inviter: tuple[Device, Clock], tmp_path: Path) -> None:
    a, clock = inviter
    code = (await make_invite(a.home, a.store, now_ms=clock)).code
    b = Home(tmp_path / "b").ensure_identity()
    wrong = InviteCode(code.device_id, code.invite_id, bytes(16), code.expires_at, code.address)
    assert not (await _exchange(a, b, wrong, clock))[1]
    assert (await _exchange(a, b, code, clock))[1]


async def test_two_devices_racing_on_one_code_admit_one(inviter: tuple[Device, Clock], tmp_path: Path) -> None:
    a, clock = inviter
    code = (await make_invite(a.home, a.store, now_ms=clock)).code
    racers = [Home(tmp_path / f"r{i}").ensure_identity() for i in range(4)]
    results: list[bool] = []

    async def race(ident: Identity) -> None:
        results.append((await _exchange(a, ident, code, clock))[1])

    async with trio.open_nursery() as nursery:
        for ident in racers:
            nursery.start_soon(race, ident)
    assert sorted(results) == [False, False, False, True]
    assert sum(a.store.membership.is_member(r.device_id) for r in racers) == 1


async def test_join_refuses_an_expired_code_before_connecting(tmp_path: Path, aio_loop: object) -> None:
    from peer.pairing import join

    clock = Clock(start_ms=(_code().expires_at + 3600) * 1000)
    with pytest.raises(InviteRefused, match="expired"):
        await join(Home(tmp_path / "late"), encode_code(_code()), name="late", now_ms=clock)
    assert not (tmp_path / "late" / "peer.db").exists()


async def test_a_code_made_while_the_clock_ran_ahead_dies_once_the_clock_is_set_right(
    inviter: tuple[Device, Clock], tmp_path: Path
) -> None:
    """Hostile report B11: a 15-min code made at +1 year stayed valid for a year after the clock was fixed."""
    a, clock = inviter
    right = clock.now
    clock.now = right + 365 * 24 * 3600 * 1000
    code = (await make_invite(a.home, a.store, ttl_s=900, now_ms=clock)).code
    clock.now = right + 60_000  # a minute later the clock is set right
    refused, admitted = await _exchange(a, Home(tmp_path / "b").ensure_identity(), code, clock)
    assert not admitted and isinstance(refused, InviteRefused)


async def test_a_code_survives_a_clock_that_stays_slow(inviter: tuple[Device, Clock], tmp_path: Path) -> None:
    """The inviter judges its codes by the clock it made them with: a day slow, it can still invite."""
    a, clock = inviter
    clock.now -= 24 * 3600 * 1000
    code = (await make_invite(a.home, a.store, ttl_s=900, now_ms=clock)).code
    clock.now += 60_000
    assert (await _exchange(a, Home(tmp_path / "b").ensure_identity(), code, clock))[1]


def test_an_expired_time_reads_how_long_ago_not_in_0_min() -> None:
    from peer.pairing import expires_text

    now = 1_800_000_000.0
    assert expires_text(int(now) + 600, now) == "in 10 min"
    assert expires_text(int(now) - 180, now) == "3 min ago"
    assert expires_text(int(now) - 3 * 3600, now) == "3 h ago"
    assert expires_text(int(now) - 365 * 86400, now) == "365 days ago"


async def test_join_says_an_expired_code_is_judged_by_this_clock(tmp_path: Path, aio_loop: object) -> None:
    from peer.pairing import join

    clock = Clock(start_ms=(_code().expires_at + 3600) * 1000)
    with pytest.raises(InviteRefused, match=r"expired 60 min ago by this device's clock"):
        await join(Home(tmp_path / "late"), encode_code(_code()), name="late", now_ms=clock)


async def test_request_for_another_key_than_the_connection_is_refused(
    inviter: tuple[Device, Clock], tmp_path: Path
) -> None:
    a, clock = inviter
    code = (await make_invite(a.home, a.store, now_ms=clock)).code
    b = Home(tmp_path / "b").ensure_identity()
    mallory = Home(tmp_path / "m").ensure_identity()
    refused, admitted = await _exchange(a, b, code, clock, authenticated_as=mallory.device_id)
    assert not admitted and isinstance(refused, InviteRefused)
    # The invite was not spent by the attempt.
    assert (await _exchange(a, b, code, clock))[1]


async def test_garbage_instead_of_a_request_is_refused(inviter: tuple[Device, Clock]) -> None:
    a, clock = inviter
    left, right = trio.testing.memory_stream_pair()
    with trio.fail_after(10):
        async with await Invites.open(a.home) as invites, trio.open_nursery() as nursery:

            async def server() -> None:
                side = _Side(right, a.identity.device_id)
                assert not await serve_join(side, store=a.store, identity=a.identity, invites=invites, now_ms=clock)

            nursery.start_soon(server)
            await left.send_all(b"\x00\x00\x00\x05\x10junk")
            decoder = FrameDecoder()
            while True:
                decoder.receive_data(bytes(await left.receive_some(65536)))
                frame = decoder.next_frame()
                if isinstance(frame, JoinReject):
                    break
    assert frame.code == ErrorCode.INVITE_REFUSED


async def test_invites_file_is_private_and_holds_no_secret(inviter: tuple[Device, Clock]) -> None:
    a, clock = inviter
    code = (await make_invite(a.home, a.store, now_ms=clock)).code
    path = a.home.path / "invites.db"
    assert path.stat().st_mode & 0o077 == 0
    data = b"".join(p.read_bytes() for p in a.home.path.glob("invites.db*"))
    assert code.secret not in data
    assert code.invite_id in data
    async with await Invites.open(a.home) as invites:
        pending = await invites.list()
    assert [i.invite_id for i in pending] == [code.invite_id]
    assert pending[0].used_at_ms is None


async def test_join_refuses_a_device_with_memories(tmp_path: Path, aio_loop: object) -> None:
    from peer.memory import Draft
    from peer.pairing import join

    clock = Clock()
    home = Home(tmp_path / "busy")
    await home.init("busy", now_ms=clock)
    async with await home.open_store(now_ms=clock) as store:
        await store.add(Draft("something worth keeping"))
    with pytest.raises(StoreError, match="already holds 1 versions"):
        await join(home, encode_code(_code()), name="busy", now_ms=clock)


# Devices and revoke, without the network -------------------------------------------------


async def test_devices_and_revoke_locally(inviter: tuple[Device, Clock], tmp_path: Path) -> None:
    a, clock = inviter
    joiners = []
    for name in ("bravo", "charlie"):
        code = (await make_invite(a.home, a.store, now_ms=clock)).code
        ident = Home(tmp_path / name).ensure_identity()
        _, admitted = await _exchange(a, ident, code, clock, name=name)
        assert admitted
        joiners.append(ident)
    listed = await devices(a.store)
    assert [d.name for d in listed] == ["alpha", "bravo", "charlie"]
    assert [d.this_device for d in listed] == [True, False, False]
    assert all(d.added_by == a.identity.device_id for d in listed)

    members = a.store.membership.members()
    assert find_device(members, "bravo").device_id == joiners[0].device_id
    assert find_device(members, joiners[1].device_id[:6].lower()).device_id == joiners[1].device_id
    with pytest.raises(PeerError, match="no device"):
        find_device(members, "delta")
    epoch = a.store.membership.current_epoch
    result = await revoke(a.store, "bravo", now_ms=clock)
    assert result.device_id == joiners[0].device_id
    assert a.store.membership.current_epoch == result.epoch > epoch
    assert a.store.membership.current_epoch in a.store.group_keys
    listed = await devices(a.store)
    assert [(d.name, d.revoked) for d in listed] == [("alpha", False), ("bravo", True), ("charlie", False)]
    with pytest.raises(PeerError, match="already revoked"):
        await revoke(a.store, "bravo", now_ms=clock)
    with pytest.raises(PeerError, match="cannot revoke itself"):
        await revoke(a.store, "alpha", now_ms=clock)


# Over real SSH on loopback ------------------------------------------------------------------

DEADLINE = 60


async def _serve(nursery: trio.Nursery, home: Home, store: Store) -> int:
    """Start what `peer agent` serves (sync, and joining) on a free loopback port."""
    from peer.aio import JOIN_SUBSYSTEM, StreamHandler
    from peer.pairing import join_handler
    from peer.sync import Syncer

    syncer = Syncer(store, home.identity().signing_key)
    handlers: dict[str, StreamHandler] = {JOIN_SUBSYSTEM: join_handler(home, store)}
    port: int = await nursery.start(
        lambda task_status: syncer.serve("127.0.0.1", 0, handlers=handlers, task_status=task_status)
    )
    return port


async def _sync(home: Home, store: Store, port: int) -> object:
    from peer.sync import Syncer

    return await Syncer(store, home.identity().signing_key).sync_with("127.0.0.1", port)


async def test_join_over_ssh(tmp_path: Path, aio_loop: object) -> None:
    from peer.pairing import join

    a_home = Home(tmp_path / "a")
    await a_home.init("alpha")
    with trio.fail_after(DEADLINE):
        async with await a_home.open_store() as a_store, trio.open_nursery() as nursery:
            port = await _serve(nursery, a_home, a_store)
            text = (await make_invite(a_home, a_store, address=f"127.0.0.1:{port}")).text
            b_home = Home(tmp_path / "b")
            result = await join(b_home, text, name="bravo")
            assert result.group_id == a_store.group_id.hex()
            assert result.members == 2
            # The same code a second time, from another device: refused.
            with pytest.raises(InviteRefused):
                await join(Home(tmp_path / "c"), text, name="charlie")
            assert not (tmp_path / "c" / "peer.db").exists()
            # A code whose device id is not the server's: the host key check refuses it.
            other = (await make_invite(a_home, a_store, address=f"127.0.0.1:{port}")).text
            forged = decode_code(other)
            forged = dataclasses.replace(forged, device_id=device_id_for(bytes(32)))
            from protocol.errors import TrustError

            with pytest.raises(TrustError, match="inviter.*refusing to join"):
                await join(Home(tmp_path / "d"), encode_code(forged), name="delta")
            nursery.cancel_scope.cancel()
    async with await b_home.open_store() as b_store:
        assert b_store.group_id == a_store.group_id
        assert [d.name for d in await devices(b_store)] == ["alpha", "bravo"]
        assert b_store.membership.current_epoch in b_store.group_keys


async def _names(store: Store) -> list[tuple[str, bool]]:
    return [(d.name, d.revoked) for d in await devices(store)]


async def test_three_devices_pair_sync_and_revoke(tmp_path: Path, aio_loop: object) -> None:
    from peer.memory import Draft
    from peer.pairing import join
    from protocol.clock import Dot
    from protocol.errors import TrustError

    homes = {name: Home(tmp_path / name) for name in ("alpha", "bravo", "charlie")}
    await homes["alpha"].init("alpha")
    with trio.fail_after(DEADLINE):
        async with await homes["alpha"].open_store() as a, trio.open_nursery() as nursery:
            before = await a.add(Draft("written before anyone joined"))
            a_port = await _serve(nursery, homes["alpha"], a)
            for name in ("bravo", "charlie"):
                text = (await make_invite(homes["alpha"], a, address=f"127.0.0.1:{a_port}")).text
                joined = await join(homes[name], text, name=name)
                assert joined.sync is not None and joined.sync.received >= 1, joined  # the first sync ran right away
            async with await homes["bravo"].open_store() as b, await homes["charlie"].open_store() as c:
                assert (await b.get(before)).content == "written before anyone joined"
                # Bravo joined before charlie existed; one sync with alpha tells it.
                assert not b.membership.is_member(c.device_id)
                await _sync(homes["bravo"], b, a_port)
                b_port = await _serve(nursery, homes["bravo"], b)
                # Now charlie and bravo sync directly, with no help from alpha.
                from_c = await c.add(Draft("charlie's note, for bravo"))
                await _sync(homes["charlie"], c, b_port)
                assert (await b.get(from_c)).content == "charlie's note, for bravo"
                everyone = [("alpha", False), ("bravo", False), ("charlie", False)]
                for store in (a, b, c):
                    assert await _names(store) == everyone
                    assert [d.this_device for d in await devices(store)] == [
                        d == store.device_id for d in (a.device_id, b.device_id, c.device_id)
                    ]

                # Alpha revokes charlie and writes under the new key.
                old_epoch = a.membership.current_epoch
                await revoke(a, "charlie")
                assert a.membership.current_epoch > old_epoch
                after = await a.add(Draft("written after charlie was revoked"))
                after_dot = Dot.parse((await a.get(after)).version)
                [sealed] = await a.sealed([after_dot])
                assert sealed.header.epoch == a.membership.current_epoch

                # Bravo, still a member, learns of it at its next sync and reads the new memory.
                await _sync(homes["bravo"], b, a_port)
                assert (await b.get(after)).content == "written after charlie was revoked"
                assert await _names(b) == [("alpha", False), ("bravo", False), ("charlie", True)]

                # Charlie is refused at authentication by both, and cannot open the new version.
                for port in (a_port, b_port):
                    with pytest.raises(TrustError, match="refused this device"):
                        await _sync(homes["charlie"], c, port)
                assert a.membership.current_epoch not in c.group_keys
                with pytest.raises(TrustError):
                    await c.apply([sealed])
                with pytest.raises(PeerError):
                    await c.get(after)
            nursery.cancel_scope.cancel()


async def test_air_gapped_invite_file(tmp_path: Path, aio_loop: object) -> None:
    from peer.memory import Draft
    from peer.pairing import join_from_file, make_invite_file

    a_home = Home(tmp_path / "a")
    await a_home.init("alpha")
    file = tmp_path / "usb" / "invite.peer"
    file.parent.mkdir()
    async with await a_home.open_store() as a:
        memory_id = await a.add(Draft("carried on a stick"))
        invited = await make_invite_file(a, a_home.identity(), file, name="laptop")
        text, code, new_id = invited.text, invited.code, invited.new_device_id
        assert new_id is not None
        other = (await make_invite(a_home, a)).text
        assert a.membership.is_member(new_id)
    assert file.stat().st_mode & 0o077 == 0
    assert code.secret not in file.read_bytes()

    b_home = Home(tmp_path / "b")
    with pytest.raises(InviteRefused, match="another invite code"):
        await join_from_file(b_home, other, file)
    wrong = encode_code(dataclasses.replace(code, secret=bytes(16)))
    with pytest.raises(InviteRefused, match="does not open"):
        await join_from_file(b_home, wrong, file)
    assert not b_home.device_key_path.exists()

    joined = await join_from_file(b_home, text, file)
    assert joined.device_id == new_id and joined.members == 2
    with trio.fail_after(DEADLINE):
        async with await a_home.open_store() as a, await b_home.open_store() as b, trio.open_nursery() as nursery:
            port = await _serve(nursery, a_home, a)
            await _sync(b_home, b, port)
            assert (await b.get(memory_id)).content == "carried on a stick"
            assert [d.name for d in await devices(b)] == ["alpha", "laptop"]
            nursery.cancel_scope.cancel()
    with pytest.raises(StoreError, match="new --home"):
        await join_from_file(b_home, text, file)


async def test_an_invite_file_is_accepted_by_a_fresh_home_as_a_code_is(tmp_path: Path, aio_loop: object) -> None:
    """New-user audit M3: `peer init` then `peer join --file` was refused ("already holds a device")."""
    from tests.support.cli_runner import ok, ok_json

    a_path, b_path = tmp_path / "a", tmp_path / "b"
    ok(a_path, "init", "--name", "alpha")
    ok(a_path, "add", "carried on a stick")
    invite = ok_json(a_path, "invite", "--file", str(tmp_path / "invite.peer"), "--name", "laptop")
    ok(b_path, "init", "--name", "laptop")  # what a new user does first
    joined = await trio.to_thread.run_sync(
        lambda: ok_json(b_path, "join", invite["code"], "--file", str(tmp_path / "invite.peer"))
    )
    assert joined["members"] == 2
    assert [d["name"] for d in ok_json(b_path, "devices")] == ["alpha", "laptop"]


# The commands, as a person runs them ------------------------------------------------------


async def test_pairing_commands(tmp_path: Path, aio_loop: object) -> None:
    from tests.support.cli_runner import assert_error, ok, ok_json, peer

    async def run(fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn)

    a_path, b_path = tmp_path / "a", tmp_path / "b"
    ok_json(a_path, "init", "--name", "alpha")
    a_home = Home(a_path)
    with trio.fail_after(DEADLINE):
        async with await a_home.open_store() as a, trio.open_nursery() as nursery:
            port = await _serve(nursery, a_home, a)
            invite = await run(lambda: ok_json(a_path, "invite", "--ttl", "5m", "--address", f"127.0.0.1:{port}"))
            assert invite["code"].startswith("PEER1-")
            assert invite["device_id"] == a.device_id

            mistyped = invite["code"][:-1] + ("A" if invite["code"][-1] != "A" else "B")
            done = await run(lambda: peer(b_path, "join", mistyped, "--name", "bravo"))
            assert_error(done, 1, "mistyped")
            assert not (b_path / "peer.db").exists()

            joined = await run(lambda: ok_json(b_path, "join", invite["code"], "--name", "bravo"))
            assert joined["group_id"] == a.group_id.hex()
            text = await run(lambda: ok(b_path, "devices"))
            assert "alpha" in text and "* " in text and "bravo" in text
            nursery.cancel_scope.cancel()
    for path in (a_path, b_path):
        listed = ok_json(path, "devices")
        assert [(d["name"], d["revoked"]) for d in listed] == [("alpha", False), ("bravo", False)]
        assert [d["this_device"] for d in listed] == [path == a_path, path == b_path]
    revoked = ok_json(a_path, "revoke", "bravo")
    assert revoked["device_id"] == joined["device_id"]
    assert [(d["name"], d["revoked"]) for d in ok_json(a_path, "devices")] == [("alpha", False), ("bravo", True)]
    assert_error(peer(a_path, "revoke", "nobody"), 1, "no device")
    assert_error(peer(a_path, "invite", "--ttl", "3y"), 2, "duration")
    assert_error(peer(a_path, "join", "--file", "x", "--host", "h", "CODE"), 2)

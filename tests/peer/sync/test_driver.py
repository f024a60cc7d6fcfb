"""Sync over real SSH on loopback between real stores: both ways, trust, stalls and cuts."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from peer.aio import SYNC_SUBSYSTEM, ByteStream
from peer.aio.ssh import connect
from peer.home import Home
from peer.memory import Draft
from peer.store import Store
from peer.sync import Syncer, SyncProgress, parse_address, sync_over
from protocol import Dot, VersionVector
from protocol.errors import PeerError, TransportError, TrustError
from tests.support.groups import Devices
from tests.support.loopback import serve_on_loopback, ssh_server
from tests.support.waiting import wait_until_async

DEADLINE = 60


async def snapshot(store: Store) -> dict[str, Any]:
    """Everything a user could tell apart: every version held, the winners, the conflicts, the vector."""
    dots: list[Dot] = []
    async for batch in store.missing_for(VersionVector()):
        dots.extend(v.header.dot for v in batch)
    memories = sorted(
        (m.id, m.content, m.version, m.siblings) for m in await store.list()
    )
    conflicts = sorted([(v.version, v.state) for v in group] for group in await store.conflicts())
    return {
        "dots": sorted(dots),
        "unique": len(set(dots)) == len(dots),
        "memories": memories,
        "conflicts": conflicts,
        "members": sorted(m.device_id for m in store.membership.members()),
    }


def client(home: Home, store: Store, **kwargs: Any) -> Syncer:
    return Syncer(store, home.identity().signing_key, **kwargs)


async def add(store: Store, *texts: str) -> list[str]:
    return await store.add_many([(Draft(t), None) for t in texts])


async def test_two_members_sync_both_ways_and_agree(homes: Devices) -> None:
    with trio.fail_after(DEADLINE):
        async with await homes.first.open_store() as a, await homes.second.open_store() as b:
            (shared, *_) = await add(a, "the deploy key lives in vault", "tabs, not spaces", "run make test first")
            await add(b, "prefer trio over asyncio", "the CI runner has 2 cores")
            async with trio.open_nursery() as nursery:
                port = await serve_on_loopback(nursery, Syncer(a, homes.first.identity().signing_key).serve)
                first = await client(homes.second, b).sync_with("127.0.0.1", port)
                # Concurrent edits of one memory on both sides: a conflict both must show alike.
                await a.edit(shared, content="the deploy key lives in the team vault")
                await b.edit(shared, content="the deploy key moved to sops")
                second = await client(homes.second, b).sync_with("127.0.0.1", port)

                async def served_session_recorded() -> bool:
                    # The server records what the client holds once its side of the session
                    # ends, a moment after the client's sync_with returns: not cancelled before.
                    known = await a.known_peer(b.device_id)
                    return known is not None and await a.count_missing_for(known.vector) == 0

                await wait_until_async(served_session_recorded, 30, "A's record of the second session")
                nursery.cancel_scope.cancel()
            left, right = await snapshot(a), await snapshot(b)
            # Each side now knows the other holds everything (what `peer status` and `bundle export --for` use).
            a_knows = await a.known_peer(b.device_id)
            b_knows = await b.known_peer(a.device_id)
            assert a_knows is not None and b_knows is not None
            assert (a_knows.via, b_knows.via) == ("sync", "sync")
            assert await a.count_missing_for(a_knows.vector) == 0
            assert await b.count_missing_for(b_knows.vector) == 0
            assert await a.known_peer(homes.stranger.identity().device_id) is None
    assert (first.sent, first.received) == (2, 3)
    assert (second.sent, second.received) == (1, 1)
    assert first.peer_device_id == homes.first.identity().device_id
    assert len(left["memories"]) == 5
    assert left == right
    assert left["unique"]
    assert len(left["conflicts"]) == 1 and len(left["conflicts"][0]) == 2
    assert set(first.to_json()) >= {"sent", "received", "bytes_sent", "bytes_received", "seconds"}


async def test_a_no_change_sync_moves_only_a_few_hundred_bytes(homes: Devices) -> None:
    with trio.fail_after(DEADLINE):
        async with await homes.first.open_store() as a, await homes.second.open_store() as b:
            await add(a, *(f"memory number {i} on the first device" for i in range(300)))
            await add(b, *(f"memory number {i} on the second device" for i in range(300)))
            async with trio.open_nursery() as nursery:
                port = await serve_on_loopback(nursery, Syncer(a, homes.first.identity().signing_key).serve)
                syncer = client(homes.second, b)
                full = await syncer.sync_with("127.0.0.1", port)
                again = await syncer.sync_with("127.0.0.1", port)
                nursery.cancel_scope.cancel()
    assert (full.sent, full.received) == (300, 300)
    assert (again.sent, again.received, again.added) == (0, 0, 0)
    assert again.bytes_sent < 400 and again.bytes_received < 400, again


async def test_a_non_member_is_refused_and_nothing_is_written(
    homes: Devices, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with trio.fail_after(DEADLINE):
        async with await homes.first.open_store() as a, await homes.stranger.open_store() as s:
            await add(a, "a secret of the group")
            await add(s, "the stranger's own note")
            before_a, before_s = await snapshot(a), await snapshot(s)
            async with trio.open_nursery() as nursery:
                port = await serve_on_loopback(nursery, Syncer(a, homes.first.identity().signing_key).serve)
                # peer sync on the stranger gives up at the host key already...
                with pytest.raises(TrustError) as host_refused:
                    await client(homes.stranger, s).sync_with("127.0.0.1", port)
                # ...and a client that goes on anyway is refused at authentication.
                with pytest.raises(TrustError) as refused:
                    stream = await connect(
                        "127.0.0.1", port, homes.stranger.identity().signing_key, trust_host=lambda d: True
                    )
                    await sync_over(stream, s)
                nursery.cancel_scope.cancel()
            assert await snapshot(a) == before_a
            assert await snapshot(s) == before_s
    assert "which is not a member of this group" in str(host_refused.value)
    assert "not a member" in str(refused.value) and "peer join" in str(refused.value)
    refusals = [r.getMessage() for r in caplog.records if "not a member of this group: refused" in r.getMessage()]
    assert len(refusals) == 1


async def test_the_client_refuses_a_host_that_is_not_a_member(homes: Devices) -> None:
    with trio.fail_after(DEADLINE):
        async with await homes.stranger.open_store() as s, await homes.second.open_store() as b:
            await add(b, "only for the group")
            before_s, before_b = await snapshot(s), await snapshot(b)
            async with trio.open_nursery() as nursery:
                # A stranger's server that would let anyone in.
                async def anyone(device_id: str) -> bool:
                    return True

                stranger = Syncer(s, homes.stranger.identity().signing_key)
                port = await serve_on_loopback(nursery, ssh_server(homes.stranger, anyone, {SYNC_SUBSYSTEM: stranger.handle}))
                with pytest.raises(TrustError) as refused:
                    await client(homes.second, b).sync_with("127.0.0.1", port)
                nursery.cancel_scope.cancel()
            assert await snapshot(s) == before_s
            assert await snapshot(b) == before_b
    assert "which is not a member of this group" in str(refused.value)


async def test_a_peer_that_accepts_but_never_speaks_fails_the_sync_in_time(homes: Devices, silent_port: int) -> None:
    with trio.fail_after(DEADLINE):
        async with await homes.second.open_store() as b:
            with pytest.raises(TransportError) as failed:
                await client(homes.second, b, connect_timeout=1).sync_with("127.0.0.1", silent_port)
    assert "did not complete an SSH handshake" in str(failed.value)


async def test_a_member_that_stalls_after_connecting_fails_the_sync_in_time(homes: Devices) -> None:
    async def mute(stream: ByteStream) -> None:
        await trio.sleep_forever()

    with trio.fail_after(DEADLINE):
        async with await homes.first.open_store() as a, await homes.second.open_store() as b:
            async with trio.open_nursery() as nursery:
                syncer_a = Syncer(a, homes.first.identity().signing_key)
                port = await serve_on_loopback(nursery, ssh_server(homes.first, syncer_a.authorize, {SYNC_SUBSYSTEM: mute}))
                with pytest.raises(TransportError) as failed:
                    await client(homes.second, b, read_timeout=1).sync_with("127.0.0.1", port)
                nursery.cancel_scope.cancel()
    assert "stopped responding" in str(failed.value)


class CutAfter:
    """A stream that breaks for good once ``limit`` bytes have arrived, as if the cable were pulled."""

    def __init__(self, stream: ByteStream, limit: int) -> None:
        self._stream = stream
        self._left = limit

    @property
    def peer_device_id(self) -> str:
        return self._stream.peer_device_id

    async def send_all(self, data: bytes) -> None:
        if self._left <= 0:
            raise TransportError("cut")
        await self._stream.send_all(data)

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        if self._left <= 0:
            raise TransportError("cut")
        data = await self._stream.receive_some(min(max_bytes, self._left))
        self._left -= len(data)
        if self._left <= 0:
            await self._stream.aclose()
        return data

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def test_a_sync_cut_midway_loses_nothing_and_the_next_one_completes(homes: Devices) -> None:
    with trio.fail_after(DEADLINE):
        async with await homes.first.open_store() as a, await homes.second.open_store() as b:
            await add(a, *(f"paragraph {i}: " + "some words " * 40 for i in range(1500)))
            await add(b, *(f"the second device's memory {i}" for i in range(200)))
            vector_before = await b.vector()
            async with trio.open_nursery() as nursery:
                port = await serve_on_loopback(nursery, Syncer(a, homes.first.identity().signing_key).serve)
                raw = await connect(
                    "127.0.0.1", port, homes.second.identity().signing_key, trust_host=lambda d: True
                )
                with pytest.raises(PeerError):
                    await sync_over(CutAfter(raw, 200_000), b, batch_size=50)
                await raw.aclose()
                held_after_cut = len((await snapshot(b))["dots"])
                # What arrived is kept, and so is the progress it proved (the sender
                # sends in per-origin order): the vector moved, the rest is asked for.
                assert 200 < held_after_cut < 1700
                assert (await b.vector()).dominates(vector_before) and await b.vector() != vector_before
                progress: list[SyncProgress] = []
                summary = await client(homes.second, b).sync_with("127.0.0.1", port, progress=progress.append)
                nursery.cancel_scope.cancel()
            left, right = await snapshot(a), await snapshot(b)
    assert summary.received + held_after_cut - 200 >= 1500
    assert summary.received == 1700 - held_after_cut  # nothing that arrived before the cut came again
    assert left == right and len(left["memories"]) == 1700 and left["unique"]
    assert progress and progress[-1].received == summary.received


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("laptop", ("laptop", 7847)),
        ("laptop:2222", ("laptop", 2222)),
        ("10.0.0.2:0", ("10.0.0.2", 0)),
        ("[::1]:9000", ("::1", 9000)),
        ("[fe80::1]", ("fe80::1", 7847)),
        ("fe80::1", ("fe80::1", 7847)),
    ],
)
def test_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", ":22", "host:port", "host:70000", "[::1"])
def test_bad_addresses_say_what_is_wrong(text: str) -> None:
    with pytest.raises(TransportError):
        parse_address(text)


async def test_the_other_sides_error_reaches_the_user_and_nothing_is_merged(homes: Devices) -> None:
    async def refuse_after_hello(stream: ByteStream) -> None:
        # A member whose side fails (here on purpose): it says why in an ERROR frame.
        from protocol.session import SyncSession

        async with await homes.first.open_store() as store:
            session = SyncSession(
                store.device_id, store.group_id, await store.vector(), await store.membership_digest()
            )
            await stream.send_all(session.start())
            await stream.send_all(session.send_error(TrustError("this device's disk is full; free some space")))

    with trio.fail_after(DEADLINE):
        async with await homes.first.open_store() as a, await homes.second.open_store() as b:
            await add(b, "kept here")
            before = await snapshot(b)
            async with trio.open_nursery() as nursery:
                syncer_a = Syncer(a, homes.first.identity().signing_key)
                port = await serve_on_loopback(nursery, ssh_server(homes.first, syncer_a.authorize, {SYNC_SUBSYSTEM: refuse_after_hello}))
                with pytest.raises(PeerError) as failed:
                    await client(homes.second, b).sync_with("127.0.0.1", port)
                nursery.cancel_scope.cancel()
            assert await snapshot(b) == before
    assert "ended the sync" in str(failed.value) and "disk is full" in str(failed.value)

"""The SSH transport on loopback: who may connect, and what a user is told when refused or stalled."""

from __future__ import annotations

import logging
from collections.abc import Callable

import asyncssh
import pytest
import trio

from peer.aio import JOIN_SUBSYSTEM, SYNC_SUBSYSTEM, ByteStream
from peer.aio.ssh import _SSHStream, connect
from peer.store import Store
from protocol.errors import TransportError, TrustError
from tests.support.groups import Devices
from tests.support.loopback import echo, members_of, serve_on_loopback, ssh_server

DEADLINE = 30


def member_check(store: Store) -> Callable[[str], bool]:
    return lambda device_id: store.membership.is_member(device_id)


async def test_members_connect_and_exchange_bytes(homes: Devices) -> None:
    with trio.fail_after(DEADLINE):
        async with await homes.first.open_store() as server_store, await homes.second.open_store() as client_store:
            async with trio.open_nursery() as nursery:
                port = await serve_on_loopback(nursery, ssh_server(homes.first, members_of(server_store), {SYNC_SUBSYSTEM: echo}))
                stream = await connect(
                    "127.0.0.1", port, homes.second.identity().signing_key, trust_host=member_check(client_store)
                )
                assert stream.peer_device_id == homes.first.identity().device_id
                payload = bytes(range(256)) * 1000
                await stream.send_all(payload)
                got = b""
                while len(got) < len(payload):
                    got += await stream.receive_some(1 << 16)
                assert got == payload
                await stream.aclose()
                nursery.cancel_scope.cancel()


async def test_a_non_member_is_refused_with_a_clear_message_on_both_sides(
    homes: Devices, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="peer.aio")
    stranger_id = homes.stranger.identity().device_id
    with trio.fail_after(DEADLINE):
        async with await homes.first.open_store() as server_store, trio.open_nursery() as nursery:
            port = await serve_on_loopback(nursery, ssh_server(homes.first, members_of(server_store), {SYNC_SUBSYSTEM: echo}))
            with pytest.raises(TrustError) as refused:
                await connect(
                    "127.0.0.1", port, homes.stranger.identity().signing_key, trust_host=lambda _: True
                )
            nursery.cancel_scope.cancel()
    assert "refused this device" in str(refused.value)
    assert "not a member" in str(refused.value)
    server_lines = [r.getMessage() for r in caplog.records if "not a member of this group: refused" in r.getMessage()]
    assert len(server_lines) == 1
    from protocol.ids import format_device_id

    assert format_device_id(stranger_id) in server_lines[0]


async def test_the_client_refuses_a_host_that_is_not_a_member(homes: Devices) -> None:
    with trio.fail_after(DEADLINE):
        async with await homes.stranger.open_store() as stranger_store, await homes.second.open_store() as client_store:
            async with trio.open_nursery() as nursery:
                reached: list[str] = []

                async def anyone(device_id: str) -> bool:
                    reached.append(device_id)
                    return True

                port = await serve_on_loopback(nursery, ssh_server(homes.stranger, anyone, {SYNC_SUBSYSTEM: echo}))
                with pytest.raises(TrustError) as refused:
                    await connect(
                        "127.0.0.1", port, homes.second.identity().signing_key, trust_host=member_check(client_store)
                    )
                nursery.cancel_scope.cancel()
    assert "which is not a member of this group" in str(refused.value)
    # The client gave up before authenticating: the stranger never saw its key.
    assert reached == []
    del stranger_store


async def test_joining_needs_no_membership_but_reaches_only_the_join_subsystem(homes: Devices) -> None:
    inviter_id = homes.first.identity().device_id
    joined: list[str] = []

    async def join(stream: ByteStream) -> None:
        joined.append(stream.peer_device_id)
        await stream.send_all(b"welcome")

    with trio.fail_after(DEADLINE):
        async with await homes.first.open_store() as server_store, trio.open_nursery() as nursery:
            port = await serve_on_loopback(nursery, ssh_server(homes.first, members_of(server_store), {SYNC_SUBSYSTEM: echo, JOIN_SUBSYSTEM: join}))
            stream = await connect(
                "127.0.0.1",
                port,
                homes.stranger.identity().signing_key,
                trust_host=lambda d: d == inviter_id,
                subsystem=JOIN_SUBSYSTEM,
            )
            got = b""
            while chunk := await stream.receive_some():
                got += chunk
            await stream.aclose()
            # The same stranger still cannot reach the sync subsystem.
            with pytest.raises(TrustError):
                await connect(
                    "127.0.0.1", port, homes.stranger.identity().signing_key, trust_host=lambda d: d == inviter_id
                )
            nursery.cancel_scope.cancel()
    assert got == b"welcome"
    assert joined == [homes.stranger.identity().device_id]


async def test_connection_refused_says_what_to_check(homes: Devices) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with trio.fail_after(DEADLINE):
        with pytest.raises(TransportError) as failed:
            await connect("127.0.0.1", port, homes.second.identity().signing_key, trust_host=lambda _: True)
    assert f"connection refused by 127.0.0.1:{port}" in str(failed.value)
    assert "peer agent" in str(failed.value)


async def test_a_peer_that_never_speaks_fails_within_the_timeout(homes: Devices, silent_port: int) -> None:
    with trio.fail_after(DEADLINE):
        with pytest.raises(TransportError) as failed:
            await connect(
                "127.0.0.1", silent_port, homes.second.identity().signing_key, trust_host=lambda _: True, connect_timeout=1
            )
    assert "did not complete an SSH handshake" in str(failed.value)


def test_a_connection_lost_without_a_reason_still_says_what_happened() -> None:
    """asyncssh's ConnectionLost often has no text: the message used to end in "was lost: "."""
    stream = _SSHStream(None, None, "A" * 52, "127.0.0.1:22", 30.0)  # type: ignore[arg-type]
    message = str(stream._lost(asyncssh.ConnectionLost("")))
    assert message.endswith("was lost: ConnectionLost"), message
    assert str(stream._lost(OSError(104, "Connection reset by peer"))).endswith("Connection reset by peer")

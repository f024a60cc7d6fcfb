"""An agent under hostile input: 1,000 malformed connections and frames, and it keeps serving members.

The agent is the real ``peer agent`` process on loopback. The garbage
comes in four kinds: raw TCP that is not SSH, SSH from keys that are not
members', members' SSH sessions carrying malformed frames, and
connections left idle to hold resources. Afterwards the agent still runs,
still syncs with a member, and its memory does not grow with the number of
bad connections (a second round of 500 adds next to nothing).
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
import trio
import trio_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from peer.aio import SYNC_SUBSYSTEM
from peer.aio.ssh import connect
from peer.home import Home
from protocol.errors import PeerError
from tests.support.cli_runner import Agent, ok, ok_json
from tests.support.groups import admit, found

#: How many bad connections of each kind per round (1,000 in all over the first round).
RAW, STRANGERS, FRAMES, IDLE = 450, 150, 350, 50


def garbage_frames(rng: random.Random) -> bytes:
    """Something that is not a valid session opening."""
    kind = rng.randrange(5)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 4096))
    if kind == 1:
        return struct.pack(">I", 0xFFFFFFFF) + b"\x01"  # a frame claiming 4 GB
    if kind == 2:
        return struct.pack(">I", 100) + b"\x01" + b"\x00" * 20  # truncated, then the stream ends
    if kind == 3:
        return struct.pack(">I", 5) + bytes([0xEE]) + b"junk"  # unknown tag
    return b"\x00" * 65536


async def raw_garbage(port: int, rng: random.Random) -> None:
    with trio.move_on_after(5):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return
        async with stream:
            try:
                if rng.random() < 0.3:
                    await stream.send_all(b"SSH-2.0-garbage\r\n" + rng.randbytes(rng.randrange(1, 2000)))
                elif rng.random() < 0.5:
                    await stream.send_all(rng.randbytes(rng.randrange(1, 5000)))
                # else: connect and hang up at once
                await stream.receive_some(4096)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass


async def stranger(port: int) -> None:
    with trio.move_on_after(10):
        try:
            stream = await connect("127.0.0.1", port, Ed25519PrivateKey.generate(), trust_host=lambda _: True,
                                   subsystem=SYNC_SUBSYSTEM, connect_timeout=5, read_timeout=5)
        except PeerError:
            return  # refused, as it must be
        await stream.aclose()
        raise AssertionError("a key that is not a member's opened a sync session")


async def bad_frames(port: int, home: Home, rng: random.Random) -> None:
    with trio.move_on_after(10):
        try:
            stream = await connect("127.0.0.1", port, home.identity().signing_key, trust_host=lambda _: True,
                                   subsystem=SYNC_SUBSYSTEM, connect_timeout=5, read_timeout=5)
        except PeerError:
            return
        try:
            await stream.send_all(garbage_frames(rng))
            while await stream.receive_some(65536):
                pass
        except PeerError:
            pass
        finally:
            await stream.aclose()


async def idle(port: int, hold: trio.Event) -> None:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return
    async with stream:
        await hold.wait()


async def one_round(port: int, member: Home, rng: random.Random, share: float = 1.0) -> None:
    hold = trio.Event()
    limit = trio.CapacityLimiter(16)

    async def limited(fn, *args) -> None:  # type: ignore[no-untyped-def]
        async with limit:
            await fn(*args)

    async with trio.open_nursery() as idle_nursery:
        for _ in range(int(IDLE * share)):
            idle_nursery.start_soon(idle, port, hold)
        async with trio.open_nursery() as nursery:
            for _ in range(int(RAW * share)):
                nursery.start_soon(limited, raw_garbage, port, random.Random(rng.random()))
            for _ in range(int(STRANGERS * share)):
                nursery.start_soon(limited, stranger, port)
            for _ in range(int(FRAMES * share)):
                nursery.start_soon(limited, bad_frames, port, member, random.Random(rng.random()))
        hold.set()


def flood(port: int, member: Home, seed: int, share: float = 1.0) -> None:
    async def main() -> None:
        async with trio_asyncio.open_loop():
            with trio.fail_after(240):
                await one_round(port, member, random.Random(seed), share)

    trio.run(main)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    async def make() -> None:
        async with trio_asyncio.open_loop():
            await admit(await found(tmp_path / "first"), tmp_path / "second")

    trio.run(make)
    return tmp_path / "first", tmp_path / "second"


def test_a_thousand_malformed_connections_leave_the_agent_serving_members(pair: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = pair
    agent = Agent(first, tmp_path / "agent.log", "--no-discovery")
    try:
        ok(second, "add", "warm-up: the first sync", "--kind", "fact")
        ok(second, "sync", f"127.0.0.1:{agent.port}")
        before = agent.rss_kb()
        flood(agent.port, Home(second), seed=1)
        assert agent.process.poll() is None, "the agent died: " + agent.log.read_text()[-2000:]
        after_first = agent.rss_kb()
        flood(agent.port, Home(second), seed=2, share=0.5)
        after_second = agent.rss_kb()
        assert agent.process.poll() is None, "the agent died: " + agent.log.read_text()[-2000:]
        # Still serving members: a new memory crosses both ways.
        ok(second, "add", "after the storm: the agent still syncs", "--kind", "fact")
        summary = ok_json(second, "sync", f"127.0.0.1:{agent.port}")
        contents = {m["content"] for m in ok_json(first, "list")}
    finally:
        code = agent.stop()
    print(f"agent RSS: {before} kB before, {after_first} kB after 1,000 bad connections, {after_second} kB after 500 more")
    assert summary["sent"] == 1
    assert "after the storm: the agent still syncs" in contents
    assert code == 0
    # Bounded: 500 more bad connections cost (almost) nothing more than the first thousand did.
    assert after_second - after_first < 20_000, (before, after_first, after_second)
    log = agent.log.read_text()
    assert "Traceback" not in log, log[-3000:]

"""Strangers cannot stop or exhaust an agent (hostile report B2, B4).

* B2, the acceptance test: the real ``peer agent`` with a 1,024 file limit
  (``prlimit`` on its process) under a flood of 3,000 plain TCP connections
  keeps running, and a member syncs during the flood and after it.
* B4: the join subsystem, which any key may reach, closes a stranger's idle
  join channel and login, refuses an oversized JOIN frame at once (not after
  buffering 4 MiB), and serves one join channel per login. These run the
  agent in process with the time limits shortened, so they take seconds.
"""

from __future__ import annotations

import resource
import shutil
import socket
import struct
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import asyncssh
import pytest
import trio
import trio_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import peer.aio.ssh
import peer.pairing.join
from peer.agent import run_agent
from peer.aio import JOIN_SUBSYSTEM, JOIN_USER
from peer.aio.ssh import connect
from protocol import PeerError
from tests.support.cli_runner import Agent, ok, ok_json
from tests.support.groups import admit, found

FLOOD = 3_000
AGENT_FILES = 1_024


def _open_flood(port: int, count: int) -> list[socket.socket]:
    """``count`` plain TCP connections (no SSH), left open; connects still pending are fine."""
    sockets: list[socket.socket] = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        sockets.append(s)
    return sockets


def test_a_flood_of_plain_connections_beyond_the_file_limit_leaves_members_syncing(tmp_path: Path) -> None:
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed: cannot give the agent a 1,024 file limit")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = FLOOD + 256
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"this process may open only {hard} files; the flood needs {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))

    async def make() -> None:
        async with trio_asyncio.open_loop():
            await admit(await found(tmp_path / "first"), tmp_path / "second")

    trio.run(make)
    first, second = tmp_path / "first", tmp_path / "second"
    agent = Agent(first, tmp_path / "agent.log", "--no-discovery",
                  prefix=["prlimit", f"--nofile={AGENT_FILES}:{AGENT_FILES}", "--"])
    flood: list[socket.socket] = []
    try:
        ok(second, "add", "before the flood", "--kind", "fact")
        ok(second, "sync", f"127.0.0.1:{agent.port}")
        flood = _open_flood(agent.port, FLOOD)
        ok(second, "add", "during the flood: a member still gets through", "--kind", "fact")
        during = ok_json(second, "sync", f"127.0.0.1:{agent.port}")
        assert agent.process.poll() is None, "the agent died: " + agent.log.read_text()[-2000:]
        for s in flood:
            s.close()
        flood = []
        ok(second, "add", "after the flood", "--kind", "fact")
        after = ok_json(second, "sync", f"127.0.0.1:{agent.port}")
        contents = {m["content"] for m in ok_json(first, "list")}
        alive = agent.process.poll() is None
    finally:
        for s in flood:
            s.close()
        code = agent.stop()
    log = agent.log.read_text()
    assert alive, "the agent died: " + log[-2000:]
    assert during["sent"] == 1 and after["sent"] == 1
    assert {"during the flood: a member still gets through", "after the flood"} <= contents
    assert code == 0
    assert "Traceback" not in log, log[-3000:]


# The join subsystem ------------------------------------------------------------------------


@pytest.fixture
async def joinable_agent(
    tmp_path: Path, aio_loop: object, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[int]:
    """An agent in process, serving the join subsystem, with short join limits; yields its port."""
    monkeypatch.setattr(peer.aio.ssh, "JOIN_LOGIN_S", 3.0, raising=False)
    monkeypatch.setattr(peer.pairing.join, "JOIN_EXCHANGE_S", 2.0, raising=False)
    home = await found(tmp_path / "inviter")
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(partial(run_agent, home, host="127.0.0.1", port=0, discovery=False))
        yield port
        nursery.cancel_scope.cancel()


async def test_an_idle_join_channel_is_closed(joinable_agent: int) -> None:
    stream = await connect("127.0.0.1", joinable_agent, Ed25519PrivateKey.generate(), trust_host=lambda _: True,
                           subsystem=JOIN_SUBSYSTEM, read_timeout=60)
    try:
        with trio.fail_after(20):  # before: held open until the client itself gave up (60 s here)
            try:
                while await stream.receive_some(65536):
                    pass
            except PeerError:
                pass  # closed under it: as good as an end of stream
    finally:
        await stream.aclose()


async def test_an_oversized_join_frame_is_refused_at_once(joinable_agent: int) -> None:
    stream = await connect("127.0.0.1", joinable_agent, Ed25519PrivateKey.generate(), trust_host=lambda _: True,
                           subsystem=JOIN_SUBSYSTEM, read_timeout=60)
    try:
        # A JOIN_REQUEST is under 1 KB; this one claims 1 MiB and sends its first byte only.
        await stream.send_all(struct.pack(">I", 1 << 20) + b"\x10")
        with trio.fail_after(10):  # before: the agent waited for the rest (up to 4 MiB) until its read timeout
            answer = await stream.receive_some(65536)
    finally:
        await stream.aclose()
    assert answer[4] == 0x12, answer  # JOIN_REJECT


async def test_one_join_login_serves_one_join_channel(joinable_agent: int) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")

    async def two_channels() -> tuple[bool, bool]:
        conn = await asyncssh.connect(
            "127.0.0.1", joinable_agent, username=JOIN_USER, client_keys=[key], known_hosts=None,
            config=None, agent_path=None, password=None, kbdint_auth=False, gss_auth=False, host_based_auth=False,
        )
        opened: list[bool] = []
        try:
            for _ in range(2):
                try:
                    await conn.open_session(subsystem=JOIN_SUBSYSTEM, encoding=None)
                    opened.append(True)
                except asyncssh.ChannelOpenError:
                    opened.append(False)
        finally:
            conn.close()
        return opened[0], opened[1]

    with trio.fail_after(30):
        first, second = await trio_asyncio.aio_as_trio(two_channels)()
    assert first, "the first join channel was refused"
    assert not second, "a second join channel on one login was served"

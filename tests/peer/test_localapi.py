"""The agent's local API on HOME/agent.sock: same user only, JSON lines, errors that name the problem."""

from __future__ import annotations

import json
import os
import socket
import stat
from functools import partial
from pathlib import Path

import pytest
import trio

from peer import localapi
from peer.agent import run_agent
from peer.config import AgentConfig
from tests.support.groups import found


async def test_the_agent_answers_ping_status_and_sync_now_on_a_private_socket(tmp_path: Path, aio_loop: object) -> None:
    home = await found(tmp_path / "a")
    with pytest.raises(localapi.AgentNotRunning, match="peer .*agent"):
        await localapi.call(home.path, "ping")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_agent, home, host="127.0.0.1", port=0, config=AgentConfig(), discovery=False))
            path = localapi.socket_path(home.path)
            mode = stat.S_IMODE(os.stat(path).st_mode)
            pong = await localapi.call(home.path, "ping")
            status = await localapi.call(home.path, "status")
            synced = await localapi.call(home.path, "sync_now", wait=1)
            with pytest.raises(localapi.AgentError, match="no method 'teleport'"):
                await localapi.call(home.path, "teleport", query="x")
            with pytest.raises(localapi.AgentError, match="wait must be"):
                await localapi.call(home.path, "sync_now", wait="soon")
            # A malformed line gets an error answer, and the connection goes on serving.
            stream = await trio.open_unix_socket(str(path))
            await stream.send_all(b"this is not json\n" + json.dumps({"id": 7, "method": "ping"}).encode() + b"\n")
            received = b""
            while received.count(b"\n") < 2:
                received += await stream.receive_some(65536)
            await stream.aclose()
            nursery.cancel_scope.cancel()
    assert mode == 0o600
    assert pong == {"pid": os.getpid(), "device_id": home.identity().device_id}
    assert status["running"] and status["peers"] == []
    assert synced == {"asked": 0, "peers": []}
    first, second = (json.loads(line) for line in received.splitlines())
    assert first["error"]["type"] == "bad_request" and second == {"id": 7, "result": pong}
    # Stopped: the socket is gone, and a client says no agent runs.
    assert not path.exists()
    with pytest.raises(localapi.AgentNotRunning):
        await localapi.call(home.path, "ping")


async def test_a_socket_left_by_a_killed_agent_is_replaced(tmp_path: Path, aio_loop: object) -> None:
    home = await found(tmp_path / "a")
    stale = localapi.socket_path(home.path)
    left = socket.socket(socket.AF_UNIX)
    left.bind(str(stale))
    left.close()  # the file stays, nobody listens: what SIGKILL leaves behind
    with pytest.raises(localapi.AgentNotRunning):
        await localapi.call(home.path, "ping")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(localapi.serve, home.path, {"ping": _pong}))
            assert await localapi.call(home.path, "ping") == "pong"
            nursery.cancel_scope.cancel()


async def _pong(params: dict[str, object]) -> str:
    return "pong"

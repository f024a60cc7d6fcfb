"""Agents on loopback keep stores in sync on their own: configured peers, changes from other processes, backoff.

Discovery is off here (mDNS between network namespaces is in
test_agent_lan.py); the peers are given as addresses, as `[agent] peers` does.
"""

from __future__ import annotations

import logging
import socket
import time
from functools import partial
from pathlib import Path

import pytest
import trio

from peer.agent import run_agent
from peer.config import AgentConfig
from peer.home import Home
from peer.memory import Draft
from peer.sync import read_status
from peer.sync.report import status_command
from tests.support.cli_runner import Agent, assert_error, ok, ok_json, peer
from tests.support.groups import admit, found

FAST = AgentConfig(sync_interval=30, debounce=0.05, backoff_max=2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for(home: Home, memory_id: str, deadline: float) -> float:
    """Poll ``home``'s store (as another process would) until it holds ``memory_id``; seconds it took."""
    started = trio.current_time()
    with trio.fail_after(deadline):
        while True:
            async with await home.open_store() as store:
                if memory_id in {m.id for m in await store.list()}:
                    return trio.current_time() - started
            await trio.sleep(0.05)


async def test_a_memory_added_by_another_process_reaches_the_other_agent(tmp_path: Path, aio_loop: object) -> None:
    a = await found(tmp_path / "a")
    b = await admit(a, tmp_path / "b")
    port_a, port_b = free_port(), free_port()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            # Each lists the other, as `[agent] peers` in both config files would.
            for home, port, other in ((a, port_a, port_b), (b, port_b, port_a)):
                await nursery.start(partial(
                    run_agent, home, host="127.0.0.1", port=port, config=FAST, discovery=False,
                    peers=[f"127.0.0.1:{other}"],
                ))
            # The first round (sync on start) has nothing to carry; then `peer add` on A, as another process would.
            await trio.sleep(0.5)
            async with await a.open_store() as store:
                first = await store.add(Draft("the release branch is cut on Thursdays"))
            took = await wait_for(b, first, 10)
            # And the other way: B's agent pushes B's change to A without being asked.
            async with await b.open_store() as store:
                second = await store.add(Draft("the on-call phone is in the drawer"))
            took_back = await wait_for(a, second, 10)
            status_a = read_status(a)
            report = await status_command(b)
            nursery.cancel_scope.cancel()
    print(f"propagation A->B {took:.2f} s, B->A {took_back:.2f} s")
    assert took < 3 and took_back < 3
    # `peer status` from another process: the agent is running and knows the other device.
    assert status_a is not None and status_a["running"]
    assert report.agent is not None
    (peer,) = report.peers
    assert peer["device_id"] == a.identity().device_id
    assert peer["lacks"] == 0 and peer["last_sync"] is not None
    assert "lacks: 0 versions" in report.text()
    # Stopped: the status says so.
    assert read_status(a) is None


async def test_an_unreachable_peer_is_retried_with_backoff_and_logged_once(
    tmp_path: Path, aio_loop: object, caplog: pytest.LogCaptureFixture
) -> None:
    a = await found(tmp_path / "a")
    dead_port = free_port()  # nothing listens there
    caplog.set_level(logging.DEBUG, logger="peer.agent")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(run_agent, a, host="127.0.0.1", port=0, config=FAST, discovery=False, peers=[f"127.0.0.1:{dead_port}"])
            )
            await trio.sleep(5)
            status = read_status(a)
            nursery.cancel_scope.cancel()
    attempts = [r for r in caplog.records if "failed" in r.getMessage() and r.name == "peer.agent"]
    warnings = [r for r in attempts if r.levelno >= logging.WARNING]
    assert status is not None
    (peer,) = status["peers"]
    assert peer["last_result"].startswith("failed:")
    # Backoff 1, 2, 2... s (halved by jitter at worst): a handful of attempts in 5 s, not a busy loop.
    assert 2 <= len(attempts) <= 8, [r.getMessage() for r in attempts]
    assert len(warnings) == 1


def test_the_agent_reads_config_toml_and_runs_the_scheduled_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`[agent]` and `[backup]` from config.toml: the first backup is written at once, then on schedule."""
    # With a passphrase in the environment, scheduled backups carry the identity (sealed under it).
    monkeypatch.setenv("PEER_BACKUP_PASSPHRASE", "correct horse battery staple")
    home = tmp_path / "home"
    ok(home, "init", "--name", "solo")
    ok(home, "add", "the office wifi password rotates monthly", "--kind", "fact")
    backups = tmp_path / "backups"
    (home / "config.toml").write_text(
        "[agent]\ndiscovery = false\nsync_interval = 30\n\n"
        f"[backup]\nenabled = true\nfrequency = \"daily\"\ndirectory = \"{backups}\"\nmax_backups = 3\n"
    )
    agent = Agent(home, tmp_path / "agent.log")
    try:
        deadline = time.monotonic() + 30
        while not list(backups.glob("*.peerbackup")) and time.monotonic() < deadline:
            time.sleep(0.1)
        written = list(backups.glob("*.peerbackup"))
    finally:
        assert agent.stop() == 0
    assert len(written) == 1, agent.log.read_text()
    # A backup of this device: it restores onto a fresh home with the memory in it.
    fresh = tmp_path / "fresh"
    ok(fresh, "backup", "restore", "--file", str(written[0]))
    assert [m["content"] for m in ok_json(fresh, "list")] == ["the office wifi password rotates monthly"]


def test_a_mistake_in_config_toml_stops_the_agent_with_one_line_naming_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "init")
    (home / "config.toml").write_text("[agent]\nsync_intervall = 5\n")
    message = assert_error(peer(home, "agent", "--listen", "127.0.0.1:0", "--no-discovery"), 1, "sync_intervall", "[agent]")
    assert "config.toml" in message

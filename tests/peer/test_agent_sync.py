"""Agents on loopback keep stores in sync on their own: configured peers, changes from other processes, backoff.

Discovery is off here (mDNS between network namespaces is in
test_agent_lan.py); the peers are given as addresses, as `[agent] peers` does.
"""

from __future__ import annotations

import logging
import socket
from functools import partial
from pathlib import Path

import pytest
import trio

from peer.agent import run_agent
from peer.config import AgentConfig
from peer.home import Home
from peer.memory import Draft
from peer.sync import read_status
from peer.sync.report import StatusReport, status_report
from tests.support.agents import agents_naming_each_other
from tests.support.cli_runner import Agent, assert_error, ok, ok_json, peer
from tests.support.groups import admit, found
from tests.support.waiting import wait_until, wait_until_async

FAST = AgentConfig(sync_interval=30, debounce=0.05, backoff_max=2)


async def holds(home: Home, memory_id: str) -> bool:
    """Whether ``home``'s store holds ``memory_id``, read as another process would."""
    async with await home.open_store() as store:
        return memory_id in {m.id for m in await store.list()}



async def test_a_memory_added_by_another_process_reaches_the_other_agent(tmp_path: Path, aio_loop: object) -> None:
    a = await found(tmp_path / "a")
    b = await admit(a, tmp_path / "b")
    with trio.fail_after(120):
        async with agents_naming_each_other(a, b, FAST):
            # The first round (sync on start) has nothing to carry; then `peer add` on A, as another process would.
            async with await a.open_store() as store:
                first = await store.add(Draft("the release branch is cut on Thursdays"))
            started = trio.current_time()
            await wait_until_async(partial(holds, b, first), 30, "A's new memory on B")
            took = trio.current_time() - started
            # And the other way: B's agent pushes B's change to A without being asked.
            async with await b.open_store() as store:
                second = await store.add(Draft("the on-call phone is in the drawer"))
            started = trio.current_time()
            await wait_until_async(partial(holds, a, second), 30, "B's new memory on A")
            took_back = trio.current_time() - started
            status_a = read_status(a)

            async def settled() -> StatusReport | None:
                # B records A's vector when the session that carried the memory ends, a moment
                # after A has committed it: read B's report once that bookkeeping is done.
                report = await status_report(b)
                return report if report.peers and report.peers[0].lacks == 0 else None

            report = await wait_until_async(settled, 30, "B's record of what A holds")
    # Speed is bench/agent.py's to report (p50/p95); here the deadlines above only bound a broken run.
    print(f"propagation A->B {took:.2f} s, B->A {took_back:.2f} s")
    # `peer status` from another process: the agent is running and knows the other device.
    assert status_a is not None and status_a["running"]
    assert report.agent is not None
    (peer,) = report.peers
    assert peer.device_id == a.identity().device_id
    assert peer.lacks == 0 and peer.last_sync is not None
    assert "lacks: 0 versions" in report.describe()
    # Stopped: the status says so.
    assert read_status(a) is None


async def test_an_unreachable_peer_is_retried_with_backoff_and_logged_once(
    tmp_path: Path, aio_loop: object, caplog: pytest.LogCaptureFixture
) -> None:
    a = await found(tmp_path / "a")
    # A port held by a socket that never listens: connections to it are refused, and no other process can take it.
    unheard = socket.socket()
    unheard.bind(("127.0.0.1", 0))
    dead_port = unheard.getsockname()[1]
    caplog.set_level(logging.DEBUG, logger="peer.agent")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(run_agent, a, host="127.0.0.1", port=0, config=FAST, discovery=False, peers=[f"127.0.0.1:{dead_port}"])
            )
            await trio.sleep(5)
            status = read_status(a)
            nursery.cancel_scope.cancel()
    unheard.close()
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
        wait_until(lambda: list(backups.glob("*.peerbackup")), 30, "the first scheduled backup", detail=agent.log.read_text)
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

"""`peer sync` and `peer agent` as a user runs them: real processes, real SSH on loopback."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio_asyncio

from peer.home import Home
from tests.support.cli_runner import Agent, assert_error, ok, ok_json, peer
from tests.support.groups import admit, found
from tests.support.waiting import wait_until


async def _pair(root: Path) -> None:
    async with trio_asyncio.open_loop():
        await admit(await found(root / "first"), root / "second")


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    trio.run(_pair, tmp_path)
    return tmp_path / "first", tmp_path / "second"


@pytest.fixture
def agent(pair: tuple[Path, Path], tmp_path: Path) -> Iterator[Agent]:
    running = Agent(pair[0], tmp_path / "agent.log", "--no-discovery")
    yield running
    if running.process.poll() is None:
        running.stop()


def test_sync_both_ways_with_the_agent(pair: tuple[Path, Path], agent: Agent) -> None:
    first, second = pair
    ok(first, "add", "the build server is ci-3", "--kind", "fact")
    ok(second, "add", "always rebase before merging", "--kind", "preference")
    summary = ok_json(second, "sync", f"127.0.0.1:{agent.port}")
    assert {"sent", "received", "bytes_sent", "bytes_received", "seconds"} <= set(summary)
    assert (summary["sent"], summary["received"]) == (1, 1)
    on_first = {m["content"] for m in ok_json(first, "list")}
    on_second = {m["content"] for m in ok_json(second, "list")}
    assert on_first == on_second == {"the build server is ci-3", "always rebase before merging"}
    line = ok(second, "sync", f"127.0.0.1:{agent.port}")
    assert line.startswith("sent 0, received 0 versions"), line
    assert agent.listening["device_id"] == Home(first).identity().device_id
    assert agent.stop() == 0
    log = agent.log.read_text()
    # One INFO line for the session that moved versions; the no-change one is DEBUG (docs/cli.md, issue 11).
    assert log.count("synced: ") == 1 and "SIGTERM received: shutting down" in log


def test_a_stranger_is_told_the_agent_is_not_a_member(pair: tuple[Path, Path], agent: Agent, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    ok(stranger, "init")
    ok(stranger, "add", "not for them")
    done = peer(stranger, "sync", f"127.0.0.1:{agent.port}")
    assert_error(done, 1, "not a member")
    assert [m["content"] for m in ok_json(pair[0], "list")] == []
    assert [m["content"] for m in ok_json(stranger, "list")] == ["not for them"]


def test_nothing_listening_says_to_start_the_agent(pair: tuple[Path, Path]) -> None:
    # A port held by a socket that never listens: refused, and no other process can take it meanwhile.
    with socket.socket() as unheard:
        unheard.bind(("127.0.0.1", 0))
        port = unheard.getsockname()[1]
        assert_error(peer(pair[1], "sync", f"127.0.0.1:{port}"), 1, "connection refused", "peer agent")


def test_a_bad_address_is_an_error(pair: tuple[Path, Path]) -> None:
    assert_error(peer(pair[1], "sync", "host:notaport"), 1, "port")


def test_an_agent_listening_on_one_address_advertises_there_only(pair: tuple[Path, Path], tmp_path: Path) -> None:
    """No --interface: mDNS runs on the listening address (loopback here), never on the machine's own network."""
    running = Agent(pair[0], tmp_path / "agent.log")
    wait_until(lambda: "advertising" in running.log.read_text(), 20, "the agent to start advertising",
               interval=0.1, detail=running.log.read_text)
    assert running.stop(signal.SIGINT) == 0
    log = running.log.read_text()
    advertising = [line for line in log.splitlines() if "advertising" in line]
    assert len(advertising) == 1 and f"(127.0.0.1, port {running.port})" in advertising[0], log
    assert "SIGINT received: shutting down" in log




def test_an_invite_names_where_the_running_agent_listens(pair: tuple[Path, Path], agent: Agent, tmp_path: Path) -> None:
    """No --address: the code carries the agent's own address and port, so `peer join CODE` needs no --host."""
    invite = ok_json(pair[0], "invite")
    newcomer = tmp_path / "newcomer"
    joined = ok_json(newcomer, "join", invite["code"], "--name", "newcomer")
    assert joined["group_id"] == ok_json(pair[0], "stats")["group_id"]
    assert "newcomer" in {d["name"] for d in ok_json(pair[0], "devices")}


def test_the_systemd_unit_runs_this_peer_with_this_home_and_options(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "init")
    unit = ok(home, "agent", "--systemd-unit", "--interface", "192.168.1.20", "--peer", "nas.local:7847")
    sections = [line for line in unit.splitlines() if line.startswith("[")]
    assert sections == ["[Unit]", "[Service]", "[Install]"]
    (exec_start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    argv = exec_start.removeprefix("ExecStart=").split()
    assert Path(argv[0]).is_file() and os.access(argv[0], os.X_OK), argv[0]
    assert argv[1:] == ["agent", f"--home={home.resolve()}", "--interface=192.168.1.20", "--peer=nas.local:7847"]
    assert "WantedBy=default.target" in unit and "Restart=on-failure" in unit
    # Printing the unit starts nothing and writes nothing into the home.
    assert not (home / "agent.json").exists()

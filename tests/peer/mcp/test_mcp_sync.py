"""`peer mcp` with agents: a memory remembered on one device is found on the other; many writers on one home.

Real processes throughout: `peer agent` subprocesses syncing over loopback
(discovery off, each given the other's address), `peer mcp` subprocesses
driven by the SDK's stdio client, the CLI in other processes.
"""

from __future__ import annotations

import socket
from pathlib import Path

import trio
from mcp import ClientSession

from peer.dev.corpus import paragraphs
from tests.support.cli_runner import Agent, ndjson, ok_json, peer
from tests.support.groups import admit, found

from .client import call, fails, mcp_session


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_found(session: ClientSession, query: str, memory_id: str, deadline: float) -> float:
    """Search through ``session`` until ``memory_id`` is among the results; seconds it took."""
    started = trio.current_time()
    with trio.fail_after(deadline):
        while True:
            result = await call(session, "search", {"query": query, "all_projects": True})
            if memory_id in [r["id"] for r in result["results"]]:
                return trio.current_time() - started
            await trio.sleep(0.2)


async def test_remembered_on_one_device_found_on_the_other_with_no_sync_typed(tmp_path: Path, aio_loop: object) -> None:
    a = await found(tmp_path / "a", "laptop")
    b = await admit(a, tmp_path / "b", "desktop")
    port_a, port_b = free_port(), free_port()
    # No agent yet: `sync` says so, and how to start one.
    with trio.fail_after(60):
        async with mcp_session(a.path) as session:
            await fails(session, "sync", {}, "no agent runs", "peer", "agent")
    agent_a = Agent(a.path, tmp_path / "a.log", "--no-discovery", "--peer", f"127.0.0.1:{port_b}", listen=f"127.0.0.1:{port_a}")
    agent_b = Agent(b.path, tmp_path / "b.log", "--no-discovery", "--peer", f"127.0.0.1:{port_a}", listen=f"127.0.0.1:{port_b}")
    try:
        with trio.fail_after(120):
            async with mcp_session(a.path, "--project", "peer") as laptop, mcp_session(b.path, "--project", "peer") as desktop:
                made = await call(laptop, "remember", {
                    "content": "Release checklist: bump the version, tag it, then run `make dist`", "kind": "procedure",
                })
                took = await wait_found(desktop, "what is on the release checklist", made["id"], 20)
                synced = await call(desktop, "sync", {"wait": 10})
                status = await call(desktop, "status", {})

                # Apart (agents stopped), both edit the same memory: a conflict, seen on both once they meet.
                agent_a.stop()
                agent_b.stop()
                await call(laptop, "update", {"id": made["id"], "content": "Release checklist: tag first, then bump"})
                await call(desktop, "update", {"id": made["id"], "content": "Release checklist: bump, tag, sign"})
                agent_a = Agent(a.path, tmp_path / "a.log", "--no-discovery", "--peer", f"127.0.0.1:{port_b}",
                                listen=f"127.0.0.1:{port_a}")
                agent_b = Agent(b.path, tmp_path / "b.log", "--no-discovery", "--peer", f"127.0.0.1:{port_a}",
                                listen=f"127.0.0.1:{port_b}")
                conflicts = {}
                with trio.fail_after(30):
                    for name, session in (("laptop", laptop), ("desktop", desktop)):
                        while True:
                            listed = await call(session, "conflicts", {})
                            if listed["conflicts"]:
                                conflicts[name] = listed
                                break
                            await trio.sleep(0.2)
    finally:
        agent_a.stop()
        agent_b.stop()
    print(f"remembered on A, found through B's server after {took:.2f} s (deadline 20 s in wait_found)")
    assert synced["asked"] == 1 and synced["peers"][0]["last_result"].startswith("ok")
    assert status["agent_running"] and status["agent_reachable"]
    (peer_status,) = status["peers"]
    assert peer_status["device_id"] == a.identity().device_id and peer_status["lacks"] == 0
    for listed in conflicts.values():
        (conflict,) = listed["conflicts"]
        assert conflict["id"] == made["id"]
        assert sorted(v["snippet"] for v in conflict["versions"]) == [
            "Release checklist: bump, tag, sign", "Release checklist: tag first, then bump"]


CLIENTS = 10


async def test_ten_servers_an_agent_and_a_bulk_add_share_one_home(tmp_path: Path, aio_loop: object) -> None:
    home = await found(tmp_path / "home")
    bulk = paragraphs(600)
    agent = Agent(home.path, tmp_path / "agent.log", "--no-discovery")
    remembered: dict[int, list[str]] = {n: [] for n in range(CLIENTS)}
    errors: list[str] = []

    async def assistant(number: int) -> None:
        async with mcp_session(home.path, "--project", f"p{number}") as session:
            for i in range(5):
                made = await call(session, "remember", {"content": f"assistant {number} note {i}: the build cache for "
                                                        f"service {number} lives in /var/cache/svc{number}/{i}"})
                remembered[number].append(made["id"])
                result = await session.call_tool("search", {"query": f"where is the build cache of service {number}"})
                if result.is_error:
                    errors.append(str(result.content))
            await call(session, "list", {"limit": 5})

    async def bulk_add() -> None:
        done = await trio.to_thread.run_sync(
            lambda: peer(home.path, "add", "--file", "-", "--project", "bulk", input=ndjson([{"content": p} for p in bulk]))
        )
        if done.returncode != 0:
            errors.append(done.stderr)

    try:
        with trio.fail_after(300):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(bulk_add)
                for number in range(CLIENTS):
                    nursery.start_soon(assistant, number)
            # Afterwards every memory is there, and each assistant's is found through a fresh server.
            async with mcp_session(home.path) as session:
                missing: list[str] = []
                for number in range(CLIENTS):
                    hits = await call(session, "search", {"query": f"build cache for service {number}",
                                                          "project": f"p{number}", "limit": 5})
                    missing.extend(set(remembered[number]) - {r["id"] for r in hits["results"]})
    finally:
        assert agent.stop() == 0
    log = (tmp_path / "agent.log").read_text()
    assert not errors, errors
    assert "database is locked" not in log
    stats = ok_json(home.path, "stats")
    assert stats["memories"] == len(bulk) + CLIENTS * 5
    assert sum(len(ids) for ids in remembered.values()) == CLIENTS * 5
    assert not missing, missing
    doctor = ok_json(home.path, "doctor")
    assert doctor["healthy"], doctor

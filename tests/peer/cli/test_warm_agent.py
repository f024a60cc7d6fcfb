"""Everyday commands answered by a running `peer agent`: the same bytes as in process, and safe fallbacks.

A real agent on a real home (loopback listener, no mDNS). Each command runs
twice: once asked of the agent, once in process (``PEER_NO_AGENT=1``, or a
twin copy of the home that no agent serves, for writes), and stdout, stderr
and the exit status must be the same bytes. The agent's ``hello`` counts the
commands it answered, so the tests know the agent path was really taken.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from peer import localapi
from peer.agent_client import SOCKET_FILE, ask_agent
from tests.support.cli_runner import PEER, Agent, env, ok, ok_json
from tests.support.waiting import wait_until

SEEDS = [
    ("SQLite in WAL mode lets readers go on while one writer commits", "storage", ["sqlite", "db"]),
    ("The quick brown fox jumps over the lazy dog", "misc", ["fox"]),
    ("trio nurseries make every task's lifetime visible in the code", "python", ["trio"]),
    ("hnswlib builds an approximate nearest-neighbour graph of the vectors", "storage", []),
    ("Ed25519 signatures are 64 bytes and verify in about a hundred microseconds", "crypto", ["ed25519"]),
]


def run(home: Path, *args: str, in_process: bool = False, input: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = {"PEER_NO_AGENT": "1"} if in_process else {}
    return subprocess.run([*PEER, "--home", str(home), *args], input=input, capture_output=True, text=True,
                          env={**env(), **extra}, timeout=300)


def answered(home: Path) -> dict[str, int]:
    counts: dict[str, int] = ask_agent(home, "hello", {})["answered"]
    return counts


def same(a: subprocess.CompletedProcess[str], b: subprocess.CompletedProcess[str]) -> None:
    assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr), (a.args, a.stderr, b.stderr)


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Agent]]:
    """A seeded home served by an agent, and its twin (a copy no agent serves), with the same memories."""
    root = tmp_path_factory.mktemp("warm")
    home = root / "home"
    ok(home, "init", "--name", "warm")
    for text, project, tags in SEEDS:
        ok(home, "add", text, "--project", project, "--kind", "fact", *[f"--tag={t}" for t in tags])
    ok(home, "add", "a memory without a project", "--meta", "source=test", "--importance", "0.7")
    ok(home, "search", "warm the index up")  # builds the index, so an add reports look-alikes
    twin = root / "twin"
    shutil.copytree(home, twin)
    agent = Agent(home, root / "agent.log", "--no-discovery")
    try:
        yield home, twin, agent
    finally:
        agent.stop()


def test_every_read_gives_the_same_bytes_with_and_without_the_agent(homes: tuple[Path, Path, Agent]) -> None:
    home, _, _ = homes
    ids = [m["id"] for m in ok_json(home, "list")]
    commands: list[tuple[str, list[str]]] = [
        ("search", ["search", "fox"]),
        ("search", ["search", "fox", "--json"]),
        ("search", ["search", "database readers and writers", "-k", "2", "--project", "storage", "--json"]),
        ("search", ["search", "graph", "--tag", "sqlite", "--all", "--json"]),
        ("search", ["search", "zebra migration patterns in antarctica"]),  # nothing relevant: "no matches"
        ("show", ["show", ids[0]]),
        ("show", ["show", ids[1][:8], "--json"]),
        ("show", ["show", ids[2], "--versions"]),
        ("show", ["show", ids[2], "--versions", "--json"]),
        ("show", ["show", "00000000-0000-4000-8000-000000000000"]),  # an error line, exit 1
        ("list", ["list"]),
        ("list", ["list", "--json"]),
        ("list", ["list", "--project", "storage", "--limit", "1", "--json"]),
        ("list", ["list", "--kind", "decision"]),  # none: "no memories"
        ("context", ["context", "--all-projects"]),
        ("context", ["context", "--project", "storage", "--json"]),
        ("context", ["context", "--json"]),
        ("status_report", ["status", "--json"]),
    ]
    before = answered(home)
    for _, argv in commands:
        same(run(home, *argv), run(home, *argv, in_process=True))
    after = answered(home)
    for method in {m for m, _ in commands}:
        asked = sum(1 for m, _ in commands if m == method)
        assert after.get(method, 0) - before.get(method, 0) == asked, (method, before, after)
    # `peer status` as text says how long ago the agent started: equal but for that clock.
    via_agent, in_process = run(home, "status"), run(home, "status", in_process=True)
    assert via_agent.returncode == in_process.returncode == 0
    up = re.compile(r"up since \d+ (s|min) ago")
    assert up.sub("", via_agent.stdout) == up.sub("", in_process.stdout)
    assert "agent: running" in via_agent.stdout


def test_writes_give_the_same_output_as_in_process_and_land_once(homes: tuple[Path, Path, Agent]) -> None:
    """add, edit and forget on the served home and on its twin (in process): the same output but the new ids."""
    home, twin, _ = homes
    before = answered(home)

    def both(*argv: str, input: str | None = None) -> tuple[str, str]:
        served, alone = run(home, *argv, input=input), run(twin, *argv, input=input)
        assert served.returncode == alone.returncode, (served.stderr, alone.stderr)
        return served.stdout + served.stderr, alone.stdout + alone.stderr

    new = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
    known = {m["id"] for m in ok_json(home, "list")}

    def masked(text: str) -> str:
        return new.sub(lambda m: m.group(0) if m.group(0) in known else "NEW", text)

    for argv, stdin in [
        (["add", "SQLite in WAL mode lets readers go on while a writer commits", "--project", "storage"], None),
        (["add", "SQLite in WAL mode lets readers go on while one writer commits", "--project", "storage", "--kind",
          "fact", "--json"], None),  # the same text as a seed: a duplicate, nothing added
        (["add", "-", "--tag", "stdin", "--meta", "n=3", "--json"], "read from standard input\n"),
        (["add", "-"], "x" * ((1 << 20) + 1)),  # too long: the same error line
    ]:
        served, alone = both(*argv, input=stdin)
        assert masked(served) == masked(alone)
    seed = next(m for m in ok_json(home, "list") if m["content"].startswith("The quick brown fox"))
    served, alone = both("edit", seed["id"][:8], "--text", "The quick brown fox jumps over the lazy cat", "--json")
    assert served == alone
    served, alone = both("edit", seed["id"], "--project", "animals", "--tag", "fox", "--tag", "cat")
    assert served == alone
    served, alone = both("forget", seed["id"], "--json")
    assert served == alone
    served, alone = both("forget", seed["id"])  # already forgotten: the same error either way
    assert served == alone
    after = answered(home)
    assert {m: after.get(m, 0) - before.get(m, 0) for m in ("add", "edit", "forget")} == {"add": 4, "edit": 2, "forget": 2}
    # The writes landed in the served home as in the twin: the same memories, each once.
    contents = sorted((m["content"], m["project"], tuple(m["tags"])) for m in ok_json(home, "list"))
    assert contents == sorted((m["content"], m["project"], tuple(m["tags"])) for m in ok_json(twin, "list"))
    assert len(contents) == len(set(contents))


def test_a_stale_socket_file_or_an_agent_that_never_answers_runs_the_command_in_process(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "init")
    ok(home, "add", "a memory to list")
    expected = run(home, "list", "--json", in_process=True)
    path = home / SOCKET_FILE
    left = socket.socket(socket.AF_UNIX)
    left.bind(str(path))
    left.close()  # what SIGKILL leaves behind: the file, nobody listening
    same(run(home, "list", "--json"), expected)
    path.unlink()
    stuck = socket.socket(socket.AF_UNIX)
    stuck.bind(str(path))
    stuck.listen(8)  # accepts connections (the kernel does) but never answers
    try:
        same(run(home, "list", "--json"), expected)
    finally:
        stuck.close()


class _OldAgent:
    """The local API of an agent from before the warm commands: ping, status and sync_now only."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.ready = threading.Event()
        self.stop_soon: list[Any] = []
        self.thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        async def answer(params: dict[str, Any]) -> dict[str, Any]:
            return {"pid": os.getpid()}

        async with trio.open_nursery() as nursery:
            await nursery.start(partial(localapi.serve, self.home, {"ping": answer, "status": answer, "sync_now": answer}))
            token = trio.lowlevel.current_trio_token()
            self.stop_soon.append(lambda: token.run_sync_soon(nursery.cancel_scope.cancel))
            self.ready.set()

    def __enter__(self) -> _OldAgent:
        self.thread.start()
        assert self.ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_soon[0]()
        self.thread.join(30)


def test_an_older_agent_is_not_asked_and_the_command_runs_in_process(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "init")
    ok(home, "add", "a memory about an older agent")
    expected = [run(home, *argv, in_process=True) for argv in (["list", "--json"], ["search", "older agent"])]
    with _OldAgent(home):
        assert (home / SOCKET_FILE).exists()
        for argv, want in zip((["list", "--json"], ["search", "older agent"]), expected, strict=True):
            same(run(home, *argv), want)
        added = run(home, "add", "added while an older agent runs", "--json")
    assert added.returncode == 0 and added.stderr == ""
    assert json.loads(added.stdout)["id"] in {m["id"] for m in ok_json(home, "list")}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the agent's socket to another user (CI runs as root)")
def test_a_socket_owned_by_another_user_is_not_trusted(homes: tuple[Path, Path, Agent]) -> None:
    home, _, _ = homes
    path = home / SOCKET_FILE
    expected = run(home, "list", "--json", in_process=True)
    before = answered(home)
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(path, nobody, -1)
    try:
        done = run(home, "list", "--json")
    finally:
        os.chown(path, 0, -1)
    assert done.returncode == 0 and done.stdout == expected.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "another user" in lines[0], done.stderr
    assert answered(home).get("list", 0) == before.get("list", 0)  # the agent was not asked


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_an_agent_killed_mid_add_loses_nothing_and_adds_nothing_twice(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "init")
    agent = Agent(home, tmp_path / "agent.log", "--no-discovery")
    try:
        ok(home, "list")  # the agent answers; its store is open
        # A long text: the agent embeds it for a second or more, long enough to be killed in the middle.
        words = " ".join(f"paragraph {i} about agents, sockets and the memories they keep." for i in range(1500))
        busy_before = _cpu_seconds(agent.process.pid)
        adding = subprocess.Popen([*PEER, "--home", str(home), "add", "-", "--json"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        assert adding.stdin is not None
        adding.stdin.write(words)
        adding.stdin.close()
        wait_until(lambda: _cpu_seconds(agent.process.pid) - busy_before > 0.3, 60, "the agent at work on the add")
        agent.process.send_signal(signal.SIGKILL)
        adding.wait(300)
        assert adding.stdout is not None and adding.stderr is not None
        stdout, stderr = adding.stdout.read(), adding.stderr.read()
    finally:
        if agent.process.poll() is None:
            agent.stop()
        else:
            agent.stop(signal.SIGKILL)
    assert adding.returncode == 0, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and "the command ran without the agent" in lines[0], stderr
    memory_id = json.loads(stdout)["id"]
    held = [m for m in ok_json(home, "list") if m["content"] == words]
    assert [m["id"] for m in held] == [memory_id]


_ADD_THEN_DIE = """
import json, socket, sys, trio, trio_asyncio
from peer.device import Device
from peer.home import Home
from peer.memory import Draft
from peer.warm import add_memory

home, sock_path = sys.argv[1], sys.argv[2]
listener = socket.socket(socket.AF_UNIX)
listener.bind(sock_path)
listener.listen(1)
print("ready", flush=True)
conn, _ = listener.accept()
lines = conn.makefile("rb")
hello = json.loads(lines.readline())
conn.sendall(json.dumps({"id": hello["id"], "result": {"methods": ["add"]}}).encode() + b"\\n")
request = json.loads(lines.readline())
p = request["params"]
draft = Draft(content=p["content"], kind=p["kind"], project=p["project"], tags=tuple(p["tags"]),
              metadata=p["metadata"], importance=p["importance"], id=p["id"])

async def main():
    async with trio_asyncio.open_loop():
        async with await Device.open(Home(home)) as device:
            await add_memory(device, draft, allow_duplicate=False)

trio.run(main)
conn.close()  # the add is committed; the answer never comes, as if the agent died right then
"""


def test_an_add_the_agent_made_before_dying_is_not_made_twice(tmp_path: Path) -> None:
    """The agent commits the add, then dies before answering: the client's retry finds the same id."""
    home = tmp_path / "home"
    ok(home, "init")
    path = home / SOCKET_FILE
    fake = subprocess.Popen([sys.executable, "-c", _ADD_THEN_DIE, str(home), str(path)], stdout=subprocess.PIPE,
                            text=True, env=env())
    try:
        assert fake.stdout is not None and fake.stdout.readline().strip() == "ready"
        done = run(home, "add", "made once, whatever happens", "--json")
        assert fake.wait(120) == 0
    finally:
        if fake.poll() is None:
            fake.kill()
    assert done.returncode == 0, done.stderr
    assert "the command ran without the agent" in done.stderr and len(done.stderr.splitlines()) == 1
    held = [m["id"] for m in ok_json(home, "list") if m["content"] == "made once, whatever happens"]
    assert held == [json.loads(done.stdout)["id"]]


def test_an_edit_the_agent_may_have_made_fails_with_one_line(tmp_path: Path) -> None:
    """A lost edit is not run again (it could make a second version): one line says what to check."""
    home = tmp_path / "home"
    ok(home, "init")
    memory_id = json.loads(ok(home, "add", "to be edited", "--json"))["id"]
    path = home / SOCKET_FILE
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        lines = conn.makefile("rb")
        hello = json.loads(lines.readline())
        conn.sendall(json.dumps({"id": hello["id"], "result": {"methods": ["edit"]}}).encode() + b"\n")
        lines.readline()
        conn.close()  # died mid-request

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        done = run(home, "edit", memory_id, "--text", "edited")
    finally:
        server.join(30)
        listener.close()
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "peer show" in lines[0], done.stderr
    assert ok_json(home, "show", memory_id)["content"] == "to be edited"


def _raw(path: Path, payload: bytes) -> list[dict[str, Any]]:
    """Send ``payload``; the answers to its lines, or nothing when the agent ends the connection."""
    wanted = payload.count(b"\n")
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(60)
        conn.connect(str(path))
        received = b""
        try:
            # No half-close: the agent takes end-of-file as the client gone, and cancels its request.
            conn.sendall(payload)
            while received.count(b"\n") < wanted and (chunk := conn.recv(1 << 16)):
                received += chunk
            if not wanted:
                while conn.recv(1 << 16):
                    pass
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent ended this connection (a line too long)
    return [json.loads(line) for line in received.splitlines()]


def _line(method: str, params: Any) -> bytes:
    return json.dumps({"id": 1, "method": method, "params": params}).encode() + b"\n"


def test_bad_requests_get_errors_and_the_agent_goes_on(homes: tuple[Path, Path, Agent]) -> None:
    home, _, agent = homes
    path = home / SOCKET_FILE
    bad = [
        ("search", {"query": "x", "k": True}),
        ("search", {"query": "x", "k": 0}),
        ("search", {"query": " ", "k": 3}),
        ("search", {"query": "x", "k": 3, "min_similarity": 7}),
        ("search", {"query": "x", "k": 3, "kind": "Not A Kind"}),
        ("add", {"content": "x"}),
        ("add", {"id": "not-a-uuid", "content": "x", "tags": [], "metadata": {}, "allow_duplicate": False}),
        ("add", {"id": "00000000-0000-4000-8000-000000000001", "content": "x", "tags": [1], "metadata": {},
                 "allow_duplicate": False}),
        ("list", {"limit": -1}),
        ("show", {"id": ["x"], "versions": False}),
        ("edit", {"id": "x", "importance": 2}),
        ("context", {"tokens": 5, "all_projects": True, "cwd": "/", "project": None}),
    ]
    for method, params in bad:
        (answer,) = _raw(path, _line(method, params))
        assert answer["error"]["type"] == "peer_error", (method, params, answer)
    # NaN is not JSON, but Python's parser reads it: refused too.
    (answer,) = _raw(path, b'{"id": 1, "method": "search", "params": {"query": "x", "k": 3, "since": NaN}}\n')
    assert answer["error"]["type"] == "peer_error"
    # A line longer than the limit ends that connection only.
    assert _raw(path, b"[" * (localapi.MAX_LINE + 10)) == []
    assert agent.process.poll() is None
    assert ask_agent(home, "hello", {})["methods"]
    assert "Traceback" not in agent.log.read_text()


def test_an_agent_serves_commands_while_its_client_was_interrupted(homes: tuple[Path, Path, Agent]) -> None:
    """Ctrl-C in a command waiting for the agent: exit 130 as in process; the agent cancels and goes on."""
    home, _, agent = homes
    words = " ".join(f"sentence {i} for an add that is interrupted by the user." for i in range(1500))
    busy_before = _cpu_seconds(agent.process.pid)
    adding = subprocess.Popen([*PEER, "--home", str(home), "add", "-"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    assert adding.stdin is not None
    adding.stdin.write(words)
    adding.stdin.close()
    wait_until(lambda: _cpu_seconds(agent.process.pid) - busy_before > 0.3, 60, "the agent at work on the add")
    adding.send_signal(signal.SIGINT)
    adding.wait(60)
    assert adding.stderr is not None
    stderr = adding.stderr.read()
    assert adding.returncode == 130
    assert stderr.strip() == "interrupted: nothing more was done"
    # The agent cancelled the add with its client (as Ctrl-C cancels it in process), and goes on serving.
    before = answered(home).get("list", 0)
    assert words not in {m["content"] for m in ok_json(home, "list")}
    assert answered(home).get("list", 0) == before + 1
    assert agent.process.poll() is None
    # The model call already running finishes in its thread; let it, so the agent stops promptly after.
    last = [_cpu_seconds(agent.process.pid)]

    def settled() -> bool:
        time.sleep(0.5)
        now = _cpu_seconds(agent.process.pid)
        quiet = now - last[0] < 0.05
        last[0] = now
        return quiet

    wait_until(settled, 300, "the agent to finish the interrupted add's model call")


HEAVY = ("trio", "trio_asyncio", "numpy", "hnswlib", "onnxruntime", "tokenizers", "aiosqlite", "asyncssh", "zeroconf",
         "cryptography", "sqlite3", "rich", "protocol.session", "protocol.sealing", "peer.device", "peer.store",
         "peer.search.index", "peer.search.embedder", "peer.warm")


def test_a_command_the_agent_answers_imports_nothing_heavy(homes: tuple[Path, Path, Agent]) -> None:
    home, _, _ = homes

    def imported(*extra: str, in_process: bool = False) -> set[str]:
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "peer", "--home", str(home), *extra],
                              capture_output=True, text=True, timeout=300,
                              env={**env(), **({"PEER_NO_AGENT": "1"} if in_process else {})})
        assert done.returncode == 0, done.stderr
        return {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}

    def heavy(modules: set[str]) -> list[str]:
        return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))

    for argv in (["search", "fox"], ["add", "imported nothing heavy", "--tag", "t"], ["list", "--json"]):
        loaded = imported(*argv)
        assert "peer.agent_client" in loaded, argv
        assert heavy(loaded) == [], argv
    # The same probe sees them when the command runs in process: it can fail.
    assert {"trio", "peer.device", "hnswlib"} <= set(heavy(imported("search", "fox", in_process=True)))

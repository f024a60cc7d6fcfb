"""``python -m peer.dev.demo`` (``make demo``): three devices pair and sync on loopback.

Every step runs the real ``peer`` command in a subprocess, exactly as a
user (or an assistant) would type it, and prints the command and what it
answered. The three homes (laptop, desktop, work) live in a temporary
directory that is removed at the end, whatever happens; each device runs
``peer agent`` in the background, listening and advertising (mDNS) on
127.0.0.1 only, and every agent is stopped before the demo exits, even
when a step fails.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

__all__ = ["main"]

LAPTOP_NOTES = [
    {"content": "Use pytest -q in the repo root to run the test suite; add -x to stop at the first failure.",
     "kind": "procedure", "project": "shop", "tags": ["testing"]},
    {"content": "We chose PostgreSQL over MySQL for the shop because we need transactional DDL in migrations.",
     "kind": "decision", "project": "shop", "tags": ["database"]},
    {"content": "The staging deploy fails with 'permission denied (publickey)' when the SSH agent is not forwarded.",
     "kind": "error", "project": "shop", "tags": ["deploy", "ssh"]},
    {"content": "Prefer small pull requests (under 400 changed lines) so reviews happen the same day.",
     "kind": "preference", "tags": ["review"]},
]

DESKTOP_NOTES = [
    {"content": "The GPU box needs CUDA 12.4; newer drivers break the training container.",
     "kind": "fact", "project": "ml", "tags": ["gpu"]},
    {"content": "To resume a killed training run, pass --resume with the last checkpoint directory.",
     "kind": "procedure", "project": "ml", "tags": ["training"]},
    {"content": "Session summary: tuned the learning rate schedule; warmup of 500 steps removed the loss spikes.",
     "kind": "session_summary", "project": "ml"},
]

#: The demo never listens anywhere but loopback.
LOOPBACK = "127.0.0.1"

#: How long an agent may take to say where it listens (it imports asyncssh and opens its store).
AGENT_START_S = 30.0

#: How long the agents may take to bring every device to the same memories.
SYNC_WAIT_S = 30.0

#: How long a stopped agent may take to close its sessions and its store before it is killed.
AGENT_STOP_S = 10.0


#: What the demo prints of an MCP tool's result.
SHOWN_FIELDS = ("id", "score", "project", "kind", "snippet", "similar")


def _say(text: str = "") -> None:
    print(text, flush=True)


def _quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "-_./$:=" for c in arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def _heading(text: str) -> None:
    _say(text)
    _say("-" * len(text))


class DemoFailed(Exception):
    """A step did not do what the demo expects; the message says which."""


class Agent:
    """One device's ``peer agent``, in the background, with its log in a file."""

    def __init__(self, device: str, process: subprocess.Popen[str], log_path: Path, log: IO[str]) -> None:
        self.device = device
        self.process = process
        self.log_path = log_path
        self._log = log
        self.port = 0

    def wait_listening(self) -> str:
        """The agent's first stdout line (``listening on 127.0.0.1:PORT``); sets :attr:`port`."""
        stdout = self.process.stdout
        assert stdout is not None
        deadline = time.monotonic() + AGENT_START_S
        with selectors.DefaultSelector() as sel:
            sel.register(stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DemoFailed(f"the {self.device} agent did not start listening within {AGENT_START_S:.0f} s")
                if sel.select(left):
                    break
        # The agent flushes whole lines, so once readable a full line is there (or EOF).
        line = stdout.readline().strip()
        prefix = f"listening on {LOOPBACK}:"
        if not line.startswith(prefix):
            raise DemoFailed(f"the {self.device} agent did not start: {line or 'no output'}\n{self.log_tail()}")
        self.port = int(line[len(prefix):])
        return line

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if it does not exit in time."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=AGENT_STOP_S)
                except subprocess.TimeoutExpired:
                    sys.stderr.write(f"demo: the {self.device} agent was still running"
                                     f" {AGENT_STOP_S:.0f} s after SIGTERM; killed\n")
                    self.process.kill()
                    self.process.wait(timeout=AGENT_STOP_S)
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()
            self._log.close()


class Demo:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = dict(os.environ)
        self.env.pop("PEER_HOME", None)
        # The demo's own terminal decides colours; the child's output is captured.
        self.env["COLUMNS"] = "100"
        self.agents: dict[str, Agent] = {}

    def _shown(self, device: str, args: tuple[str, ...]) -> str:
        return " ".join(_quote(a) for a in ("peer", "--home", f"$DEMO/{device}", *args))

    def peer(
        self, device: str, *args: str, stdin: str | None = None, show: bool = True, env: dict[str, str] | None = None
    ) -> str:
        home = self.root / device
        shown = self._shown(device, args)
        if env:
            shown = " ".join([*(f"{k}={v}" for k, v in env.items()), shown])
        if stdin is not None:
            shown = f"{shown} < {device}-notes.jsonl"
        if show:
            _say(f"$ {shown}")
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "peer", "--home", str(home), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
        )
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            raise DemoFailed(f"demo step failed (exit {done.returncode}): {shown}")
        if show:
            for line in done.stdout.rstrip("\n").splitlines():
                _say(f"    {line}")
            _say(f"    ({time.monotonic() - started:.1f} s)")
            _say()
        return done.stdout

    def mcp(self, device: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """One tool call through ``peer mcp`` on ``device``, with the MCP SDK's stdio client; prints it."""
        import anyio
        from mcp import ClientSession, StdioServerParameters
        from mcp.client.stdio import stdio_client

        params = StdioServerParameters(
            command=sys.executable, args=["-m", "peer", "--home", str(self.root / device), "mcp"], env=self.env
        )

        async def call() -> Any:
            async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                return await session.call_tool(tool, arguments)

        _say(f"$ (assistant on {device}) {tool} {json.dumps(arguments, ensure_ascii=False)}")
        started = time.monotonic()
        result = anyio.run(call)
        if result.is_error or not isinstance(result.structured_content, dict):
            raise DemoFailed(f"the MCP tool {tool} failed on {device}: {result.content}")
        out: dict[str, Any] = result.structured_content
        shown = out.get("results", [out])[:2] if tool == "search" else [out]
        for item in shown:
            _say(f"    {json.dumps({k: v for k, v in item.items() if k in SHOWN_FIELDS}, ensure_ascii=False)}")
        _say(f"    ({time.monotonic() - started:.1f} s, starting the server included)")
        _say()
        return out

    def start_agent(self, device: str) -> Agent:
        """Start ``peer agent`` for ``device`` on a free loopback port; wait with :meth:`Agent.wait_listening`."""
        # mDNS on loopback only: the demo's agents find each other and nothing leaves this machine.
        args = ("agent", "--listen", f"{LOOPBACK}:0", "--interface", LOOPBACK)
        _say(f"$ {self._shown(device, args)} 2>{device}-agent.log &")
        log_path = self.root / f"{device}-agent.log"
        log = open(log_path, "w")  # noqa: SIM115 - closed by Agent.stop
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "peer", "--home", str(self.root / device), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=self.env,
            )
        except BaseException:
            log.close()
            raise
        agent = Agent(device, process, log_path, log)
        self.agents[device] = agent
        return agent

    def stop_agents(self) -> None:
        for agent in self.agents.values():
            try:
                agent.stop()
            except Exception as e:  # noqa: BLE001 - stop the others whatever happens to one
                sys.stderr.write(f"demo: could not stop the {agent.device} agent: {e}\n")

    def stop_agent(self, device: str) -> None:
        _say(f"$ kill %{device}-agent      # SIGTERM: a clean shutdown")
        self.agents.pop(device).stop()
        _say()

    def listing(self, device: str) -> list[tuple[str, str, int]]:
        memories = json.loads(self.peer(device, "list", "--json", show=False))
        return sorted((m["id"], m["version"], m["siblings"]) for m in memories)

    def wait_same(self, devices: tuple[str, ...], deadline: float = SYNC_WAIT_S) -> None:
        """Wait until every device lists the same memories at the same versions; say how long it took."""
        started = time.monotonic()
        while True:
            listings = [self.listing(d) for d in devices]
            if all(x == listings[0] for x in listings):
                break
            if time.monotonic() - started > deadline:
                raise DemoFailed(f"the devices did not converge within {deadline:.0f} s")
            time.sleep(0.1)
        _say(f"    ... {', '.join(devices)} hold the same {len(listings[0])} memories"
             f" ({time.monotonic() - started:.1f} s later)")
        _say()

    def address(self, device: str) -> str:
        return f"{LOOPBACK}:{self.agents[device].port}"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0]


def run(demo: Demo) -> None:
    _say(f"Demo homes live in {demo.root} (shown as $DEMO; removed at the end).")
    _say("Three devices (laptop, desktop, work) find each other by mDNS and talk over SSH, on 127.0.0.1 only.")
    _say()

    _heading("1. The laptop: its own keys, store and memories")
    demo.peer("laptop", "init", "--name", "laptop")
    shared = _first_line(demo.peer(
        "laptop", "add", "The shop's API keys live in 1Password, vault 'shop-prod', never in .env files.",
        "--kind", "fact", "--project", "shop", "--tag", "secrets", "--meta", "source=onboarding",
    ))
    demo.peer("laptop", "add", "--file", "-", stdin="".join(json.dumps(n) + "\n" for n in LAPTOP_NOTES))

    _heading("2. Pairing: the laptop's agent lets desktop and work join with one-time codes")
    laptop = demo.start_agent("laptop")
    _say(f"    {laptop.wait_listening()}")
    _say()
    for device in ("desktop", "work"):
        # A code works once: each new device gets its own. It names where the laptop's
        # agent listens (here 127.0.0.1 and the port it picked), so joining needs no address.
        code = _first_line(demo.peer("laptop", "invite"))
        demo.peer(device, "join", code, "--name", device)
    desktop, work = demo.start_agent("desktop"), demo.start_agent("work")
    for agent in (desktop, work):
        _say(f"    {agent.device}: {agent.wait_listening()}")
    _say()

    _heading("3. Memories written on each device reach the others on their own")
    _say("    (no `peer sync` typed: each agent found the others by mDNS on 127.0.0.1 and")
    _say("    pushes a change as soon as it is committed)")
    _say()
    demo.peer("desktop", "add", "--file", "-", stdin="".join(json.dumps(n) + "\n" for n in DESKTOP_NOTES))
    demo.peer("work", "add", "The VPN drops every 8 hours; reconnect with `nmcli con up corp-vpn`.",
              "--kind", "procedure", "--project", "it", "--tag", "vpn")
    demo.wait_same(("laptop", "desktop", "work"))
    demo.peer("laptop", "status")

    _heading("4. On work, desktop's memory is found by meaning")
    demo.peer("work", "search", "training crashed, how to continue", "-k", "2")
    demo.peer("work", "devices")

    _heading("5. A manual sync still works; with nothing new it costs a few hundred bytes")
    demo.peer("work", "sync", demo.address("laptop"))

    _heading("6. Offline edits: desktop's agent stops, both devices edit one memory, desktop comes back")
    demo.stop_agent("desktop")
    demo.peer("laptop", "edit", shared[:8], "--text",
              "The shop's API keys moved to 1Password vault 'shop-keys' (shop-prod is read-only now).")
    demo.peer("desktop", "edit", shared[:8], "--text",
              "The shop's API keys live in 1Password, vault 'shop-prod'; ask Dana for access.")
    desktop = demo.start_agent("desktop")
    _say(f"    {desktop.wait_listening()}")
    _say()
    demo.wait_same(("laptop", "desktop", "work"))
    on_laptop = demo.peer("laptop", "conflicts")
    found = json.loads(demo.peer("desktop", "conflicts", "--json"))
    winners = [v["version"] for m in found for v in m["versions"] if v["winner"]]
    if len(found) != 1 or _roles(on_laptop).get("winner") != winners:
        raise DemoFailed("laptop and desktop do not show the same conflict with the same winner")
    # Keep the version that lost the tie-break: resolving is a person's choice, not the default.
    keep = next(v["version"] for v in found[0]["versions"] if not v["winner"])
    demo.peer("desktop", "resolve", shared[:8], "--keep", keep)
    demo.wait_same(("laptop", "desktop", "work"))
    for device in ("laptop", "desktop", "work"):
        if demo.peer(device, "conflicts", show=device == "laptop").strip() != "no conflicts":
            raise DemoFailed(f"the conflict is still listed on {device} after resolve")
    demo.peer("work", "show", shared[:8])

    _heading("7. An assistant on desktop remembers through MCP; one on work finds it")
    _say("    (each side is `peer mcp` driven by the MCP SDK's own stdio client, as Claude Code or")
    _say("    Cursor would; the agents carry the memory across, nothing typed in between)")
    _say()
    remembered = demo.mcp("desktop", "remember", {
        "content": "Deploys go out with `make release`; never push tags by hand.",
        "kind": "procedure", "project": "shop",
    })
    demo.wait_same(("laptop", "desktop", "work"))
    found = demo.mcp("work", "search", {"query": "how do we ship a release", "project": "shop"})
    if not found["results"] or found["results"][0]["id"] != remembered["id"]:
        raise DemoFailed("the memory remembered through MCP on desktop was not found through MCP on work")

    _heading("8. Everyday commands are answered by the running agent; duplicates and non-answers are caught")
    _say("    (work's agent already holds the model and the index: `peer search` asks it over")
    _say("    work/agent.sock; PEER_NO_AGENT=1 does the same search in the command's own process)")
    _say()
    query = ("search", "how do we ship a release", "-k", "1")
    warm = demo.peer("work", *query)
    cold = demo.peer("work", *query, env={"PEER_NO_AGENT": "1"})
    if warm != cold:
        raise DemoFailed("the agent's answer differs from the in-process one")
    again = json.loads(demo.peer("work", "add", "Deploys go out with `make release`; never push tags by hand.",
                                 "--kind", "procedure", "--project", "shop", "--json"))
    if again["id"] != remembered["id"]:
        raise DemoFailed("an exact re-add made a second memory")
    if demo.peer("work", "search", "qwxz flurb zzkq", show=True).strip():
        raise DemoFailed("a query with no answer returned results")
    _say("    (nothing printed: no memory is close in meaning and none holds the words)")
    _say()
    demo.peer("work", "consolidate", "--dry-run")


def _roles(conflicts_text: str) -> dict[str, list[str]]:
    """Versions by role (winner, sibling) in the text of ``peer conflicts``."""
    roles: dict[str, list[str]] = {}
    for line in conflicts_text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("winner", "sibling"):
            roles.setdefault(words[0], []).append(words[1])
    return roles


def main() -> None:
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="peer-demo-"))
    demo = Demo(root)
    try:
        run(demo)
    except DemoFailed as e:
        sys.stderr.write(f"demo failed: {e}\n")
        for agent in demo.agents.values():
            tail = agent.log_tail()
            if tail:
                sys.stderr.write(f"--- {agent.device} agent log (last lines) ---\n{tail}\n")
        raise SystemExit(1) from None
    finally:
        demo.stop_agents()
        shutil.rmtree(root, ignore_errors=True)
    _say(f"Demo finished in {time.monotonic() - started:.0f} s; agents stopped, removed {root}.")


if __name__ == "__main__":
    main()

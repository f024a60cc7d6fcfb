"""``python -m peer.demo`` (``make demo``): two devices' homes, memories on each, searched and shown.

Every step runs the real ``peer`` command in a subprocess, exactly as a
user (or an assistant) would type it, and prints the command and what it
answered. The homes live in a temporary directory that is removed at the
end, whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

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


def _say(text: str = "") -> None:
    print(text, flush=True)


class Demo:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = dict(os.environ)
        self.env.pop("PEER_HOME", None)
        # The demo's own terminal decides colours; the child's output is captured.
        self.env["COLUMNS"] = "100"

    def peer(self, device: str, *args: str, stdin: str | None = None, show: bool = True) -> str:
        home = self.root / device
        shown = " ".join(_quote(a) for a in ("peer", "--home", f"$DEMO/{device}", *args))
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
            env=self.env,
        )
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            raise SystemExit(f"demo step failed (exit {done.returncode}): {shown}")
        if show:
            for line in done.stdout.rstrip("\n").splitlines():
                _say(f"    {line}")
            _say(f"    ({time.monotonic() - started:.1f} s)")
            _say()
        return done.stdout


def _quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "-_./$:=" for c in arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def _heading(text: str) -> None:
    _say(text)
    _say("-" * len(text))


def run(root: Path) -> None:
    demo = Demo(root)
    _say(f"Demo homes live in {root} (shown as $DEMO; removed at the end).")
    _say()

    _heading("1. Two devices, each with its own keys and store")
    demo.peer("laptop", "init", "--name", "laptop")
    demo.peer("desktop", "init", "--name", "desktop")

    _heading("2. Memories: one by one, or many at once from NDJSON")
    demo.peer(
        "laptop", "add", "The shop's API keys live in 1Password, vault 'shop-prod', never in .env files.",
        "--kind", "fact", "--project", "shop", "--tag", "secrets", "--meta", "source=onboarding",
    )
    demo.peer("laptop", "add", "--file", "-", stdin="".join(json.dumps(n) + "\n" for n in LAPTOP_NOTES))
    demo.peer("desktop", "add", "--file", "-", stdin="".join(json.dumps(n) + "\n" for n in DESKTOP_NOTES))

    _heading("3. Search by meaning: the words need not match")
    demo.peer("laptop", "search", "how do I run the tests", "-k", "3")
    demo.peer("laptop", "search", "which database did we pick and why", "-k", "2")
    demo.peer("desktop", "search", "training crashed, how to continue", "-k", "2")

    _heading("4. Machine-readable output for assistants")
    out = demo.peer("laptop", "search", "ssh deploy error", "-k", "1", "--json")
    memory_id = json.loads(out)[0]["id"]

    _heading("5. Edit and forget: every change is a new version, nothing is lost")
    demo.peer("laptop", "edit", memory_id[:8], "--text",
              "Staging deploys fail with 'permission denied (publickey)' unless you run ssh-add first.")
    demo.peer("laptop", "show", memory_id[:8], "--versions")
    demo.peer("laptop", "list", "--project", "shop")
    forgotten = json.loads(demo.peer("laptop", "list", "--tag", "review", "--json", show=False))[0]["id"]
    demo.peer("laptop", "forget", forgotten[:8])
    demo.peer("laptop", "stats")

    _say(
        textwrap.dedent(
            """\
            The two devices are separate groups for now: pairing them (`peer invite` /
            `peer join`), syncing over SSH, the LAN agent and USB bundles are the next
            milestones (see README.md)."""
        )
    )


def main() -> None:
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="peer-demo-"))
    try:
        run(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _say(f"Demo finished in {time.monotonic() - started:.0f} s; removed {root}.")


if __name__ == "__main__":
    main()

"""Running the real ``peer`` command in a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The console script installed next to this interpreter; `python -m peer`
# when the package was not installed with its scripts.
_SCRIPT = Path(sys.executable).with_name("peer")
PEER = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "peer"]


def env() -> dict[str, str]:
    out = dict(os.environ)
    out.pop("PEER_HOME", None)
    return out


def peer(home: Path | None, *args: str, input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``peer [--home HOME] ARGS...``; never raises on a non-zero exit."""
    argv = [*PEER, *(["--home", str(home)] if home is not None else []), *args]
    return subprocess.run(argv, input=input, capture_output=True, text=True, env=env(), timeout=timeout)


def ok(home: Path | None, *args: str, input: str | None = None) -> str:
    done = peer(home, *args, input=input)
    assert done.returncode == 0, f"peer {' '.join(args)} exited {done.returncode}: {done.stderr}"
    return done.stdout


def ok_json(home: Path | None, *args: str, input: str | None = None) -> Any:
    return json.loads(ok(home, *args, "--json", input=input))


def assert_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """One ``error: ...`` line on stderr, no traceback, the expected exit status; returns the message."""
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    message = lines[0]
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    return message


def ndjson(items: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(item) + "\n" for item in items)


class Agent:
    """``peer agent --listen 127.0.0.1:0 --json EXTRA...`` in a subprocess; stderr goes to ``log``."""

    def __init__(
        self, home: Path, log: Path, *extra: str, listen: str = "127.0.0.1:0", prefix: Sequence[str] = ()
    ) -> None:
        self.home = home
        self.log = log
        self._err = open(log, "ab")  # noqa: SIM115 - closed in stop(); appended to across restarts
        self.process = subprocess.Popen(
            [*prefix, *PEER, "--home", str(home), "agent", "--listen", listen, "--json", *extra],
            stdout=subprocess.PIPE, stderr=self._err, env=env(), text=True,
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        assert first, "peer agent exited before listening: " + log.read_text()
        self.listening = json.loads(first)
        self.port = int(self.listening["port"])

    def rss_kb(self) -> int:
        """The agent's resident memory now, in kB (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        code = self.process.wait(timeout=30)
        self._err.close()
        return code

"""One agent per home (hostile report B12): a second ``peer agent`` is refused, naming the first.

The real ``peer agent`` processes on loopback: the second one on the same
home prints one ``error:`` line with the first one's pid and address and
exits 1 without touching anything; after the first is killed with SIGKILL
(no clean-up at all) a new agent starts at once.
"""

from __future__ import annotations

import signal
from pathlib import Path

from tests.support.cli_runner import Agent, assert_error, ok, peer


def test_a_second_agent_on_one_home_is_refused_and_names_the_first(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "init", "--name", "solo")
    first = Agent(home, tmp_path / "first.log", "--no-discovery")
    try:
        second = peer(home, "agent", "--listen", "127.0.0.1:0", "--no-discovery", timeout=60)
        message = assert_error(second, 1, "already runs", str(first.process.pid), f"127.0.0.1:{first.port}")
        assert first.process.poll() is None, "the first agent stopped"
        status = ok(home, "status", "--json")
    finally:
        first.stop(signal.SIGKILL)
    print(message)
    assert f'"pid": {first.process.pid}' in status
    # SIGKILL left the lock file behind, but not the lock: the next agent starts.
    third = Agent(home, tmp_path / "third.log", "--no-discovery")
    assert third.stop() == 0

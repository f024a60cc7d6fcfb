"""Two devices with clocks a year apart (hostile report B3, B11; issue 11's acceptance).

Real ``peer`` processes; the skewed device runs every command and its agent
under libfaketime (``faketime -f +365d``, monotonic time left real). The
skewed device invites (its agent judges its code by its own clock), the
device with the right clock joins, and then:

* receiving the skewed device's versions moves the right clock at most one
  day ahead (protocol.md 3.2), where before it jumped a year and stayed there;
* a concurrent edit on both converges to the winner protocol.md section 7
  names: the later clock time among concurrent siblings, with the loser kept
  as a sibling on both;
* a later edit that saw both supersedes them on both devices, although its
  clock time is a year below theirs: clock times order siblings, never
  supersession.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli_runner import PEER, Agent, env, ok, ok_json

DAY_MS = 24 * 60 * 60 * 1000
#: libfaketime preloaded straight into peer (the `faketime` wrapper forks, so a signal sent to
#: it would not reach the agent).
LIBFAKETIME = next(
    (p for p in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/faketime/libfaketime.so.1") if Path(p).exists()),
    None,
)
AHEAD = ["env", f"LD_PRELOAD={LIBFAKETIME}", "FAKETIME=+365d", "FAKETIME_DONT_FAKE_MONOTONIC=1"]

pytestmark = pytest.mark.skipif(
    LIBFAKETIME is None, reason="libfaketime is not installed (`make test-system-deps` installs it as root)"
)


def ahead(home: Path, *args: str) -> Any:
    """``peer --home HOME ARGS... --json`` under a clock a year ahead; its JSON output."""
    done = subprocess.run([*AHEAD, *PEER, "--home", str(home), *args, "--json"],
                          capture_output=True, text=True, env=env(), timeout=300)
    assert done.returncode == 0, f"peer {' '.join(args)} (a year ahead) exited {done.returncode}: {done.stderr}"
    return json.loads(done.stdout)


def hlc_ms(version: dict[str, Any]) -> int:
    return int(version["hlc"]) >> 16


def state(home: Path, run: Any) -> tuple[dict[str, str], list[str]]:
    """What must converge: each memory's winning text, and the memories in conflict."""
    memories = {m["id"]: m["content"] for m in run(home, "list")}
    conflicts = sorted(c["id"] for c in run(home, "conflicts"))
    return memories, conflicts


def test_two_devices_a_year_apart_converge_by_the_documented_rule(tmp_path: Path) -> None:
    skewed, right = tmp_path / "skewed", tmp_path / "right"
    probe = subprocess.run([*AHEAD, "date", "+%Y"], capture_output=True, text=True, check=True)
    assert int(probe.stdout) > time.gmtime().tm_year, "faketime did not move the clock"
    ahead(skewed, "init", "--name", "skewed")
    agent = Agent(skewed, tmp_path / "agent.log", "--no-discovery", prefix=AHEAD)
    try:
        code = ahead(skewed, "invite", "--ttl", "15m")["code"]
        right_id = ok_json(right, "join", code, "--host", f"127.0.0.1:{agent.port}", "--name", "right")["device_id"]
        memory = ahead(skewed, "add", "the deploy runs at six", "--kind", "fact")["id"]
        ok(right, "sync", f"127.0.0.1:{agent.port}")

        # A concurrent edit on both sides, the right one written after receiving a time a year ahead.
        now_ms = time.time_ns() // 1_000_000
        ok(right, "edit", memory, "--text", "the deploy runs at seven (edited where the clock is right)")
        ahead(skewed, "edit", memory, "--text", "the deploy runs at eight (edited a year ahead)")
        ok(right, "sync", f"127.0.0.1:{agent.port}")
        versions = ok_json(right, "show", memory, "--versions")["versions"]
        [written] = [v for v in versions if v["version"].startswith(right_id)]
        # The right clock moved at most a day (before: a year, for good).
        assert hlc_ms(written) <= now_ms + DAY_MS + 60_000, f"{(hlc_ms(written) - now_ms) / DAY_MS:.1f} days ahead"
        # Siblings; the later clock time among them wins, on both devices alike.
        on_right = state(right, lambda h, *a: ok_json(h, *a))
        on_skewed = state(skewed, ahead)
        live = [v for v in versions if v["state"] != "superseded"]
        assert on_right == on_skewed, (on_right, on_skewed)
        assert on_right[1] == [memory] and len(live) == 2
        assert on_right[0][memory] == max(live, key=lambda v: int(v["hlc"]))["content"]

        # An edit that saw both supersedes both, though its clock time is a year below theirs.
        ok(right, "edit", memory, "--text", "the deploy runs at nine (decided after seeing both)")
        ok(right, "sync", f"127.0.0.1:{agent.port}")
        final_right = ok_json(right, "show", memory)
        final_skewed = ahead(skewed, "show", memory)
    finally:
        code_exit = agent.stop()
    for final in (final_right, final_skewed):
        assert final["content"] == "the deploy runs at nine (decided after seeing both)"
        assert final["siblings"] == 0
    assert final_right["version"] == final_skewed["version"]
    assert code_exit == 0

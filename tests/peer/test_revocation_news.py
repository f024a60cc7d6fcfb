"""A revocation reaches members as fast as a memory, and everybody is told what happened (audit M2, M3).

Real agents on loopback, with anti-entropy rounds far apart (10 min) so that
only the "sync after a change" path can carry the news in time:

* M2: after ``peer revoke`` on the first device, the second device's agent
  knows within seconds (before: at the next anti-entropy round);
* M3: the revoked device is told it was revoked, by whom and when (before:
  "not a member of that device's group; pair it first"), and ``peer status``
  on a member stops listing it as lacking versions.
"""

from __future__ import annotations

import time
from pathlib import Path

import trio
import trio_asyncio

from tests.support.cli_runner import Agent, assert_error, ok, ok_json, peer
from tests.support.groups import admit, found

#: The agents' anti-entropy interval: far beyond the deadline below.
SLOW_ROUNDS = "[agent]\nsync_interval = 600\n"
#: Generous: the news takes about a second (a debounced sync).
DEADLINE_S = 30.0


def test_a_revocation_travels_like_a_change_and_the_revoked_device_is_told(tmp_path: Path) -> None:
    async def make() -> None:
        async with trio_asyncio.open_loop():
            first = await found(tmp_path / "alpha", "alpha")
            await admit(first, tmp_path / "bravo", "bravo")
            await admit(first, tmp_path / "charlie", "charlie")

    trio.run(make)
    alpha, bravo, charlie = tmp_path / "alpha", tmp_path / "bravo", tmp_path / "charlie"
    for home in (alpha, bravo):
        (home / "config.toml").write_text(SLOW_ROUNDS)
    (charlie / "config.toml").write_text(SLOW_ROUNDS)
    c_agent = Agent(charlie, tmp_path / "charlie.log", "--no-discovery")
    b_agent = Agent(bravo, tmp_path / "bravo.log", "--no-discovery")
    a_agent = Agent(alpha, tmp_path / "alpha.log", "--no-discovery", "--peer", f"127.0.0.1:{b_agent.port}")
    try:
        ok(charlie, "add", "written by charlie while a member")
        ok(charlie, "sync", f"127.0.0.1:{a_agent.port}")
        # Wait until alpha's agent has met bravo (its first sync), so that only the revocation is news.
        deadline = time.monotonic() + DEADLINE_S
        while not any(p["device_id"] and p["last_result"] == "ok" for p in
                      ((ok_json(alpha, "status").get("agent") or {}).get("peers") or [])):
            assert time.monotonic() < deadline, "alpha's agent never synced with bravo"
            time.sleep(0.2)
        time.sleep(1.0)

        ok(alpha, "revoke", "charlie")
        revoked_at, revoked_wall = time.monotonic(), time.time()
        while not any(d["name"] == "charlie" and d["revoked"] for d in ok_json(bravo, "devices")):
            assert time.monotonic() - revoked_at < DEADLINE_S, "bravo did not hear of the revocation in time"
            time.sleep(0.2)

        refused = peer(charlie, "sync", f"127.0.0.1:{a_agent.port}")
        # The members are told the same when they meet it, over SSH or in a bundle.
        to_revoked = peer(alpha, "sync", f"127.0.0.1:{c_agent.port}")
        ok(charlie, "bundle", "export", str(tmp_path / "charlie.bundle"), "--all")
        from_revoked = peer(bravo, "bundle", "import", str(tmp_path / "charlie.bundle"))
        status = ok_json(alpha, "status")
        listed = ok_json(bravo, "devices")
        listed_text = ok(bravo, "devices")
    finally:
        a_agent.stop()
        b_agent.stop()
        c_agent.stop()
    message = assert_error(refused, 1, "revoked", "by alpha", time.strftime("%Y-%m-%d", time.gmtime()))
    assert "pair it first" not in message
    # Before: "... which is not a member of this group; ... (pair the two devices first)".
    assert "pair" not in assert_error(to_revoked, 1, "was revoked", "by alpha")
    # Before: "... which is not a member this device knows; sync with a member that knows it first".
    assert_error(from_revoked, 1, "was revoked", "by alpha")
    [entry] = [p for p in status["peers"] if p["name"] == "charlie"]
    assert entry["revoked"] and entry["lacks"] is None
    # `peer devices` tells who revoked it and when (before: the date it was added).
    [row] = [d for d in listed if d["name"] == "charlie"]
    alpha_id = next(d["device_id"] for d in listed if d["name"] == "alpha")
    assert row["revoked_by"] == alpha_id and abs(row["revoked_at"] - revoked_wall) < 120
    assert "revoked by alpha" in listed_text

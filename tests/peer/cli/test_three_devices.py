"""Acceptance: three devices pair and sync over real SSH on loopback, as a new user would.

Separate homes, real `peer` processes, real agents on 127.0.0.1, the real
embedding model: B and C join A; memories added on each; after syncs A-B,
A-C and B-C all three list the same memories and a search on C finds B's
memory by meaning. Then A forgets a memory while B edits it: after the
next syncs B's edit survives on every device, the tombstone beside it as a
sibling, and `peer conflicts` shows it everywhere.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.cli_runner import Agent, ok, ok_json


def test_three_devices_pair_sync_and_find_each_others_memories(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    ok(a, "init", "--name", "laptop")
    agents: list[Agent] = []
    try:
        agent_a = Agent(a, tmp_path / "a-agent.log", "--no-discovery")
        agents.append(agent_a)
        at_a = f"127.0.0.1:{agent_a.port}"
        for home, name in ((b, "desktop"), (c, "work")):
            code = ok_json(a, "invite", "--address", at_a)["code"]
            joined = ok_json(home, "join", code, "--host", at_a, "--name", name)
            assert joined["group_id"] == ok_json(a, "stats")["group_id"]
        agent_b = Agent(b, tmp_path / "b-agent.log", "--no-discovery")
        agents.append(agent_b)
        at_b = f"127.0.0.1:{agent_b.port}"

        mine = {
            "a": ok_json(a, "add", "Use pytest -q in the repo root to run the test suite", "--kind", "procedure")["id"],
            "b": ok_json(
                b, "add", "The staging database password is rotated every Monday morning; read it from the vault"
            )["id"],
            "c": ok_json(c, "add", "Production deploys need two approvals in the release channel")["id"],
        }
        ok(b, "sync", at_a)  # A <-> B
        ok(c, "sync", at_a)  # A <-> C
        summary = ok_json(c, "sync", at_b)  # B <-> C, directly: the member list was replicated
        assert summary["sent"] >= 1  # B learns C's memory from C itself (C had B's from A already)

        for home in (a, b, c):
            assert sorted(m["id"] for m in ok_json(home, "list")) == sorted(mine.values())
            assert len(ok_json(home, "devices")) == 3
        hits = ok_json(c, "search", "when does the staging db password change", "-k", "1")
        assert hits[0]["id"] == mine["b"]

        # A forgets C's memory while B edits it; nothing is lost silently.
        ok(a, "forget", mine["c"])
        ok(b, "edit", mine["c"], "--text", "Production deploys need two approvals and a green canary")
        ok(b, "sync", at_a)
        ok(c, "sync", at_a)
        ok(c, "sync", at_b)
        for home in (a, b, c):
            shown = ok_json(home, "show", mine["c"])
            assert "green canary" in shown["content"], home
            (conflict,) = [x for x in ok_json(home, "conflicts") if x["id"] == mine["c"]]
            kinds = sorted((v["winner"], v["deleted"]) for v in conflict["versions"])
            assert kinds == [(False, True), (True, False)], (home, conflict)
    finally:
        for agent in agents:
            if agent.process.poll() is None:
                agent.stop()

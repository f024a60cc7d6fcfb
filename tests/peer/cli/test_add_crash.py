"""A bulk add killed with SIGKILL half-way keeps every batch it committed, in order."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

from peer.cli.memories import BULK_BATCH
from tests.support.cli_runner import PEER, env, ok, ok_json, peer
from tests.support.waiting import wait_until

TOTAL = 10_000
KILL_AFTER = TOTAL // 2

TOPICS = [
    "the build cache", "the staging database", "the release checklist", "the on-call rota", "the API rate limit",
    "the CI runners", "the backup job", "the feature flag", "the log retention", "the TLS certificate",
]
ACTIONS = ["check", "renew", "restart", "document", "review", "rotate", "clean up", "monitor"]


def texts() -> list[str]:
    # Short, distinct lines: the model embeds them quickly and each is easy to find again.
    return [f"note {i:05d}: {ACTIONS[i % len(ACTIONS)]} {TOPICS[(i // 8) % len(TOPICS)]}" for i in range(TOTAL)]


def count_versions(db: Path) -> int:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        (count,) = conn.execute("SELECT count(*) FROM versions").fetchone()
    return int(count)


def test_bulk_add_killed_half_way(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "init")
    lines = texts()
    source = tmp_path / "notes.txt"
    source.write_text("\n".join(lines) + "\n")

    child = subprocess.Popen(
        [*PEER, "--home", str(home), "add", "--file", str(source), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(),
    )
    try:
        # Watch the store from this process (read-only, as any reader of a
        # WAL database may) until enough is committed. Polling with `peer
        # stats` would work too but steals the CPU the child is embedding with.
        def enough_committed() -> bool:
            assert child.poll() is None, "the bulk add ended before it could be killed: raise TOTAL"
            return count_versions(home / "peer.db") >= KILL_AFTER

        wait_until(
            enough_committed, 240, f"{KILL_AFTER} committed memories", interval=0.2,
            detail=lambda: f"only {count_versions(home / 'peer.db')} so far",
        )
        child.kill()  # SIGKILL: no cleanup, no final commit
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -9

    stats = ok_json(home, "stats")
    kept = stats["memories"]
    assert KILL_AFTER <= kept < TOTAL
    assert kept % BULK_BATCH == 0, "a batch is one transaction: all of it or none of it"
    assert stats["versions"] == kept  # no half-written rows

    # Exactly the first `kept` lines of the input, nothing else.
    contents = [m["content"] for m in ok_json(home, "list")]
    assert sorted(contents) == lines[:kept]

    # The store opens, the index catches up (from nothing) and search finds a committed line.
    probe = lines[kept - 1]
    found = ok_json(home, "search", probe, "-k", "1")
    assert found[0]["content"] == probe
    doctor = peer(home, "doctor", "--json")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert json.loads(doctor.stdout)["healthy"] is True

    # And the store takes the rest: resuming after the committed prefix.
    rest = tmp_path / "rest.txt"
    rest.write_text("\n".join(lines[kept : kept + 300]) + "\n")
    assert ok_json(home, "add", "--file", str(rest))["added"] == 300
    assert ok_json(home, "stats")["memories"] == kept + 300

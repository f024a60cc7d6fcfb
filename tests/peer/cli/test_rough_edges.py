"""The audit's rough edges (issue 11 item 11), each as a user meets it: real ``peer`` processes on real homes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli_runner import Agent, assert_error, ok, ok_json, peer
from tests.support.groups import admit, found


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rough") / "home"
    ok(path, "init", "--name", "rough")
    ok(path, "add", "deploy with ssh to the bastion host", "--tag", "ssh", "--project", "ops")
    ok(path, "add", "deploy the web app with the helm chart", "--tag", "k8s", "--project", "ops")
    ok(path, "add", "lunch is at noon on fridays")
    return path


# search --tag / --since (R2) ----------------------------------------------------------------


def test_search_filters_by_tag_and_since_like_list(home: Path) -> None:
    hits = ok_json(home, "search", "deploy", "--tag", "ssh")
    assert [h["content"] for h in hits] == ["deploy with ssh to the bastion host"]
    assert {h["content"] for h in ok_json(home, "search", "deploy", "--since", "1h", "-k", "2")} == {
        "deploy with ssh to the bastion host", "deploy the web app with the helm chart",
    }
    assert ok_json(home, "search", "deploy", "--since", "2099-01-01") == []


# bulk add: BOM and lines that start with { (R3) -----------------------------------------------


def test_bulk_add_drops_a_bom_and_reads_brace_lines_as_text_when_told(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffBOM first line\n".encode())
    (memory_id,) = ok_json(home, "add", "--file", str(path))["ids"]
    assert ok_json(home, "show", memory_id)["content"] == "BOM first line"
    path.write_text("{curly braces in a note} are fine?\nsecond\n", encoding="utf-8")
    message = assert_error(peer(home, "add", "--file", str(path)), 1, "line 1", "--format text")
    assert "bom.txt" in message
    ids = ok_json(home, "add", "--file", str(path), "--format", "text")["ids"]
    assert ok_json(home, "show", ids[0])["content"] == "{curly braces in a note} are fine?"


# import names the right command (R4) -----------------------------------------------------------


def test_import_recognises_bundles_backups_and_plain_text(home: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "h.bundle"
    ok(home, "bundle", "export", str(bundle), "--all")
    assert_error(peer(home, "import", str(bundle)), 1, "bundle", "peer bundle import")
    backup = tmp_path / "h.peerbackup"
    ok(home, "backup", "create", "--output", str(backup))
    assert_error(peer(home, "import", str(backup)), 1, "backup", "peer backup restore")
    plain = tmp_path / "notes.txt"
    plain.write_text("one note per line\nanother note\n")
    assert_error(peer(home, "import", str(plain)), 1, "peer add --file")


# export refuses to overwrite (R5) ---------------------------------------------------------------


def test_export_refuses_to_overwrite_without_force(home: Path, tmp_path: Path) -> None:
    target = tmp_path / "notes.jsonl"
    target.write_text("my hand-written notes\n")
    assert_error(peer(home, "export", str(target)), 1, "exists", "--force")
    assert target.read_text() == "my hand-written notes\n"
    assert ok_json(home, "export", str(target), "--force")["exported"] >= 3
    assert json.loads(target.read_text().splitlines()[0])["peer_export"] == 1


# file arguments: one spelling, old ones kept (R7) ----------------------------------------------


def test_every_file_argument_is_spelled_file(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "by-option.ndjson"
    ok(home, "export", "--file", str(out))
    assert out.exists()
    assert ok_json(home, "import", "--file", str(out), "--dry-run")["unchanged"] >= 3
    bundle = tmp_path / "by-option.bundle"
    ok(home, "bundle", "export", "--file", str(bundle), "--all")
    # Read as the bundle it is (this device's own, so refused as such, not as a usage error).
    assert_error(peer(home, "bundle", "import", "--file", str(bundle), "--dry-run"), 1, "made by this device")
    backup = tmp_path / "by-option.peerbackup"
    ok(home, "backup", "create", "--file", str(backup))
    assert backup.exists()
    # The old spellings still work.
    ok(home, "backup", "create", "-o", str(tmp_path / "old.peerbackup"))
    assert_error(peer(home, "export", str(out), "--file", str(out)), 2, "not both")


# resolve by prefix or position (R6) -------------------------------------------------------------


def _conflict(home: Path, tmp_path: Path) -> str:
    memory_id: str = ok_json(home, "add", "the build uses make")["id"]
    export = tmp_path / "c.ndjson"
    ok(home, "export", str(export), "--force")
    ok(home, "edit", memory_id, "--text", "the build uses ninja")
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    for line in lines[1:]:
        if line["id"] == memory_id:
            line.update(content="the build uses bazel", updated_at=line["updated_at"] + 3600)
    export.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert ok_json(home, "import", str(export))["conflicts"] == 1
    return memory_id


def test_resolve_takes_a_position_or_a_unique_prefix(home: Path, tmp_path: Path) -> None:
    memory_id = _conflict(home, tmp_path)
    (conflict,) = [c for c in ok_json(home, "conflicts") if c["id"] == memory_id]
    second = conflict["versions"][1]
    done = ok_json(home, "resolve", memory_id, "--keep", "2")
    assert done["kept"] == second["version"]
    assert ok_json(home, "show", memory_id)["content"] == second["content"]
    # A prefix, any case.
    memory_id = _conflict(home, tmp_path)
    (conflict,) = [c for c in ok_json(home, "conflicts") if c["id"] == memory_id]
    first = conflict["versions"][0]["version"]
    prefix = first.split(":")[0][:8].lower() + ":" + first.split(":")[1]
    assert ok_json(home, "resolve", memory_id, "--keep", prefix)["kept"] == first
    assert_error(peer(home, "resolve", memory_id, "--keep", "9"), 1, "position", "peer conflicts")


# doctor checks config.toml (R13) ----------------------------------------------------------------


def test_doctor_checks_config_toml(tmp_path: Path) -> None:
    home = tmp_path / "cfg"
    ok(home, "init")
    (home / "config.toml").write_text("[agent]\nsync_intervall = 30\n")
    done = peer(home, "doctor")
    assert done.returncode == 1
    assert "FAIL  config.toml" in done.stdout and "sync_intervall" in done.stdout
    (home / "config.toml").write_text("[agent]\nsync_interval = 30\n")
    report = ok_json(home, "doctor")
    assert any(c["name"] == "config.toml" and c["ok"] for c in report["checks"])


# the agent's log (audit M6) ---------------------------------------------------------------------


async def test_the_agent_does_not_log_no_change_syncs_at_info(tmp_path: Path, aio_loop: object) -> None:
    a = await found(tmp_path / "a", "desk")
    b = await admit(a, tmp_path / "b", "laptop")
    agent = Agent(a.path, tmp_path / "agent.log", "--no-discovery")
    try:
        ok(b.path, "add", "a memory that moves")
        ok(b.path, "sync", f"127.0.0.1:{agent.port}")
        ok(b.path, "sync", f"127.0.0.1:{agent.port}")  # nothing to move
        ok(b.path, "sync", f"127.0.0.1:{agent.port}")
    finally:
        agent.stop()
    synced = [line for line in (tmp_path / "agent.log").read_text().splitlines() if "synced:" in line]
    assert len(synced) == 1 and "received 1 version " in synced[0], synced


# invite checks that joining can work (R8) ----------------------------------------------------------


def test_invite_warns_when_no_agent_runs_or_it_listens_on_loopback_only(tmp_path: Path) -> None:
    home = tmp_path / "inviter"
    ok(home, "init")
    done = peer(home, "invite")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "no agent is running" in warnings[0] and "peer agent" in warnings[0], done.stderr
    agent = Agent(home, tmp_path / "agent.log", "--no-discovery")  # listens on 127.0.0.1
    try:
        done = peer(home, "invite")
    finally:
        agent.stop()
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "loopback" in warnings[0] and "--listen" in warnings[0], done.stderr
    # The air-gapped invite needs no agent: no warning.
    quiet = peer(home, "invite", "--file", str(tmp_path / "invite.peerinvite"))
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr


# list: dates, and a default limit at a terminal (R10) ------------------------------------------------


def _list_on_a_terminal(home: Path, *args: str) -> tuple[list[str], str]:
    import os
    import pty
    import subprocess

    from tests.support.cli_runner import PEER, env

    master, slave = pty.openpty()
    process = subprocess.Popen([*PEER, "--home", str(home), "list", *args], stdout=slave, stderr=subprocess.PIPE,
                               env=env())
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert process.stderr is not None
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0, stderr
    return [line for line in out.decode().splitlines() if line.strip()], stderr


def test_list_shows_dates_and_stops_at_fifty_on_a_terminal(tmp_path: Path) -> None:
    import re

    home = tmp_path / "many"
    ok(home, "init")
    path = tmp_path / "many.txt"
    path.write_text("".join(f"memory number {n}\n" for n in range(60)))
    ok(home, "add", "--file", str(path))
    lines, stderr = _list_on_a_terminal(home)
    assert len(lines) == 50 and "--limit" in stderr and "60" in stderr, stderr
    assert all(re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", line) for line in lines), lines[:3]
    # Piped (a script, an assistant): everything, as before.
    assert len(ok(home, "list").splitlines()) == 60
    # --limit 0: no limit.
    lines, _ = _list_on_a_terminal(home, "--limit", "0")
    assert len(lines) == 60

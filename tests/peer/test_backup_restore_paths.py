"""Backups that restore (issue 11 item 8, audit M1): a lone device can be rebuilt, and nothing sends the user in a circle.

Real ``peer`` processes, a real agent making a scheduled backup, real restores.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.cli_runner import Agent, assert_error, ok, ok_json, peer

PASSPHRASE = "correct horse battery staple"


def lone_device(path: Path) -> Path:
    ok(path, "init", "--name", "lone")
    ok(path, "add", "the only copy of this memory lives on the lone device")
    return path


def test_a_backup_without_the_identity_says_what_it_cannot_restore(tmp_path: Path) -> None:
    home = lone_device(tmp_path / "lone")
    done = peer(home, "backup", "create", "--output", str(tmp_path / "plain.peerbackup"))
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, done.stderr
    # It names what cannot be done and the way to a backup that can.
    assert "cannot rebuild this device" in warnings[0] and "--with-identity" in warnings[0]
    assert "only member" in warnings[0]  # so no "restore it into a member" either
    # With the identity: no warning.
    (tmp_path / "pass.txt").write_text(PASSPHRASE + "\n")
    sealed = peer(home, "backup", "create", "--output", str(tmp_path / "full.peerbackup"), "--with-identity",
                  "--passphrase-file", str(tmp_path / "pass.txt"))
    assert sealed.returncode == 0 and "warning" not in sealed.stderr, sealed.stderr


def test_restore_errors_never_send_the_user_in_a_circle(tmp_path: Path) -> None:
    home = lone_device(tmp_path / "lone")
    backup = tmp_path / "plain.peerbackup"
    ok(home, "backup", "create", "--output", str(backup))
    # A fresh home: the device was alone, so "pair this home first" is not advice that can be followed.
    fresh = tmp_path / "fresh"
    message = assert_error(peer(fresh, "backup", "restore", "--file", str(backup)), 1, "without the identity")
    # It says what can be done in each case, and the lone device's case is not "pair first".
    assert "only member" in message and "cannot be restored" in message and "--with-identity" in message
    # Following the obvious next step (`peer init`, restore again) must not point back to a new home.
    ok(fresh, "init")
    message = assert_error(peer(fresh, "backup", "restore", "--file", str(backup)), 1, "group")
    assert "new home" not in message, message
    assert "without the identity" in message


def test_scheduled_backups_with_a_passphrase_file_can_rebuild_a_lone_device(tmp_path: Path) -> None:
    home = lone_device(tmp_path / "lone")
    (tmp_path / "pass.txt").write_text(PASSPHRASE + "\n")
    (home / "config.toml").write_text(
        f'[backup]\nenabled = true\nfrequency = "daily"\npassphrase_file = "{tmp_path / "pass.txt"}"\n'
    )
    agent = Agent(home, tmp_path / "agent.log", "--no-discovery")
    try:
        deadline = time.monotonic() + 120
        while not list((home / "backups").glob("*.peerbackup")):
            assert time.monotonic() < deadline, (tmp_path / "agent.log").read_text()
            time.sleep(0.2)
    finally:
        agent.stop()
    log = (tmp_path / "agent.log").read_text()
    assert "with the identity" in log, log
    (made,) = list((home / "backups").glob("*.peerbackup"))
    # The disk dies: only the backup and the passphrase are left.
    rebuilt = tmp_path / "rebuilt"
    result = ok_json(rebuilt, "backup", "restore", "--file", str(made), "--passphrase-file", str(tmp_path / "pass.txt"))
    assert result["identity"] is True
    assert [m["content"] for m in ok_json(rebuilt, "list")] == ["the only copy of this memory lives on the lone device"]


def test_scheduled_backups_without_a_passphrase_say_how_to_get_one_in_the_log(tmp_path: Path) -> None:
    home = lone_device(tmp_path / "lone")
    (home / "config.toml").write_text('[backup]\nenabled = true\n')
    agent = Agent(home, tmp_path / "agent.log", "--no-discovery")
    try:
        deadline = time.monotonic() + 120
        while not list((home / "backups").glob("*.peerbackup")):
            assert time.monotonic() < deadline, (tmp_path / "agent.log").read_text()
            time.sleep(0.2)
    finally:
        agent.stop()
    log = (tmp_path / "agent.log").read_text()
    assert "without the identity" in log and "passphrase_file" in log, log

"""``peer relay``: the commands a user types, in subprocesses, with their JSON and their error lines."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli_runner import assert_error, ok, ok_json, peer


def test_relay_commands_from_add_to_remove(tmp_path: Path) -> None:
    a, b, usb, share = tmp_path / "desk", tmp_path / "laptop", tmp_path / "usb", tmp_path / "Dropbox"
    usb.mkdir()
    share.mkdir()
    ok(a, "init", "--name", "desk")
    invite = ok_json(a, "invite", "--file", str(usb / "invite.peer"), "--name", "laptop")
    ok_json(b, "join", invite["code"], "--file", str(usb / "invite.peer"))

    added = ok_json(a, "relay", "add", str(share))
    assert added["name"] == "Dropbox" and added["kind"] == "folder"
    assert ok_json(b, "relay", "add", str(share), "--name", "dbx")["name"] == "dbx"
    ok(a, "add", "relay notes travel through the folder")

    first = ok_json(a, "relay", "sync")["relays"][0]
    assert first["versions_written"] == 1 and first["relay"] == "Dropbox"
    second = ok_json(b, "relay", "sync", "dbx")["relays"][0]
    assert second["versions_added"] == 1
    assert "relay notes travel" in ok(b, "list")
    listed = ok_json(b, "relay", "list")["relays"][0]
    assert listed["name"] == "dbx" and listed["reachable"] is True and listed["last_read"] is not None

    assert_error(peer(a, "relay", "sync", "nope"), 1, "no relay called 'nope'")
    assert_error(peer(a, "relay", "add", str(tmp_path / "missing")), 1, "not a directory")
    assert_error(peer(a, "relay", "add", "ftp://host/x"), 1, "sftp://")
    assert_error(peer(a, "relay", "add", str(share)), 1, "already a relay")
    share_moved = tmp_path / "Dropbox-gone"
    share.rename(share_moved)
    assert_error(peer(a, "relay", "sync", "Dropbox"), 1, "does not exist or is not mounted")
    unreachable = ok_json(a, "relay", "list")["relays"][0]
    assert unreachable["reachable"] is False and "not mounted" in unreachable["error"]
    assert ok_json(a, "relay", "remove", "Dropbox")["removed"]["name"] == "Dropbox"
    assert ok_json(a, "relay", "list")["relays"] == []

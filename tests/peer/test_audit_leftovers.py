"""Rough edges from the newcomer's audit (M5, R11, R13, R14) that each got a small fix."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from peer.cli.sync import systemd_unit_text
from peer.dev.groups import admit, found
from peer.home import Home
from peer.pairing import join
from protocol import InviteCode, encode_code
from protocol.errors import StoreError
from tests.support.cli_runner import assert_error, ok, ok_json, peer


def test_kind_is_read_case_insensitively(tmp_path: Path) -> None:
    home = tmp_path / "h"
    ok(home, "init", "--name", "laptop")
    ok(home, "add", "--kind", "FACT", "the staging database is on port 5433")
    ok(home, "add", "--file", "-", input='{"text": "deploys go out on tuesdays", "kind": "Decision"}\n')
    kinds = sorted(m["kind"] for m in ok_json(home, "list", "--json"))
    assert kinds == ["decision", "fact"]


def test_an_empty_home_option_is_an_error_not_the_default_home(tmp_path: Path) -> None:
    done = peer(None, "--home", "", "stats")
    line = assert_error(done, 2, "--home", "empty")
    assert "local/share" not in line


def test_the_user_unit_does_not_wait_for_a_system_target(tmp_path: Path) -> None:
    unit = systemd_unit_text(Home(tmp_path), "/usr/bin/peer")
    directives = [line for line in unit.splitlines() if line and not line.startswith("#")]
    assert not any(line.startswith(("After=", "Wants=")) for line in directives)
    assert "WantedBy=default.target" in directives


async def test_joining_the_same_group_again_says_so(tmp_path: Path, aio_loop: object) -> None:
    inviter = await found(tmp_path / "desk", "desk")
    member = await admit(inviter, tmp_path / "laptop", "laptop")
    code = InviteCode(
        device_id=inviter.identity().device_id,
        invite_id=bytes(range(8)),
        secret=bytes(range(100, 116)),
        expires_at=int(time.time()) + 900,
        address="192.0.2.7:7847",
    )
    with pytest.raises(StoreError, match="already a member of group .*the inviter's group") as caught:
        await join(member, encode_code(code), name="laptop")
    assert "another group" not in str(caught.value)

"""Relays over SFTP on a real OpenSSH server: the same five rounds converge; a changed host key is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.relay import RelayUnavailable, add_relay, load_memory
from protocol import TrustError
from tests.support.groups import admit, found

from .harness import SENTINEL, five_rounds, relay_bytes, turn, view
from .sshd import OpenSSHServer


@pytest.fixture
def sshd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenSSHServer]:
    server = OpenSSHServer(tmp_path / "sshd")
    monkeypatch.setenv("HOME", str(server.client_home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_five_rounds_through_an_openssh_server_and_a_changed_host_key_is_refused(
    tmp_path: Path, sshd: OpenSSHServer, aio_loop: object
) -> None:
    remote = tmp_path / "srv" / "peer-relay"
    remote.mkdir(parents=True)
    desk = await found(tmp_path / "desk", "desk")
    laptop = await admit(desk, tmp_path / "laptop", "laptop")
    spec = add_relay(desk.path, sshd.url(remote), name="nas")
    add_relay(laptop.path, sshd.url(remote), name="nas")
    ids: dict[str, str] = {}
    await five_rounds(desk, laptop, spec, spec, ids)
    assert await view(desk) == await view(laptop)
    assert len((await view(desk))["conflicts"]) == 1
    assert any(remote.rglob("*.state"))
    assert SENTINEL.encode() not in relay_bytes(remote)

    # The server's host key changes (a different machine answers at that address): refused, nothing written.
    sshd.stop()
    sshd.new_host_key()
    sshd.start()
    before = relay_bytes(remote)
    with pytest.raises(TrustError, match="known_hosts"):
        await turn(desk, spec)
    assert relay_bytes(remote) == before
    assert "known_hosts" in (load_memory(desk.path, "nas").last_error or "")

    sshd.stop()  # the server is down: unreachable, said so, nothing changed
    with pytest.raises(RelayUnavailable, match="refused the connection"):
        await turn(desk, spec)
    assert relay_bytes(remote) == before

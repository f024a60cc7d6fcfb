"""A real OpenSSH server on loopback for the SFTP relay tests, with its own host key and authorized_keys.

The client side is a throw-away ``$HOME`` whose ``~/.ssh`` holds the user's
key and a known_hosts line for the server, exactly what a person's set-up
would hold; ssh-agent is left out so only those files count.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_key(path: Path) -> str:
    """A new Ed25519 key in OpenSSH format at ``path`` (0600); returns its public line."""
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))
    path.chmod(0o600)
    return key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


class OpenSSHServer:
    def __init__(self, root: Path) -> None:
        if not os.path.exists(SSHD):
            pytest.skip(f"{SSHD} is not installed (Debian openssh-server; `make test-system-deps` installs it as root)")
        self.root = root
        self.port = free_port()
        self.user = getpass.getuser()
        self.client_home = root / "client-home"
        ssh = self.client_home / ".ssh"
        ssh.mkdir(parents=True, mode=0o700)
        self.authorized = root / "authorized_keys"
        self.authorized.write_text(write_key(ssh / "id_ed25519") + "\n")
        self.authorized.chmod(0o600)
        self.process: subprocess.Popen[bytes] | None = None
        self.host_public = ""
        self.new_host_key()
        (ssh / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {self.host_public}\n")

    def new_host_key(self) -> None:
        self.host_key = self.root / "host_ed25519"
        self.host_key.unlink(missing_ok=True)
        self.host_public = write_key(self.host_key)

    def start(self) -> None:
        config = self.root / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.authorized}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin prohibit-password",
                    f"AllowUsers {self.user}",
                    "Subsystem sftp internal-sftp",
                    "LogLevel ERROR",
                ]
            )
            + "\n"
        )
        if os.geteuid() == 0:
            # sshd's privilege-separation directory; Debian's service unit creates it, a test run has none.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                pytest.fail(f"sshd exited at start: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail("sshd did not listen within 20 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def url(self, path: Path) -> str:
        return f"sftp://{self.user}@127.0.0.1:{self.port}{path}"


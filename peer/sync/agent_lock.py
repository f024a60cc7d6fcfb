"""One agent per home: ``agent.lock`` in the home, held with ``flock`` for the agent's life.

Theory of operation. Two agents on one home would both sync, both save the
search index and both write ``agent.json``, so ``peer status`` would show only
one of them. The first agent takes an exclusive ``flock`` on ``HOME/agent.lock``
and writes its pid (and, once it listens, its address) into the file; a second
one finds the lock taken, reads who holds it and refuses with one line naming
them. The kernel drops a ``flock`` when its process ends in any way, SIGKILL
included, so a stale file never blocks the next agent; the file itself is never
deleted (unlinking a locked file lets a third process lock a new inode of the
same name while the second still holds the old one).
"""

from __future__ import annotations

import fcntl
import json
import os
from typing import Final

from peer.errors import AgentAlreadyRunning
from peer.home import Home
from protocol import StoreError

__all__ = ["AGENT_LOCK_FILE", "AgentLock"]

#: In the home directory; holds ``{"pid": N, "listen": "HOST:PORT" or null}``.
AGENT_LOCK_FILE: Final = "agent.lock"


class AgentLock:
    """The lock of a running agent; :meth:`acquire` it first, :meth:`release` it last."""

    def __init__(self, home: Home, fd: int) -> None:
        self._path = home.path / AGENT_LOCK_FILE
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, home: Home) -> AgentLock:
        """Take the home's agent lock, or raise :class:`AgentAlreadyRunning` naming its holder."""
        path = home.path / AGENT_LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StoreError(f"cannot create {path}: {e.strerror or e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(fd)
            os.close(fd)
            raise AgentAlreadyRunning(
                f"an agent already runs for the home {home.path} ({holder}); stop it first, or use another --home"
            ) from None
        except OSError as e:
            os.close(fd)
            raise StoreError(f"cannot lock {path}: {e.strerror or e}") from e
        lock = cls(home, fd)
        lock._write(None)
        return lock

    def listening(self, host: str, port: int) -> None:
        """Record where this agent listens, for the message a second agent prints."""
        self._write(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")

    def _write(self, listen: str | None) -> None:
        if self._fd is None:
            return
        data = json.dumps({"pid": os.getpid(), "listen": listen}).encode("utf-8")
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError:
            pass  # only the message of a second agent would lack a detail; the lock holds regardless

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # closing the only descriptor drops the flock


def _describe_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return "its pid is not recorded yet"
    listen = info.get("listen")
    return f"pid {pid}, listening on {listen}" if isinstance(listen, str) else f"pid {pid}, not listening yet"

"""Noticing what other processes commit to a store.

Several processes open one home at once: the agent, ``peer mcp`` servers
(one per assistant window), one-shot ``peer`` commands. SQLite tells a
connection when *another* connection has committed since it last asked:
``PRAGMA data_version`` changes then, and only then (a connection's own
commits do not change it). Asking costs one pragma, so the agent polls it
every quarter second and the MCP server asks before every read; both go
through :class:`StoreWatch` so that the rule lives in one place.

Polling alone makes a change wait 125 ms on average before the agent sees
it. :class:`FileWrites` wakes the agent as soon as a file of the store is
written instead (Linux inotify on the home directory: a commit appends to
``peer.db-wal``); the agent still polls, as a safety net, where inotify is
missing or an event was lost. A wake-up only says "ask now": the answer is
still the data_version check, so a spurious one costs one pragma.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from pathlib import Path
from typing import Protocol

import trio

__all__ = ["FileWrites", "StoreWatch", "VersionSource"]


class VersionSource(Protocol):
    """What the watch needs from a store (:class:`peer.store.Store` has it)."""

    async def data_version(self) -> int: ...


class StoreWatch:
    """``await watch.changed()``: True when another process committed since the previous call."""

    def __init__(self, store: VersionSource, version: int) -> None:
        self._store = store
        self._version = version

    @classmethod
    async def start(cls, store: VersionSource) -> StoreWatch:
        """A watch that reports commits made from now on."""
        return cls(store, await store.data_version())

    async def changed(self) -> bool:
        now = await self._store.data_version()
        if now == self._version:
            return False
        self._version = now
        return True


_IN_MODIFY = 0x002
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


class FileWrites:
    """Wakes a task when files whose names start with ``prefix`` in ``directory`` are written.

    ``await writes.wait()`` returns after such a write, or never where inotify
    is not available (``writes.available`` is False then): callers wait on it
    under a timeout and poll. Close it with :meth:`close`.
    """

    def __init__(self, directory: Path, prefix: str) -> None:
        self._prefix = os.fsencode(prefix)
        self._fd = -1
        libc_name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(libc_name, use_errno=True)
            fd = int(libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))
        except (OSError, AttributeError):
            return  # not Linux: wait() never returns; the caller's poll does the work
        if fd < 0:
            return
        mask = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_CREATE | _IN_MOVED_TO
        if int(libc.inotify_add_watch(fd, os.fsencode(directory), mask)) < 0:
            os.close(fd)
            return
        self._fd = fd

    @property
    def available(self) -> bool:
        return self._fd >= 0

    def _drain(self) -> bool:
        """Read the pending events; True if one was about a watched file."""
        hit = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return hit
            at = 0
            while at + _EVENT.size <= len(data):
                _, _, _, length = _EVENT.unpack_from(data, at)
                name = data[at + _EVENT.size : at + _EVENT.size + length].rstrip(b"\0")
                hit = hit or name.startswith(self._prefix)
                at += _EVENT.size + length

    async def wait(self) -> None:
        """Return once a watched file has been written since the previous call (events meanwhile count)."""
        if self._fd < 0:
            await trio.sleep_forever()
        while not self._drain():
            await trio.lowlevel.wait_readable(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            trio.lowlevel.notify_closing(fd)
            os.close(fd)

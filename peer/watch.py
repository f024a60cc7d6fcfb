"""Noticing what other processes commit to a store.

Several processes open one home at once: the agent, ``peer mcp`` servers
(one per assistant window), one-shot ``peer`` commands. SQLite tells a
connection when *another* connection has committed since it last asked:
``PRAGMA data_version`` changes then, and only then (a connection's own
commits do not change it). Asking costs one pragma, so the agent polls it
every quarter second and the MCP server asks before every read; both go
through :class:`StoreWatch` so that the rule lives in one place.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["StoreWatch", "VersionSource"]


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

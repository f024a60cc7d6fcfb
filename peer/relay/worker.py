"""The agent's relay task: exchange with every configured relay at start, soon after a change, and periodically.

One task, relays exchanged one after another (a relay exchange is a few
file operations; running them side by side would only compete for the
store's write lock). A local change, or versions brought by a LAN sync,
``poke`` it; it waits :data:`DEBOUNCE_S` so a burst of writes becomes one
segment. A relay that fails is retried with exponential backoff (its
error is in the home for ``peer status``); the others go on. The relay
list is read again before each round, so ``peer relay add`` takes effect
without a restart.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from protocol import PeerError

from ..home import Home
from ..store import Store
from . import load_relays, sync_relay

__all__ = ["RelayWorker", "DEBOUNCE_S"]

log = logging.getLogger(__name__)

#: Wait this long after a change before exchanging: a burst of writes becomes one segment.
DEBOUNCE_S: Final = 3.0


class RelayWorker:
    def __init__(
        self,
        home: Home,
        store: Store,
        *,
        interval: float,
        backoff_max: float,
        after_read: Callable[[], Awaitable[None]] | None = None,
        debounce: float = DEBOUNCE_S,
    ) -> None:
        self.home = home
        self.store = store
        self.interval = interval
        self.backoff_max = backoff_max
        self.debounce = debounce
        self.after_read = after_read
        self._poked = trio.Event()
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}

    def poke(self) -> None:
        """This store changed: exchange soon."""
        self._poked.set()

    async def exchange_all(self) -> int:
        """One round over every relay that is not backing off; returns the versions read."""
        try:
            relays = load_relays(self.home.path)
        except PeerError as e:
            log.warning("relays: %s", e)
            return 0
        added = 0
        now = trio.current_time()
        key = self.home.identity().signing_key
        for spec in relays:
            if self._retry_at.get(spec.name, 0) > now:
                continue
            try:
                result = await sync_relay(self.store, key, self.home.path, spec)
            except PeerError as e:
                failures = self._failures[spec.name] = self._failures.get(spec.name, 0) + 1
                step = min(self.backoff_max, 2.0 * 2 ** min(failures - 1, 30))
                wait = random.uniform(step / 2, step)
                self._retry_at[spec.name] = trio.current_time() + wait
                log.warning("relay %s: %s; retrying in %.0f s", spec.name, e, wait)
                continue
            self._failures.pop(spec.name, None)
            self._retry_at.pop(spec.name, None)
            added += result.versions_added
        return added

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self._poked = trio.Event()
            if await self.exchange_all() and self.after_read is not None:
                await self.after_read()
            wait = self.interval
            if self._retry_at:
                wait = min(wait, max(0.0, min(self._retry_at.values()) - trio.current_time()))
            with trio.move_on_after(wait):
                await self._poked.wait()
                await trio.sleep(self.debounce)

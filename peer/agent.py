"""``peer agent``: the long-running side of a device.

Today it is the SSH listener: it serves sync sessions to members and the
join subsystem to devices holding an invite, and keeps the search index in
step with what arrives. LAN discovery (mDNS) and automatic syncs hook in
here later, as further tasks of the same nursery.

Shutdown: cancelling :func:`run_agent` (the CLI does it on SIGINT/SIGTERM)
stops the listener, closes open sessions (their peers keep what they
already stored and resend the rest next time) and closes the store.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from functools import partial
from typing import Final

import trio

from protocol.errors import PeerError

from .aio import DEFAULT_PORT, JOIN_SUBSYSTEM, StreamHandler
from .device import Device
from .home import Home
from .sync import Syncer, SyncSummary, catch_up_index

__all__ = ["run_agent", "run_until_signalled", "DEFAULT_LISTEN", "Listening"]

log = logging.getLogger(__name__)

#: Where the agent listens unless told otherwise: every interface, the default port.
DEFAULT_LISTEN: Final = ("0.0.0.0", DEFAULT_PORT)

#: ``listening(host, port, device_id)``, called once the listener really accepts connections.
Listening = Callable[[str, int, str], None]


def _join_handler(home: Home, device: Device) -> dict[str, StreamHandler]:
    from .pairing import join_handler

    handler: StreamHandler = join_handler(home, device.store)
    return {JOIN_SUBSYSTEM: handler}


async def run_agent(
    home: Home,
    *,
    host: str = DEFAULT_LISTEN[0],
    port: int = DEFAULT_LISTEN[1],
    listening: Listening | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve this device until cancelled; ``task_status.started(port)`` once listening."""
    device = await Device.open(home)
    try:
        identity = home.identity()
        index_lock = trio.Lock()

        async def reindex(summary: SyncSummary) -> None:
            # One catch-up at a time: hnswlib is not safe for concurrent writes.
            async with index_lock:
                try:
                    await catch_up_index(device)
                except PeerError as e:
                    log.warning("the search index was not updated (%s); the next search catches up", e)

        syncer = Syncer(device.store, identity.signing_key, after_sync=reindex)
        async with trio.open_nursery() as nursery:
            bound: int = await nursery.start(partial(syncer.serve, host, port, handlers=_join_handler(home, device)))
            log.info("listening on %s:%d as device %s", host, bound, identity.device_id)
            if listening is not None:
                listening(host, bound, identity.device_id)
            task_status.started(bound)
    finally:
        with trio.CancelScope(shield=True):
            await device.close()


async def run_until_signalled(
    home: Home, *, host: str, port: int, listening: Listening | None = None
) -> None:
    """:func:`run_agent` until SIGINT or SIGTERM, then a clean shutdown."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_agent, home, host=host, port=port, listening=listening))
            async for signum in signals:
                log.info("%s received: shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break

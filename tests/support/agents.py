"""Running agents in a test, and reading their state from outside, as `peer status` does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import trio

from peer.agent import run_agent
from peer.config import AgentConfig
from peer.home import Home
from peer.sync import read_status
from tests.support.relay import Relay
from tests.support.waiting import wait_until_async

__all__ = ["synced_with_every_peer", "agents_naming_each_other"]


def synced_with_every_peer(home: Home) -> bool:
    """Whether ``home``'s running agent has completed a sync with each peer it knows (per its status file)."""
    status = read_status(home)
    return status is not None and bool(status["peers"]) and all(p["last_sync"] is not None for p in status["peers"])


@asynccontextmanager
async def agents_naming_each_other(a: Home, b: Home, config: AgentConfig) -> AsyncIterator[None]:
    """A's and B's agents in this process, each listing the other as a peer; inside, both made their first sync.

    Each listens on port 0, as `[agent] peers` in both config files would name
    the other: A is started first, so it names B through a :class:`Relay`
    that exists before B does. On the way out both agents are stopped.
    """
    with Relay() as to_b:
        async with trio.open_nursery() as nursery:
            port_a = await nursery.start(partial(
                run_agent, a, host="127.0.0.1", port=0, config=config, discovery=False, peers=[f"127.0.0.1:{to_b.port}"],
            ))
            to_b.point_at(await nursery.start(partial(
                run_agent, b, host="127.0.0.1", port=0, config=config, discovery=False, peers=[f"127.0.0.1:{port_a}"],
            )))
            for home in (a, b):
                await wait_until_async(
                    partial(trio.to_thread.run_sync, synced_with_every_peer, home), 30,
                    f"the first sync of {home.path.name}'s agent", detail=lambda: str(read_status(a)) + str(read_status(b)),
                )
            yield
            nursery.cancel_scope.cancel()

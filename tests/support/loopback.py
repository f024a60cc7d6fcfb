"""Servers on 127.0.0.1 for in-process tests: started on port 0, their port read from what they report.

A server here is any trio function that takes ``host=``, ``port=`` and
``task_status=`` and calls ``task_status.started(port)`` once it listens:
:meth:`peer.sync.Syncer.serve`, or :func:`peer.aio.ssh.serve` with its key,
authorizer and subsystem handlers bound by :func:`ssh_server`. Port 0 lets
the kernel pick a free port, so two tests never race for one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from functools import partial

import trio

from peer.aio import Authorize, ByteStream, StreamHandler
from peer.aio.ssh import serve
from peer.home import Home
from peer.store import Store


async def serve_on_loopback(nursery: trio.Nursery, server: Callable[..., Awaitable[None]]) -> int:
    """Start ``server(host="127.0.0.1", port=0)`` in ``nursery``; the port it reports once listening."""
    port: int = await nursery.start(partial(server, host="127.0.0.1", port=0))
    return port


def ssh_server(home: Home, authorize: Authorize, handlers: Mapping[str, StreamHandler]) -> Callable[..., Awaitable[None]]:
    """The bare SSH transport for ``home`` (its device key as host key), for :func:`serve_on_loopback`."""
    return partial(serve, home.identity().signing_key, authorize=authorize, handlers=handlers)


def members_of(store: Store) -> Authorize:
    """Let in the devices that are members of ``store``'s group, as read when each connects."""

    async def authorize(device_id: str) -> bool:
        await store.refresh()
        return store.membership.is_member(device_id)

    return authorize


async def echo(stream: ByteStream) -> None:
    """A subsystem that sends back every byte it receives, until the client closes."""
    while data := await stream.receive_some(1 << 16):
        await stream.send_all(data)

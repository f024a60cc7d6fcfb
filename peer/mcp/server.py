"""``peer mcp``: the stdio MCP server's process.

stdout carries protocol bytes only: logging goes to stderr, configured
before the SDK is imported (it would otherwise install its own handler).
The SDK runs on anyio; here it runs on trio, inside the trio-asyncio loop
the store's aiosqlite needs (the CLI's ``_run`` opens both), never on the
SDK's default asyncio runner.

Start-up: the home is opened, the server starts answering at once, and the
model and index are warmed in the background (a first search waits for
them rather than failing). A client that disconnects mid-call cancels that
call; the store's writes are transactions, so nothing half-written stays.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import trio

from protocol import PeerError

from ..device import Device
from ..home import Home
from .scope import project_of
from .service import MemoryService

__all__ = ["serve_stdio"]

log = logging.getLogger(__name__)


def _log_to_stderr(verbose: bool) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if verbose else logging.WARNING,
        format="peer mcp: %(levelname)s %(name)s: %(message)s",
    )


async def _warm(service: MemoryService) -> None:
    try:
        await service.warm()
    except PeerError as e:
        # Not fatal: the first call that needs the index tries again, and reports it.
        log.warning("could not prepare the search index: %s", e)


async def serve_stdio(home: Home, *, project: str | None = None, verbose: bool = False) -> None:
    """Serve the tools on stdin/stdout until the client closes stdin."""
    _log_to_stderr(verbose)
    from .tools import build_server

    cwd_project = project_of(Path(os.getcwd()), git_only=True)
    device = await Device.open(home)
    try:
        service = await MemoryService.open(device, project=project if project is not None else cwd_project)
        server, _tools = build_server(service, explicit_project=project, cwd_project=cwd_project)
        log.info("serving home %s (default project: %s)", home.path, service.default_project)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_warm, service)
            await server.run_stdio_async()
            nursery.cancel_scope.cancel()  # stdin closed: the client is gone
    finally:
        with trio.CancelScope(shield=True):
            await device.close()

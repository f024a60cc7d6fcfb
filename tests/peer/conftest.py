"""Fixtures shared by the in-process tests of peer's packages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.support.groups import Devices, three_devices


@pytest.fixture
async def homes(tmp_path: Path, aio_loop: object) -> Devices:
    """Two members of one group and a stranger, in homes under ``tmp_path``."""
    return await three_devices(tmp_path)


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections and never says a word."""
    accepted: list[trio.SocketStream] = []  # held, so nothing closes them while the test waits

    async def hold(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, hold, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()

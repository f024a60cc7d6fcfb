"""FileWrites: the store watch's wake-up when another process writes the store (Linux inotify)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from peer.home import Home
from peer.memory import Draft
from peer.watch import FileWrites, StoreWatch

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="inotify is Linux's; elsewhere the agent polls")


async def test_a_commit_by_another_connection_wakes_the_watch_and_shows_as_a_change(
    aio_loop: object, tmp_path: Path
) -> None:
    home = Home(tmp_path / "h")
    await home.init("x")
    async with await home.open_store() as watched, await home.open_store() as writer:
        watch = await StoreWatch.start(watched)
        writes = FileWrites(home.store_path.parent, home.store_path.name)
        try:
            assert writes.available
            await writer.add(Draft("written by another process"))
            with trio.fail_after(20):  # generous: the wake-up itself is immediate
                await writes.wait()
                while not await watch.changed():
                    await trio.sleep(0.01)  # the commit may reach the WAL index just after the write
        finally:
            writes.close()


async def test_a_directory_that_cannot_be_watched_leaves_the_caller_to_poll(tmp_path: Path) -> None:
    writes = FileWrites(tmp_path / "missing", "peer.db")
    assert not writes.available
    with trio.move_on_after(0.05) as scope:
        await writes.wait()
    assert scope.cancelled_caught  # it never returns: the agent's poll interval does the work
    writes.close()

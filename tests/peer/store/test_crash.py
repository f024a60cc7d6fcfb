"""Crash safety: a writer killed with SIGKILL loses nothing it reported committed, and corrupts nothing."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import trio

from peer.home import Home
from peer.memory import Draft

BATCH = 40

CHILD = textwrap.dedent(
    f"""
    import json, sys, trio, trio_asyncio
    from peer.home import Home
    from peer.memory import Draft

    async def main():
        async with trio_asyncio.open_loop():
            store = await Home(sys.argv[1]).open_store()
            for n in range(100_000):
                drafts = [
                    (Draft(f"batch {{n}} item {{i}} " + "words " * 40, project="crash"), bytes(range(256)) * 6)
                    for i in range({BATCH})
                ]
                ids = await store.add_many(drafts, "test-embedder")
                print(json.dumps(ids), flush=True)

    trio.run(main)
    """
)


async def test_sigkill_during_bulk_add_loses_nothing_committed(aio_loop: object, tmp_path: Path) -> None:
    home = Home(tmp_path / "device")
    await home.init("victim")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home.path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert child.stdout is not None
    reported: list[str] = []

    def read_until_killed() -> None:
        assert child.stdout is not None
        while len(reported) < 25 * BATCH:
            line = child.stdout.readline()
            if not line:
                raise AssertionError(f"the writer stopped early: {child.stderr.read().decode() if child.stderr else ''}")
            reported.extend(json.loads(line))
        # Killed between two reports, i.e. most likely inside a transaction.
        os.kill(child.pid, signal.SIGKILL)
        # Lines already in the pipe were committed too.
        for line in child.stdout:
            try:
                reported.extend(json.loads(line))
            except ValueError:
                break  # a line cut by the kill

    try:
        with trio.fail_after(120):
            await trio.to_thread.run_sync(read_until_killed)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL

    with sqlite3.connect(home.store_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    async with await home.open_store() as store:
        assert await store.integrity_check() == []
        found = await store.get_many(reported)
        assert len(found) == len(reported) == len(set(reported))
        stats = await store.stats()
        # Batches are all or nothing.
        assert stats.versions % BATCH == 0 and stats.versions >= len(reported)
        assert stats.memories == stats.versions
        # And the store goes on working.
        after = await store.add(Draft("after the crash"))
        assert (await store.get(after)).content == "after the crash"

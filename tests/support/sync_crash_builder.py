"""Fill a device's store with N memories of real prose, fast (a helper process of tests/peer/sync/test_crash.py).

Usage: python -m tests.support.sync_crash_builder HOME COUNT LABEL
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio
import trio_asyncio

from peer.dev.corpus import paragraphs
from peer.home import Home
from peer.memory import Draft

BATCH = 2000


async def fill(home: Home, count: int, label: str) -> None:
    texts = paragraphs(2000)
    async with await home.open_store() as store:
        for start in range(0, count, BATCH):
            drafts = [
                (Draft(f"[{label} {i}] {texts[i % len(texts)]}", project=f"p{i % 7}"), None)
                for i in range(start, min(count, start + BATCH))
            ]
            await store.add_many(drafts)


async def main(home: str, count: int, label: str) -> None:
    async with trio_asyncio.open_loop():
        await fill(Home(Path(home)), count, label)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3])

"""The agent in-process: it serves members' syncs and keeps the search index in step with what arrives."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import trio

from peer.agent import run_agent
from peer.device import Device
from peer.memory import Draft
from peer.search.embedder import default_embedder
from peer.search.sidecar import index_state
from peer.sync import Syncer
from tests.support.groups import admit, found
from tests.support.waiting import wait_until_async


async def test_the_agent_serves_a_sync_and_indexes_what_arrived(tmp_path: Path, aio_loop: object) -> None:
    first = await found(tmp_path / "first")
    second = await admit(first, tmp_path / "second")
    texts = ["the staging database is reset every Monday", "use ruff, not flake8, in this repository"]
    with trio.fail_after(120):
        async with await Device.open(second) as device:
            ids = await device.add([Draft(t) for t in texts])
        async with await Device.open(first) as device:
            # A device that has searched before has an index to keep in step.
            await device.add([Draft("the first device's own note")])
            await device.prepare_index()
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(run_agent, first, host="127.0.0.1", port=0))
            async with await second.open_store() as store:
                summary = await Syncer(store, second.identity().signing_key).sync_with("127.0.0.1", port)
            # The agent reindexes after answering; wait until its index holds both.
            async def indexed() -> bool:
                return index_state(first.index_dir, 0).vectors >= len(texts) + 1

            await wait_until_async(indexed, 60, "the agent's index to hold the synced memories")
            nursery.cancel_scope.cancel()
        async with await Device.open(first) as device:
            # What is checked here is that the received memory is in the index, not the relevance
            # cut-off (this pair is 0.15 apart, as close as gibberish: see docs/performance.md).
            hits = await device.search("which linter do we use", k=1, min_similarity=None)
    assert summary.sent == len(texts)
    assert index_state(first.index_dir, 0).embedder == device.embedder.id
    assert [h.memory.id for h in hits] == [ids[1]]


async def test_after_memories_arrive_the_agent_builds_the_index_before_anyone_searches(
    tmp_path: Path, aio_loop: object
) -> None:
    """A new device's first search must not wait for the index build: the agent has done it already."""
    first = await found(tmp_path / "first")
    second = await admit(first, tmp_path / "second")
    texts = ["the staging database is reset every Monday", "use ruff, not flake8, in this repository"]
    async with await Device.open(second) as device:
        await device.add([Draft(t) for t in texts])
    assert not index_state(first.index_dir, 0).exists  # the first device never searched
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(run_agent, first, host="127.0.0.1", port=0))
            async with await second.open_store() as store:
                summary = await Syncer(store, second.identity().signing_key).sync_with("127.0.0.1", port)

            async def built() -> bool:
                state = index_state(first.index_dir, 0)
                return state.exists and state.vectors == len(texts)

            await wait_until_async(built, 60, "the agent to build the index of what arrived")
            nursery.cancel_scope.cancel()
    assert summary.sent == len(texts)
    async with await Device.open(first) as device:
        state = index_state(first.index_dir, await device.store.max_seq())
        assert state.describe().endswith("up to date"), state.describe()


class CountingEmbedder:
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.texts = 0

    @property
    def id(self) -> str:
        return str(self.inner.id)

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    def embed(self, texts: Sequence[str]) -> Any:
        self.texts += len(texts)
        return self.inner.embed(texts)


async def test_received_embeddings_are_reused_and_missing_ones_computed(tmp_path: Path, aio_loop: object) -> None:
    first = await found(tmp_path / "first")
    second = await admit(first, tmp_path / "second")
    with trio.fail_after(120):
        async with await Device.open(second) as device:
            await device.add([Draft("backups run at 02:00 UTC"), Draft("the VPN needs a hardware key")])
            # A version that travels without a vector (e.g. imported by an older tool).
            await device.store.add(Draft("lunch is at noon"))
        async with trio.open_nursery() as nursery, await first.open_store() as store:
            port = await nursery.start(partial(Syncer(store, first.identity().signing_key).serve, "127.0.0.1", 0))
            async with await second.open_store() as other:
                await Syncer(other, second.identity().signing_key).sync_with("127.0.0.1", port)
            nursery.cancel_scope.cancel()
        # The index must not run the model for vectors that travelled.
        counting = CountingEmbedder(default_embedder())
        async with await Device.open(first, embedder=counting) as device:
            await device.prepare_index()
            hits = await device.search("when are backups taken", k=1)
    assert counting.texts == 1 + 1  # the memory without a vector, then the query
    assert index_state(first.index_dir, 0).vectors == 3
    assert hits[0].memory.content == "backups run at 02:00 UTC"

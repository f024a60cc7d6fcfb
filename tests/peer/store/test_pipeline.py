"""ApplyPipeline: batches checked ahead, written in order in few transactions, a bad batch stops everything after it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from peer.memory import Draft
from peer.store import ApplyPipeline
from peer.store.pipeline import transaction_versions
from protocol import SealedVersion, TrustError, VersionVector
from tests.support.stores import count_writes, make_pair


async def test_batches_are_written_in_order_with_their_progress_and_a_bad_one_stops_the_rest(
    aio_loop: object, tmp_path: Path
) -> None:
    a, b = await make_pair(tmp_path)
    async with a, b:
        await a.add_many([(Draft(f"note {i}"), None) for i in range(30)])
        batches: list[list[SealedVersion]] = [batch async for batch in a.missing_for(await b.vector(), batch_size=10)]
        assert [len(x) for x in batches] == [10, 10, 10]
        tampered = replace(batches[1][4], signature=bytes(64))
        batches[1][4] = tampered
        first_top = batches[0][-1].header.dot
        failure: TrustError | None = None
        async with trio.open_nursery() as checks, ApplyPipeline(b, checks) as pipeline:
            first = await pipeline.submit(batches[0], progress=VersionVector({first_top.origin: first_top.counter}))
            assert first.added == 0  # nothing written yet: the first batch is only being checked
            try:
                await pipeline.submit(batches[1])
                await pipeline.submit(batches[2])
                await pipeline.drain()  # the tampered second batch's failed check surfaces by here
            except TrustError as e:
                failure = e
        assert failure is not None and "tampered" in str(failure)
        assert pipeline.written == 10
        held = {v.header.dot for batch in batches for v in batch if await b.sealed([v.header.dot])}
        assert held == {v.header.dot for v in batches[0]}
        assert (await b.vector()).get(first_top.origin) == first_top.counter  # its progress came with it


async def test_checked_batches_are_joined_into_few_transactions(
    aio_loop: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big receive writes whole transactions of ``write_at`` versions, not one per batch received."""
    a, b = await make_pair(tmp_path)
    async with a, b:
        await a.add_many([(Draft(f"note {i}"), None) for i in range(95)])
        batches = [batch async for batch in a.missing_for(await b.vector(), batch_size=10)]
        writes = count_writes(monkeypatch)
        added = 0
        async with trio.open_nursery() as checks, ApplyPipeline(b, checks, write_at=40) as pipeline:
            for batch in batches:
                added += (await pipeline.submit(batch)).added
            added += (await pipeline.drain()).added
        assert added == 95 and pipeline.written == 95
        # Two full transactions, then the rest as drain() found it checked (one or two transactions).
        assert writes[:2] == [40, 40] and sum(writes[2:]) == 15 and len(writes) <= 4
        assert len(await b.sealed([v.header.dot for batch in batches for v in batch])) == 95


async def test_a_slow_writer_makes_submit_wait_so_a_receive_holds_a_bounded_number_of_versions(
    aio_loop: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await make_pair(tmp_path)
    async with a, b:
        await a.add_many([(Draft(f"note {i}"), None) for i in range(100)])
        batches = [batch async for batch in a.missing_for(await b.vector(), batch_size=10)]
        gate = trio.Event()
        writes = count_writes(monkeypatch, gate)
        async with trio.open_nursery() as checks, ApplyPipeline(b, checks, write_at=20, queued_at_most=40) as pipeline:
            submitted = 0
            with trio.move_on_after(2):  # the writer is held: submit stops taking batches at the bound
                for batch in batches:
                    await pipeline.submit(batch)
                    submitted += 1
            assert submitted == 4  # 40 versions queued; a fifth batch would pass the bound
            gate.set()
            for batch in batches[submitted:]:
                await pipeline.submit(batch)
            await pipeline.drain()
        assert pipeline.written == 100 and sum(writes) == 100
        assert max(writes) <= 20


async def test_big_memories_bound_a_transaction_and_the_queue_by_bytes(
    aio_loop: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receive of big memories comes in batches of few versions: the count alone would let the queue grow huge."""
    a, b = await make_pair(tmp_path)
    async with a, b:
        await a.add_many([(Draft(f"memory {i}: " + "a long text " * 2000), None) for i in range(60)])
        batches = [batch async for batch in a.missing_for(await b.vector(), batch_size=10)]
        sizes = [sum(len(v.header_bytes) + len(v.box) for v in batch) for batch in batches]
        assert min(sizes) > 200_000
        gate = trio.Event()
        writes = count_writes(monkeypatch, gate)
        bound = 2 * max(sizes) + 1  # two batches' worth, in bytes; far fewer versions than write_at
        async with (
            trio.open_nursery() as checks,
            ApplyPipeline(b, checks, write_bytes_at=bound, queued_bytes_at_most=2 * bound) as pipeline,
        ):
            submitted = 0
            with trio.move_on_after(2):
                for batch in batches:
                    await pipeline.submit(batch)
                    submitted += 1
            assert submitted == 4  # four batches queued; a fifth would pass the bytes bound
            gate.set()
            for batch in batches[submitted:]:
                await pipeline.submit(batch)
            await pipeline.drain()
        assert pipeline.written == 60 and sum(writes) == 60
        assert max(writes) <= 20  # at most two batches a transaction


def test_transactions_grow_with_the_store_between_a_batch_and_2048_versions() -> None:
    assert [transaction_versions(n) for n in (0, 10_000, 20_000, 40_000, 81_920, 1_000_000)] == [
        256,
        256,
        500,
        1000,
        2048,
        2048,
    ]


async def test_a_big_receive_sizes_its_transactions_by_what_the_store_holds(
    aio_loop: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await make_pair(tmp_path)
    async with a, b:
        await a.add_many([(Draft(f"note {i}"), None) for i in range(1200)])
        batches = [batch async for batch in a.missing_for(await b.vector(), batch_size=200)]
        writes = count_writes(monkeypatch)
        monkeypatch.setattr(b, "versions_held", _returns(16_000))  # 16,000 / 40: transactions of 400
        async with trio.open_nursery() as checks, ApplyPipeline(b, checks) as pipeline:
            for batch in batches:
                await pipeline.submit(batch)
            await pipeline.drain()
        assert writes[:2] == [400, 400] and sum(writes) == 1200 and max(writes) == 400, writes


def _returns(value: int) -> Any:
    async def held() -> int:
        return value

    return held

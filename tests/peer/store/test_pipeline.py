"""ApplyPipeline: batches checked ahead, written in order, a bad batch stops everything after it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import trio

from peer.memory import Draft
from peer.store import ApplyPipeline
from protocol import SealedVersion, TrustError, VersionVector
from tests.support.stores import make_pair


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
        async with trio.open_nursery() as checks:
            pipeline = ApplyPipeline(b, checks)
            first = await pipeline.submit(batches[0], progress=VersionVector({first_top.origin: first_top.counter}))
            assert first.added == 0  # nothing written yet: the first batch is only being checked
            assert (await pipeline.submit(batches[1])).added == 10  # the first batch is written now
            try:
                await pipeline.submit(batches[2])  # the tampered second batch's failed check surfaces here
            except TrustError as e:
                failure = e
        assert failure is not None and "tampered" in str(failure)
        held = {v.header.dot for batch in batches for v in batch if await b.sealed([v.header.dot])}
        assert held == {v.header.dot for v in batches[0]}
        assert (await b.vector()).get(first_top.origin) == first_top.counter  # its progress came with it

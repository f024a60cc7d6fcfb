"""Received clock times where versions are stored (hostile report B3).

protocol.md 3.2: a received time pulls this device's clock at most one day
ahead of its wall clock. The store applies received versions itself, so the
cap must hold there, not only in ``protocol``'s clock: one device a year
ahead must not pin the group's clocks a year ahead. And a version stamped at
the top of the format's range (2^62 << 16, beyond SQLite's integers) is
stored and never makes the store unable to write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from peer.home import Home
from peer.memory import Draft
from peer.store import Store
from protocol import Dot, MemoryBody, VersionHeader, hlc_unpack, seal
from tests.support.stores import FakeClock, make_pair, sync_one_way

DAY_MS = 24 * 60 * 60 * 1000
YEAR_MS = 365 * DAY_MS
TOP_OF_RANGE = (2**62) << 16  # the largest HLC protocol.md section 13 allows


@pytest.fixture
async def pair(aio_loop: object, tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    a, b = await make_pair(tmp_path)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def _newest_hlc_ms(store: Store, memory_id: str) -> int:
    versions = await store.versions(memory_id)
    return max(hlc_unpack(v.hlc)[0] for v in versions)


async def test_a_device_a_year_ahead_pulls_this_clock_at_most_a_day(pair: tuple[Store, Store]) -> None:
    a, b = pair
    a_now = 1_800_000_000_000
    a._now_ms = FakeClock(a_now)
    b._now_ms = FakeClock(a_now + YEAR_MS)  # b's clock runs a year ahead
    await b.add(Draft("written on a device whose clock is a year ahead"))
    await sync_one_way(b, a)
    mine = await a.add(Draft("written here afterwards"))
    written_ms = await _newest_hlc_ms(a, mine)
    # Before: a's clock jumped to b's, a year ahead.
    assert written_ms <= a_now + DAY_MS + 1_000, f"{(written_ms - a_now) / DAY_MS:.2f} days ahead"


def _stamped(b: Store, home_b: Home, hlc: int, counter: int) -> object:
    header = VersionHeader(
        group_id=b.group_id, epoch=0, memory_id=f"99999999-9999-4999-8999-99999999999{counter}",
        dot=Dot(b.replica_id, counter), context=(), hlc=hlc,
    )
    return seal(header, MemoryBody(content=f"stamped {hlc}"), signing_key=home_b.identity().signing_key,
                group_key=b.group_keys[0])


@pytest.mark.parametrize("hlc", [2**63 - 1, TOP_OF_RANGE], ids=["sqlite-max", "format-max"])
async def test_a_version_at_the_top_of_the_clock_range_is_stored_and_writes_go_on(
    pair: tuple[Store, Store], tmp_path: Path, hlc: int
) -> None:
    a, b = pair
    sealed = _stamped(b, Home(tmp_path / "b"), hlc, 1)
    result = await a.apply([sealed])  # type: ignore[list-item]  # before: OverflowError at 2^78
    assert result.added == 1
    # Before: every later write failed (OverflowError) at 2^63 - 1.
    mine = await a.add(Draft("a write after the far-future version"))
    assert (await a.get(mine)).content == "a write after the far-future version"
    await a.edit(mine, content="edited too")
    assert (await a.get(mine)).content == "edited too"
    # It travels on: a device that receives it from a can write as well.
    await sync_one_way(a, b)
    assert (await b.get(await b.add(Draft("b writes too")))).content == "b writes too"


async def test_a_clock_pinned_at_the_top_by_an_older_version_of_peer_is_released(pair: tuple[Store, Store]) -> None:
    a, _ = pair
    # What an older peer left in a store that received a version stamped 2^63 - 1.
    await a._db.execute("UPDATE meta SET value = ? WHERE key = 'hlc'", (2**63 - 1,))
    mine = await a.add(Draft("a write on a store whose clock was pinned at the top"))
    assert hlc_unpack((await a.versions(mine))[0].hlc)[0] < 2**46

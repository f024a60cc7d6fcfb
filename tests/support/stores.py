"""Two stores of one group in temporary homes, synced in this process (no transport): for store tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from peer.home import Home
from peer.store import ApplyResult, CheckedBatch, Store


class FakeClock:
    """Milliseconds that advance by one on every reading, from a chosen start."""

    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self._ticks = itertools.count(start)

    def __call__(self) -> int:
        return next(self._ticks)


async def make_pair(tmp_path: Path) -> tuple[Store, Store]:
    """Two devices of one group: A founds it and admits B."""
    home_a, home_b = Home(tmp_path / "a"), Home(tmp_path / "b")
    await home_a.init("laptop", now_ms=FakeClock())
    a = await home_a.open_store(now_ms=FakeClock(1_800_000_000_000))
    ida, idb = home_a.identity(), home_b.ensure_identity()
    records = a.membership.add_member(
        ida.signing_key,
        ida.kex_key,
        device_public_key=idb.public_key,
        kex_public_key=idb.kex_public_key,
        name="desktop",
        now_ms=1_700_000_000_500,
        epoch_keys=a.group_keys,
    )
    await a.apply_membership(records)
    await home_b.create_store(group_id=a.group_id, records=a.membership.records(), group_keys={})
    b = await home_b.open_store(now_ms=FakeClock(1_800_000_000_000))
    return a, b


async def sync_one_way(src: Store, dst: Store) -> int:
    """What a complete sync session does in one direction; returns the versions added."""
    added = 0
    if await src.membership_digest() != await dst.membership_digest():
        await dst.apply_membership(src.membership.records())
    async for batch in src.missing_for(await dst.vector(), batch_size=3):
        added += (await dst.apply(batch)).added
    await dst.merge_vector(await src.vector())
    return added


async def sync(a: Store, b: Store) -> None:
    await sync_one_way(a, b)
    await sync_one_way(b, a)


async def snapshot(store: Store) -> dict[str, tuple[str, int, bool]]:
    """Per memory: winner dot, number of siblings, deleted: what must converge."""
    out: dict[str, tuple[str, int, bool]] = {}
    for group in [await store.versions(m) for m in await all_ids(store)]:
        live = [v for v in group if v.state != "superseded"]
        winner = next(v for v in live if v.state == "winner")
        out[winner.memory_id] = (winner.version, len(live) - 1, winner.deleted)
    return out


async def all_ids(store: Store) -> list[str]:
    rows = await store._db.fetchall("SELECT DISTINCT memory_id FROM versions ORDER BY memory_id")
    return [r[0] for r in rows]


def count_writes(monkeypatch: pytest.MonkeyPatch, gate: trio.Event | None = None) -> list[int]:
    """Record how many versions each ``store_checked`` call writes (waiting for ``gate``, if given, first)."""
    sizes: list[int] = []
    real: Callable[..., Any] = Store.store_checked

    async def store_checked(self: Store, batch: CheckedBatch, **kwargs: Any) -> ApplyResult:
        if gate is not None:
            await gate.wait()
        sizes.append(len(batch.opened))
        result: ApplyResult = await real(self, batch, **kwargs)
        return result

    monkeypatch.setattr(Store, "store_checked", store_checked)
    return sizes

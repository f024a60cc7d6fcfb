"""Three devices, random local changes, random partial syncs: they end identical."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from peer.errors import StoreError
from peer.home import Home
from peer.memory import Draft
from peer.store import Store
from protocol import VersionVector
from tests.support.stores import FakeClock, all_ids, make_pair, snapshot, sync


async def _third(a: Store, tmp_path: Path) -> Store:
    home_a, home_c = Home(tmp_path / "a"), Home(tmp_path / "c")
    ident, me = home_a.identity(), home_c.ensure_identity()
    records = a.membership.add_member(
        ident.signing_key,
        ident.kex_key,
        device_public_key=me.public_key,
        kex_public_key=me.kex_public_key,
        name="phone",
        now_ms=1_700_000_000_900,
        epoch_keys=a.group_keys,
    )
    await a.apply_membership(records)
    await home_c.create_store(group_id=a.group_id, records=a.membership.records(), group_keys={})
    return await home_c.open_store(now_ms=FakeClock(1_800_000_000_000))


async def _random_change(rng: random.Random, store: Store, n: int) -> None:
    ids = await all_ids(store)
    choice = rng.random()
    try:
        if not ids or choice < 0.35:
            await store.add(Draft(f"note {n} from {store.device_id[:4]}", tags=(f"t{n % 3}",)))
        elif choice < 0.75:
            await store.edit(rng.choice(ids), content=f"edit {n} by {store.device_id[:4]}")
        elif choice < 0.9:
            await store.forget(rng.choice(ids))
        else:
            memory_id = rng.choice(ids)
            versions = await store.versions(memory_id)
            await store.resolve(memory_id, rng.choice(versions).version)
    except StoreError as e:
        # Editing or forgetting a forgotten memory is refused; that is fine here.
        assert "forgotten" in str(e)


async def _partial_sync(rng: random.Random, src: Store, dst: Store) -> None:
    """A session cut after a random number of batches: versions kept, vector not merged."""
    batches = rng.randint(0, 3)
    await dst.apply_membership(src.membership.records())
    async for batch in src.missing_for(await dst.vector(), batch_size=2):
        if batches == 0:
            return
        await dst.apply(batch)
        batches -= 1
    await dst.merge_vector(await src.vector())


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_changes_and_syncs_converge(aio_loop: object, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    a, b = await make_pair(tmp_path)
    c = await _third(a, tmp_path)
    stores = [a, b, c]
    try:
        await sync(a, b)
        await sync(a, c)
        for n in range(45):
            if rng.random() < 0.7:
                await _random_change(rng, rng.choice(stores), n)
            else:
                src, dst = rng.sample(stores, 2)
                await _partial_sync(rng, src, dst)
        for _ in range(2):
            for x in stores:
                for y in stores:
                    if x is not y:
                        await sync(x, y)
        expected = await snapshot(a)
        assert expected, "the run made no memories"
        for s in stores:
            assert await snapshot(s) == expected
            assert await s.integrity_check() == []
            # Everything held is covered by the vector, so nothing is resent.
            assert await s.count_missing_for(await s.vector()) == 0
        listed = [[(m.id, m.content, m.siblings) for m in await s.list()] for s in stores]
        assert listed[0] == listed[1] == listed[2]
        # The index's view (changes_since) agrees with list().
        for s in stores:
            live: dict[int, str] = {}
            for change in await s.changes_since(0, limit=100_000):
                if change.live:
                    live[change.label] = change.memory_id
                else:
                    live.pop(change.label, None)
            assert sorted(live.values()) == sorted(m.id for m in await s.list())
        all_versions = [v async for batch in a.missing_for(VersionVector()) for v in batch]
        assert len(all_versions) == (await b.stats()).versions == (await c.stats()).versions
    finally:
        for s in stores:
            await s.close()

"""Schema step 3: keyword-index rows per batch instead of the per-row trigger, migrated from the schema before it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import peer.store.schema as schema_module
import peer.store.store as store_module
from peer.home import Home
from peer.memory import Draft
from peer.store import Store
from tests.support.stores import make_pair, sync

QUERIES = ("apples", "orchard", "pears", "winter", "forgotten", "edited text")


async def _searches(store: Store) -> dict[str, list[tuple[str, float]]]:
    return {q: await store.fts_search(q) for q in QUERIES}


async def test_a_store_made_before_step_3_opens_migrates_and_searches_the_same(
    aio_loop: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = list(schema_module.MIGRATIONS)
    assert len(current) >= 3, "this test starts from the schema just before step 3"
    with monkeypatch.context() as old:
        # Exactly the schema the previous release wrote: the FTS insert is in the trigger.
        old.setattr(schema_module, "MIGRATIONS", current[:2])
        old.setattr(schema_module, "SCHEMA_VERSION", 2)
        # ...and written as the previous release wrote it: no per-batch FTS statement.
        old.setattr(store_module, "FTS_NEW_ROWS", "SELECT ?")
        home = Home(tmp_path / "h")
        await home.init("x")
        async with await home.open_store() as s:
            ids = await s.add_many(
                [
                    (Draft("apples in the orchard"), None),
                    (Draft("pears in winter"), None),
                    (Draft("apples and pears"), None),
                    (Draft("to be forgotten, apples"), None),
                    (Draft("original text"), None),
                ]
            )
            await s.forget(ids[3])
            await s.edit(ids[4], content="edited text about the orchard")
            before = await _searches(s)
    assert before["apples"] and before["orchard"] and not before["forgotten"]
    with sqlite3.connect(home.store_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2

    async with await home.open_store() as s:
        assert await _searches(s) == before
        assert await s.integrity_check() == []
        new = await s.add(Draft("winter apples keep"))
        await s.edit(ids[1], content="pears in spring")
        after = await _searches(s)
        assert new in [m for m, _ in after["apples"]]
        assert ids[1] not in [m for m, _ in after["winter"]]
        assert await s.integrity_check() == []
    with sqlite3.connect(home.store_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema_module.SCHEMA_VERSION
        (trigger,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'versions_after_insert'").fetchone()
        assert "fts" not in trigger


async def test_received_versions_and_conflicts_are_keyword_indexed_once_per_live_winner(
    aio_loop: object, tmp_path: Path
) -> None:
    a, b = await make_pair(tmp_path)
    async with a, b:
        ids = await a.add_many([(Draft(f"shared note {i} about lighthouses"), None) for i in range(40)])
        await sync(a, b)
        # Concurrent edits: one winner each side after the next sync, the other a sibling.
        await a.edit(ids[0], content="laptop says lighthouses are tall")
        await b.edit(ids[0], content="desktop says lighthouses are bright")
        await sync(a, b)
        for store in (a, b):
            hits = await store.fts_search("lighthouses", limit=100)
            assert sorted(m for m, _ in hits) == sorted(ids)  # each memory once: only its winner is indexed
            assert await store.integrity_check() == []
        assert await a.fts_search("tall") == [] or await a.fts_search("bright") == []
        assert [m for m, _ in await a.fts_search("tall")] == [m for m, _ in await b.fts_search("tall")]

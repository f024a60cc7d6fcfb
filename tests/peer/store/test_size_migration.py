"""Schema step 4 (nothing stored twice), migrated from a schema-3 store written by the code before it.

The fixture under schema3/ was written by the previous release (schema3/make.py
says how): two devices of one group with vectors, a forgotten memory, an edit
and a conflict, synced. After the migration every version, vector, memory and
keyword-search result must be what that release saw, and the stores must go on
working (writes, syncs, the keyword index's integrity).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from peer.home import Home
from peer.memory import Draft
from peer.store.schema import PAGE_SIZE, SCHEMA_VERSION
from tests.peer.store.schema3.make import describe  # what the fixture recorded, described the same way
from tests.support.stores import FakeClock, make_pair, sync

FIXTURE = Path(__file__).parent / "schema3"
def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True))


async def test_a_schema_3_store_keeps_every_memory_vector_and_search_result(aio_loop: object, tmp_path: Path) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())
    stores = []
    for name in ("a", "b"):
        shutil.copytree(FIXTURE / name, tmp_path / name)
        (tmp_path / name).chmod(0o700)
        with sqlite3.connect(tmp_path / name / "peer.db") as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        stores.append(await Home(tmp_path / name).open_store(now_ms=FakeClock(1_900_000_000_000)))
    a, b = stores
    async with a, b:
        for name, store in (("a", a), ("b", b)):
            seen = _json(await describe(store))
            want = expected[name]
            assert seen["schema"] == SCHEMA_VERSION
            for part in ("versions", "vectors", "search", "memories"):
                assert seen[part] == want[part], f"{name}: {part} changed in the migration"
            assert want["search"]["apples"] and want["vectors"]  # the fixture is not empty
            assert await store.integrity_check() == []
        # The stores go on working: writes on both sides, a sync, the conflict resolved.
        ids = sorted(expected["a"]["memories"])
        new = await a.add(Draft("a new orchard of apples"), np.ones(8, "<f4").tobytes(), "test-embedder@1")
        await b.edit(ids[0], content="edited on b after the upgrade: orchard")
        conflicted = next(m for m, mem in expected["a"]["memories"].items() if mem["siblings"])
        await a.forget(conflicted)
        await sync(a, b)
        for store in (a, b):
            assert new in [m for m, _ in await store.fts_search("apples")]
            assert ids[0] in [m for m, _ in await store.fts_search("edited")]
            assert conflicted not in [m for m, _ in await store.fts_search("lighthouse")]
            assert await store.integrity_check() == []
        vectors = {c.memory_id: c.embedding for c in await b.changes_since(0, limit=10_000) if c.live}
        assert vectors[new] == np.ones(8, "<f4").tobytes()
    for name in ("a", "b"):
        with sqlite3.connect(tmp_path / name / "peer.db") as conn:
            (stored,) = conn.execute("SELECT count(*) FROM versions WHERE length(embedding) > 0").fetchone()
            assert stored == 0  # the vectors live only inside the sealed versions now
            assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'fts_content'").fetchone() == (0,)


async def test_a_new_store_keeps_each_vector_and_text_once(aio_loop: object, tmp_path: Path) -> None:
    a, b = await make_pair(tmp_path)
    vector = np.arange(16, dtype="<f4").tobytes()
    async with a, b:
        (memory_id,) = await a.add_many([(Draft("one text about herons"), vector)], "test-embedder@1")
        await sync(a, b)
        for store in (a, b):
            (change,) = [c for c in await store.changes_since(0) if c.memory_id == memory_id]
            assert change.embedding == vector
            assert [m for m, _ in await store.fts_search("herons")] == [memory_id]
        # An edit that keeps the text keeps the vector (read back from the sealed version).
        await b.edit(memory_id, tags=["birds"])
        (change,) = [c for c in await b.changes_since(0) if c.memory_id == memory_id and c.live]
        assert change.embedding == vector
    with sqlite3.connect(tmp_path / "a" / "peer.db") as conn:
        assert conn.execute("PRAGMA page_size").fetchone() == (PAGE_SIZE,)
        assert conn.execute("SELECT count(*) FROM versions WHERE length(embedding) > 0").fetchone() == (0,)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "fts_content" not in tables and "fts_docsize" in tables

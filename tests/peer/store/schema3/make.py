"""Writes the schema-3 fixture that test_size_migration.py opens (run once, with the code that wrote schema 3).

    git archive b269196 | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old .venv/bin/python tests/peer/store/schema3/make.py tests/peer/store/schema3

Two devices of one group (A admitted B) with small vectors, a forgotten
memory, an edit, and a conflict (a sibling on both sides), synced; then
what the test must find again after the migration: every version's fields
and vector (``expected.json``) and the keyword-search results.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import trio_asyncio

from peer.memory import Draft
from peer.store import Store
from tests.support.stores import make_pair, sync

QUERIES = ("apples", "orchard", "pears", "winter", "forgotten", "edited", "lighthouse", "tall", "bright")


async def describe(store: Store) -> dict[str, Any]:
    """Everything a user could see of the store, in a form JSON keeps exactly."""
    ids = [r[0] for r in await store._db.fetchall("SELECT DISTINCT memory_id FROM versions ORDER BY memory_id")]
    versions = {m: [asdict(v) for v in await store.versions(m)] for m in ids}
    changes = await store.changes_since(0, limit=10_000)
    return {
        "schema": int(await store._db.fetchvalue("PRAGMA user_version")),
        "versions": versions,
        "vectors": {c.memory_id: c.embedding.hex() for c in changes if c.live},
        "search": {q: [[m, round(s, 9)] for m, s in await store.fts_search(q)] for q in QUERIES},
        "memories": {m: asdict(mem) for m, mem in (await store.get_many(ids, include_deleted=True)).items()},
    }


async def main(out: Path) -> None:
    shutil.rmtree(out / "a", ignore_errors=True)
    shutil.rmtree(out / "b", ignore_errors=True)
    a, b = await make_pair(out)
    rng = np.random.default_rng(3)
    texts = ["apples in the orchard", "pears in winter", "apples and pears", "to be forgotten, apples",
             "original text", "the lighthouse on the cape"] + [f"note {i} about winter orchards" for i in range(20)]
    async with a, b:
        ids = await a.add_many([(Draft(t, tags=("t",)), rng.standard_normal(8).astype("<f4").tobytes()) for t in texts],
                               "test-embedder@1")
        await a.forget(ids[3])
        await a.edit(ids[4], content="edited text about the orchard")
        await sync(a, b)
        await a.edit(ids[5], content="laptop says the lighthouse is tall")
        await b.edit(ids[5], content="desktop says the lighthouse is bright")
        await b.add(Draft("written on b: winter apples"), rng.standard_normal(8).astype("<f4").tobytes(), "test-embedder@1")
        await sync(a, b)
        expected = {"a": await describe(a), "b": await describe(b)}
    for name in ("a", "b"):
        with sqlite3.connect(out / name / "peer.db") as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"schema {expected['a']['schema']}; {len(expected['a']['versions'])} memories written to {out}")


if __name__ == "__main__":
    trio_asyncio.run(main, Path(sys.argv[1]))

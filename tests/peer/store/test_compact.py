"""Compacting a store file: `peer doctor` says when it is worth it, `peer doctor --repair` does it.

A store migrated from schema 3 keeps SQLite's 4 kB pages (a WAL file cannot
change its page size), which its 2.4 kB rows fill badly. Compacting rewrites
it with 16 kB pages; it must keep every row (and its id: the search index's
label), every keyword-search result, and refuse, changing nothing, while
another program has the store open.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from peer.device import Device
from peer.home import Home
from peer.memory import Draft
from peer.store import StoreLayout
from peer.store.schema import PAGE_SIZE
from protocol import StoreError
from tests.peer.store.schema3.make import describe
from tests.support.cli_runner import ok_json
from tests.support.stores import FakeClock

FIXTURE = Path(__file__).parent / "schema3"
MEMORIES = 3000


def _as_old_pages(path: Path) -> None:
    """Rewrite a store with 4 kB pages, as a store migrated from schema 3 is laid out."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert conn.execute("PRAGMA journal_mode = DELETE").fetchone() == ("delete",)
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("VACUUM")
        assert conn.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
    finally:
        conn.close()


def _contents(path: Path) -> dict[str, Any]:
    """Every row of the tables that hold memories, by id, and what the keyword index finds."""
    conn = sqlite3.connect(path)
    try:
        return {
            "versions": conn.execute("SELECT * FROM versions ORDER BY id").fetchall(),
            "membership": conn.execute("SELECT * FROM membership ORDER BY id").fetchall(),
            "meta": conn.execute("SELECT * FROM meta ORDER BY key").fetchall(),
            "vector": conn.execute("SELECT * FROM vector ORDER BY replica").fetchall(),
            "herons": conn.execute("SELECT rowid FROM fts WHERE fts MATCH 'herons' ORDER BY rowid").fetchall(),
        }
    finally:
        conn.close()


def _pragmas(path: Path) -> tuple[int, str]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA page_size").fetchone()[0], conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
async def old_home(aio_loop: object, tmp_path: Path) -> Home:
    """A home of 3,000 memories (a short text, a vector) and its search index, its store file laid out in 4 kB pages."""
    home = Home(tmp_path / "home")
    await home.init("laptop")
    rng = np.random.default_rng(7)
    async with await Device.open(home) as device:
        embedder = device.embedder
        drafts = [
            (
                Draft(f"memory {i}: " + ("herons nest by the lake; " if i % 10 == 0 else "a plain note; ") + "words " * 30),
                rng.standard_normal(embedder.dim).astype("<f4").tobytes(),
            )
            for i in range(MEMORIES)
        ]
        await device.store.add_many(drafts, embedder.id)
        await device.prepare_index()
    _as_old_pages(home.store_path)
    return home


async def test_doctor_suggests_compacting_and_repair_compacts_keeping_every_row(old_home: Home) -> None:
    path = old_home.store_path
    before, size_before = _contents(path), path.stat().st_size
    assert _pragmas(path) == (4096, "wal")

    report = ok_json(old_home.path, "doctor")
    (line,) = [c for c in report["checks"] if c["name"] == "store file"]
    assert report["healthy"] and line["ok"]
    assert "4 kB pages" in line["detail"] and "peer doctor --repair" in line["detail"]

    report = ok_json(old_home.path, "doctor", "--repair")
    (line,) = [c for c in report["checks"] if c["name"] == "store file"]
    assert report["healthy"] and line["detail"].startswith("compacted from"), line
    assert _pragmas(path) == (PAGE_SIZE, "wal")
    assert path.stat().st_size < 0.8 * size_before, (size_before, path.stat().st_size)
    assert _contents(path) == before  # every row under its id, the keyword index alike
    (index,) = [c for c in report["checks"] if c["name"] == "search index"]
    assert index["ok"] and "up to date" in index["detail"] and f"{MEMORIES:,} vectors" in index["detail"]
    assert len(before["herons"]) == MEMORIES // 10

    # Compact now, so the next doctor says nothing more about it.
    report = ok_json(old_home.path, "doctor")
    (line,) = [c for c in report["checks"] if c["name"] == "store file"]
    assert "16 kB pages" in line["detail"] and "--repair" not in line["detail"]
    found = ok_json(old_home.path, "list", "--limit", "5000")
    assert len(found) == MEMORIES


async def test_compacting_while_another_program_has_the_store_open_changes_nothing(old_home: Home) -> None:
    path = old_home.store_path
    before = _contents(path)
    other = sqlite3.connect(path)  # the agent, an MCP server: any connection
    try:
        assert other.execute("SELECT count(*) FROM versions").fetchone() == (MEMORIES,)
        report = ok_json(old_home.path, "doctor", "--repair")
        (line,) = [c for c in report["checks"] if c["name"] == "store file"]
        assert "not compacted" in line["detail"] and "open in another program" in line["detail"], line
        assert report["healthy"]
        async with await old_home.open_store() as store:
            with pytest.raises(StoreError, match="open in another program"):
                await store.compact()
    finally:
        other.close()
    assert _pragmas(path) == (4096, "wal")
    assert _contents(path) == before


async def test_a_migrated_schema_3_store_compacts_keeping_every_memory_and_search_result(
    aio_loop: object, tmp_path: Path
) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())
    shutil.copytree(FIXTURE / "a", tmp_path / "a")
    (tmp_path / "a").chmod(0o700)
    async with await Home(tmp_path / "a").open_store(now_ms=FakeClock(1_900_000_000_000)) as store:
        assert (await store.layout()).page_size == 4096
        layout = await store.compact()
        assert layout.page_size == PAGE_SIZE and layout.free_pages == 0
        seen = json.loads(json.dumps(await describe(store), sort_keys=True))
        for part in ("versions", "vectors", "search", "memories"):
            assert seen[part] == expected["a"][part], f"{part} changed in the compaction"
        assert await store.integrity_check() == []
    assert _pragmas(tmp_path / "a" / "peer.db") == (PAGE_SIZE, "wal")


def test_compacting_is_suggested_only_where_it_saves_a_fifth() -> None:
    mb = 1 << 20
    # 5,000 typical rows (2.4 kB: a page each on 4 kB pages, six to a 16 kB page).
    typical = StoreLayout(page_size=4096, pages=5000 + 400, free_pages=0, rows=5000, row_bytes=2400)
    assert typical.worth_compacting and typical.compacted_bytes < 0.75 * typical.file_bytes
    # Rows of 4.7 kB span pages either way: rewriting gains nothing.
    big_rows = StoreLayout(page_size=4096, pages=10_400, free_pages=0, rows=5000, row_bytes=4700)
    assert not big_rows.worth_compacting
    # A small store, and a new one with little free space, are left alone.
    assert not StoreLayout(page_size=4096, pages=1000, free_pages=0, rows=900, row_bytes=2400).worth_compacting
    assert not StoreLayout(page_size=PAGE_SIZE, pages=64 * mb // PAGE_SIZE, free_pages=10, rows=20_000, row_bytes=2400).worth_compacting
    # A new one that is mostly free pages (after forgetting and cleaning up most of it) is worth it.
    freed = StoreLayout(page_size=PAGE_SIZE, pages=64 * mb // PAGE_SIZE, free_pages=48 * mb // PAGE_SIZE, rows=5000, row_bytes=2400)
    assert freed.worth_compacting

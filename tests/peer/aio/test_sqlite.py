"""The asyncio adapter: transactions, cancellation, sharing between tasks, error translation."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from peer.aio import Database
from peer.errors import StoreError


async def _table(tmp_path: Path) -> Database:
    db = await Database.open(tmp_path / "t.db")
    await db.execute("PRAGMA journal_mode = WAL")
    await db.executescript("CREATE TABLE t (n INTEGER); CREATE TABLE log (who TEXT, n INTEGER);")
    return db


async def test_a_failed_transaction_leaves_nothing(aio_loop: object, tmp_path: Path) -> None:
    db = await _table(tmp_path)
    try:
        with pytest.raises(ZeroDivisionError):
            async with db.transaction():
                await db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(10)])
                raise ZeroDivisionError  # any exception inside rolls back
        assert await db.fetchvalue("SELECT count(*) FROM t") == 0
        async with db.transaction():
            await db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(10)])
        assert await db.fetchall("SELECT n FROM t WHERE n < 3 ORDER BY n") == [(0,), (1,), (2,)]
    finally:
        await db.close()


async def test_a_cancelled_transaction_rolls_back_and_the_database_stays_usable(
    aio_loop: object, tmp_path: Path
) -> None:
    db = await _table(tmp_path)
    try:
        with trio.move_on_after(0.05) as scope:
            async with db.transaction():
                await db.execute("INSERT INTO t VALUES (1)")
                await trio.sleep(10)
        assert scope.cancelled_caught
        assert await db.fetchvalue("SELECT count(*) FROM t") == 0
        async with db.transaction():
            await db.execute("INSERT INTO t VALUES (2)")
        assert await db.fetchall("SELECT n FROM t") == [(2,)]
    finally:
        await db.close()


async def test_tasks_sharing_a_database_never_write_inside_each_others_transactions(
    aio_loop: object, tmp_path: Path
) -> None:
    db = await _table(tmp_path)

    async def writer(name: str) -> None:
        for i in range(5):
            async with db.transaction():
                await db.execute("INSERT INTO log VALUES (?, ?)", (name, i))
                await trio.sleep(0)
                await db.execute("INSERT INTO log VALUES (?, ?)", (name, i))

    async def outsider() -> None:
        for i in range(20):
            await db.execute("INSERT INTO log VALUES ('outsider', ?)", (i,))
            await trio.sleep(0)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer, "a")
            nursery.start_soon(writer, "b")
            nursery.start_soon(outsider)
        rows = await db.fetchall("SELECT who, n FROM log ORDER BY rowid")
        assert len(rows) == 40
        # Each transaction's two rows are adjacent: nothing slipped in between.
        k = 0
        while k < len(rows):
            if rows[k][0] == "outsider":
                k += 1
                continue
            assert rows[k + 1] == rows[k], rows
            k += 2
    finally:
        await db.close()


async def test_a_locked_database_gives_a_clear_error(aio_loop: object, tmp_path: Path) -> None:
    first = await _table(tmp_path)
    second = await Database.open(tmp_path / "t.db", busy_timeout_s=0.1)
    try:
        async with first.transaction():
            await first.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(StoreError, match="busy"):
                async with second.transaction():
                    pass
        async with second.transaction():
            await second.execute("INSERT INTO t VALUES (2)")
        assert await first.fetchvalue("SELECT count(*) FROM t") == 2
    finally:
        await second.close()
        await first.close()


async def test_sql_errors_are_store_errors_and_closing_is_final(aio_loop: object, tmp_path: Path) -> None:
    db = await _table(tmp_path)
    with pytest.raises(StoreError, match="no such table"):
        await db.fetchall("SELECT * FROM missing")
    await db.close()
    await db.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        await db.fetchall("SELECT 1")

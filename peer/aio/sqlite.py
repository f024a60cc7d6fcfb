"""The SQLite bridge: aiosqlite (asyncio) seen from trio.

Callers run inside ``trio_asyncio.open_loop()`` and every asyncio coroutine
is entered through :func:`trio_asyncio.aio_as_trio`.

Each bridged call costs a few hundred microseconds, so :class:`Database`
offers whole-batch operations (``executemany``, ``fetchall``) and callers are
expected to do a few of them per transaction, not one per row.

Foreign exceptions are translated here: every ``sqlite3.Error`` that leaves
this module is a :class:`~peer.errors.StoreError` whose message says what to
do.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import trio
import trio_asyncio

from ..errors import StoreDamaged, StoreError

__all__ = ["Database", "Row", "translate_sqlite_error"]

Row = tuple[Any, ...]
Params = Sequence[Any]
T = TypeVar("T")

#: How long a writer waits for another process's write transaction to end.
DEFAULT_BUSY_TIMEOUT_S = 10.0


def translate_sqlite_error(error: sqlite3.Error, path: Path) -> StoreError:
    """The user-facing error for a SQLite failure on the store at ``path``."""
    text = str(error)
    lowered = text.lower()
    if "database is locked" in lowered or "database is busy" in lowered:
        return StoreError(
            f"the store at {path} is busy: another peer process holds it for too long; try again"
        )
    if "file is not a database" in lowered or "file is encrypted" in lowered:
        return StoreDamaged(f"{path} is not a peer store (it is not a SQLite database)")
    if "malformed" in lowered or "corrupt" in lowered:
        return StoreDamaged(
            f"the store at {path} is damaged ({text}); `peer doctor` shows what can still be read"
            " and `peer doctor --salvage NEW_HOME` copies it out, or restore a backup"
        )
    if "disk is full" in lowered or "database or disk is full" in lowered:
        return StoreError(f"the disk holding {path} is full; free some space and try again")
    if "readonly" in lowered or "read-only" in lowered:
        return StoreError(f"the store at {path} is read-only; check the permissions of its directory")
    if "unable to open" in lowered:
        return StoreError(f"cannot open the store at {path}; check that the directory exists and is writable")
    if isinstance(error, sqlite3.IntegrityError):
        return StoreError(f"the store at {path} refused a write ({text})")
    return StoreError(f"the store at {path} failed: {text}")


class Database:
    """One aiosqlite connection, callable from trio.

    Several trio tasks may share a Database: a transaction holds a lock for
    its whole body, so statements of other tasks never land inside it. A
    call made outside any transaction takes the lock for that call only.
    """

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = trio.Lock()
        self._owner: trio.lowlevel.Task | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> Database:
        """Connect to the SQLite file at ``path`` (created if missing)."""

        async def connect() -> aiosqlite.Connection:
            # isolation_level=None: the sqlite3 module must not open
            # transactions behind our back; transaction() issues BEGIN itself.
            conn = aiosqlite.connect(str(path), isolation_level=None, timeout=busy_timeout_s)
            # aiosqlite's worker thread is not a daemon: a connection someone
            # forgot to close would keep the process alive after main()
            # returns. SQLite loses nothing committed if it dies with the
            # process, so let it.
            thread = getattr(conn, "_thread", None)
            if isinstance(thread, threading.Thread) and not thread.is_alive():
                thread.daemon = True
            return await conn

        try:
            conn = await trio_asyncio.aio_as_trio(connect)()
        except sqlite3.Error as e:
            raise translate_sqlite_error(e, path) from e
        db = cls(conn, path)
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        except BaseException:
            await db.close()
            raise
        return db

    # Plumbing -----------------------------------------------------------
    async def _bridge(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self._closed:
            raise StoreError(f"the store at {self.path} is closed")
        try:
            result: T = await trio_asyncio.aio_as_trio(fn)(*args)
        except sqlite3.Error as e:
            raise translate_sqlite_error(e, self.path) from e
        return result

    async def _statement(self, sql: str) -> None:
        async with self._conn.execute(sql):
            pass

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self._owner is not None and self._owner is trio.lowlevel.current_task():
            return await self._bridge(fn, *args)
        async with self._lock:
            return await self._bridge(fn, *args)

    # Statements ---------------------------------------------------------
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        conn = self._conn

        async def run() -> int:
            async with conn.execute(sql, params) as cursor:
                return cursor.rowcount

        return await self._call(run)

    async def insert(self, sql: str, params: Params = ()) -> int:
        """Run one INSERT; returns the new row's id."""
        conn = self._conn

        async def run() -> int:
            async with conn.execute(sql, params) as cursor:
                rowid = cursor.lastrowid
            if rowid is None:
                raise sqlite3.OperationalError("the insert created no row")
            return rowid

        return await self._call(run)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        """Run one statement for each parameter tuple, in one bridged call."""
        conn = self._conn
        batch = list(rows)
        if not batch:
            return

        async def run() -> None:
            async with conn.executemany(sql, batch):
                pass

        await self._call(run)

    async def run_batch(self, steps: Sequence[tuple[str, Sequence[Params]]]) -> None:
        """Run each statement once per parameter tuple, step after step, in ONE bridged call.

        For a writer's several statements (in its transaction): every call
        crosses from trio to asyncio to SQLite's thread and back, which costs
        more than a small statement itself. Steps without parameter tuples
        are skipped.
        """
        conn = self._conn
        work = [(sql, list(rows)) for sql, rows in steps]
        work = [(sql, rows) for sql, rows in work if rows]
        if not work:
            return

        async def run() -> None:
            for sql, rows in work:
                if len(rows) == 1:
                    async with conn.execute(sql, rows[0]):
                        pass
                else:
                    async with conn.executemany(sql, rows):
                        pass

        await self._call(run)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        conn = self._conn

        async def run() -> list[Row]:
            return [tuple(row) for row in await conn.execute_fetchall(sql, params)]

        return await self._call(run)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchvalue(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row (None when there is no row)."""
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    async def executescript(self, script: str) -> None:
        """Run a script of statements. Never inside a transaction: sqlite3 commits first."""
        if self._owner is not None:
            raise RuntimeError("executescript() cannot run inside a transaction")
        await self._call(self._conn.executescript, script)

    # Transactions -------------------------------------------------------
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any exception.

        IMMEDIATE takes the write lock up front, so two processes writing the
        same store queue on busy_timeout instead of failing half-way through.
        """
        task = trio.lowlevel.current_task()
        if self._owner is task:
            raise RuntimeError("transactions do not nest")
        async with self._lock:
            self._owner = task
            try:
                try:
                    await self._bridge(self._statement, "BEGIN IMMEDIATE")
                except BaseException:
                    # A cancelled BEGIN may still run on the database thread after this task gave up
                    # on it; the ROLLBACK queued behind it ends that transaction, or finds none.
                    with trio.CancelScope(shield=True):
                        await self._rollback()
                    raise
                try:
                    yield
                except BaseException:
                    with trio.CancelScope(shield=True):
                        await self._rollback()
                    raise
                # A cancelled COMMIT may still have run on the database thread;
                # shielding it keeps what the caller is told true.
                with trio.CancelScope(shield=True):
                    try:
                        await self._bridge(self._statement, "COMMIT")
                    except BaseException:
                        await self._rollback()
                        raise
            finally:
                self._owner = None

    async def _rollback(self) -> None:
        try:
            await self._bridge(self._statement, "ROLLBACK")
        except StoreError:
            # "no transaction is active": SQLite already rolled back (e.g.
            # after SQLITE_FULL), which is what we wanted.
            pass

    @property
    def in_transaction(self) -> bool:
        return self._owner is not None

    async def close(self) -> None:
        if self._closed:
            return
        with trio.CancelScope(shield=True):
            try:
                await trio_asyncio.aio_as_trio(self._conn.close)()
            except sqlite3.Error as e:
                raise translate_sqlite_error(e, self.path) from e
            finally:
                self._closed = True

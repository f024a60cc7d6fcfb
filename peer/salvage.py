"""Diagnosing and salvaging a damaged store (``peer doctor`` when ``peer.db`` cannot be opened).

Theory of operation. A store SQLite calls malformed cannot be opened the
ordinary way (the migrations and the first queries already fail), so
``peer doctor`` would have nothing to print. Here the file is opened
read-only with the standard library's sqlite3, in a worker thread, and
nothing is ever written to it: what the user may still want from it is
exactly what a repair attempt could destroy.

The diagnosis is SQLite's own ``integrity_check`` (its first findings)
plus how many memories can still be read. Reading walks the versions
table by row id, one row at a time from the last good one: a query that
touches a damaged page fails, so the walk skips ahead in growing steps
until it reads again, then looks back into the gap one id at a time, so a
damaged page costs only the rows on it. Each readable winning, live
version is one recovered memory.

The salvage writes those memories into a NEW home (its own device and
group; nothing of the damaged file is reused), keeping their ids, texts,
fields, creation and update times and vectors. The user then joins that
home to the group again or imports from it, and keeps the damaged file.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from peer.device import Check, DoctorReport
from peer.home import Home
from peer.memory import Draft
from peer.store import ImportedVersion
from peer.store.rows import embedding_of
from protocol import PeerError, StoreError

__all__ = ["SalvageResult", "diagnose_damaged", "readable_memories", "salvage"]

_FINDINGS = 20  # integrity_check lines kept: enough to see the extent, not a page of noise
_MAX_SKIP = 1 << 20  # the largest jump over unreadable ids before the walk ends
_COLUMNS = (
    "id, memory_id, state, deleted, content, kind, project, tags, metadata, created_at, updated_at,"
    " importance, embedder, embedding, sealed"
)


@dataclass(frozen=True, slots=True)
class Salvaged:
    """What could be read of one memory (its winning version)."""

    draft: Draft
    updated_at: float
    embedder: str
    embedding: bytes


def _connect(path: Path) -> sqlite3.Connection:
    # Read-only: nothing is ever written to the damaged file.
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def _row_at_or_after(db: sqlite3.Connection, rowid: int) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = db.execute(
        f"SELECT {_COLUMNS} FROM versions WHERE id >= ? ORDER BY id LIMIT 1", (rowid,)
    ).fetchone()
    return row


def _rows(db: sqlite3.Connection) -> Iterator[tuple[Any, ...] | None]:
    """Every readable versions row in id order; None for each unreadable spot the walk skipped."""
    at = 1
    while True:
        try:
            row = _row_at_or_after(db, at)
        except sqlite3.DatabaseError:
            yield None
            step, found = 1, None
            while step <= _MAX_SKIP and found is None:
                step *= 2
                try:
                    found = _row_at_or_after(db, at + step)
                except sqlite3.DatabaseError:
                    continue
                if found is None:
                    return  # nothing readable after the damage
            if found is None:
                return
            for rowid in range(at + 1, found[0]):  # back into the gap, one id at a time
                try:
                    one = db.execute(f"SELECT {_COLUMNS} FROM versions WHERE id = ?", (rowid,)).fetchone()
                except sqlite3.DatabaseError:
                    continue
                if one is not None:
                    yield one
            row = found
        if row is None:
            return
        yield row
        at = int(row[0]) + 1


def _group_keys(db: sqlite3.Connection) -> dict[int, bytes]:
    """The group keys, if their table can still be read (to decrypt vectors from sealed versions)."""
    try:
        return {int(e): bytes(k) for e, k in db.execute("SELECT epoch, key FROM group_keys")}
    except sqlite3.DatabaseError:
        return {}


def _salvaged(row: tuple[Any, ...], keys: Mapping[int, bytes]) -> Salvaged | None:
    (
        _,
        memory_id,
        state,
        deleted,
        content,
        kind,
        project,
        tags,
        metadata,
        created,
        updated,
        importance,
        embedder,
        emb,
        sealed,
    ) = row
    if state != 2 or deleted:
        return None  # superseded, a sibling, or forgotten
    try:
        draft = Draft(
            content=str(content),
            kind=str(kind),
            project=project,
            tags=tuple(json.loads(tags)),
            metadata=json.loads(metadata),
            importance=importance,
            id=str(memory_id),
            created_at=float(created),
        )
    except (TypeError, ValueError):
        return None  # a row whose fields themselves are damaged
    if not emb and embedder and sealed:
        # Since schema step 4 the vector is kept only inside the sealed version.
        try:
            emb = embedding_of(bytes(sealed), keys)
        except (PeerError, TypeError, ValueError):
            emb = b""  # unreadable: the salvaged memory is embedded again
    return Salvaged(draft, float(updated), str(embedder or ""), bytes(emb or b""))


def readable_memories(path: Path) -> tuple[list[Salvaged], int]:
    """The memories that can still be read from the store at ``path``, and how many damaged spots were skipped."""
    db = _connect(path)
    try:
        found: dict[str, Salvaged] = {}
        skipped = 0
        keys = _group_keys(db)
        for row in _rows(db):
            if row is None:
                skipped += 1
                continue
            memory = _salvaged(row, keys)
            if memory is not None and memory.draft.id is not None:
                found[memory.draft.id] = memory
        return list(found.values()), skipped
    finally:
        db.close()


def _integrity(path: Path) -> list[str]:
    db = _connect(path)
    try:
        return [str(r[0]) for r in db.execute(f"PRAGMA integrity_check({_FINDINGS})").fetchall() if r[0] != "ok"]
    except sqlite3.DatabaseError as e:
        return [str(e)]
    finally:
        db.close()


async def diagnose_damaged(home: Home, error: PeerError) -> DoctorReport:
    """``peer doctor`` for a store that cannot be opened: SQLite's findings and what can still be read."""
    path = home.store_path
    findings = await trio.to_thread.run_sync(_integrity, path)
    try:
        memories, skipped = await trio.to_thread.run_sync(readable_memories, path)
        readable = Check(
            "readable memories",
            bool(memories),
            f"{len(memories):,} can still be read" + (f" ({skipped:,} damaged spots skipped)" if skipped else ""),
            "" if memories else "restore a backup (`peer backup restore`), or join the group again from a new home",
        )
    except sqlite3.DatabaseError as e:
        readable = Check("readable memories", False, f"none: {e}", "restore a backup (`peer backup restore`)")
    detail = "; ".join(findings) if findings else error.message
    return DoctorReport(
        (
            Check(
                "store integrity",
                False,
                f"{path} cannot be opened: {detail}",
                f"run `peer doctor --salvage NEW_HOME` to copy every readable memory into a new home"
                f" (the damaged {path.name} is left as it is), or restore a backup",
            ),
            readable,
        )
    )


@dataclass(frozen=True, slots=True)
class SalvageResult:
    """``peer doctor --salvage``: the memories copied out of a damaged store into a new home."""

    source: Path
    home: Path
    recovered: int
    skipped: int

    def to_json(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "home": str(self.home),
            "recovered": self.recovered,
            "skipped": self.skipped,
        }

    def describe(self) -> str:
        text = f"recovered {self.recovered:,} memories from {self.source} into the new home {self.home}"
        if self.skipped:
            text += f" ({self.skipped:,} damaged spots skipped)"
        return text + f"; use it with `peer --home {self.home} ...`, or import from it; {self.source.name} is unchanged"


async def salvage(home: Home, destination: Path, *, name: str = "salvaged") -> SalvageResult:
    """Copy every readable memory of ``home``'s store into a new home at ``destination``."""
    target = Home(destination)
    if target.exists():
        raise StoreError(f"{destination} already holds a peer store; give a new directory for the salvaged memories")
    try:
        memories, skipped = await trio.to_thread.run_sync(readable_memories, home.store_path)
    except sqlite3.DatabaseError as e:
        raise StoreError(f"nothing can be read from {home.store_path} ({e}); restore a backup") from e
    await target.init(name)
    async with await target.open_store() as store:
        versions = [
            ImportedVersion(m.draft, m.updated_at, m.embedding or None, m.embedder if m.embedding else "")
            for m in memories
        ]
        written = 0
        for start in range(0, len(versions), 1000):
            batch = versions[start : start + 1000]
            try:
                written += len(await store.write_imports(batch))
            except StoreError:
                # One memory the store refuses (its fields were damaged into
                # something invalid) must not cost the others: one at a time.
                for one in batch:
                    try:
                        written += len(await store.write_imports([one]))
                    except StoreError:
                        skipped += 1
    return SalvageResult(home.store_path, destination, written, skipped)

"""The store: every version of every memory, in one SQLite file.

Theory of operation. The store keeps *versions*, never memories: each row
of ``versions`` is one immutable version, with its dot, its context, the
exact sealed bytes it travels as, and its decoded fields. What a memory
*is* (its winner, its siblings, whether it is deleted) is a pure function
of its versions (:func:`protocol.merge.state_of`); the store caches that
result in each row's ``state`` column and recomputes it, in the same
transaction, for every memory a write touches. Nothing is ever deleted.

Every row also has a ``seq``: a store-wide change number given when the row
is inserted and given again whenever its state changes. The search index
remembers the last seq it has seen and catches up with
:meth:`Store.changes_since`; FTS5 is kept in step by triggers, so keyword
search only ever sees live winners.

Writes are batched: one transaction per call, a handful of bridged SQLite
calls per transaction whatever the batch size (``executemany``, queries over
``json_each`` lists), because each call crosses from trio to asyncio.

Several processes (the agent and a CLI command) may open the same store:
WAL lets readers run beside one writer, ``BEGIN IMMEDIATE`` queues writers,
and everything a write depends on (counters, clock, states) is read inside
its transaction, never cached across transactions. The membership is
cached, with a revision number in ``meta`` that tells when to reload it.

The tables, indexes, triggers and the SQL text are in :mod:`.schema`; the
conversions between rows and records, the field checks and the building
of keyword queries in :mod:`.rows`.
"""

from __future__ import annotations

import builtins
import ctypes
import json
import math
import os
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from peer.aio import Database, Row
from peer.memory import Draft, IndexChange, Memory, VersionInfo
from peer.signatures import SignaturePool, SignatureWorker
from protocol import (
    EMBEDDING_ROOM,
    MAX_BODY_BYTES,
    MAX_CONTENT_BYTES,
    MAX_FIELD_BYTES,
    MAX_INCARNATION,
    MAX_METADATA_BYTES,
    MAX_TAGS,
    DecodeError,
    Dot,
    HybridLogicalClock,
    LocalProtocolError,
    Membership,
    MemoryBody,
    NotAMember,
    PeerError,
    SealedVersion,
    SignatureJob,
    StoreError,
    TrustError,
    VersionHeader,
    VersionMeta,
    VersionState,
    VersionVector,
    bad_signature,
    canonical_json,
    check_body_size,
    context_for_new_version,
    device_id_of,
    device_of,
    next_counter,
    open_version,
    replica_id,
    seal,
    signature_job,
    state_of,
    unseal_version,
)

from .rows import (
    STATE_NAMES,
    MergeRow,
    canonical_memory_id,
    check_content,
    check_embedding,
    check_importance,
    check_kind,
    embedding_of,
    fts_query,
    fts_words,
    info_from_row,
    json_list,
    memory_from_row,
    metadata_text,
    normalize_tags,
    rare_words,
    stored_hlc,
    version_row,
)
from .schema import (
    FTS_DELETE,
    FTS_NEW_ROWS,
    INFO_COLUMNS,
    INSERT_VERSION,
    LIVE,
    MAX_SEQ,
    MEMORY_COLUMNS,
    MERGE_ROWS,
    MERGE_VECTOR,
    META_DEVICE_ID,
    META_GROUP_ID,
    META_HLC,
    META_INCARNATION,
    META_LABEL_FLOOR,
    META_LAST_COUNTER,
    META_MEMBERSHIP_REV,
    META_NEXT_SEQ,
    META_STORE_ID,
    PAGE_SIZE,
    PUT_META,
    RAISE_LABEL_FLOOR,
    UPDATE_STATE,
    configure,
    migrate,
)

__all__ = [
    "Store",
    "BULK_CACHE_KIB",
    "BULK_WRITE_VERSIONS",
    "BULK_WRITE_BYTES",
    "ApplyResult",
    "StoreStats",
    "StoreLayout",
    "Rejected",
    "KnownPeer",
    "ImportedVersion",
    "NowMs",
    "wall_clock_ms",
]

NowMs = Callable[[], int]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


# Records the store hands out ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejected:
    """A received version that was not stored, and why."""

    version: str
    memory_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What :meth:`Store.apply` did with a batch of received versions."""

    added: int = 0
    duplicates: int = 0
    rejected: tuple[Rejected, ...] = ()
    memories: int = 0  # memories whose set of versions grew

    def __add__(self, other: ApplyResult) -> ApplyResult:
        return ApplyResult(
            self.added + other.added,
            self.duplicates + other.duplicates,
            self.rejected + other.rejected,
            self.memories + other.memories,
        )


@dataclass(frozen=True, slots=True)
class CheckedBatch:
    """Received versions verified and opened, not yet stored (:meth:`Store.check_received`)."""

    opened: Mapping[Dot, tuple[SealedVersion, MemoryBody]]
    rejected: tuple[Rejected, ...]
    in_batch_duplicates: int
    #: The membership they were checked against: a newer one at write time re-applies its cutoffs.
    membership: Membership

    @property
    def versions(self) -> int:
        """How many versions the batch was made of (opened, rejected, repeated)."""
        return len(self.opened) + len(self.rejected) + self.in_batch_duplicates

    @property
    def sealed_bytes(self) -> int:
        """The opened versions' sealed size (header and box): about what writing them stores."""
        return sum(len(sealed.header_bytes) + len(sealed.box) for sealed, _ in self.opened.values())

    @staticmethod
    def joined(batches: Sequence[CheckedBatch]) -> CheckedBatch:
        """Consecutive batches checked against one membership, as one (written in one transaction).

        A version in an earlier batch too counts as a repeat, as it would
        have within one batch.
        """
        if len(batches) == 1:
            return batches[0]
        membership = batches[0].membership
        if any(b.membership is not membership for b in batches):
            raise ValueError("only batches checked against the same membership can be joined")
        opened: dict[Dot, tuple[SealedVersion, MemoryBody]] = {}
        repeats = 0
        for batch in batches:
            repeats += batch.in_batch_duplicates + sum(1 for dot in batch.opened if dot in opened)
            opened.update(batch.opened)
        return CheckedBatch(opened, tuple(r for b in batches for r in b.rejected), repeats, membership)


@dataclass(frozen=True, slots=True)
class KnownPeer:
    """What another device is known to hold, and since when (``via``: "sync" or "bundle")."""

    device_id: str
    vector: VersionVector
    seen_at: float
    via: str


@dataclass(frozen=True, slots=True)
class StoreLayout:
    """How the store file is laid out: what ``peer doctor`` reports and ``--repair`` compacts.

    ``rows`` and ``row_bytes`` (the average size of a version row) are what
    the estimate of the file after compacting is made from.
    """

    page_size: int
    pages: int
    free_pages: int
    rows: int = 0
    row_bytes: float = 0.0

    @property
    def file_bytes(self) -> int:
        return self.page_size * self.pages

    @property
    def free_bytes(self) -> int:
        return self.page_size * self.free_pages

    @property
    def compacted_bytes(self) -> int:
        """About the size of the file once compacted: the version rows on new pages, no free pages.

        A version row does not span pages unless it must, so on 4 kB pages
        the typical row (a short text and its 1.5 kB vector, sealed: about
        2.4 kB) takes a page to itself; a 16 kB page holds six.
        """
        rows_now = self.rows * _bytes_per_row(self.row_bytes, self.page_size)
        rows_then = self.rows * _bytes_per_row(self.row_bytes, PAGE_SIZE)
        return max(0, int(self.file_bytes - self.free_bytes - rows_now + rows_then))

    @property
    def worth_compacting(self) -> bool:
        """A file of :data:`COMPACT_MIN_BYTES` or more that compacting would make a fifth smaller at least."""
        return self.file_bytes >= COMPACT_MIN_BYTES and self.compacted_bytes <= 0.8 * self.file_bytes


def _bytes_per_row(row: float, page: int) -> float:
    """The bytes of table pages a row of ``row`` bytes takes, on average, on pages of ``page`` bytes.

    SQLite's rule for table leaves (its file format, "Cell Payload Overflow
    Pages"): a row up to ``page - 35`` bytes is kept whole on a leaf page, and
    leaves are not split across rows; a longer one keeps a part on the leaf
    and the rest on overflow pages of ``page - 4`` bytes each.
    """
    if row <= 0:
        return 0.0
    most = page - 35
    least = (page - 12) * 32 // 255 - 23
    if row <= most:
        local, overflow_pages = row, 0
    else:
        local = least + (row - least) % (page - 4)
        if local > most:
            local = least
        overflow_pages = math.ceil((row - local) / (page - 4))
    cell = local + 8 + (4 if overflow_pages else 0)  # the cell pointer, rowid and size, the overflow link
    return page / max(1, (page - 8) // cell) + overflow_pages * page


#: A smaller file is not worth rewriting.
COMPACT_MIN_BYTES = 8 << 20
#: SQLite's page cache (KiB) while a big receive writes (:meth:`Store.bulk_writes`). SQLite's
#: default, 2 MiB, holds a small part of a 100,000-version store's indexes: every transaction
#: then reads back and rewrites most of their pages (inserts at 100,000 cost 1.35x as much).
BULK_CACHE_KIB = 32 << 10
#: Versions a bulk receive writes per transaction, at most (a sync's pipeline starts lower: see
#: pipeline.transaction_versions): fewer, bigger transactions rewrite each index page they touch
#: once per transaction (about 110 ms each, far below other writers' busy timeout).
BULK_WRITE_VERSIONS = 2048
#: ... and of up to this many sealed bytes (big memories: bounds what a receive holds to be written).
BULK_WRITE_BYTES = 16 << 20
#: Milliseconds ``compact`` waits for other connections before saying the store is in use.
_COMPACT_BUSY_MS = 1000


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counts for ``peer stats``; computed from indexes, never by scanning blobs."""

    device_id: str
    replica_id: str
    group_id: str
    memories: int  # live, not deleted
    forgotten: int  # memories whose winner is a tombstone
    versions: int  # every version held, superseded ones included
    tombstones: int  # tombstone versions
    conflicts: int  # memories with siblings
    devices: int  # current members of the group
    replicas: int  # distinct origins of the versions held
    db_bytes: int  # store file plus its write-ahead log
    max_seq: int
    vector: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "replica_id": self.replica_id,
            "group_id": self.group_id,
            "memories": self.memories,
            "forgotten": self.forgotten,
            "versions": self.versions,
            "tombstones": self.tombstones,
            "conflicts": self.conflicts,
            "devices": self.devices,
            "replicas": self.replicas,
            "db_bytes": self.db_bytes,
            "max_seq": self.max_seq,
            "vector": dict(self.vector),
        }


class _Keep:
    """Marker for "leave this field as it is" where None is a meaningful value."""

    _instance: _Keep | None = None

    def __new__(cls) -> _Keep:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()


@dataclass(frozen=True, slots=True)
class ImportedVersion:
    """A memory read from an import file, to be written as a new local version (:meth:`Store.write_imports`).

    ``expected`` is the local winner ("REPLICA:COUNTER") the import was
    planned against, None for a memory the store did not hold: if the store
    has changed since, the whole import is refused. ``supersedes`` None means
    every live version (an ordinary edit); a tuple names exactly the versions
    it supersedes (possibly none), so the other live ones stay as siblings.
    ``loses`` stamps it so that the current winner stays the winner.
    """

    draft: Draft  # with its id, and created_at kept
    updated_at: float
    embedding: bytes | None = None
    embedder: str = ""
    expected: str | None = None
    supersedes: tuple[str, ...] | None = None
    loses: bool = False


@dataclass(frozen=True, slots=True)
class _Placement:
    """Where an imported version goes among its memory's versions: its context, and a clock time to stay under."""

    context: tuple[Dot, ...] | None  # None: every live version
    below_hlc: int | None = None

    def place(self, context: tuple[Dot, ...], hlc: int) -> tuple[tuple[Dot, ...], int]:
        if self.context is not None:
            context = self.context
        if self.below_hlc is not None:
            # Only the order of clock times decides a winner; one tick under
            # the winner's keeps it the winner without touching the clock.
            hlc = max(0, min(hlc, self.below_hlc - 1))
        return context, hlc


@dataclass(slots=True)
class _Txn:
    """The store's counters, read at the start of a write transaction and written back at its end."""

    last_counter: int
    hlc: int
    next_seq: int

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq


# Helpers -----------------------------------------------------------------------


# The store -----------------------------------------------------------------------


class Store:
    """One device's store. Open with :meth:`open` (or :meth:`create` once), close with :meth:`close`."""

    def __init__(
        self,
        db: Database,
        *,
        signing_key: Ed25519PrivateKey,
        kex_key: X25519PrivateKey,
        device_id: str,
        incarnation: int,
        group_id: bytes,
        store_id: str,
        now_ms: NowMs,
    ) -> None:
        self._db = db
        self._signing_key = signing_key
        self._kex_key = kex_key
        self.device_id = device_id
        self.replica_id = replica_id(device_id, incarnation)
        self.group_id = group_id
        self.store_id = store_id
        self._now_ms = now_ms
        self._membership = Membership(group_id)
        self._group_keys: dict[int, bytes] = {}
        #: Signature helpers shared by every big receive into this store (see peer.signatures).
        self.signature_pool = SignaturePool()
        self._membership_rev = -1
        self._txn_task: trio.lowlevel.Task | None = None  # the task inside transaction(), if any
        self._with_records_cache: tuple[Membership, tuple[bytes, ...], Membership, dict[int, bytes]] | None = None
        self._bulk_writers = 0
        self._cache_size: int | None = None  # the page cache setting before bulk_writes raised it

    @property
    def path(self) -> Path:
        return self._db.path

    # Opening -----------------------------------------------------------------
    @classmethod
    async def create(
        cls,
        path: Path,
        *,
        signing_key: Ed25519PrivateKey,
        kex_key: X25519PrivateKey,
        group_id: bytes,
        records: Sequence[bytes],
        group_keys: Mapping[int, bytes],
        now_ms: NowMs = wall_clock_ms,
    ) -> Store:
        """Create a new store file for a member of ``group_id`` and open it.

        ``records`` must make this device a member (the founder's records, or
        what the inviter sent); ``group_keys`` are the epoch keys it holds.
        """
        path = Path(path)
        device_id = device_id_of(signing_key)
        membership = Membership(group_id)
        membership.add_all(records, strict=True)
        if not membership.is_member(device_id):
            raise StoreError(f"device {device_id} is not a member of group {group_id.hex()}; it cannot hold its store")
        try:
            # The store holds the group keys: 0600 from its first byte.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as e:
            raise StoreError(f"a store already exists at {path}") from e
        except OSError as e:
            raise StoreError(f"cannot create a store at {path}: {e.strerror}") from e
        os.close(fd)
        db = await Database.open(path)
        try:
            await configure(db)
            await migrate(db)
            async with db.transaction():
                await db.executemany(
                    PUT_META,
                    [
                        (META_DEVICE_ID, device_id),
                        (META_INCARNATION, 0),
                        (META_GROUP_ID, group_id.hex()),
                        (META_LAST_COUNTER, 0),
                        (META_HLC, 0),
                        (META_NEXT_SEQ, 1),
                        (META_MEMBERSHIP_REV, 1),
                        (META_STORE_ID, uuid.uuid4().hex),
                    ],
                )
                await db.executemany(
                    "INSERT OR IGNORE INTO membership (record) VALUES (?)", [(r,) for r in membership.records()]
                )
                keys = dict(group_keys)
                keys.update(membership.epoch_keys(device_id, kex_key))
                await db.executemany("INSERT INTO group_keys (epoch, key) VALUES (?, ?)", sorted(keys.items()))
        except BaseException:
            await db.close()
            raise
        return await cls._finish_open(db, signing_key=signing_key, kex_key=kex_key, now_ms=now_ms)

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        signing_key: Ed25519PrivateKey,
        kex_key: X25519PrivateKey,
        now_ms: NowMs = wall_clock_ms,
    ) -> Store:
        """Open an existing store, upgrading its schema if it is older than this code."""
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"no peer store at {path}; run `peer init` (or pass --home)")
        db = await Database.open(path)
        try:
            await configure(db)
            version = await db.fetchvalue("PRAGMA user_version")
            if version == 0:
                raise StoreError(f"{path} is not a peer store")
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        return await cls._finish_open(db, signing_key=signing_key, kex_key=kex_key, now_ms=now_ms)

    @classmethod
    async def _finish_open(
        cls, db: Database, *, signing_key: Ed25519PrivateKey, kex_key: X25519PrivateKey, now_ms: NowMs
    ) -> Store:
        try:
            meta: dict[str, Any] = dict(await db.fetchall("SELECT key, value FROM meta"))
            if not {META_DEVICE_ID, META_GROUP_ID, META_INCARNATION, META_STORE_ID} <= meta.keys():
                raise StoreError(f"{db.path} is not a complete peer store (its identity is missing)")
            device_id = device_id_of(signing_key)
            if meta[META_DEVICE_ID] != device_id:
                raise StoreError(
                    f"the store at {db.path} belongs to device {meta[META_DEVICE_ID]}, but this home's key is device"
                    f" {device_id}; use the home the store came with"
                )
            store = cls(
                db,
                signing_key=signing_key,
                kex_key=kex_key,
                device_id=device_id,
                incarnation=int(meta[META_INCARNATION]),
                group_id=bytes.fromhex(meta[META_GROUP_ID]),
                store_id=str(meta[META_STORE_ID]),
                now_ms=now_ms,
            )
            await store._reload_membership(int(meta.get(META_MEMBERSHIP_REV, 0)))
            # Word frequencies for keyword search; a TEMP table, so not part of the schema.
            await db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.fts_vocab USING fts5vocab(main, fts, 'row')")
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # Membership and keys ---------------------------------------------------------
    async def _reload_membership(self, rev: int) -> None:
        records = [r for (r,) in await self._db.fetchall("SELECT record FROM membership ORDER BY id")]
        keys: dict[int, bytes] = dict(await self._db.fetchall("SELECT epoch, key FROM group_keys"))
        membership = Membership(self.group_id)
        membership.add_all(records)
        self._membership = membership
        self._group_keys = {int(e): bytes(k) for e, k in keys.items()}
        self._membership_rev = rev

    async def _refresh_membership(self, rev: int | None = None) -> None:
        """Reload the cached membership if another process changed it."""
        if rev is None:
            rev = int(await self._db.fetchvalue("SELECT value FROM meta WHERE key = ?", (META_MEMBERSHIP_REV,)) or 0)
        if rev != self._membership_rev:
            await self._reload_membership(rev)

    @property
    def membership(self) -> Membership:
        """The group's membership as last loaded (call :meth:`refresh` to see other processes' changes)."""
        return self._membership

    @property
    def group_keys(self) -> dict[int, bytes]:
        """Every group key this device holds, by epoch (secret: never log it)."""
        return dict(self._group_keys)

    async def refresh(self) -> None:
        """Pick up membership changes made by another process on this store."""
        await self._refresh_membership()

    async def membership_digest(self) -> bytes:
        await self._refresh_membership()
        return self._membership.digest()

    async def apply_membership(self, records: Sequence[bytes], *, strict: bool = False) -> list[bytes]:
        """Add membership records (received, or made locally through :attr:`membership`) and persist them.

        Group keys sealed to this device are unwrapped and kept. Returns the
        records that were new to this store. A record that does not verify
        is skipped (``strict=False``) or raises a TrustError (``strict=True``).
        """
        async with self._write():
            return await self._apply_membership(records, strict=strict)

    async def _apply_membership(self, records: Sequence[bytes], *, strict: bool) -> list[bytes]:
        """:meth:`apply_membership` inside the caller's write transaction."""
        await self._refresh_membership()
        before = set(
            r for (r,) in await self._db.fetchall("SELECT record FROM membership")
        )
        # A new object, swapped in at the end: apply() may be verifying
        # with the current one in a worker thread.
        membership = Membership(self.group_id)
        membership.add_all(self._membership.records())
        membership.add_all(records, strict=strict)
        new = [r for r in membership.records() if r not in before]
        keys = membership.epoch_keys(self.device_id, self._kex_key)
        new_keys = {e: k for e, k in keys.items() if self._group_keys.get(e) != k}
        if new:
            await self._db.executemany("INSERT OR IGNORE INTO membership (record) VALUES (?)", [(r,) for r in new])
        if new_keys:
            await self._db.executemany(
                "INSERT INTO group_keys (epoch, key) VALUES (?, ?)"
                " ON CONFLICT (epoch) DO UPDATE SET key = excluded.key",
                sorted(new_keys.items()),
            )
        if new or new_keys:
            rev = self._membership_rev + 1
            await self._db.execute(PUT_META, (META_MEMBERSHIP_REV, rev))
            self._membership_rev = rev
            self._group_keys = {**self._group_keys, **new_keys}
        # Also without new records: a store written before it knew a
        # cutoff rule may still hold such versions.
        await self._drop_beyond_cutoff(membership)
        self._membership = membership
        return new

    async def _drop_beyond_cutoff(self, membership: Membership) -> int:
        """Delete held versions of revoked devices above their effective cutoff; returns how many.

        No member accepts them any more (the revoker did not hold them), so
        keeping them would leave this store's memories different from
        everyone else's forever. The memories they belonged to are merged
        again from what is left; versions that change state get a new seq so
        the search index follows. The vector keeps covering the dropped
        dots: nobody will ever send them again, nor should.
        """
        limits: dict[str, int] = {}
        for origin, top in await self._db.fetchall("SELECT origin, max_counter FROM origins"):
            cutoff = membership.cutoff(device_of(origin))
            if cutoff is not None and top > cutoff.get(origin, 0):
                limits[origin] = cutoff.get(origin, 0)
        if not limits:
            return 0
        dropped: list[Row] = []
        for origin, limit in limits.items():
            dropped += await self._db.fetchall(
                "SELECT id, memory_id, state, deleted, content FROM versions WHERE origin = ? AND counter > ?",
                (origin, limit),
            )
        if not dropped:
            return 0
        await self._delete_versions(dropped, limits)
        return len(dropped)

    async def _delete_versions(self, dropped: Sequence[Row], origins: Iterable[str]) -> _Txn:
        """Delete version rows (id, memory id, state, deleted, content) of ``origins``; their memories are merged again.

        Inside a write transaction; returns the transaction state, already saved.
        """
        # The FTS triggers cover inserts and state changes only.
        await self._db.executemany(
            FTS_DELETE,
            [(rowid, text) for rowid, _, state, deleted, text in dropped
             if state == int(VersionState.WINNER) and not deleted],
        )
        await self._db.execute(
            "DELETE FROM versions WHERE id IN (SELECT value FROM json_each(?))", (json_list(r[0] for r in dropped),)
        )
        await self._raise_label_floor(max(r[0] for r in dropped))
        for origin in origins:
            top = await self._db.fetchvalue("SELECT max(counter) FROM versions WHERE origin = ?", (origin,))
            if top is None:
                await self._db.execute("DELETE FROM origins WHERE origin = ?", (origin,))
            else:
                await self._db.execute("UPDATE origins SET max_counter = ? WHERE origin = ?", (top, origin))
        meta: dict[str, Any] = dict(await self._db.fetchall("SELECT key, value FROM meta"))
        txn = _Txn(last_counter=int(meta[META_LAST_COUNTER]), hlc=int(meta[META_HLC]), next_seq=int(meta[META_NEXT_SEQ]))
        updates: list[tuple[int, int, int]] = []
        for rows in (await self._merge_rows(r[1] for r in dropped)).values():
            if not rows:
                continue  # every version of that memory was dropped: it is gone
            state = state_of(r.meta for r in rows)
            for r in rows:
                if state.states[r.meta.dot] != r.state:
                    updates.append((int(state.states[r.meta.dot]), txn.take_seq(), r.id))
        await self._db.executemany(UPDATE_STATE, updates)
        await self._end(txn)
        return txn

    async def save_group_keys(self, keys: Mapping[int, bytes]) -> None:
        """Keep group keys this device made (``Membership.rotate``/``revoke`` return the new one)."""
        async with self._db.transaction():
            await self._db.executemany(
                "INSERT INTO group_keys (epoch, key) VALUES (?, ?) ON CONFLICT (epoch) DO UPDATE SET key = excluded.key",
                sorted(keys.items()),
            )
            rev = int(await self._db.fetchvalue("SELECT value FROM meta WHERE key = ?", (META_MEMBERSHIP_REV,)) or 0) + 1
            await self._db.execute(PUT_META, (META_MEMBERSHIP_REV, rev))
        await self._reload_membership(rev)

    async def revoke(self, device_id: str, *, now_ms: int | None = None) -> list[bytes]:
        """Revoke a member as this device; returns the new membership records (to sync to everyone).

        Besides what :meth:`Membership.revoke` writes (re-admissions, a new
        key epoch), the revocation's cutoff is taken from this store in the
        same transaction: per replica of the revoked device, the highest
        counter it holds or its vector covers. Every version the device
        wrote up to there was written before this revocation and stays
        valid on every member; later ones are refused everywhere.
        """
        async with self._db.transaction():
            await self._refresh_membership()
            cutoff: dict[str, int] = {}
            rows = [
                *await self._db.fetchall("SELECT replica, counter FROM vector"),
                *await self._db.fetchall("SELECT origin, max_counter FROM origins"),
            ]
            for replica, counter in rows:
                if device_of(replica) == device_id:
                    cutoff[replica] = max(cutoff.get(replica, 0), int(counter))
            trial = Membership(self.group_id)
            trial.add_all(self._membership.records())
            records, new_key = trial.revoke(
                self._signing_key,
                self._kex_key,
                device_id=device_id,
                now_ms=self._now_ms() if now_ms is None else now_ms,
                epoch_keys=self._group_keys,
                cutoff=cutoff,
            )
            await self._apply_membership(records, strict=True)
            epoch = self._membership.current_epoch
            if self._group_keys.get(epoch) != new_key:
                # Sealed to this device too, so normally already unwrapped; kept
                # here in case this device's key-exchange key is unusable.
                await self._db.execute(
                    "INSERT INTO group_keys (epoch, key) VALUES (?, ?)"
                    " ON CONFLICT (epoch) DO UPDATE SET key = excluded.key",
                    (epoch, new_key),
                )
                self._group_keys = {**self._group_keys, epoch: new_key}
        return records

    def _current_key(self) -> tuple[int, bytes]:
        epoch = self._membership.current_epoch
        key = self._group_keys.get(epoch)
        if key is None:
            raise StoreError(
                f"this device does not hold the group key of epoch {epoch}; sync with another member to receive it"
            )
        if not self._membership.is_member(self.device_id):
            raise StoreError("this device is no longer a member of its group; it cannot write new memories")
        return epoch, key

    # Transactions ----------------------------------------------------------------
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """One write transaction around several writes (a bundle import: members, versions, vector).

        Inside it, :meth:`apply_membership`, :meth:`apply`, :meth:`merge_vector`
        and :meth:`remember_peer` called from this task join it instead of
        opening their own: everything commits together, or nothing does.
        """
        try:
            async with self._db.transaction():
                self._txn_task = trio.lowlevel.current_task()
                try:
                    yield
                finally:
                    self._txn_task = None
        except BaseException:
            # The cached membership may hold records that were rolled back: reload it next time.
            self._membership_rev = -1
            raise

    @asynccontextmanager
    async def bulk_writes(self) -> AsyncIterator[None]:
        """While a big receive writes (a first sync, a bundle): a bigger page cache (:data:`BULK_CACHE_KIB`).

        Receives at the same time share it; the last to leave restores the
        setting, and SQLite frees the pages over it.
        """
        self._bulk_writers += 1
        try:
            if self._bulk_writers == 1:
                self._cache_size = int(await self._db.fetchvalue("PRAGMA cache_size"))
                await self._db.execute(f"PRAGMA cache_size = {-BULK_CACHE_KIB}")
            yield
        finally:
            self._bulk_writers -= 1
            if self._bulk_writers == 0 and self._cache_size is not None:
                before, self._cache_size = self._cache_size, None
                with trio.CancelScope(shield=True), suppress(StoreError):  # a closed store has no cache left
                    await self._db.execute(f"PRAGMA cache_size = {before}")
                    # The pages SQLite freed stay in the C heap (glibc keeps what it frees): an
                    # agent would hold 130 MB more after a 100,000-version first sync.
                    await trio.to_thread.run_sync(release_freed_memory)

    def _write(self) -> AbstractAsyncContextManager[None]:
        """A write transaction of its own, or none inside :meth:`transaction` (same task)."""
        if self._txn_task is not None and self._txn_task is trio.lowlevel.current_task():
            return nullcontext()
        return self._db.transaction()

    async def _begin(self) -> _Txn:
        """Read the counters (and reload a changed membership) inside a write transaction."""
        meta: dict[str, Any] = dict(await self._db.fetchall("SELECT key, value FROM meta"))
        await self._refresh_membership(int(meta.get(META_MEMBERSHIP_REV, 0)))
        return _Txn(last_counter=int(meta[META_LAST_COUNTER]), hlc=int(meta[META_HLC]), next_seq=int(meta[META_NEXT_SEQ]))

    async def _end(self, txn: _Txn) -> None:
        await self._db.executemany(PUT_META, self._meta_rows(txn))

    @staticmethod
    def _meta_rows(txn: _Txn) -> list[tuple[str, int]]:
        return [(META_LAST_COUNTER, txn.last_counter), (META_HLC, txn.hlc), (META_NEXT_SEQ, txn.next_seq)]

    async def _merge_rows(self, memory_ids: Iterable[str]) -> dict[str, list[MergeRow]]:
        ids = list(dict.fromkeys(memory_ids))
        out: dict[str, list[MergeRow]] = {m: [] for m in ids}
        if ids:
            for row in await self._db.fetchall(MERGE_ROWS, (json_list(ids),)):
                merge_row = MergeRow.from_row(row)
                out[merge_row.memory_id].append(merge_row)
        return out

    # Local writes ----------------------------------------------------------------
    async def _write_local(
        self,
        items: Sequence[tuple[str, MemoryBody, list[MergeRow]]],
        txn: _Txn,
        placements: Sequence[_Placement] | None = None,
    ) -> list[Dot]:
        """Seal and store one new version per item (memory id, body, its current versions).

        Each new version supersedes every live version of its memory, unless
        ``placements`` (one per item, for imports) says otherwise.
        """
        epoch, group_key = self._current_key()
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[int, int, int]] = []
        dots: list[Dot] = []

        def prepare() -> None:
            clock = HybridLogicalClock(self._now_ms, txn.hlc)
            for at, (memory_id, body, prior) in enumerate(items):
                txn.last_counter = next_counter(txn.last_counter, self._now_ms())
                dot = Dot(self.replica_id, txn.last_counter)
                hlc = clock.tick()
                context = context_for_new_version(state_of(r.meta for r in prior)) if prior else ()
                if placements is not None:
                    context, hlc = placements[at].place(context, hlc)
                header = VersionHeader(
                    group_id=self.group_id, epoch=epoch, memory_id=memory_id, dot=dot, context=context, hlc=hlc
                )
                sealed = seal(header, body, signing_key=self._signing_key, group_key=group_key)
                after = state_of([*(r.meta for r in prior), VersionMeta(dot, context, hlc, body.deleted)])
                for r in prior:
                    state = after.states[r.meta.dot]
                    if state != r.state:
                        updates.append((int(state), txn.take_seq(), r.id))
                inserts.append(version_row(sealed, body, after.states[dot], txn.take_seq()))
                dots.append(dot)
            txn.hlc = clock.last

        await _cpu_bound(prepare, len(items))
        await self._db.run_batch(
            [*self._version_steps(updates, inserts), (MERGE_VECTOR, [(self.replica_id, txn.last_counter)]),
             (PUT_META, self._meta_rows(txn))]
        )
        return dots

    def _draft_body(self, draft: Draft, embedding: bytes | None, embedder: str, now: float) -> MemoryBody:
        vector, embedder = check_embedding(embedding, embedder)
        try:
            return MemoryBody(
                content=check_content(draft.content),
                kind=check_kind(draft.kind),
                project=draft.project or None,
                tags=normalize_tags(draft.tags),
                metadata=metadata_text(draft.metadata),
                created_at=float(draft.created_at) if draft.created_at is not None else now,
                updated_at=now,
                importance=check_importance(draft.importance),
                embedder=embedder,
                embedding=vector,
            )
        except LocalProtocolError as e:
            raise StoreError(f"cannot store this memory: {e}") from e

    def check_drafts(self, drafts: Sequence[Draft]) -> None:
        """Refuse, before anything is embedded, a draft that could not be stored or read by another member.

        The same checks as :meth:`add_many` (every limit a receiving device
        enforces), with room kept for the vector the embedder will add: the
        model never runs on a text that would be refused after minutes of work.
        """
        now = self._now_ms() / 1000
        for draft in drafts:
            body = self._draft_body(draft, None, "", now)
            try:
                check_body_size(body, reserve=EMBEDDING_ROOM)
            except LocalProtocolError as e:
                raise StoreError(f"cannot store this memory: {e}") from e

    async def add(self, draft: Draft, embedding: bytes | None = None, embedder: str = "") -> str:
        """Add one memory; returns its id."""
        (memory_id,) = await self.add_many([(draft, embedding)], embedder)
        return memory_id

    async def add_many(self, drafts: Sequence[tuple[Draft, bytes | None]], embedder: str = "") -> list[str]:
        """Add memories in one transaction; returns their ids in order.

        A draft that carries an id keeps it (imports); adding an id the
        store already holds is refused, so nothing is overwritten by accident.
        """
        if not drafts:
            return []
        now = self._now_ms() / 1000
        bodies: list[tuple[str, MemoryBody, list[MergeRow]]] = []
        given: list[str] = []
        for draft, embedding in drafts:
            memory_id = canonical_memory_id(draft.id) if draft.id else str(uuid.uuid4())
            if draft.id:
                given.append(memory_id)
            bodies.append((memory_id, self._draft_body(draft, embedding, embedder, now), []))
        if len(given) != len(set(given)):
            raise StoreError("the same memory id appears twice in one batch")
        async with self._db.transaction():
            if given:
                taken = await self._db.fetchall(
                    "SELECT DISTINCT memory_id FROM versions WHERE memory_id IN (SELECT value FROM json_each(?))",
                    (json_list(given),),
                )
                if taken:
                    raise StoreError(f"memory {taken[0][0]} already exists; edit it instead")
            txn = await self._begin()
            await self._write_local(bodies, txn)
        return [memory_id for memory_id, _, _ in bodies]

    # Imports (`peer import`) ---------------------------------------------------------
    async def memory_versions(self, memory_ids: Iterable[str]) -> dict[str, builtins.list[tuple[str, Memory]]]:
        """Every version held of these memories, as (state, the memory as that version has it).

        The state is "winner", "sibling" or "superseded"; memories the store
        does not hold are absent. What an import compares a file against.
        """
        wanted = [canonical_memory_id(m) for m in dict.fromkeys(memory_ids)]
        if not wanted:
            return {}
        rows = await self._db.fetchall(
            f"SELECT v.state, {MEMORY_COLUMNS} FROM versions v"
            " WHERE v.memory_id IN (SELECT value FROM json_each(?)) ORDER BY v.memory_id, v.state DESC, v.hlc DESC",
            (json_list(wanted),),
        )
        out: dict[str, builtins.list[tuple[str, Memory]]] = {}
        for row in rows:
            memory = memory_from_row(row[1:])
            out.setdefault(memory.id, []).append((STATE_NAMES[VersionState(row[0])], memory))
        return out

    async def write_imports(self, versions: Sequence[ImportedVersion]) -> builtins.list[str]:
        """Write imported memories as new local versions, all in one transaction; returns their ids.

        Timestamps come from the import (``created_at`` of the draft and
        ``updated_at``). Each version is checked against the winner it was
        planned against, inside the transaction: if another process changed
        one of these memories meanwhile, nothing is written.
        """
        if not versions:
            return []
        now = self._now_ms() / 1000
        planned: builtins.list[tuple[str, MemoryBody, ImportedVersion]] = []
        for version in versions:
            if not version.draft.id:
                raise StoreError("an imported memory needs its id")
            memory_id = canonical_memory_id(version.draft.id)
            body = self._draft_body(version.draft, version.embedding, version.embedder, now)
            try:
                body = replace(body, updated_at=float(version.updated_at))
            except (LocalProtocolError, TypeError, ValueError) as e:
                raise StoreError(f"cannot import memory {memory_id}: {e}") from e
            planned.append((memory_id, body, version))
        if len({memory_id for memory_id, _, _ in planned}) != len(planned):
            raise StoreError("the same memory id appears twice in one import")
        async with self._db.transaction():
            txn = await self._begin()
            by_memory = await self._merge_rows(memory_id for memory_id, _, _ in planned)
            items: builtins.list[tuple[str, MemoryBody, builtins.list[MergeRow]]] = []
            placements: builtins.list[_Placement] = []
            for memory_id, body, version in planned:
                prior = by_memory[memory_id]
                state = state_of(r.meta for r in prior) if prior else None
                winner = None if state is None else state.winner
                if (None if winner is None else str(winner)) != version.expected:
                    raise StoreError(
                        f"memory {memory_id} changed while it was being imported; nothing was imported, run it again"
                    )
                context: tuple[Dot, ...] | None = None
                if version.supersedes is not None:
                    held = {r.meta.dot for r in prior}
                    try:
                        context = tuple(sorted({Dot.parse(v) for v in version.supersedes}))
                    except DecodeError as e:
                        raise StoreError(f"cannot import memory {memory_id}: {e}") from e
                    if not set(context) <= held:
                        raise StoreError(f"memory {memory_id} has no version {', '.join(map(str, context))}")
                below = None
                if version.loses and winner is not None:
                    below = next(r.meta.hlc for r in prior if r.meta.dot == winner)
                items.append((memory_id, body, prior))
                placements.append(_Placement(context, below))
            await self._write_local(items, txn, placements)
        return [memory_id for memory_id, _, _ in planned]

    async def _resolve_id(self, memory_id_or_prefix: str) -> str:
        text = memory_id_or_prefix.strip().lower()
        if not text or not re.fullmatch(r"[0-9a-f\-]+", text):
            raise StoreError(f"{memory_id_or_prefix!r} is not a memory id")
        if len(text) == 36:
            row = await self._db.fetchone("SELECT memory_id FROM versions WHERE memory_id = ? LIMIT 1", (text,))
            if row is None:
                raise StoreError(f"no memory {text}; `peer list` shows what this store holds")
            return text
        upper = text[:-1] + chr(ord(text[-1]) + 1)
        rows = await self._db.fetchall(
            "SELECT DISTINCT memory_id FROM versions WHERE memory_id >= ? AND memory_id < ? LIMIT 3", (text, upper)
        )
        if not rows:
            raise StoreError(f"no memory has an id starting with {text}; `peer list` shows what this store holds")
        if len(rows) > 1:
            shown = ", ".join(r[0] for r in rows[:2])
            raise StoreError(f"the id prefix {text} is ambiguous ({shown}, ...); type more of the id")
        return str(rows[0][0])

    async def _winner_row(self, memory_id: str) -> Row:
        row = await self._db.fetchone(
            "SELECT content, kind, project, tags, metadata, created_at, importance, deleted, embedder, sealed"
            " FROM versions WHERE memory_id = ? AND state = 2",
            (memory_id,),
        )
        if row is None:
            raise StoreError(f"no memory {memory_id}")
        return self._with_embedding(row)

    def _with_embedding(self, row: Row) -> Row:
        """A row whose last column is a version's sealed bytes, with its vector in their place."""
        return (*row[:-1], embedding_of(row[-1], self._group_keys))

    async def edit(
        self,
        memory_id: str,
        *,
        content: str | None = None,
        kind: str | None = None,
        project: str | None = None,
        tags: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        importance: float | None | _Keep = KEEP,
        embedding: bytes | None | _Keep = KEEP,
        embedder: str = "",
        merge_metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Write a new version of a memory that supersedes all its live versions; returns the memory id.

        Fields left at None keep their value (``project=""`` clears the
        project, ``tags=()`` the tags). ``merge_metadata`` keys are merged
        into the winner's metadata as read inside the write transaction, so
        two concurrent merges both keep their keys (a merge made from a read
        before it would drop the other's key). Without a new ``embedding`` the old
        one is kept when the content is unchanged and dropped otherwise (the
        index then embeds the new text).
        """
        memory_id = await self._resolve_id(memory_id)
        now = self._now_ms() / 1000
        async with self._db.transaction():
            txn = await self._begin()
            prior = (await self._merge_rows([memory_id]))[memory_id]
            (old_content, old_kind, old_project, old_tags, old_metadata, created_at, old_importance, deleted,
             old_embedder, old_embedding) = await self._winner_row(memory_id)
            if deleted:
                raise StoreError(
                    f"memory {memory_id} was forgotten; `peer show {memory_id[:8]} --versions` lists its versions"
                    " and `peer resolve` can bring one back"
                )
            new_content = check_content(content) if content is not None else old_content
            if embedding is KEEP:
                vector, vector_embedder = (
                    (old_embedding, old_embedder) if new_content == old_content else (b"", "")
                )
            else:
                assert not isinstance(embedding, _Keep)
                vector, vector_embedder = check_embedding(embedding, embedder)
            if merge_metadata is not None:
                base = metadata if metadata is not None else json.loads(old_metadata)
                metadata = {**base, **merge_metadata}
            try:
                body = MemoryBody(
                    content=new_content,
                    kind=check_kind(kind) if kind is not None else old_kind,
                    project=(project or None) if project is not None else old_project,
                    tags=normalize_tags(tags) if tags is not None else tuple(json.loads(old_tags)),
                    metadata=metadata_text(metadata) if metadata is not None else old_metadata,
                    created_at=created_at,
                    updated_at=now,
                    importance=(
                        old_importance if isinstance(importance, _Keep) else check_importance(importance)
                    ),
                    embedder=vector_embedder,
                    embedding=bytes(vector),
                )
            except LocalProtocolError as e:
                raise StoreError(f"cannot store this edit: {e}") from e
            await self._write_local([(memory_id, body, prior)], txn)
        return memory_id

    async def forget(self, memory_id: str) -> str:
        """Write a tombstone that supersedes every live version; returns the memory id."""
        memory_id = await self._resolve_id(memory_id)
        now = self._now_ms() / 1000
        async with self._db.transaction():
            txn = await self._begin()
            prior = (await self._merge_rows([memory_id]))[memory_id]
            _, kind, project, _, _, created_at, _, deleted, _, _ = await self._winner_row(memory_id)
            if deleted:
                raise StoreError(f"memory {memory_id} is already forgotten")
            # The tombstone keeps where the memory was (kind, project) and
            # nothing of what it said.
            body = MemoryBody(
                content="", kind=kind, project=project, created_at=created_at, updated_at=now, deleted=True
            )
            await self._write_local([(memory_id, body, prior)], txn)
        return memory_id

    async def resolve(self, memory_id: str, keep: Dot | str) -> str:
        """Write a version with the fields of version ``keep`` that supersedes every live version.

        ``keep`` is normally one of the siblings ``peer conflicts`` shows; any
        version of the memory is accepted, so a forgotten memory can be
        brought back from the version before its tombstone.
        """
        memory_id = await self._resolve_id(memory_id)
        try:
            dot = keep if isinstance(keep, Dot) else Dot.parse(keep.strip())
        except DecodeError as e:
            raise StoreError(f"{keep!r} is not a version id (REPLICA:COUNTER, as `peer conflicts` shows)") from e
        now = self._now_ms() / 1000
        async with self._db.transaction():
            txn = await self._begin()
            prior = (await self._merge_rows([memory_id]))[memory_id]
            row = await self._db.fetchone(
                "SELECT content, kind, project, tags, metadata, created_at, importance, deleted, embedder, sealed"
                " FROM versions WHERE memory_id = ? AND origin = ? AND counter = ?",
                (memory_id, dot.origin, dot.counter),
            )
            if row is None:
                raise StoreError(f"memory {memory_id} has no version {dot}; `peer conflicts` lists the siblings")
            content, kind, project, tags, metadata, created_at, importance, deleted, embedder, embedding = (
                self._with_embedding(row)
            )
            body = MemoryBody(
                content=content,
                kind=kind,
                project=project,
                tags=tuple(json.loads(tags)),
                metadata=metadata,
                created_at=created_at,
                updated_at=now,
                importance=importance,
                deleted=bool(deleted),
                embedder=embedder,
                embedding=bytes(embedding),
            )
            await self._write_local([(memory_id, body, prior)], txn)
        return memory_id

    async def write_merge(
        self,
        survivor: str,
        expected: Mapping[str, str],
        *,
        tags: Iterable[str],
        metadata: Mapping[str, Any],
        created_at: float,
        retired_metadata: Mapping[str, Mapping[str, Any]],
    ) -> None:
        """Merge memories into ``survivor`` in one transaction (``peer consolidate``).

        ``survivor`` gets a new version with these tags, metadata and
        creation time (its text, kind, project and vector unchanged); every
        memory named in ``retired_metadata`` gets a tombstone carrying that
        metadata (where it went), superseding its live versions, whose text
        stays in the store. ``expected`` is the winner ("REPLICA:COUNTER") of
        each memory involved as the merge was planned: if any changed since,
        nothing is written.
        """
        now = self._now_ms() / 1000
        ids = [survivor, *retired_metadata]
        if len(set(ids)) != len(ids):
            raise StoreError("a memory cannot be merged into itself")
        async with self._db.transaction():
            txn = await self._begin()
            by_memory = await self._merge_rows(ids)
            for memory_id in ids:
                prior = by_memory[memory_id]
                winner = state_of(r.meta for r in prior).winner if prior else None
                if winner is None or str(winner) != expected.get(memory_id):
                    raise StoreError(
                        f"memory {memory_id} changed while it was being merged; nothing was merged, run it again"
                    )
            items: builtins.list[tuple[str, MemoryBody, builtins.list[MergeRow]]] = []
            for memory_id in ids:
                (content, kind, project, old_tags, old_metadata, old_created_at, importance, deleted, embedder,
                 embedding) = await self._winner_row(memory_id)
                if deleted:
                    raise StoreError(f"memory {memory_id} is forgotten; nothing was merged")
                try:
                    if memory_id == survivor:
                        body = MemoryBody(
                            content=content, kind=kind, project=project, tags=normalize_tags(tags),
                            metadata=metadata_text(metadata), created_at=float(created_at), updated_at=now,
                            importance=importance, embedder=embedder, embedding=bytes(embedding),
                        )
                    else:
                        # Like a forget's tombstone, plus the metadata that says where it went.
                        body = MemoryBody(
                            content="", kind=kind, project=project, metadata=metadata_text(retired_metadata[memory_id]),
                            created_at=old_created_at, updated_at=now, deleted=True,
                        )
                except DecodeError as e:
                    raise StoreError(f"cannot store this merge: {e}") from e
                items.append((memory_id, body, by_memory[memory_id]))
            await self._write_local(items, txn)

    # Remote versions ---------------------------------------------------------------
    async def apply(
        self, versions: Sequence[SealedVersion], *, strict: bool = True, progress: VersionVector | None = None
    ) -> ApplyResult:
        """Verify, decrypt and store received versions, in one transaction.

        Every version is checked against the group's membership and keys
        first. With ``strict`` (what sync uses) one bad version raises its
        :class:`TrustError` and nothing of the batch is stored; otherwise
        bad versions are skipped and reported in ``rejected``. Versions
        written by a device that has since been revoked are never stored
        and, even when strict, only reported in ``rejected``: honest members
        forward them. Versions already held are counted as duplicates and
        change nothing.

        ``progress`` (from an ordered sync session) is merged into the
        vector in the same transaction, once the batch is stored: a session
        cut later keeps it.

        The same as :meth:`check_received` then :meth:`store_checked`; a
        pipeline calls those two itself, to check the next batch (in a
        worker thread) while this one is written.
        """
        return await self.store_checked(await self.check_received(versions, strict=strict), progress=progress)

    async def check_received(
        self,
        versions: Sequence[SealedVersion],
        *,
        strict: bool = True,
        refresh: bool = True,
        records: Sequence[bytes] = (),
        signatures: SignatureWorker | None = None,
    ) -> CheckedBatch:
        """Verify and open received versions (no write): the CPU half of :meth:`apply`.

        Runs in a worker thread for big batches (Ed25519 verification
        releases the GIL), so it overlaps with another batch being written.
        Raises like :meth:`apply` when ``strict``. Without ``refresh`` it
        touches no database (the caller ran :meth:`refresh` just before),
        so it may run while another task holds a transaction.

        ``records`` are membership records not stored yet, trusted for this
        check as :meth:`apply_membership` would (a bundle's, whose versions
        are all checked before anything of it is written): versions signed
        by the devices, or sealed under the key epochs, they introduce open.
        The batch must then be stored after those records.

        With a ready ``signatures`` helper the signatures are checked there
        while this process decrypts (the same answers, on another core).
        """
        if not versions:
            return CheckedBatch({}, (), 0, self._membership)
        if refresh:
            await self._refresh_membership()
        opened: dict[Dot, tuple[SealedVersion, MemoryBody]] = {}
        rejected: list[Rejected] = []
        in_batch_duplicates = 0
        membership, group_keys = self._membership, dict(self._group_keys)
        if records:
            membership, group_keys = self._with_records(tuple(records))
        if signatures is not None and signatures.ready:
            checked = await self._check_elsewhere(versions, signatures, membership, group_keys, strict)
            if checked is not None:
                return checked

        def check() -> None:
            nonlocal in_batch_duplicates
            for sealed in versions:
                header = sealed.header
                if header.dot in opened:
                    in_batch_duplicates += 1
                    continue
                try:
                    body = open_version(
                        sealed, group_id=self.group_id, group_keys=group_keys, author_key=membership.author_key
                    )
                except (TrustError, DecodeError) as e:
                    if strict and not _written_by_revoked(membership, sealed, e):
                        raise
                    rejected.append(Rejected(str(header.dot), header.memory_id, str(e)))
                    continue
                opened[header.dot] = (sealed, body)

        await _cpu_bound(check, len(versions))
        return CheckedBatch(opened, tuple(rejected), in_batch_duplicates, membership)

    async def _check_elsewhere(
        self,
        versions: Sequence[SealedVersion],
        signatures: SignatureWorker,
        membership: Membership,
        group_keys: Mapping[int, bytes],
        strict: bool,
    ) -> CheckedBatch | None:
        """:meth:`check_received` with the signatures checked by a helper process; None if it could not answer.

        Decides exactly as the in-process loop does, version by version in
        order: group and author first, then the signature, then decryption.
        """
        jobs: list[SignatureJob] = []
        first_error: list[PeerError | None] = []
        for sealed in versions:
            try:
                jobs.append(signature_job(sealed, group_id=self.group_id, author_key=membership.author_key))
            except TrustError as e:
                first_error.append(e)
                continue
            first_error.append(None)
        bodies: list[MemoryBody | PeerError] = []
        verdicts: list[bool] | None = [] if not jobs else None

        async def ask() -> None:
            nonlocal verdicts
            if jobs:
                verdicts = await signatures.check(jobs)

        # Decrypting is all Python (the GIL): done here, in runs between
        # checkpoints, not in a worker thread, whose every GIL hand-over with
        # this thread costs more than it saves (see peer.signatures).
        async with trio.open_nursery() as both:
            both.start_soon(ask)
            for i, (sealed, error) in enumerate(zip(versions, first_error)):
                if i % _UNSEAL_RUN == 0:
                    await trio.lowlevel.checkpoint()
                if error is not None:
                    continue
                try:
                    bodies.append(unseal_version(sealed, group_keys))
                except (TrustError, DecodeError) as e:
                    bodies.append(e)
        if verdicts is None:
            return None
        opened: dict[Dot, tuple[SealedVersion, MemoryBody]] = {}
        rejected: list[Rejected] = []
        in_batch_duplicates = 0
        next_verdict, next_body = iter(verdicts), iter(bodies)
        for sealed, error in zip(versions, first_error):
            header = sealed.header
            outcome: MemoryBody | PeerError
            if error is not None:
                outcome = error
            else:
                outcome = _first_failure(sealed, next(next_verdict), next(next_body))
            if header.dot in opened:
                in_batch_duplicates += 1
                continue
            if isinstance(outcome, PeerError):
                if strict and not _written_by_revoked(membership, sealed, outcome):
                    raise outcome
                rejected.append(Rejected(str(header.dot), header.memory_id, str(outcome)))
                continue
            opened[header.dot] = (sealed, outcome)
        return CheckedBatch(opened, tuple(rejected), in_batch_duplicates, membership)

    def _with_records(self, records: tuple[bytes, ...]) -> tuple[Membership, dict[int, bytes]]:
        """The membership and group keys :meth:`apply_membership` would make of ``records`` (nothing written).

        The last answer is kept: a bundle's batches all ask with the same records.
        """
        cache = self._with_records_cache
        if cache is None or cache[0] is not self._membership or cache[1] != records:
            membership = Membership(self.group_id)
            membership.add_all(self._membership.records())
            membership.add_all(records)
            keys = {**self._group_keys, **membership.epoch_keys(self.device_id, self._kex_key)}
            cache = self._with_records_cache = (self._membership, records, membership, keys)
        return cache[2], dict(cache[3])

    async def store_checked(self, batch: CheckedBatch, *, progress: VersionVector | None = None) -> ApplyResult:
        """Store a checked batch in one transaction (with ``progress``, as :meth:`apply` does): the write half."""
        opened = dict(batch.opened)
        rejected = list(batch.rejected)
        in_batch_duplicates = batch.in_batch_duplicates
        membership = batch.membership
        if not opened:
            if progress:
                await self.merge_vector(progress)
            return ApplyResult(duplicates=in_batch_duplicates, rejected=tuple(rejected))

        async with self._write():
            txn = await self._begin()
            if self._membership is not membership:
                # A revocation arrived while the batch was being checked: its
                # cutoff applies to this batch too.
                for dot, (sealed, _) in list(opened.items()):
                    if self._membership.author_key(dot) is None:
                        del opened[dot]
                        rejected.append(
                            Rejected(str(dot), sealed.header.memory_id, f"{sealed.header.author} was revoked")
                        )
            by_memory: dict[str, list[MergeRow]] = await self._merge_rows(
                s.header.memory_id for s, _ in opened.values()
            )
            held = {r.meta.dot for rows in by_memory.values() for r in rows}
            fresh = {dot: item for dot, item in opened.items() if dot not in held}
            duplicates = in_batch_duplicates + len(opened) - len(fresh)
            if fresh:
                await self._store_received(fresh, by_memory, txn)
            if progress:
                await self._db.executemany(MERGE_VECTOR, list(progress.items()))
                if progress.get(self.replica_id):
                    # As in merge_vector: never write a dot of our own replica again.
                    await self._db.execute(
                        "UPDATE meta SET value = max(value, ?) WHERE key = ?",
                        (progress.get(self.replica_id), META_LAST_COUNTER),
                    )
        memories = len({s.header.memory_id for s, _ in fresh.values()})
        return ApplyResult(added=len(fresh), duplicates=duplicates, rejected=tuple(rejected), memories=memories)

    async def _store_received(
        self,
        fresh: Mapping[Dot, tuple[SealedVersion, MemoryBody]],
        by_memory: Mapping[str, list[MergeRow]],
        txn: _Txn,
    ) -> None:
        new_by_memory: dict[str, list[tuple[SealedVersion, MemoryBody]]] = {}
        for sealed, body in fresh.values():
            new_by_memory.setdefault(sealed.header.memory_id, []).append((sealed, body))
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[int, int, int]] = []
        for memory_id, new in new_by_memory.items():
            prior = by_memory.get(memory_id)
            if not prior and len(new) == 1:
                # The common case of a first sync: one version of a memory not
                # held before is its winner (what state_of would say, faster).
                sealed, body = new[0]
                inserts.append(version_row(sealed, body, VersionState.WINNER, txn.take_seq()))
                continue
            prior = prior or []
            state = state_of(
                [
                    *(r.meta for r in prior),
                    *(VersionMeta(s.header.dot, s.header.context, stored_hlc(s.header.hlc), b.deleted) for s, b in new),
                ]
            )
            for r in prior:
                if state.states[r.meta.dot] != r.state:
                    updates.append((int(state.states[r.meta.dot]), txn.take_seq(), r.id))
            for sealed, body in new:
                inserts.append(version_row(sealed, body, state.states[sealed.header.dot], txn.take_seq()))
        clock = HybridLogicalClock(self._now_ms, txn.hlc)
        # Observing the latest time is observing them all (observe keeps the maximum).
        clock.observe(max(sealed.header.hlc for sealed, _ in fresh.values()))  # at most a day ahead (protocol.md 3.2)
        txn.hlc = clock.last
        for sealed, _ in fresh.values():
            dot = sealed.header.dot
            if dot.origin == self.replica_id:
                # Our own version coming back (e.g. written before a crash
                # that lost the tail of the log): never reuse its counter.
                txn.last_counter = max(txn.last_counter, dot.counter)
        await self._db.run_batch([*self._version_steps(updates, inserts), (PUT_META, self._meta_rows(txn))])

    @staticmethod
    def _version_steps(
        updates: Sequence[tuple[int, int, int]], inserts: Sequence[tuple[Any, ...]]
    ) -> list[tuple[str, Sequence[tuple[Any, ...]]]]:
        """A batch's state changes, new version rows, then their keyword-index rows (for one round trip).

        The new rows' states are final when inserted, so one statement
        indexes the live winners among them, named by their seqs (column 5
        of a version row; schema step 3 took the per-row FTS insert out of
        the trigger).
        """
        return [
            (UPDATE_STATE, updates),
            (INSERT_VERSION, inserts),
            (FTS_NEW_ROWS, [(json_list(row[4] for row in inserts),)] if inserts else []),
        ]

    async def _raise_label_floor(self, label: int) -> None:
        """Inside a transaction that deletes version rows: their labels (row ids) are never handed out again."""
        await self._db.execute(RAISE_LABEL_FLOOR, (META_LABEL_FLOOR, label))

    async def start_new_incarnation(self) -> str:
        """Write from now on as a new replica (``DEVICEID.N``); returns its id.

        For a store restored from a backup: versions it wrote after the
        backup was taken may live on elsewhere, and a new replica id can
        never collide with their dots, whatever the clocks say.
        """
        async with self._db.transaction():
            current = int(await self._db.fetchvalue("SELECT value FROM meta WHERE key = ?", (META_INCARNATION,)) or 0)
            # Random, not current + 1: the same backup may be restored twice,
            # and both restored stores would then count dots in one replica.
            incarnation = current
            while incarnation == current:
                incarnation = secrets.randbelow(MAX_INCARNATION) + 1
            await self._db.execute(PUT_META, (META_INCARNATION, incarnation))
        self.replica_id = replica_id(self.device_id, incarnation)
        return self.replica_id

    # Vectors and what the other side lacks ---------------------------------------------
    async def vector(self) -> VersionVector:
        return VersionVector(await self._db.fetchall("SELECT replica, counter FROM vector"))

    async def merge_vector(self, other: VersionVector) -> VersionVector:
        """Merge a sender's vector after a complete session; returns the new vector.

        A higher counter for this store's own replica means versions it
        wrote and lost; it adopts the counter so it never writes those dots again.
        """
        async with self._write():
            await self._db.executemany(MERGE_VECTOR, list(other.items()))
            own = other.get(self.replica_id)
            if own:
                await self._db.execute(
                    "UPDATE meta SET value = max(value, ?) WHERE key = ?", (own, META_LAST_COUNTER)
                )
            rows = await self._db.fetchall("SELECT replica, counter FROM vector")
        return VersionVector(rows)

    async def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: changes when another connection (process) commits."""
        return int(await self._db.fetchvalue("PRAGMA data_version"))

    async def last_seq(self) -> int:
        """The change sequence number of the newest version held (0 when empty)."""
        return int(await self._db.fetchvalue("SELECT coalesce(max(seq), 0) FROM versions"))

    async def remember_peer(self, device_id: str, vector: VersionVector, *, via: str, replace: bool = False) -> None:
        """Record that ``device_id`` holds at least ``vector`` (merged with what was known, unless ``replace``).

        ``replace`` is for a vector that is the device's whole state when it
        said so (the sender vector of a bundle it made): a device restored
        from a backup holds less than it once did, and a merged vector would
        claim the versions it lost, which would then never be sent to it.
        """
        known = None if replace else await self.known_peer(device_id)
        merged = vector if known is None else known.vector.merge(vector)
        await self._db.execute(
            "INSERT INTO peers (device_id, vector, seen_at, via) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (device_id) DO UPDATE SET vector = excluded.vector, seen_at = excluded.seen_at,"
            " via = excluded.via",
            (device_id, merged.encode(), self._now_ms() / 1000, via),
        )

    async def known_peer(self, device_id: str) -> KnownPeer | None:
        """The last vector known for ``device_id``, or None if it never synced nor sent a bundle."""
        row = await self._db.fetchone("SELECT device_id, vector, seen_at, via FROM peers WHERE device_id = ?", (device_id,))
        return None if row is None else KnownPeer(row[0], VersionVector.decode(row[1]), row[2], row[3])

    async def known_peers(self) -> list[KnownPeer]:
        rows = await self._db.fetchall("SELECT device_id, vector, seen_at, via FROM peers ORDER BY device_id")
        return [KnownPeer(r[0], VersionVector.decode(r[1]), r[2], r[3]) for r in rows]

    async def _wanted(self, vector: VersionVector) -> list[tuple[str, int]]:
        origins = await self._db.fetchall("SELECT origin, max_counter FROM origins ORDER BY origin")
        return [(origin, vector.get(origin)) for origin, top in origins if top > vector.get(origin)]

    async def missing_for(
        self, vector: VersionVector, batch_size: int = 500, *, project: str | None = None
    ) -> AsyncIterator[list[SealedVersion]]:
        """The versions this store holds that ``vector`` does not cover, in batches.

        Per origin in counter order. When nothing is missing this is one
        query over a table with one row per origin. With ``project``, only
        versions of memories that have (or had) a version in that project:
        a partial set, after which the receiver must not merge our vector.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        in_project = ""
        extra: tuple[Any, ...] = ()
        if project is not None:
            in_project = " AND memory_id IN (SELECT memory_id FROM versions WHERE project = ?)"
            extra = (project,)
        batch: list[SealedVersion] = []
        for origin, after in await self._wanted(vector):
            while True:
                rows = await self._db.fetchall(
                    f"SELECT counter, sealed FROM versions WHERE origin = ? AND counter > ?{in_project}"
                    " ORDER BY counter LIMIT ?",
                    (origin, after, *extra, batch_size),
                )
                for counter, data in rows:
                    batch.append(SealedVersion.decode(data))
                    after = counter
                    if len(batch) >= batch_size:
                        yield batch
                        batch = []
                if len(rows) < batch_size:
                    break
        if batch:
            yield batch

    async def count_missing_for(self, vector: VersionVector) -> int:
        """How many versions ``vector`` lacks (for ``peer status``)."""
        total = 0
        for origin, after in await self._wanted(vector):
            total += int(
                await self._db.fetchvalue(
                    "SELECT count(*) FROM versions WHERE origin = ? AND counter > ?", (origin, after)
                )
            )
        return total

    async def sealed(self, dots: Iterable[Dot]) -> list[SealedVersion]:
        """The sealed bytes of the given versions that this store holds."""
        wanted = [[d.origin, d.counter] for d in dots]
        rows = await self._db.fetchall(
            "SELECT sealed FROM versions WHERE (origin, counter) IN"
            " (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))",
            (json.dumps(wanted),),
        )
        return [SealedVersion.decode(data) for (data,) in rows]

    # Reads -----------------------------------------------------------------------------
    async def get(self, memory_id_or_prefix: str) -> Memory:
        """The memory with this id or unique id prefix (a forgotten one has ``deleted=True``)."""
        memory_id = await self._resolve_id(memory_id_or_prefix)
        row = await self._db.fetchone(
            f"SELECT {MEMORY_COLUMNS} FROM versions v WHERE v.memory_id = ? AND v.state = 2", (memory_id,)
        )
        if row is None:
            raise StoreError(f"no memory {memory_id}")
        return memory_from_row(row)

    async def get_many(self, ids: Iterable[str], *, include_deleted: bool = False) -> dict[str, Memory]:
        """The memories with these exact ids that exist (forgotten ones only if asked)."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        rows = await self._db.fetchall(
            f"SELECT {MEMORY_COLUMNS} FROM versions v"
            " WHERE v.memory_id IN (SELECT value FROM json_each(?)) AND v.state = 2"
            + ("" if include_deleted else " AND v.deleted = 0"),
            (json_list(wanted),),
        )
        return {m.id: m for m in map(memory_from_row, rows)}

    async def list(
        self,
        *,
        project: str | None = None,
        kind: str | None = None,
        tag: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> builtins.list[Memory]:
        """Live memories, newest change first, filtered by project, kind, tag and time (seconds)."""
        where = ["v.state = 2", "v.deleted = 0"]
        params: builtins.list[Any] = []
        if project is not None:
            where.append("v.project = ?")
            params.append(project)
        if kind is not None:
            where.append("v.kind = ?")
            params.append(kind)
        if tag is not None:
            where.append("EXISTS (SELECT 1 FROM json_each(v.tags) t WHERE t.value = ?)")
            params.append(tag)
        if since is not None:
            where.append("v.updated_at >= ?")
            params.append(since)
        sql = f"SELECT {MEMORY_COLUMNS} FROM versions v WHERE {' AND '.join(where)} ORDER BY v.updated_at DESC, v.memory_id DESC"
        if limit is not None:
            if limit < 0:
                raise StoreError("the limit cannot be negative")
            sql += " LIMIT ?"
            params.append(limit)
        return [memory_from_row(r) for r in await self._db.fetchall(sql, params)]

    async def versions(self, memory_id: str) -> builtins.list[VersionInfo]:
        """Every version of a memory, newest clock time first."""
        memory_id = await self._resolve_id(memory_id)
        rows = await self._db.fetchall(
            f"SELECT {INFO_COLUMNS} FROM versions WHERE memory_id = ? ORDER BY hlc DESC, origin, counter",
            (memory_id,),
        )
        return [info_from_row(r) for r in rows]

    async def conflicts(self) -> builtins.list[builtins.list[VersionInfo]]:
        """Memories with siblings: for each, its live versions, winner first."""
        rows = await self._db.fetchall(
            f"SELECT {INFO_COLUMNS} FROM versions WHERE state IN (1, 2) AND memory_id IN"
            " (SELECT DISTINCT memory_id FROM versions INDEXED BY versions_siblings WHERE state = 1)"
            " ORDER BY memory_id, state DESC, hlc DESC, origin, counter"
        )
        grouped: dict[str, builtins.list[VersionInfo]] = {}
        for row in rows:
            info = info_from_row(row)
            grouped.setdefault(info.memory_id, []).append(info)
        return list(grouped.values())

    async def fts_search(
        self, query: str, *, limit: int = 20, project: str | None = None, kind: str | None = None
    ) -> builtins.list[tuple[str, float]]:
        """Keyword search over live memories: (memory id, relevance), best first; higher is better (-bm25).

        Any text is safe: words are quoted, operators are not interpreted.
        Words that occur in very many memories are dropped while rarer ones
        remain (see :data:`peer.store.rows.COMMON_WORD_DOCS`).
        """
        words = fts_words(query)
        if not words or limit <= 0:
            return []
        frequency: dict[str, int] = dict(
            await self._db.fetchall(
                f"SELECT term, doc FROM temp.fts_vocab WHERE term IN ({', '.join('?' * len(words))})", words
            )
        )
        rare = rare_words(words, frequency)
        where = ["fts MATCH ?"]
        params: builtins.list[Any] = [fts_query(rare)]
        if project is not None:
            where.append("v.project = ?")
            params.append(project)
        if kind is not None:
            where.append("v.kind = ?")
            params.append(kind)
        params.append(limit)
        if len(where) == 1:
            # Only live winners are in fts (the triggers see to it), so rank
            # inside FTS5 and join just the top rows: ~2.5x faster at 100k
            # than joining every match before sorting.
            rows = await self._db.fetchall(
                "SELECT v.memory_id, f.score FROM (SELECT rowid, bm25(fts) AS score FROM fts"
                " WHERE fts MATCH ? ORDER BY score LIMIT ?) f JOIN versions v ON v.id = f.rowid ORDER BY f.score",
                params,
            )
        else:
            rows = await self._db.fetchall(
                "SELECT v.memory_id, bm25(fts) AS score FROM fts JOIN versions v ON v.id = fts.rowid"
                f" WHERE {' AND '.join(where)} AND v.state = 2 AND v.deleted = 0 ORDER BY score LIMIT ?",
                params,
            )
        return [(memory_id, -float(score)) for memory_id, score in rows]

    # For the search index --------------------------------------------------------------
    async def changes_since(self, seq: int, limit: int = 1000) -> builtins.list[IndexChange]:
        """Rows whose seq is above ``seq``, in seq order (content and embedding only for live ones)."""
        rows = await self._db.fetchall(
            "SELECT seq, id, memory_id, state = 2 AND deleted = 0 AS live,"
            " CASE WHEN state = 2 AND deleted = 0 THEN content ELSE '' END,"
            " CASE WHEN state = 2 AND deleted = 0 THEN embedder ELSE '' END,"
            " CASE WHEN state = 2 AND deleted = 0 THEN sealed ELSE x'' END"
            " FROM versions WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        vectors = await self._embeddings([sealed for *_, sealed in rows])
        return [
            IndexChange(seq=s, label=label, memory_id=m, live=bool(live), content=c, embedder=e, embedding=emb)
            for (s, label, m, live, c, e, _), emb in zip(rows, vectors)
        ]

    async def _embeddings(self, sealed: Sequence[bytes]) -> builtins.list[bytes]:
        """The vectors inside stored sealed versions (b"" for b""): decrypted in a worker thread when many."""
        keys = dict(self._group_keys)
        out: builtins.list[bytes] = []

        def work() -> None:
            out.extend(embedding_of(blob, keys) if blob else b"" for blob in sealed)

        await _cpu_bound(work, len(sealed))
        return out

    async def max_seq(self) -> int:
        # From the seq counter too, not only the rows: deleting a revoked
        # device's versions must not move the store's change number back (the
        # index would take itself for ahead of the store).
        return int(await self._db.fetchvalue(MAX_SEQ))

    async def all_live_embeddings(self, batch_size: int = 1000) -> AsyncIterator[builtins.list[IndexChange]]:
        """Every live winner, in label order and batches, for rebuilding the index.

        Read :meth:`max_seq` first and catch up from it with
        :meth:`changes_since` afterwards: changes made during the rebuild
        are then applied twice at worst, never missed.
        """
        after = 0
        while True:
            rows = await self._db.fetchall(
                "SELECT seq, id, memory_id, content, embedder, sealed FROM versions"
                f" WHERE id > ? AND {LIVE} ORDER BY id LIMIT ?",
                (after, batch_size),
            )
            if not rows:
                return
            vectors = await self._embeddings([sealed for *_, sealed in rows])
            yield [
                IndexChange(seq=s, label=label, memory_id=m, live=True, content=c, embedder=e, embedding=emb)
                for (s, label, m, c, e, _), emb in zip(rows, vectors)
            ]
            after = rows[-1][1]

    async def live_embeddings_of(self, memory_ids: Iterable[str]) -> builtins.list[IndexChange]:
        """The live winners of these memories, with their vectors (to compare them with the index)."""
        wanted = list(dict.fromkeys(memory_ids))
        if not wanted:
            return []
        rows = await self._db.fetchall(
            "SELECT seq, id, memory_id, content, embedder, sealed FROM versions"
            f" WHERE memory_id IN (SELECT value FROM json_each(?)) AND {LIVE}",
            (json_list(wanted),),
        )
        vectors = await self._embeddings([sealed for *_, sealed in rows])
        return [
            IndexChange(seq=s, label=label, memory_id=m, live=True, content=c, embedder=e, embedding=emb)
            for (s, label, m, c, e, _), emb in zip(rows, vectors)
        ]

    async def live_texts(self, project: str | None) -> builtins.list[tuple[str, str]]:
        """(memory id, content) of every live memory of ``project`` (None: those without a project)."""
        rows = await self._db.fetchall(
            f"SELECT memory_id, content FROM versions WHERE {LIVE} AND project IS ?", (project,)
        )
        return [(m, c) for m, c in rows]

    def live_winners(self, batch_size: int = 1000) -> AsyncIterator[builtins.list[IndexChange]]:
        """The name the index's feed uses for :meth:`all_live_embeddings`."""
        return self.all_live_embeddings(batch_size)

    async def versions_held(self) -> int:
        """About how many versions the store holds, at once: the highest row id (labels are never reused)."""
        return int(await self._db.fetchvalue("SELECT coalesce(max(id), 0) FROM versions"))

    async def count_live(self) -> int:
        """How many memories are live (not forgotten): what a complete index holds."""
        return int(await self._db.fetchvalue(f"SELECT count(*) FROM versions WHERE {LIVE}"))

    async def memories_for_labels(self, labels: Iterable[int]) -> dict[int, Memory]:
        """The live memories whose winning version has one of these labels (row ids), by label.

        A label whose version stopped winning since the index saw it is
        absent, so search never shows a stale or forgotten memory.
        """
        wanted = [int(label) for label in labels]
        if not wanted:
            return {}
        rows = await self._db.fetchall(
            f"SELECT v.id, {MEMORY_COLUMNS} FROM versions v"
            " WHERE v.id IN (SELECT value FROM json_each(?)) AND v.state = 2 AND v.deleted = 0",
            (json_list(wanted),),
        )
        return {int(row[0]): memory_from_row(row[1:]) for row in rows}

    # Health ------------------------------------------------------------------------------
    async def stats(self) -> StoreStats:
        await self._refresh_membership()
        (memories, forgotten, versions, tombstones, conflicts, max_seq) = (
            await self._db.fetchone(
                "SELECT"
                " (SELECT count(*) FROM versions WHERE state = 2 AND deleted = 0),"
                " (SELECT count(*) FROM versions WHERE state = 2 AND deleted = 1),"
                " (SELECT count(*) FROM versions),"
                " (SELECT count(*) FROM versions WHERE deleted = 1),"
                " (SELECT count(DISTINCT memory_id) FROM versions INDEXED BY versions_siblings WHERE state = 1),"
                " (" + MAX_SEQ + ")"
            )
            or (0, 0, 0, 0, 0, 0)
        )
        replicas = int(await self._db.fetchvalue("SELECT count(*) FROM origins"))
        vector = await self.vector()
        size = 0
        for suffix in ("", "-wal"):
            try:
                size += os.stat(f"{self.path}{suffix}").st_size
            except FileNotFoundError:
                pass
        return StoreStats(
            device_id=self.device_id,
            replica_id=self.replica_id,
            group_id=self.group_id.hex(),
            memories=memories,
            forgotten=forgotten,
            versions=versions,
            tombstones=tombstones,
            conflicts=conflicts,
            devices=sum(1 for m in self._membership.members() if not m.revoked),
            replicas=replicas,
            db_bytes=size,
            max_seq=max_seq,
            vector=vector.as_dict(),
        )

    async def oversized_versions(self) -> builtins.list[tuple[str, str, str]]:
        """Versions held here that no member can read: (memory id, version, why), for ``peer doctor``.

        Only a store written before every receive limit was also enforced on
        write can hold one (received versions were always checked): its
        sync, bundles and backups then fail on it, for every member.
        """
        return [(r[1], str(Dot(r[4], r[5])), why) for r, why in await self._oversized_rows()]

    async def _oversized_rows(self) -> builtins.list[tuple[Row, str]]:
        out: builtins.list[tuple[Row, str]] = []
        for row in await self._db.fetchall(_OVERSIZED_CANDIDATES):
            why = _unreadable_because(row)
            if why is not None:
                out.append((row, why))
        return out

    async def repair_oversized(self) -> int:
        """Remove the versions :meth:`oversized_versions` finds; a memory they were the live winner of is written again.

        The new version keeps what fits (content cut at the limit, tags and a
        project over their limits left out, metadata over its limit
        replaced) and says in its metadata key ``peer_doctor_cut`` what was
        cut. Returns how many versions were removed. Nothing else changes.
        """
        now = self._now_ms() / 1000
        async with self._db.transaction():
            bad = await self._oversized_rows()
            if not bad:
                return 0
            rows = [row for row, _ in bad]
            txn = await self._delete_versions([(*r[:4], r[6]) for r in rows], {r[4] for r in rows})
            lost = {r[1]: r for r in rows if r[2] == int(VersionState.WINNER) and not r[3]}
            prior = await self._merge_rows(lost)
            items = [(memory_id, _trimmed_body(row, now), prior[memory_id]) for memory_id, row in lost.items()]
            if items:
                await self._write_local(items, txn)
        return len(bad)

    async def layout(self) -> StoreLayout:
        """The file's page size, its pages, and how many of them are free."""
        page_size = int(await self._db.fetchvalue("PRAGMA page_size"))
        pages = int(await self._db.fetchvalue("PRAGMA page_count"))
        free = int(await self._db.fetchvalue("PRAGMA freelist_count"))
        rows, row_bytes = await self._db.fetchone(
            # The columns' bytes and about 40 of record header and numbers (no blob is read: length() of a
            # blob comes from its header).
            "SELECT count(*), avg(length(sealed) + length(embedding) + length(content) + length(metadata)"
            " + length(tags) + length(memory_id) + length(origin) + length(context) + length(kind)"
            " + coalesce(length(project), 0) + length(embedder) + 40) FROM versions"
        ) or (0, 0.0)
        return StoreLayout(page_size, pages, free, int(rows), float(row_bytes or 0.0))

    async def compact(self) -> StoreLayout:
        """Rewrite the file with :data:`PAGE_SIZE` pages and no free ones (``VACUUM``); returns the new layout.

        A store migrated from schema 3 keeps its 4 kB pages, which its rows
        (about 2.4 kB each) fill badly: this is what makes it as small as a
        new one. SQLite changes a page size only outside write-ahead-log
        mode, which needs the file to itself, so this raises
        :class:`StoreError`, changing nothing, while another program (the
        agent, an MCP server) has the store open. The rewrite is one
        transaction under a rollback journal: a crash or a full disk in the
        middle leaves the store as it was. Row ids (the search index's
        labels) are kept: every table's is its INTEGER PRIMARY KEY.
        """
        busy_ms = int(await self._db.fetchvalue("PRAGMA busy_timeout"))
        await self._db.execute(f"PRAGMA busy_timeout = {_COMPACT_BUSY_MS}")
        try:
            try:
                mode = await self._db.fetchvalue("PRAGMA journal_mode = DELETE")
            except StoreError:
                mode = "wal"
            if str(mode).lower() != "delete":
                raise StoreError(
                    f"the store at {self.path} is open in another program (the agent, or an MCP server):"
                    " stop it, then run this again"
                )
            try:
                await self._db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
                await self._db.execute("VACUUM")
            finally:
                await self._db.fetchvalue("PRAGMA journal_mode = WAL")
        finally:
            await self._db.execute(f"PRAGMA busy_timeout = {busy_ms}")
        return await self.layout()

    async def integrity_check(self) -> builtins.list[str]:
        """Problems found in the store file and its derived data; empty when all is well."""
        problems = [
            str(r[0]) for r in await self._db.fetchall("PRAGMA integrity_check") if r[0] != "ok"
        ]
        try:
            await self._db.execute("INSERT INTO fts (fts) VALUES ('integrity-check')")
        except StoreError as e:
            problems.append(f"the keyword index is damaged: {e}")
        live, indexed = await self._db.fetchone(
            # fts_docsize has one row per indexed text (a count of fts itself would read live_content).
            f"SELECT (SELECT count(*) FROM versions WHERE {LIVE}), (SELECT count(*) FROM fts_docsize)"
        ) or (0, 0)
        if live != indexed:
            problems.append(f"the keyword index holds {indexed} entries for {live} live memories")
        bad = await self._db.fetchall(
            "SELECT memory_id FROM versions GROUP BY memory_id HAVING sum(state = 2) != 1 LIMIT 5"
        )
        for (memory_id,) in bad:
            problems.append(f"memory {memory_id} does not have exactly one winner")
        return problems


# Versions that may be over a receive limit (each then checked exactly by _unreadable_because).
_OVERSIZED_CANDIDATES = (
    "SELECT id, memory_id, state, deleted, origin, counter, content, kind, project, tags, metadata, created_at,"
    " updated_at, importance, embedder, embedding, sealed FROM versions"
    f" WHERE length(sealed) > {MAX_BODY_BYTES} OR length(CAST(content AS BLOB)) > {MAX_CONTENT_BYTES}"
    f" OR length(CAST(project AS BLOB)) > {MAX_FIELD_BYTES} OR json_array_length(tags) > {MAX_TAGS}"
    f" OR length(CAST(metadata AS BLOB)) > {MAX_METADATA_BYTES}"
    f" OR EXISTS (SELECT 1 FROM json_each(versions.tags) WHERE length(CAST(value AS BLOB)) > {MAX_FIELD_BYTES})"
)


def _unreadable_because(row: Row) -> str | None:
    """Why no member can read this stored version (what its receive check raises), or None."""
    (_, _, _, deleted, _, _, content, kind, project, tags, metadata, created_at, updated_at, importance, embedder,
     embedding, sealed) = row  # fmt: skip
    try:
        SealedVersion.decode(bytes(sealed))
        MemoryBody(
            content=content, kind=kind, project=project, tags=tuple(json.loads(tags)), metadata=metadata,
            created_at=created_at, updated_at=updated_at, importance=importance, deleted=bool(deleted),
            embedder=embedder, embedding=bytes(embedding),
        )  # fmt: skip
    except (DecodeError, LocalProtocolError) as e:
        return str(e)
    return None


def _trimmed_body(row: Row, now: float) -> MemoryBody:
    """What fits of an unreadable version, as a new version's body (see Store.repair_oversized)."""
    (_, _, _, _, _, _, content, kind, project, tags_json, metadata, created_at, _, importance, _, _, _) = row
    cut: list[str] = []
    data = content.encode("utf-8")
    if len(data) > MAX_CONTENT_BYTES:
        content = data[:MAX_CONTENT_BYTES].decode("utf-8", errors="ignore")
        cut.append(f"content cut from {len(data):,} bytes")
    all_tags: list[str] = json.loads(tags_json)
    tags = [t for t in all_tags if len(t.encode("utf-8")) <= MAX_FIELD_BYTES]
    if len(tags) < len(all_tags):
        cut.append(f"tags over {MAX_FIELD_BYTES:,} bytes left out")
    if len(tags) > MAX_TAGS:
        tags = tags[:MAX_TAGS]
        cut.append(f"only the first {MAX_TAGS:,} tags kept")
    if project is not None and len(project.encode("utf-8")) > MAX_FIELD_BYTES:
        project = None
        cut.append(f"project name over {MAX_FIELD_BYTES:,} bytes left out")
    meta: dict[str, Any] = {}
    if len(metadata.encode("utf-8")) <= MAX_METADATA_BYTES:
        meta = json.loads(metadata)
    else:
        cut.append("metadata over 1 MiB left out")
    for attempt in range(2):
        note = canonical_json({**meta, "peer_doctor_cut": "; ".join(cut)})
        size = len(content.encode("utf-8")) + sum(len(t.encode("utf-8")) + 4 for t in tags) + len(note.encode())
        if size + EMBEDDING_ROOM + 1024 <= MAX_BODY_BYTES:
            return MemoryBody(
                content=content,
                kind=kind,
                project=project,
                tags=tuple(tags),
                metadata=note,
                created_at=created_at,
                updated_at=now,
                importance=importance,
            )
        if attempt == 0:
            tags = []
            cut.append("every tag left out (together they were too big)")
    raise StoreError("a version could not be cut down to the limits; restore the store from a backup")


def _first_failure(sealed: SealedVersion, valid: bool, body: MemoryBody | PeerError) -> MemoryBody | PeerError:
    return body if valid else bad_signature(sealed)


def _written_by_revoked(membership: Membership, sealed: SealedVersion, error: Exception) -> bool:
    """A version by a device since revoked: dropped, but it does not fail the batch.

    Honest members may still hold and forward such versions; failing the
    whole batch would fail every session with them, forever.
    """
    if not isinstance(error, NotAMember):
        return False
    info = membership.member_info(sealed.header.author)
    return info is not None and info.revoked


#: Versions decrypted between two checkpoints when the signatures are checked elsewhere (about 2 ms).
_UNSEAL_RUN = 64
#: Below this many versions, sealing or opening runs inline; above, in a
#: worker thread, so that a big batch does not stall the agent's other tasks.
_OFFLOAD_AT = 32


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``); elsewhere, nothing.

    A big receive allocates and frees hundreds of MB in small blocks (SQLite's
    page cache, the versions' bytes), which glibc keeps for the process.
    A few ms; ctypes releases the GIL while it runs.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to ask for
        return
    trim(0)


async def _cpu_bound(work: Callable[[], None], size: int) -> None:
    if size >= _OFFLOAD_AT:
        await trio.to_thread.run_sync(work)
    else:
        work()

"""The store's SQLite schema: migrations, the SQL text the store runs, the meta keys, opening a connection.

``MIGRATIONS[i]`` takes a store from schema version i to i + 1; a store
file records its version in ``PRAGMA user_version`` and :func:`migrate`
runs the steps it lacks, in one transaction. Append new steps; never edit
a released one. Each is a list of single statements (not a script:
sqlite3's executescript would commit the migration's transaction
half-way).

:func:`migrate` reads :data:`MIGRATIONS` and :data:`SCHEMA_VERSION` from
this module when it runs (tests replace them here to add a step).
"""

from __future__ import annotations

from peer.aio import Database
from protocol import StoreError

__all__ = [
    "LIVE",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "META_DEVICE_ID",
    "META_INCARNATION",
    "META_GROUP_ID",
    "META_LAST_COUNTER",
    "META_HLC",
    "META_NEXT_SEQ",
    "META_MEMBERSHIP_REV",
    "META_STORE_ID",
    "META_LABEL_FLOOR",
    "VERSION_COLUMNS",
    "INSERT_VERSION",
    "LABEL_FLOOR",
    "RAISE_LABEL_FLOOR",
    "MAX_SEQ",
    "UPDATE_STATE",
    "FTS_NEW_ROWS",
    "FTS_DELETE",
    "PAGE_SIZE",
    "PUT_META",
    "MERGE_VECTOR",
    "MERGE_ROWS",
    "MEMORY_COLUMNS",
    "INFO_COLUMNS",
    "configure",
    "migrate",
]

LIVE = "state = 2 AND deleted = 0"  # literal, so the partial indexes apply

MIGRATIONS: list[list[str]] = [
    [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value ANY) STRICT",
        # Small columns first, blobs last: a row's big tail lives in
        # overflow pages that queries not reading it never touch.
        """CREATE TABLE versions (
            id INTEGER PRIMARY KEY,
            memory_id TEXT NOT NULL,
            origin TEXT NOT NULL,
            counter INTEGER NOT NULL,
            state INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            hlc INTEGER NOT NULL,
            deleted INTEGER NOT NULL,
            context TEXT NOT NULL,
            kind TEXT NOT NULL,
            project TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            importance REAL,
            tags TEXT NOT NULL,
            metadata TEXT NOT NULL,
            embedder TEXT NOT NULL,
            content TEXT NOT NULL,
            embedding BLOB NOT NULL,
            sealed BLOB NOT NULL,
            UNIQUE (origin, counter)
        )""",
        "CREATE INDEX versions_memory ON versions (memory_id, state)",
        "CREATE UNIQUE INDEX versions_seq ON versions (seq)",
        f"CREATE INDEX versions_live_updated ON versions (updated_at) WHERE {LIVE}",
        f"CREATE INDEX versions_live_project ON versions (project, updated_at) WHERE {LIVE}",
        f"CREATE INDEX versions_live_kind ON versions (kind, updated_at) WHERE {LIVE}",
        # Siblings and tombstones are few: partial indexes count them cheaply.
        "CREATE INDEX versions_siblings ON versions (memory_id) WHERE state = 1",
        "CREATE INDEX versions_tombstones ON versions (state, memory_id) WHERE deleted = 1",
        "CREATE TABLE vector (replica TEXT PRIMARY KEY, counter INTEGER NOT NULL) STRICT",
        # The highest counter held per origin, so that "what does the other
        # side lack" is one small query when the answer is "nothing".
        "CREATE TABLE origins (origin TEXT PRIMARY KEY, max_counter INTEGER NOT NULL) STRICT",
        "CREATE TABLE membership (id INTEGER PRIMARY KEY, record BLOB NOT NULL UNIQUE) STRICT",
        "CREATE TABLE group_keys (epoch INTEGER PRIMARY KEY, key BLOB NOT NULL) STRICT",
        "CREATE VIRTUAL TABLE fts USING fts5 (content, tokenize = 'unicode61 remove_diacritics 2')",
        """CREATE TRIGGER versions_after_insert AFTER INSERT ON versions BEGIN
            INSERT INTO fts (rowid, content) SELECT new.id, new.content WHERE new.state = 2 AND new.deleted = 0;
            INSERT INTO origins (origin, max_counter) VALUES (new.origin, new.counter)
                ON CONFLICT (origin) DO UPDATE SET max_counter = max(max_counter, excluded.max_counter);
        END""",
        """CREATE TRIGGER versions_after_state AFTER UPDATE OF state ON versions
            WHEN (old.state = 2) != (new.state = 2) BEGIN
            DELETE FROM fts WHERE rowid = old.id AND old.state = 2;
            INSERT INTO fts (rowid, content) SELECT new.id, new.content WHERE new.state = 2 AND new.deleted = 0;
        END""",
    ],
    [
        # What each other device is known to hold: its vector as of the last
        # complete sync with it, or the last bundle from it. `peer status`
        # counts what it lacks; `peer bundle export --for` sends exactly that.
        """CREATE TABLE peers (
            device_id TEXT PRIMARY KEY,
            vector BLOB NOT NULL,
            seen_at REAL NOT NULL,
            via TEXT NOT NULL
        ) STRICT""",
    ],
    [
        # Keyword-index rows of new versions are inserted per batch by the
        # writers (FTS_NEW_ROWS), not per row by the trigger: a per-row FTS5
        # insert inside a trigger flushes FTS5's pending terms at every
        # statement savepoint (10% of a bulk receive's CPU). The state trigger
        # stays: state changes are few and touch rows already written.
        "DROP TRIGGER versions_after_insert",
        """CREATE TRIGGER versions_after_insert AFTER INSERT ON versions BEGIN
            INSERT INTO origins (origin, max_counter) VALUES (new.origin, new.counter)
                ON CONFLICT (origin) DO UPDATE SET max_counter = max(max_counter, excluded.max_counter);
        END""",
    ],
    [
        # Nothing stored twice (about 5 kB per memory before, for 2 kB sealed).
        # The vector was kept both inside the sealed version and decoded in
        # `embedding`: readers now decrypt it from `sealed` (rows.embedding_of),
        # and the column stays, always empty, so that rows keep their shape.
        # The keyword index kept its own copy of every live text: it is now an
        # external-content FTS5 table over the live rows (`live_content`), so
        # it stores only the index; a row leaving it must be deleted with its
        # old text (the 'delete' command), which the state trigger has.
        "DROP TRIGGER versions_after_state",
        "DROP TABLE fts",
        "UPDATE versions SET embedding = x'' WHERE length(embedding) > 0",
        f"CREATE VIEW live_content AS SELECT id, content FROM versions WHERE {LIVE}",
        "CREATE VIRTUAL TABLE fts USING fts5 (content, content = 'live_content', content_rowid = 'id',"
        " tokenize = 'unicode61 remove_diacritics 2')",
        "INSERT INTO fts (fts) VALUES ('rebuild')",
        """CREATE TRIGGER versions_after_state AFTER UPDATE OF state ON versions
            WHEN (old.state = 2) != (new.state = 2) BEGIN
            INSERT INTO fts (fts, rowid, content) SELECT 'delete', old.id, old.content
                WHERE old.state = 2 AND old.deleted = 0;
            INSERT INTO fts (rowid, content) SELECT new.id, new.content WHERE new.state = 2 AND new.deleted = 0;
        END""",
    ],
]

#: Page size of new store files. A version row is about 2.4 kB (the sealed
#: version and the fields decoded from it): 4 kB pages hold one row each and
#: waste 40% of the file; 16 kB pages hold six. (An existing file keeps its
#: page size: SQLite cannot change it in WAL mode without a VACUUM.)
PAGE_SIZE = 16384

SCHEMA_VERSION = len(MIGRATIONS)

# Meta keys (rows of the meta table).
META_DEVICE_ID = "device_id"
META_INCARNATION = "incarnation"
META_GROUP_ID = "group_id"
META_LAST_COUNTER = "last_counter"
META_HLC = "hlc"
META_NEXT_SEQ = "next_seq"
META_MEMBERSHIP_REV = "membership_rev"
META_STORE_ID = "store_id"
#: The highest version row id (search-index label) ever deleted: never handed out again.
META_LABEL_FLOOR = "label_floor"

# SQL the store runs -----------------------------------------------------------------------------

VERSION_COLUMNS = (
    "memory_id, origin, counter, state, seq, hlc, deleted, context, kind, project, created_at, updated_at,"
    " importance, tags, metadata, embedder, content, embedding, sealed"
)
#: A new version row. Its id (the search index's label) is above every id
#: ever handed out, dropped rows' included: SQLite alone would give a deleted
#: highest id out again, and the index would take the new memory for the
#: dropped one. Both maxima are index lookups, and nothing is read first, so a
#: batch stays one round trip.
INSERT_VERSION = (
    f"INSERT INTO versions (id, {VERSION_COLUMNS}) VALUES ("
    "(SELECT max((SELECT coalesce(max(id), 0) FROM versions),"
    f" coalesce((SELECT value FROM meta WHERE key = '{META_LABEL_FLOOR}'), 0)) + 1),"
    f" {', '.join('?' * 19)})"
)
UPDATE_STATE = "UPDATE versions SET state = ?, seq = ? WHERE id = ?"
#: Remove a row from the keyword index (external content: it needs the text the row was indexed with).
FTS_DELETE = "INSERT INTO fts (fts, rowid, content) VALUES ('delete', ?, ?)"
#: Keyword-index the live winners among the rows just inserted, named by their
#: seqs (a JSON list), in one statement per batch (the writers run it after
#: INSERT_VERSION, in the same round trip: nothing to read first).
FTS_NEW_ROWS = (
    "INSERT INTO fts (rowid, content) SELECT id, content FROM versions"
    f" WHERE seq IN (SELECT value FROM json_each(?)) AND {LIVE}"
)
LABEL_FLOOR = f"SELECT value FROM meta WHERE key = '{META_LABEL_FLOOR}'"
RAISE_LABEL_FLOOR = (
    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)"
)
#: The store's change number: the highest seq handed out, even if its row was deleted since.
MAX_SEQ = (
    "SELECT max((SELECT coalesce(max(seq), 0) FROM versions),"
    f" coalesce((SELECT value FROM meta WHERE key = '{META_NEXT_SEQ}'), 1) - 1)"
)
PUT_META = "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
MERGE_VECTOR = (
    "INSERT INTO vector (replica, counter) VALUES (?, ?)"
    " ON CONFLICT (replica) DO UPDATE SET counter = max(counter, excluded.counter)"
)
# What merging needs of a version, for the memories named in a JSON list.
MERGE_ROWS = (
    "SELECT id, memory_id, origin, counter, context, hlc, deleted, state FROM versions"
    " WHERE memory_id IN (SELECT value FROM json_each(?))"
)
MEMORY_COLUMNS = (
    "v.memory_id, v.content, v.kind, v.project, v.tags, v.metadata, v.created_at, v.updated_at, v.importance,"
    " v.origin, v.counter, v.deleted,"
    " (SELECT count(*) FROM versions s WHERE s.memory_id = v.memory_id AND s.state = 1)"
)
INFO_COLUMNS = "memory_id, origin, counter, state, deleted, hlc, content, kind, project, tags, updated_at"


# Opening -----------------------------------------------------------------------------------------


async def configure(db: Database) -> None:
    """Set up a freshly opened connection: write-ahead logging, NORMAL sync, foreign keys."""
    # Takes effect only on a file without tables yet (a store being created).
    await db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    mode = await db.fetchvalue("PRAGMA journal_mode = WAL")
    if str(mode).lower() != "wal":
        raise StoreError(f"the store at {db.path} cannot use write-ahead logging (journal mode {mode})")
    # NORMAL in WAL mode: a committed transaction survives the process being
    # killed; only a power cut may lose the last few commits, never corrupt.
    await db.execute("PRAGMA synchronous = NORMAL")
    await db.execute("PRAGMA foreign_keys = ON")


async def migrate(db: Database) -> None:
    """Bring the file's schema up to :data:`SCHEMA_VERSION`; a file written by a newer peer is refused."""
    version = int(await db.fetchvalue("PRAGMA user_version"))
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"this store was written by a newer peer (schema {version} > {SCHEMA_VERSION}); upgrade peer"
        )
    if version == SCHEMA_VERSION:
        return
    async with db.transaction():
        # Re-read under the write lock: another process may have migrated meanwhile.
        version = int(await db.fetchvalue("PRAGMA user_version"))
        for step in MIGRATIONS[version:]:
            for statement in step:
                await db.execute(statement)
        await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

"""Rows in and out of the store: row converters, field checks, and keyword-query building.

Pure functions over the SQL text of :mod:`.schema`; :class:`~peer.store.Store`
calls them. The field checks raise :class:`StoreError` with a message that
says what to change; the converters turn result rows (in the column order
of :data:`.schema.MEMORY_COLUMNS`, :data:`.schema.INFO_COLUMNS`,
:data:`.schema.MERGE_ROWS`) into the records the store hands out, and a
sealed version into the row :data:`.schema.INSERT_VERSION` inserts.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from peer.aio import Row
from peer.memory import Memory, VersionInfo
from protocol import (
    MAX_CONTENT_BYTES,
    MAX_EMBEDDING_BYTES,
    Dot,
    MemoryBody,
    SealedVersion,
    StoreError,
    VersionMeta,
    VersionState,
    canonical_json,
    stored_embedding,
    valid_kind,
)

__all__ = [
    "STATE_NAMES",
    "MergeRow",
    "memory_from_row",
    "info_from_row",
    "version_row",
    "embedding_of",
    "context_text",
    "parse_context",
    "json_list",
    "canonical_memory_id",
    "normalize_tags",
    "check_kind",
    "metadata_text",
    "check_importance",
    "check_content",
    "check_embedding",
    "COMMON_WORD_DOCS",
    "fts_words",
    "fts_query",
    "rare_words",
]


# Rows to records and back -------------------------------------------------------------------------


STATE_NAMES = {VersionState.WINNER: "winner", VersionState.SIBLING: "sibling", VersionState.SUPERSEDED: "superseded"}


@dataclass(slots=True)
class MergeRow:
    """A stored version as merging sees it (from ``MERGE_ROWS``)."""

    id: int
    memory_id: str
    meta: VersionMeta
    state: VersionState

    @classmethod
    def from_row(cls, row: Row) -> MergeRow:
        rowid, memory_id, origin, counter, context, hlc, deleted, state = row
        return cls(
            id=rowid,
            memory_id=memory_id,
            meta=VersionMeta(Dot(origin, counter), parse_context(context), hlc, bool(deleted)),
            state=VersionState(state),
        )


def memory_from_row(row: Row) -> Memory:
    (memory_id, content, kind, project, tags, metadata, created_at, updated_at, importance, origin, counter,
     deleted, siblings) = row
    return Memory(
        id=memory_id,
        content=content,
        kind=kind,
        project=project,
        tags=tuple(json.loads(tags)),
        metadata=json.loads(metadata),
        created_at=created_at,
        updated_at=updated_at,
        importance=importance,
        version=f"{origin}:{counter}",
        siblings=siblings,
        deleted=bool(deleted),
    )


def info_from_row(row: Row) -> VersionInfo:
    memory_id, origin, counter, state, deleted, hlc, content, kind, project, tags, updated_at = row
    return VersionInfo(
        memory_id=memory_id,
        version=f"{origin}:{counter}",
        state=STATE_NAMES[VersionState(state)],
        deleted=bool(deleted),
        hlc=hlc,
        content=content,
        kind=kind,
        project=project,
        tags=tuple(json.loads(tags)),
        updated_at=updated_at,
    )


#: SQLite keeps integers below 2^63; the protocol allows clock times up to 2^78 (2^62 << 16).
MAX_STORED_HLC: Final = 2**63 - 1


def stored_hlc(hlc: int) -> int:
    """A received clock time as stored and compared here: times beyond SQLite's range count as its maximum.

    Every device stores and compares the same way, so they still agree on
    winners; only versions stamped past the year 4 million tie on time.
    """
    return min(hlc, MAX_STORED_HLC)


def version_row(
    sealed: SealedVersion, body: MemoryBody, state: VersionState, seq: int
) -> tuple[Any, ...]:
    h = sealed.header
    return (
        h.memory_id, h.dot.origin, h.dot.counter, int(state), seq, stored_hlc(h.hlc), int(body.deleted),
        context_text(h.context), body.kind, body.project, body.created_at, body.updated_at, body.importance,
        json.dumps(list(body.tags), ensure_ascii=False) if body.tags else "[]", body.metadata, body.embedder,
        body.content,
        b"", sealed.encode(),  # the vector only inside `sealed` (schema step 4; see embedding_of)
    )


def embedding_of(sealed: bytes, group_keys: Mapping[int, bytes]) -> bytes:
    """The vector of a stored version, decrypted from its sealed bytes (the store keeps it nowhere else).

    No signature check: the version was verified when it was stored. About
    10 µs (the header parsed as far as the key derivation needs, decryption,
    the body's other fields skipped), against 1.5 kB a row saved.
    """
    return stored_embedding(sealed, group_keys)


def context_text(context: Iterable[Dot]) -> str:
    return " ".join(map(str, context))


def parse_context(text: str) -> tuple[Dot, ...]:
    return tuple(Dot.parse(part) for part in text.split()) if text else ()


def json_list(values: Iterable[Any]) -> str:
    return json.dumps(list(values))


# Field checks (raise StoreError) ------------------------------------------------------------------


def canonical_memory_id(memory_id: str) -> str:
    try:
        return str(uuid.UUID(memory_id))
    except ValueError as e:
        raise StoreError(f"{memory_id!r} is not a memory id (a UUID)") from e


def normalize_tags(tags: Iterable[str]) -> tuple[str, ...]:
    if isinstance(tags, str):
        raise StoreError("tags must be a list of words, not one string")
    return tuple(sorted({t.strip() for t in tags if t.strip()}))


def check_kind(kind: str) -> str:
    if not valid_kind(kind):
        raise StoreError(
            f"invalid kind {kind!r}: use a short lowercase word (fact, decision, procedure, error, preference,"
            " observation, session_summary, note, ...)"
        )
    return kind


def metadata_text(metadata: Mapping[str, Any]) -> str:
    if not isinstance(metadata, Mapping):
        raise StoreError("metadata must be a mapping of names to JSON values")
    try:
        return canonical_json(dict(metadata))
    except (TypeError, ValueError) as e:
        raise StoreError(f"metadata cannot be stored as JSON: {e}") from e


def check_importance(importance: float | None) -> float | None:
    if importance is None:
        return None
    if not (isinstance(importance, (int, float)) and math.isfinite(importance) and 0.0 <= importance <= 1.0):
        raise StoreError(f"importance must be between 0 and 1, not {importance!r}")
    return float(importance)


def check_content(content: str) -> str:
    if not content.strip():
        raise StoreError("a memory needs some content")
    if len(content.encode("utf-8")) > MAX_CONTENT_BYTES:
        raise StoreError(f"a memory's content is limited to {MAX_CONTENT_BYTES} bytes")
    return content


def check_embedding(embedding: bytes | None, embedder: str) -> tuple[bytes, str]:
    if not embedding:
        return b"", ""
    if not embedder:
        raise StoreError("an embedding needs the id of the embedder that made it")
    if len(embedding) % 4 or len(embedding) > MAX_EMBEDDING_BYTES:
        raise StoreError(f"an embedding is float32 values, at most {MAX_EMBEDDING_BYTES} bytes")
    return bytes(embedding), embedder


# Keyword search (FTS5) ----------------------------------------------------------------------------


#: A word found in more memories than this says little about any of them,
#: and scoring every one of them is what makes keyword search slow on a big
#: store: such words are left out of the query while a rarer word remains.
COMMON_WORD_DOCS = 2000
_MAX_QUERY_WORDS = 32


def fts_words(text: str) -> list[str]:
    """The distinct words of arbitrary user text, as the FTS5 tokenizer would see them (folded)."""
    words: dict[str, None] = {}
    for word in re.findall(r"\w+", text):
        decomposed = unicodedata.normalize("NFKD", word)
        folded = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
        if folded:
            words.setdefault(folded)
    return list(words)[:_MAX_QUERY_WORDS]


def fts_query(words: Sequence[str]) -> str:
    """Words as a safe FTS5 query: each quoted (no operator survives), any of them may match."""
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


def rare_words(words: Sequence[str], frequency: Mapping[str, int]) -> list[str]:
    """The words worth searching for: those in at most :data:`COMMON_WORD_DOCS` memories, else the rarest one."""
    rare = [w for w in words if frequency.get(w, 0) <= COMMON_WORD_DOCS]
    if not rare:
        rare = [min(words, key=lambda w: frequency.get(w, 0))]
    return rare

"""Plaintext interop: ``peer export`` (NDJSON) and ``peer import`` (peer's NDJSON, Claude Memory, ai-mem).

Theory of operation
-------------------
An import runs in three steps, and only the last one writes.

1. *Read.* The reader for the file's format (sniffed from its first bytes
   with ``--format auto``) turns each memory of the file into a
   :class:`Record`: peer's model (id, content, kind, project, tags,
   metadata, created_at, updated_at, importance), the version a peer export
   was taken at, and the vector the file carries, if any. Every check that
   can fail happens here and names the line (or, in a JSON document, the
   memory), so a file with one bad line is refused whole before anything
   is compared or written. An id that appears more than once: the last
   occurrence wins, as in a log of changes, and the report counts the
   earlier ones it dropped.

2. *Plan.* Each record is compared with every version the store holds of
   its id (:meth:`Store.memory_versions`), giving one :class:`Action`. Only
   what a person would call the memory is compared (content, kind,
   project, tags, metadata, importance), never timestamps, so importing the
   same file twice writes nothing the second time. ``--dry-run`` stops
   here and reports the counts.

3. *Apply.* Vectors that come with the file are used when this device's
   embedder made them (the same embedder id, or an all-MiniLM-L6-v2 name
   with the embedder's dimensions); the other memories are embedded. Then
   every version is written in one transaction (:meth:`Store.write_imports`),
   which re-checks that no memory changed since the plan.

Strategies, for an id the store holds with other content. ``skip`` keeps
the local memory. ``overwrite`` writes the imported one as a version that
supersedes every live local version (a forgotten memory comes back).
``merge`` (the default) reasons with versions, like a sync:

- the file holds a state this store has already moved past (a superseded
  version with the same fields): the local memory is newer, nothing is
  written (skipped);
- the file names the version it was exported at and that version is still
  the local winner: only the file changed, so the import supersedes it;
- otherwise both sides changed: the import is written *concurrent* with
  the local winner (its context names only the version it was exported
  from, when this store holds it), so both stay, as siblings that
  ``peer conflicts`` lists. The newer by ``updated_at`` wins: a newer
  import gets the clock's next time; an older one a time just under the
  local winner's, so the local memory stays the winner;
- a forgotten memory comes back only if the import is newer than the forget.

Ids are kept. Peer memory ids are UUIDs; a foreign id that is not one maps
to ``uuid5(namespace, "<format>:<id>")``, the same on every import, and the
original is kept in the memory's metadata with the other fields peer's
model has no place for (``metadata["claude_memory"]``, ``metadata["ai_mem"]``).
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import io
import json
import math
import re
import tarfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, NoReturn

from peer.store import ImportedVersion, Store
from protocol import (
    MAX_CONTENT_BYTES,
    MAX_FIELD_BYTES,
    DecodeError,
    Dot,
    canonical_json,
    valid_kind,
)

from peer.errors import ImportFormatError, PeerError
from peer.memory import Draft, Memory

if TYPE_CHECKING:
    from peer.search.embedder import Embedder

    from peer.device import Device

__all__ = [
    "FORMATS",
    "STRATEGIES",
    "EXPORT_FORMAT",
    "FOREIGN_ID_NAMESPACE",
    "Record",
    "ImportFile",
    "Action",
    "Step",
    "ImportPlan",
    "ImportReport",
    "sniff_format",
    "read_import",
    "read_import_file",
    "plan_import",
    "apply_import",
    "export_memories",
    "vector_is_reusable",
]

FORMATS = ("ndjson", "claude-memory", "ai-mem")
STRATEGIES = ("skip", "overwrite", "merge")

#: The ``peer_export`` value of the header line this peer writes and reads.
EXPORT_FORMAT = 1

#: Foreign ids that are not UUIDs become uuid5(this, "<format>:<id>").
FOREIGN_ID_NAMESPACE = uuid.UUID("0dcd1b66-c48d-4811-a637-cbced949dc28")

#: A file read whole into memory; bigger ones are refused with a message.
MAX_IMPORT_BYTES = 1 << 30
#: Limits on what a .tar.gz backup may hold, checked before reading a member.
MAX_ARCHIVE_MEMBERS = 64
MAX_ARCHIVE_BYTES = 4 << 30
MAX_MEMBER_BYTES = {
    "memories.json": MAX_IMPORT_BYTES // 2,
    "embeddings.npz": MAX_IMPORT_BYTES,
    "manifest.json": 1 << 20,
    "checksums.sha256": 1 << 20,
}
_MAX_TAGS = 4096

#: Memories embedded per model call batch (and per progress step).
EMBED_BATCH = 256
#: Ids looked up in the store per query while planning.
_LOOKUP_BATCH = 2000

# Fields of one memory line of peer's NDJSON export, in the order written.
_PEER_FIELDS = (
    "id", "content", "kind", "project", "tags", "metadata", "created_at", "updated_at", "importance", "version",
)

_CLAUDE_KINDS = {
    "preference": "preference",
    "fact": "fact",
    "event": "observation",
    "workflow": "procedure",
    "context": "note",
    "code": "note",
}
_AI_MEM_KINDS = {
    "decision": "decision",
    "bugfix": "error",
    "feature": "note",
    "refactor": "note",
    "discovery": "observation",
    "change": "note",
    "interaction": "observation",
    "tool_output": "observation",
    "file_content": "note",
    "note": "note",
    "summary": "session_summary",
    "preference": "preference",
    "convention": "procedure",
}
#: Names under which other tools store all-MiniLM-L6-v2 vectors (compared lowercased).
_MINILM_NAMES = ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
_MINILM_DIM = 384


# Records -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One memory of an import file, mapped onto peer's model."""

    id: str
    content: str
    kind: str
    project: str | None
    tags: tuple[str, ...]
    metadata: dict[str, Any]
    created_at: float
    updated_at: float
    importance: float | None
    version: str | None = None  # the version a peer export was taken at
    embedding_model: str | None = None
    vector: bytes | None = field(default=None, repr=False)  # little-endian float32, unit length

    def same_memory(self, memory: Memory) -> bool:
        """Whether ``memory`` says the same (timestamps aside)."""
        return (
            not memory.deleted
            and memory.content == self.content
            and memory.kind == self.kind
            and memory.project == self.project
            and memory.tags == self.tags
            and memory.metadata == self.metadata
            and memory.importance == self.importance
        )

    def draft(self) -> Draft:
        return Draft(
            content=self.content,
            kind=self.kind,
            project=self.project,
            tags=self.tags,
            metadata=self.metadata,
            importance=self.importance,
            id=self.id,
            created_at=self.created_at,
        )


@dataclass(frozen=True, slots=True)
class ImportFile:
    """What a reader made of a file: its records (one per id) and how many duplicates it dropped."""

    name: str
    format: str
    records: tuple[Record, ...]
    duplicates: int = 0


class _Bad(Exception):
    """A problem with one value, reported with where it is by the reader."""


def _fail(name: str, where: str, problem: str) -> NoReturn:
    place = f"{name} {where}" if where else name
    raise ImportFormatError(f"{place}: {problem}; nothing was imported")


def _dedupe(records: Iterable[Record]) -> tuple[tuple[Record, ...], int]:
    by_id: dict[str, Record] = {}
    total = 0
    for record in records:
        total += 1
        by_id.pop(record.id, None)  # the last occurrence, at its own place in the file
        by_id[record.id] = record
    return tuple(by_id.values()), total - len(by_id)


# Field checks (raise _Bad) --------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _utf8_size(text: str, key: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        # JSON can spell a lone surrogate ("\ud800"); no text store can hold one.
        raise _Bad(f'"{key}" holds an unpaired surrogate escape, which is not text') from None


def _content(value: Any, key: str = "content") -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f'"{key}" must be a non-empty string')
    if _utf8_size(value, key) > MAX_CONTENT_BYTES:
        raise _Bad(f'"{key}" is longer than {MAX_CONTENT_BYTES:,} bytes')
    return value


def _optional_text(value: Any, key: str, limit: int = MAX_FIELD_BYTES) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Bad(f'"{key}" must be a string')
    if _utf8_size(value, key) > limit:
        raise _Bad(f'"{key}" is longer than {limit:,} bytes')
    return value


def _project(value: Any, key: str = "project") -> str | None:
    return _optional_text(value, key) or None


def _tags(value: Any, key: str = "tags") -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise _Bad(f'"{key}" must be a list of strings')
    tags = tuple(sorted({t.strip() for t in value if t.strip()}))
    if len(tags) > _MAX_TAGS or any(_utf8_size(t, key) > MAX_FIELD_BYTES for t in tags):
        raise _Bad(f'"{key}" has too many or too long tags')
    return tags


def _object(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Bad(f'"{key}" must be an object')
    return value


def _checked_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    try:
        text = canonical_json(metadata)
    except (TypeError, ValueError) as e:
        raise _Bad(f"the metadata cannot be stored as JSON ({e})") from None
    if _utf8_size(text, "metadata") > MAX_CONTENT_BYTES:
        raise _Bad(f"the metadata is larger than {MAX_CONTENT_BYTES:,} bytes")
    # As the store will hand it back: what the comparisons of the plan see.
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def _importance(value: Any, key: str = "importance") -> float | None:
    if value is None:
        return None
    if not _is_number(value) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise _Bad(f'"{key}" must be a number between 0 and 1')
    return float(value)


def _timestamp(value: Any, key: str) -> float | None:
    """Seconds since the epoch, from a number or an ISO 8601 date and time (UTC when no zone is given)."""
    if value is None:
        return None
    if _is_number(value):
        if not math.isfinite(value):
            raise _Bad(f'"{key}" must be a finite number')
        return float(value)
    if isinstance(value, str):
        try:
            when = _dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise _Bad(f'"{key}" is not a date and time ({value[:40]!r})') from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=_dt.UTC)
        return when.timestamp()
    raise _Bad(f'"{key}" must be a number of seconds or an ISO 8601 date')


def _kind(value: Any, key: str = "kind") -> str:
    if value is None:
        return "note"
    if not isinstance(value, str) or not valid_kind(value):
        raise _Bad(f'"{key}" must be a short lowercase word (fact, decision, procedure, note, ...)')
    return value


def _mapped_kind(value: Any, table: Mapping[str, str], key: str) -> str:
    if value is None:
        return "note"
    if not isinstance(value, str):
        raise _Bad(f'"{key}" must be a string')
    mapped = table.get(value.strip().lower())
    if mapped is not None:
        return mapped
    # An unknown category that reads as a kind stays what it is; the
    # original is kept in the metadata either way.
    word = value.strip().lower()
    return word if valid_kind(word) else "note"


def _peer_id(value: Any, key: str = "id") -> str:
    if not isinstance(value, str):
        raise _Bad(f'"{key}" must be a memory id (a UUID)')
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise _Bad(f'"{key}" {value[:60]!r} is not a memory id (a UUID)') from None


def _foreign_id(value: Any, source: str, key: str = "id") -> tuple[str, str]:
    """(peer id, the id as the other tool wrote it)."""
    if _is_number(value) and float(value).is_integer():
        value = str(int(value))
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f'"{key}" must be a non-empty string')
    if _utf8_size(value, key) > 1024:
        raise _Bad(f'"{key}" is longer than 1,024 bytes')
    try:
        return str(uuid.UUID(value)), value
    except ValueError:
        return str(uuid.uuid5(FOREIGN_ID_NAMESPACE, f"{source}:{value}")), value


def _vector(value: Any, key: str = "embedding") -> bytes | None:
    """A list of numbers as little-endian float32 of unit length (None for an empty or zero vector)."""
    import numpy as np

    if value is None:
        return None
    if not isinstance(value, list):
        raise _Bad(f'"{key}" must be a list of numbers')
    if not value:
        return None
    if len(value) > 4096:
        raise _Bad(f'"{key}" has more than 4,096 dimensions')
    # numpy, not a Python loop: 10,000 vectors of 384 numbers take 20 ms, not 15 s.
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):  # ragged nested lists
        raise _Bad(f'"{key}" must be a list of numbers') from None
    if array.ndim != 1 or array.dtype.kind not in "iuf":
        raise _Bad(f'"{key}" must be a list of numbers')
    return _unit_float32(array)


def _unit_float32(values: Any) -> bytes | None:
    """A 1-D array of numbers as little-endian float32 bytes of unit length (None for a zero vector)."""
    import numpy as np

    array = np.asarray(values, dtype="<f8")
    if not np.isfinite(array).all():
        raise _Bad("a vector holds a value that is not a finite number")
    norm = float(np.linalg.norm(array))
    if norm == 0.0:
        return None
    return (array / norm).astype("<f4").tobytes()


def _only(obj: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = set(obj) - set(allowed)
    if unknown:
        raise _Bad(f"unknown field(s) {', '.join(sorted(unknown))}")


def _extras(obj: Mapping[str, Any], keys: Iterable[str], original_id: str | None, peer_id: str) -> dict[str, Any]:
    """The fields peer's model has no place for, with the tool's own id when peer's differs."""
    kept = {k: obj[k] for k in keys if k in obj and obj[k] is not None}
    if original_id is not None and original_id != peer_id:
        kept["id"] = original_id
    return kept


# Peer's NDJSON -----------------------------------------------------------------------------


def _lines(data: bytes, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, JSON object) for every non-blank line."""
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            _fail(name, f"line {number}", "not UTF-8 text")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            _fail(name, f"line {number}", f"not valid JSON ({e.msg} at column {e.colno})")
        except RecursionError:
            _fail(name, f"line {number}", "JSON nested too deeply")
        if not isinstance(obj, dict):
            _fail(name, f"line {number}", "expected a JSON object")
        yield number, obj


def _peer_record(obj: Mapping[str, Any]) -> Record:
    _only(obj, _PEER_FIELDS)
    if "id" not in obj:
        raise _Bad('"id" is missing (peer import keeps ids; `peer add --file` adds memories without one)')
    memory_id = _peer_id(obj["id"])
    created = _timestamp(obj.get("created_at"), "created_at")
    updated = _timestamp(obj.get("updated_at"), "updated_at")
    now = time.time()
    version = _optional_text(obj.get("version"), "version", 256)
    if version is not None:
        try:
            Dot.parse(version)
        except DecodeError:
            raise _Bad(f'"version" {version[:60]!r} is not a version (REPLICA:COUNTER)') from None
    return Record(
        id=memory_id,
        content=_content(obj.get("content")),
        kind=_kind(obj.get("kind")),
        project=_project(obj.get("project")),
        tags=_tags(obj.get("tags")),
        metadata=_checked_metadata(_object(obj.get("metadata"), "metadata")),
        created_at=created if created is not None else (updated if updated is not None else now),
        updated_at=updated if updated is not None else (created if created is not None else now),
        importance=_importance(obj.get("importance")),
        version=version,
    )


def _read_ndjson(data: bytes, name: str) -> ImportFile:
    records: list[Record] = []
    announced: int | None = None
    last = 0
    for number, obj in _lines(data, name):
        last = number
        if "peer_export" in obj:
            if records or announced is not None:
                _fail(name, f"line {number}", "a header line after the first line")
            announced = _header_count(obj, name, number)
            continue
        try:
            records.append(_peer_record(obj))
        except _Bad as e:
            _fail(name, f"line {number}", str(e))
    if announced is not None and announced != len(records):
        _fail(
            name,
            f"line {last + 1}",
            f"the file ends after {len(records):,} memories but its header announces {announced:,}"
            " (it was cut short or edited)",
        )
    unique, duplicates = _dedupe(records)
    return ImportFile(name, "ndjson", unique, duplicates)


def _header_count(obj: Mapping[str, Any], name: str, number: int) -> int | None:
    version = obj.get("peer_export")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        _fail(name, f"line {number}", '"peer_export" must be a format number')
    if version > EXPORT_FORMAT:
        _fail(name, f"line {number}", f"written by a newer peer (export format {version}); upgrade peer")
    count = obj.get("count")
    if count is None:
        return None
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        _fail(name, f"line {number}", '"count" must be a whole number')
    return count


# Claude Memory RAG Server ---------------------------------------------------------------------

_CLAUDE_FIELDS = (
    "id", "content", "category", "context_level", "scope", "project_name", "importance", "embedding_model",
    "embedding", "created_at", "updated_at", "last_accessed", "lifecycle_state", "tags", "metadata", "provenance",
)
#: Kept under metadata["claude_memory"]; so is any field this list does not name.
_CLAUDE_EXTRAS = (
    "category", "context_level", "scope", "last_accessed", "lifecycle_state", "embedding_model", "provenance",
)


def _claude_record(obj: Mapping[str, Any], vectors: Mapping[str, bytes | None], default_model: str | None) -> Record:
    memory_id, original = _foreign_id(obj.get("id"), "claude-memory")
    created = _timestamp(obj.get("created_at"), "created_at")
    updated = _timestamp(obj.get("updated_at"), "updated_at")
    now = time.time()
    unknown = [k for k in obj if k not in _CLAUDE_FIELDS]
    tool = _extras(obj, [*_CLAUDE_EXTRAS, *unknown], original, memory_id)
    metadata = dict(_object(obj.get("metadata"), "metadata"))
    if tool:
        metadata["claude_memory"] = tool
    model = _optional_text(obj.get("embedding_model"), "embedding_model", 256) or default_model
    vector = _vector(obj.get("embedding"))
    if vector is None:
        vector = vectors.get(str(obj.get("id")))
    return Record(
        id=memory_id,
        content=_content(obj.get("content")),
        kind=_mapped_kind(obj.get("category"), _CLAUDE_KINDS, "category"),
        project=_project(obj.get("project_name"), "project_name"),
        tags=_tags(obj.get("tags")),
        metadata=_checked_metadata(metadata),
        created_at=created if created is not None else (updated if updated is not None else now),
        updated_at=updated if updated is not None else (created if created is not None else now),
        importance=_importance(obj.get("importance")),
        embedding_model=model,
        vector=vector,
    )


def _claude_memories(
    doc: Any, name: str, prefix: str, vectors: Mapping[str, bytes | None] | None = None, model: str | None = None
) -> ImportFile:
    if isinstance(doc, dict):
        memories = doc.get("memories")
        if not isinstance(memories, list):
            _fail(name, prefix or "at the top", 'expected an object with a "memories" list (a Claude Memory export)')
        count = doc.get("memory_count")
        if _is_number(count) and count != len(memories):
            _fail(
                name,
                prefix or "at the top",
                f'"memory_count" says {count} but the file holds {len(memories):,} memories (it was cut short or edited)',
            )
        model = model or (doc.get("embedding_model") if isinstance(doc.get("embedding_model"), str) else None)
    elif isinstance(doc, list):
        memories = doc
    else:
        _fail(name, prefix or "at the top", 'expected an object with a "memories" list (a Claude Memory export)')
    records: list[Record] = []
    for number, obj in enumerate(memories, start=1):
        where = f"{prefix + ' ' if prefix else ''}memory {number}"
        if not isinstance(obj, dict):
            _fail(name, where, "expected a JSON object")
        if isinstance(obj.get("id"), str):
            where += f" (id {obj['id'][:40]})"
        try:
            records.append(_claude_record(obj, vectors or {}, model))
        except _Bad as e:
            _fail(name, where, str(e))
    unique, duplicates = _dedupe(records)
    return ImportFile(name, "claude-memory", unique, duplicates)


def _parse_json_document(data: bytes, name: str, prefix: str = "") -> Any:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        _fail(name, prefix or "at the top", "not UTF-8 text")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        _fail(name, f"{prefix + ' ' if prefix else ''}line {e.lineno}", f"not valid JSON ({e.msg} at column {e.colno})")
    except RecursionError:
        _fail(name, prefix or "at the top", "JSON nested too deeply")


def _read_claude_json(data: bytes, name: str) -> ImportFile:
    return _claude_memories(_parse_json_document(data, name), name, "")


def _archive_members(data: bytes, name: str) -> dict[str, bytes]:
    """The files of a Claude Memory .tar.gz backup, by base name, read with limits and no extraction."""
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ImportFormatError(f"{name} is not a readable .tar.gz backup ({e}); nothing was imported") from None
    files: dict[str, bytes] = {}
    with archive:
        try:
            members = []
            declared = 0
            for member in archive:
                members.append(member)
                declared += max(0, member.size)
                if len(members) > MAX_ARCHIVE_MEMBERS:
                    _fail(name, "", f"holds more than {MAX_ARCHIVE_MEMBERS} entries; not a Claude Memory backup")
                if declared > MAX_ARCHIVE_BYTES:
                    # Stop before decompressing what would be skipped anyway.
                    _fail(name, "", f"unpacks to more than {MAX_ARCHIVE_BYTES >> 30} GiB; not a Claude Memory backup")
        except (tarfile.TarError, EOFError, OSError, _zlib_error()) as e:
            raise ImportFormatError(f"{name} is damaged ({e}); nothing was imported") from None
        for member in members:
            path = member.name
            parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
            if path.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", path):
                _fail(name, f"entry {path!r}", "an unsafe path; the backup is refused")
            if member.isdir():
                continue
            if not member.isfile():
                _fail(name, f"entry {path!r}", "not a regular file (links and devices are refused)")
            base = parts[-1] if parts else ""
            limit = MAX_MEMBER_BYTES.get(base)
            if limit is None:
                continue  # something else the tool put there: not read
            if base in files:
                _fail(name, f"entry {path!r}", f"a second {base}")
            if member.size > limit:
                _fail(name, base, f"larger than {limit:,} bytes")
            try:
                handle = archive.extractfile(member)
                body = handle.read(limit + 1) if handle is not None else b""
            except (tarfile.TarError, EOFError, OSError, _zlib_error()) as e:
                raise ImportFormatError(f"{name} is damaged at {base} ({e}); nothing was imported") from None
            if len(body) != member.size:
                _fail(name, base, "truncated")
            files[base] = body
    return files


def _zlib_error() -> type[Exception]:
    import zlib

    return zlib.error


def _verify_checksums(files: Mapping[str, bytes], name: str) -> None:
    listing = files.get("checksums.sha256")
    if listing is None:
        _fail(name, "", "has no checksums.sha256; it is not a complete Claude Memory backup")
    sums: dict[str, str] = {}
    for number, line in enumerate(listing.decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        match = re.fullmatch(r"\s*([0-9a-fA-F]{64})\s+\*?(.+?)\s*", line)
        if match is None:
            _fail(name, f"checksums.sha256 line {number}", "expected a SHA-256 and a file name")
        sums[match.group(2).replace("\\", "/").rsplit("/", 1)[-1]] = match.group(1).lower()
    for base, body in files.items():
        if base == "checksums.sha256":
            continue
        expected = sums.get(base)
        if expected is None:
            _fail(name, base, "has no checksum in checksums.sha256; the backup is refused")
        if hashlib.sha256(body).hexdigest() != expected:
            _fail(name, base, "checksum mismatch (the backup is damaged or was changed)")
    for base in sums:
        if base in MAX_MEMBER_BYTES and base not in files:
            _fail(name, base, "listed in checksums.sha256 but missing from the archive")


def _npz_vectors(data: bytes, name: str) -> dict[str, bytes | None]:
    """Vectors by memory id from embeddings.npz: arrays "ids" and "embeddings", or one array per id.

    Each array's header is read and its size checked before the array is,
    so a small file cannot make numpy allocate gigabytes.
    """
    import zipfile

    import numpy as np

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        arrays: dict[str, Any] = {}
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as f:
                major, _ = np.lib.format.read_magic(f)
                reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, _, dtype = reader(f)
            if dtype.hasobject:
                _fail(name, "embeddings.npz", "holds Python objects; only numbers and strings are read")
            if math.prod(shape) * max(1, dtype.itemsize) > MAX_IMPORT_BYTES:
                _fail(name, "embeddings.npz", "holds an array larger than 1 GiB")
            with archive.open(info) as f:
                arrays[info.filename[: -len(".npy")]] = np.lib.format.read_array(f, allow_pickle=False)
    except ImportFormatError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        _fail(name, "embeddings.npz", f"not a readable .npz file ({e})")
    vectors: dict[str, bytes | None] = {}
    if "ids" in arrays and ("embeddings" in arrays or "vectors" in arrays):
        ids = arrays["ids"]
        matrix = arrays["embeddings"] if "embeddings" in arrays else arrays["vectors"]
        if ids.ndim != 1 or matrix.ndim != 2 or len(ids) != len(matrix) or matrix.dtype.kind not in "fiu":
            _fail(name, "embeddings.npz", '"ids" and "embeddings" do not line up (one id per row of numbers)')
        rows = [(str(i), row) for i, row in zip(ids.tolist(), matrix, strict=True)]
    else:
        rows = [(key, array) for key, array in arrays.items()]
        if any(a.ndim != 1 or a.dtype.kind not in "fiu" for _, a in rows):
            _fail(name, "embeddings.npz", 'expected arrays "ids" and "embeddings", or one vector per memory id')
    for key, row in rows:
        try:
            vectors[key] = _unit_float32(row)
        except _Bad as e:
            _fail(name, "embeddings.npz", f"the vector of {key[:40]}: {e}")
    return vectors


def _read_claude_archive(data: bytes, name: str) -> ImportFile:
    files = _archive_members(data, name)
    if "memories.json" not in files:
        _fail(name, "", "has no memories.json; it is not a Claude Memory backup")
    _verify_checksums(files, name)
    model = None
    if "manifest.json" in files:
        manifest = _parse_json_document(files["manifest.json"], name, "manifest.json")
        if not isinstance(manifest, dict):
            _fail(name, "manifest.json", "expected a JSON object")
        if isinstance(manifest.get("embedding_model"), str):
            model = manifest["embedding_model"]
    vectors = _npz_vectors(files["embeddings.npz"], name) if "embeddings.npz" in files else {}
    doc = _parse_json_document(files["memories.json"], name, "memories.json")
    return _claude_memories(doc, name, "memories.json", vectors, model)


# ai-mem ----------------------------------------------------------------------------------------

_AI_MEM_FIELDS = (
    "id", "session_id", "project", "type", "concept", "title", "content", "summary", "created_at",
    "importance_score", "tags", "metadata", "content_hash", "diff", "assets",
)
_AI_MEM_EXTRAS = ("session_id", "type", "concept", "title", "summary", "content_hash", "diff", "assets")


def _ai_mem_record(obj: Mapping[str, Any]) -> Record:
    memory_id, original = _foreign_id(obj.get("id"), "ai-mem")
    created = _timestamp(obj.get("created_at"), "created_at")
    when = created if created is not None else time.time()
    for key in ("session_id", "concept", "title", "summary", "content_hash"):
        _optional_text(obj.get(key), key, MAX_CONTENT_BYTES)
    if obj.get("assets") is not None and not isinstance(obj["assets"], list):
        raise _Bad('"assets" must be a list')
    unknown = [k for k in obj if k not in _AI_MEM_FIELDS]
    tool = _extras(obj, [*_AI_MEM_EXTRAS, *unknown], original, memory_id)
    metadata = dict(_object(obj.get("metadata"), "metadata"))
    if tool:
        metadata["ai_mem"] = tool
    return Record(
        id=memory_id,
        content=_content(obj.get("content")),
        kind=_mapped_kind(obj.get("type"), _AI_MEM_KINDS, "type"),
        project=_project(obj.get("project")),
        tags=_tags(obj.get("tags")),
        metadata=_checked_metadata(metadata),
        created_at=when,
        updated_at=when,
        importance=_importance(obj.get("importance_score"), "importance_score"),
    )


def _read_ai_mem(data: bytes, name: str) -> ImportFile:
    records: list[Record] = []
    for number, obj in _lines(data, name):
        if "snapshot" in obj and "content" not in obj:
            # The header of a snapshot; several when snapshots were concatenated.
            if not isinstance(obj["snapshot"], dict):
                _fail(name, f"line {number}", '"snapshot" must be an object')
            continue
        try:
            records.append(_ai_mem_record(obj))
        except _Bad as e:
            _fail(name, f"line {number}", str(e))
    unique, duplicates = _dedupe(records)
    return ImportFile(name, "ai-mem", unique, duplicates)


# Reading a file --------------------------------------------------------------------------------


def sniff_format(data: bytes) -> str:
    """The format of an import file from its first bytes, or an ImportFormatError saying to pass --format."""
    if data[:2] == b"\x1f\x8b":
        return "claude-memory"  # a .tar.gz backup
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    first_line = head.split(b"\n", 1)[0].strip()
    first: Any = None
    if len(first_line) > 1 << 20:
        # One huge line (a compact JSON document): look at its start only.
        if re.match(rb'\{\s*"peer_export"', first_line):
            return "ndjson"
        if re.search(rb'"memories"\s*:', first_line[: 1 << 16]):
            return "claude-memory"
    else:
        try:
            first = json.loads(first_line) if first_line else None
        except (ValueError, RecursionError):
            first = None
    if isinstance(first, dict):
        if "peer_export" in first:
            return "ndjson"
        if "snapshot" in first and "content" not in first:
            return "ai-mem"
        if "memories" in first:
            return "claude-memory"
        if "session_id" in first or "importance_score" in first or "content_hash" in first:
            return "ai-mem"
        if "content" in first:
            return "ndjson"
    elif head.startswith(b"{") and re.search(rb'"memories"\s*:', head[:1 << 20]):
        return "claude-memory"  # one JSON document over many lines
    raise ImportFormatError(
        "cannot tell the format of this file; pass --format ndjson, claude-memory or ai-mem"
    )


def read_import(data: bytes, name: str, fmt: str = "auto") -> ImportFile:
    """Every memory of an import file, checked; an ImportFormatError naming the line otherwise."""
    if fmt == "auto":
        fmt = sniff_format(data)
    if fmt == "ndjson":
        return _read_ndjson(data, name)
    if fmt == "ai-mem":
        return _read_ai_mem(data, name)
    if fmt == "claude-memory":
        if data[:2] == b"\x1f\x8b":
            return _read_claude_archive(data, name)
        return _read_claude_json(data, name)
    raise ValueError(f"unknown import format {fmt!r}")


def read_import_file(path: str, fmt: str = "auto", stdin: IO[bytes] | None = None) -> ImportFile:
    """:func:`read_import` on a file (``-`` reads ``stdin``), refusing files over :data:`MAX_IMPORT_BYTES`."""
    if path == "-":
        if stdin is None:
            raise ValueError("reading `-` needs stdin")
        data = stdin.read(MAX_IMPORT_BYTES + 1)
        name = "stdin"
    else:
        name = path
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_IMPORT_BYTES + 1)
        except OSError as e:
            raise PeerError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > MAX_IMPORT_BYTES:
        raise ImportFormatError(f"{name} is larger than {MAX_IMPORT_BYTES >> 30} GiB; split it and import the parts")
    if not data.strip():
        raise ImportFormatError(f"{name} is empty; nothing was imported")
    return read_import(data, name, fmt)


# Planning ---------------------------------------------------------------------------------------


class Action(enum.Enum):
    NEW = "new"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    CONFLICT = "conflicts"  # written as a sibling of the local version


@dataclass(frozen=True, slots=True)
class Step:
    """What the import does with one record; the last three fields say how a written version is placed."""

    record: Record
    action: Action
    expected: str | None = None  # the local winner it was planned against
    supersedes: tuple[str, ...] | None = None
    loses: bool = False

    @property
    def writes(self) -> bool:
        return self.action in (Action.NEW, Action.UPDATED, Action.CONFLICT)


@dataclass(frozen=True, slots=True)
class ImportPlan:
    file: ImportFile
    strategy: str
    steps: tuple[Step, ...]

    def counts(self) -> dict[str, int]:
        out = {a.value: 0 for a in Action}
        for step in self.steps:
            out[step.action.value] += 1
        return out


def _plan_one(record: Record, versions: Sequence[tuple[str, Memory]], strategy: str) -> Step:
    if not versions:
        return Step(record, Action.NEW)
    winner = next(m for state, m in versions if state == "winner")
    live = [m for state, m in versions if state != "superseded"]
    if record.same_memory(winner):
        return Step(record, Action.UNCHANGED)
    if strategy == "skip":
        return Step(record, Action.SKIPPED)
    if strategy == "overwrite":
        return Step(record, Action.UPDATED, expected=winner.version)
    # merge
    if any(record.same_memory(m) for m in live):
        return Step(record, Action.UNCHANGED)  # already held, as a sibling
    if any(state == "superseded" and record.same_memory(m) for state, m in versions):
        return Step(record, Action.SKIPPED)  # a state this store has moved past
    newer = record.updated_at > winner.updated_at
    if winner.deleted:
        if newer:
            return Step(record, Action.UPDATED, expected=winner.version)
        return Step(record, Action.SKIPPED)
    held = {m.version for _, m in versions}
    base = record.version if record.version in held else None
    if base == winner.version:
        return Step(record, Action.UPDATED, expected=winner.version, supersedes=(base,))
    return Step(
        record,
        Action.CONFLICT,
        expected=winner.version,
        supersedes=(base,) if base is not None else (),
        loses=not newer,
    )


async def plan_import(store: Store, file: ImportFile, strategy: str = "merge") -> ImportPlan:
    """Compare every record of ``file`` with the store; writes nothing (this is ``--dry-run``)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}")
    steps: list[Step] = []
    records = file.records
    for at in range(0, len(records), _LOOKUP_BATCH):
        chunk = records[at : at + _LOOKUP_BATCH]
        held = await store.memory_versions(r.id for r in chunk)
        steps.extend(_plan_one(r, held.get(r.id, []), strategy) for r in chunk)
    return ImportPlan(file, strategy, tuple(steps))


# Applying ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What ``peer import`` prints."""

    plan: ImportPlan
    dry_run: bool
    vectors_reused: int = 0
    embedded: int = 0
    seconds: float = 0.0
    #: For the person: what went wrong after the import itself (the index catch-up).
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.plan.file.name,
            "format": self.plan.file.format,
            "strategy": self.plan.strategy,
            "dry_run": self.dry_run,
            "records": len(self.plan.steps),
            "duplicates": self.plan.file.duplicates,
            **self.plan.counts(),
            "vectors_reused": self.vectors_reused,
            "embedded": self.embedded,
            "seconds": round(self.seconds, 3),
        }

    def describe(self) -> str:
        counts = self.plan.counts()
        what = ", ".join(f"{counts[a.value]:,} {a.value}" for a in Action)
        file = self.plan.file
        head = f"{'would import' if self.dry_run else 'imported'} {file.name} ({file.format}): {what}"
        lines = [head if self.dry_run else f"{head} in {self.seconds:.1f} s"]
        if file.duplicates:
            lines.append(f"{file.duplicates:,} earlier occurrence(s) of repeated ids were dropped (the last one counts)")
        if counts[Action.CONFLICT.value]:
            lines.append("memories changed on both sides are kept as siblings: see `peer conflicts`")
        return "\n".join(lines)


def vector_is_reusable(model: str | None, embedder: Embedder) -> bool:
    """Whether vectors a file says ``model`` made can stand for ``embedder``'s."""
    if not model:
        return False
    if model == embedder.id:
        return True
    from peer.search.embedder import MINILM_ID

    return (
        model.strip().lower() in _MINILM_NAMES and embedder.id == MINILM_ID and embedder.dim == _MINILM_DIM
    )


async def apply_import(
    device: Device, plan: ImportPlan, progress: Callable[[int, int], None] | None = None
) -> ImportReport:
    """Embed what needs it, then write the plan in one transaction; then bring an existing index up to date."""
    started = time.monotonic()
    steps = [s for s in plan.steps if s.writes]
    if not steps:
        return ImportReport(plan, dry_run=False, seconds=time.monotonic() - started)
    embedder = device.embedder
    vectors: list[bytes | None] = []
    reused = 0
    for step in steps:
        r = step.record
        usable = (
            r.vector is not None
            and len(r.vector) == 4 * embedder.dim
            and vector_is_reusable(r.embedding_model, embedder)
        )
        vectors.append(r.vector if usable else None)
        reused += usable
    missing = [i for i, v in enumerate(vectors) if v is None]
    for at in range(0, len(missing), EMBED_BATCH):
        chunk = missing[at : at + EMBED_BATCH]
        for i, vector in zip(chunk, await device.embed([steps[i].record.content for i in chunk]), strict=True):
            vectors[i] = vector
        if progress is not None:
            progress(at + len(chunk), len(missing))
    await device.store.write_imports(
        [
            ImportedVersion(
                draft=step.record.draft(),
                updated_at=step.record.updated_at,
                embedding=vector,
                embedder=embedder.id,
                expected=step.expected,
                supersedes=step.supersedes,
                loses=step.loses,
            )
            for step, vector in zip(steps, vectors, strict=True)
        ]
    )
    # As after a sync: an index that exists is caught up now (reusing the
    # vectors just written); one never built is left to the first search.
    warning = await device.catch_up_index()
    return ImportReport(
        plan,
        dry_run=False,
        vectors_reused=reused,
        embedded=len(missing),
        seconds=time.monotonic() - started,
        warnings=(warning,) if warning else (),
    )


# Export -----------------------------------------------------------------------------------------


def _memory_line(memory: Memory) -> dict[str, Any]:
    out = memory.to_json()
    return {key: out[key] for key in _PEER_FIELDS}


async def export_memories(
    store: Store,
    out: IO[bytes],
    *,
    project: str | None = None,
    kind: str | None = None,
    since: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write the live memories (oldest change first) as peer's NDJSON to ``out``; returns how many.

    Forgotten memories (tombstones) are not written, nor the losing
    versions of a conflict: an export is what ``peer list`` shows.
    """
    memories = await store.list(project=project, kind=kind, since=since)
    memories.reverse()
    header = {
        "peer_export": EXPORT_FORMAT,
        "device_id": store.device_id,
        "group_id": store.group_id.hex(),
        "exported_at": time.time(),
        "count": len(memories),
        "filters": {"project": project, "kind": kind, "since": since},
    }
    out.write(_json_line(header))
    for done, memory in enumerate(memories, start=1):
        out.write(_json_line(_memory_line(memory)))
        if progress is not None and (done % 1000 == 0 or done == len(memories)):
            progress(done, len(memories))
    return len(memories)


def _json_line(value: Any) -> bytes:
    # ensure_ascii=False keeps the text readable; json escapes every
    # newline, so one object is always one line.
    return (json.dumps(value, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")

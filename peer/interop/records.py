"""What every import reader makes of a file: :class:`Record`, :class:`ImportFile`, and the field checks.

A reader (:mod:`.ndjson`, :mod:`.claude`, :mod:`.ai_mem`) turns each memory
of its file into a :class:`Record` with the checks below. Each check
returns the value as peer's model holds it or raises :class:`BadValue`;
the reader adds where the value is (:func:`refuse`), so one bad line
refuses the whole file before anything is compared or written.

Ids are kept. Peer memory ids are UUIDs; a foreign id that is not one maps
to ``uuid5(namespace, "<format>:<id>")``, the same on every import, and the
original is kept in the memory's metadata with the other fields peer's
model has no place for (``metadata["claude_memory"]``, ``metadata["ai_mem"]``).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from peer.errors import ImportFormatError
from peer.memory import Draft, Memory
from protocol import MAX_CONTENT_BYTES, MAX_FIELD_BYTES, canonical_json, valid_kind

__all__ = [
    "FOREIGN_ID_NAMESPACE",
    "MAX_IMPORT_BYTES",
    "Record",
    "ImportFile",
    "BadValue",
    "refuse",
    "dedupe",
    "json_lines",
    "is_number",
    "utf8_size",
    "check_content",
    "check_optional_text",
    "check_project",
    "check_tags",
    "check_object",
    "check_metadata",
    "check_importance",
    "check_timestamp",
    "check_kind",
    "map_kind",
    "check_peer_id",
    "check_foreign_id",
    "check_vector",
    "unit_float32",
    "check_only",
    "extras",
]

#: Foreign ids that are not UUIDs become uuid5(this, "<format>:<id>").
FOREIGN_ID_NAMESPACE = uuid.UUID("0dcd1b66-c48d-4811-a637-cbced949dc28")

#: A file read whole into memory; bigger ones are refused with a message.
MAX_IMPORT_BYTES = 1 << 30
_MAX_TAGS = 4096


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
    #: The tool keeps ``updated_at`` fixed across its own edits (ai-mem has only
    #: ``created_at``), so a local version with this same time was written by an
    #: earlier import of this record and never changed here (a local edit stamps
    #: the time of the edit): see the merge rules in :mod:`.plan`.
    fixed_time: bool = False
    #: The metadata key under which the tool's own fields are kept ("claude_memory"):
    #: a held memory with that key and a single version was written by an import
    #: and never changed since, anywhere (any change leaves a superseded version).
    tool: str | None = None

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
    #: What the reader left out or changed on the way, for the person (say it, never silently).
    notes: tuple[str, ...] = ()


class BadValue(Exception):
    """A problem with one value, reported with where it is by the reader."""


def refuse(name: str, where: str, problem: str) -> NoReturn:
    place = f"{name} {where}" if where else name
    raise ImportFormatError(f"{place}: {problem}; nothing was imported")


def dedupe(records: Iterable[Record]) -> tuple[tuple[Record, ...], int]:
    by_id: dict[str, Record] = {}
    total = 0
    for record in records:
        total += 1
        by_id.pop(record.id, None)  # the last occurrence, at its own place in the file
        by_id[record.id] = record
    return tuple(by_id.values()), total - len(by_id)


# Field checks (raise BadValue) --------------------------------------------------------------


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def utf8_size(text: str, key: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        # JSON can spell a lone surrogate ("\ud800"); no text store can hold one.
        raise BadValue(f'"{key}" holds an unpaired surrogate escape, which is not text') from None


def check_content(value: Any, key: str = "content") -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadValue(f'"{key}" must be a non-empty string')
    if utf8_size(value, key) > MAX_CONTENT_BYTES:
        raise BadValue(f'"{key}" is longer than {MAX_CONTENT_BYTES:,} bytes')
    return value


def check_optional_text(value: Any, key: str, limit: int = MAX_FIELD_BYTES) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadValue(f'"{key}" must be a string')
    if utf8_size(value, key) > limit:
        raise BadValue(f'"{key}" is longer than {limit:,} bytes')
    return value


def check_project(value: Any, key: str = "project") -> str | None:
    return check_optional_text(value, key) or None


def check_tags(value: Any, key: str = "tags") -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise BadValue(f'"{key}" must be a list of strings')
    tags = tuple(sorted({t.strip() for t in value if t.strip()}))
    if len(tags) > _MAX_TAGS or any(utf8_size(t, key) > MAX_FIELD_BYTES for t in tags):
        raise BadValue(f'"{key}" has too many or too long tags')
    return tags


def check_object(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadValue(f'"{key}" must be an object')
    return value


def check_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    try:
        text = canonical_json(metadata)
    except (TypeError, ValueError) as e:
        raise BadValue(f"the metadata cannot be stored as JSON ({e})") from None
    if utf8_size(text, "metadata") > MAX_CONTENT_BYTES:
        raise BadValue(f"the metadata is larger than {MAX_CONTENT_BYTES:,} bytes")
    # As the store will hand it back: what the comparisons of the plan see.
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def check_importance(value: Any, key: str = "importance") -> float | None:
    if value is None:
        return None
    if not is_number(value) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise BadValue(f'"{key}" must be a number between 0 and 1')
    return float(value)


def check_timestamp(value: Any, key: str) -> float | None:
    """Seconds since the epoch, from a number or an ISO 8601 date and time (UTC when no zone is given)."""
    if value is None:
        return None
    if is_number(value):
        if not math.isfinite(value):
            raise BadValue(f'"{key}" must be a finite number')
        return float(value)
    if isinstance(value, str):
        try:
            when = _dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise BadValue(f'"{key}" is not a date and time ({value[:40]!r})') from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=_dt.UTC)
        return when.timestamp()
    raise BadValue(f'"{key}" must be a number of seconds or an ISO 8601 date')


def check_kind(value: Any, key: str = "kind") -> str:
    if value is None:
        return "note"
    if not isinstance(value, str) or not valid_kind(value):
        raise BadValue(f'"{key}" must be a short lowercase word (fact, decision, procedure, note, ...)')
    return value


def map_kind(value: Any, table: Mapping[str, str], key: str) -> str:
    if value is None:
        return "note"
    if not isinstance(value, str):
        raise BadValue(f'"{key}" must be a string')
    mapped = table.get(value.strip().lower())
    if mapped is not None:
        return mapped
    # An unknown category that reads as a kind stays what it is; the
    # original is kept in the metadata either way.
    word = value.strip().lower()
    return word if valid_kind(word) else "note"


def check_peer_id(value: Any, key: str = "id") -> str:
    if not isinstance(value, str):
        raise BadValue(f'"{key}" must be a memory id (a UUID)')
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise BadValue(f'"{key}" {value[:60]!r} is not a memory id (a UUID)') from None


def check_foreign_id(value: Any, source: str, key: str = "id") -> tuple[str, str]:
    """(peer id, the id as the other tool wrote it)."""
    if is_number(value) and float(value).is_integer():
        value = str(int(value))
    if not isinstance(value, str) or not value.strip():
        raise BadValue(f'"{key}" must be a non-empty string')
    if utf8_size(value, key) > 1024:
        raise BadValue(f'"{key}" is longer than 1,024 bytes')
    try:
        return str(uuid.UUID(value)), value
    except ValueError:
        return str(uuid.uuid5(FOREIGN_ID_NAMESPACE, f"{source}:{value}")), value


def check_vector(value: Any, key: str = "embedding") -> bytes | None:
    """A list of numbers as little-endian float32 of unit length (None for an empty or zero vector)."""
    import numpy as np

    if value is None:
        return None
    if not isinstance(value, list):
        raise BadValue(f'"{key}" must be a list of numbers')
    if not value:
        return None
    if len(value) > 4096:
        raise BadValue(f'"{key}" has more than 4,096 dimensions')
    # numpy, not a Python loop: 10,000 vectors of 384 numbers take 20 ms, not 15 s.
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):  # ragged nested lists
        raise BadValue(f'"{key}" must be a list of numbers') from None
    if array.ndim != 1 or array.dtype.kind not in "iuf":
        raise BadValue(f'"{key}" must be a list of numbers')
    return unit_float32(array)


def unit_float32(values: Any) -> bytes | None:
    """A 1-D array of numbers as little-endian float32 bytes of unit length (None for a zero vector)."""
    import numpy as np

    array = np.asarray(values, dtype="<f8")
    if not np.isfinite(array).all():
        raise BadValue("a vector holds a value that is not a finite number")
    norm = float(np.linalg.norm(array))
    if norm == 0.0:
        return None
    return (array / norm).astype("<f4").tobytes()


def check_only(obj: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = set(obj) - set(allowed)
    if unknown:
        raise BadValue(f"unknown field(s) {', '.join(sorted(unknown))}")


def extras(obj: Mapping[str, Any], keys: Iterable[str], original_id: str | None, peer_id: str) -> dict[str, Any]:
    """The fields peer's model has no place for, with the tool's own id when peer's differs."""
    kept = {k: obj[k] for k in keys if k in obj and obj[k] is not None}
    if original_id is not None and original_id != peer_id:
        kept["id"] = original_id
    return kept


# Lines of JSON objects (peer's NDJSON, ai-mem) -----------------------------------------


def json_lines(data: bytes, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, JSON object) for every non-blank line."""
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            refuse(name, f"line {number}", "not UTF-8 text")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            refuse(name, f"line {number}", f"not valid JSON ({e.msg} at column {e.colno})")
        except RecursionError:
            refuse(name, f"line {number}", "JSON nested too deeply")
        if not isinstance(obj, dict):
            refuse(name, f"line {number}", "expected a JSON object")
        yield number, obj

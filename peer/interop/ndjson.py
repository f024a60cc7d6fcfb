"""Peer's own NDJSON: ``peer export`` writes it, ``peer import --format ndjson`` reads it.

One JSON object per line: a header line (``{"peer_export": 1, "count": N,
...}``) and then one line per live memory, oldest change first, with the
fields of :data:`_PEER_FIELDS`. ``version`` names the version the memory was
exported at, which lets a later import tell "only the file changed" from
"both sides changed" (see :mod:`.plan`). A header's ``count`` that does not
match the lines that follow means the file was cut short or edited, and it
is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from peer.memory import Memory
from peer.store import Store
from protocol import DecodeError, Dot

from .records import (
    BadValue,
    ImportFile,
    Record,
    check_content,
    check_importance,
    check_kind,
    check_metadata,
    check_object,
    check_only,
    check_optional_text,
    check_peer_id,
    check_project,
    check_tags,
    check_timestamp,
    dedupe,
    json_lines,
    refuse,
)

__all__ = ["EXPORT_FORMAT", "read_ndjson", "export_memories"]

#: The ``peer_export`` value of the header line this peer writes and reads.
EXPORT_FORMAT = 1

# Fields of one memory line of peer's NDJSON export, in the order written.
_PEER_FIELDS = (
    "id", "content", "kind", "project", "tags", "metadata", "created_at", "updated_at", "importance", "version",
)


# Reading ------------------------------------------------------------------------------------


def _peer_record(obj: Mapping[str, Any]) -> Record:
    check_only(obj, _PEER_FIELDS)
    if "id" not in obj:
        raise BadValue('"id" is missing (peer import keeps ids; `peer add --file` adds memories without one)')
    memory_id = check_peer_id(obj["id"])
    created = check_timestamp(obj.get("created_at"), "created_at")
    updated = check_timestamp(obj.get("updated_at"), "updated_at")
    now = time.time()
    version = check_optional_text(obj.get("version"), "version", 256)
    if version is not None:
        try:
            Dot.parse(version)
        except DecodeError:
            raise BadValue(f'"version" {version[:60]!r} is not a version (REPLICA:COUNTER)') from None
    return Record(
        id=memory_id,
        content=check_content(obj.get("content")),
        kind=check_kind(obj.get("kind")),
        project=check_project(obj.get("project")),
        tags=check_tags(obj.get("tags")),
        metadata=check_metadata(check_object(obj.get("metadata"), "metadata")),
        created_at=created if created is not None else (updated if updated is not None else now),
        updated_at=updated if updated is not None else (created if created is not None else now),
        importance=check_importance(obj.get("importance")),
        version=version,
    )


def read_ndjson(data: bytes, name: str) -> ImportFile:
    records: list[Record] = []
    announced: int | None = None
    last = 0
    for number, obj in json_lines(data, name):
        last = number
        if "peer_export" in obj:
            if records or announced is not None:
                refuse(name, f"line {number}", "a header line after the first line")
            announced = _header_count(obj, name, number)
            continue
        try:
            records.append(_peer_record(obj))
        except BadValue as e:
            refuse(name, f"line {number}", str(e))
    if announced is not None and announced != len(records):
        refuse(
            name,
            f"line {last + 1}",
            f"the file ends after {len(records):,} memories but its header announces {announced:,}"
            " (it was cut short or edited)",
        )
    unique, duplicates = dedupe(records)
    return ImportFile(name, "ndjson", unique, duplicates)


def _header_count(obj: Mapping[str, Any], name: str, number: int) -> int | None:
    version = obj.get("peer_export")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        refuse(name, f"line {number}", '"peer_export" must be a format number')
    if version > EXPORT_FORMAT:
        refuse(name, f"line {number}", f"written by a newer peer (export format {version}); upgrade peer")
    count = obj.get("count")
    if count is None:
        return None
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        refuse(name, f"line {number}", '"count" must be a whole number')
    return count



# Writing (`peer export`) ---------------------------------------------------------------------


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

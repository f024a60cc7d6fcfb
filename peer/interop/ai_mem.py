"""ai-mem: its NDJSON export and snapshots (one memory per line, snapshot header lines skipped).

A memory's ``type`` maps onto a peer kind (:data:`_AI_MEM_KINDS`), its
``importance_score`` onto importance; ``type`` and every field peer's model
has no place for are kept under ``metadata["ai_mem"]``. ai-mem has no
``updated_at``: a memory's ``created_at`` stands for both.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from protocol import MAX_CONTENT_BYTES

from .records import (
    BadValue,
    ImportFile,
    Record,
    check_content,
    check_foreign_id,
    check_importance,
    check_metadata,
    check_object,
    check_optional_text,
    check_project,
    check_tags,
    check_timestamp,
    dedupe,
    extras,
    json_lines,
    map_kind,
    refuse,
)

__all__ = ["read_ai_mem"]

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

_AI_MEM_FIELDS = (
    "id", "session_id", "project", "type", "concept", "title", "content", "summary", "created_at",
    "importance_score", "tags", "metadata", "content_hash", "diff", "assets",
)
_AI_MEM_EXTRAS = ("session_id", "type", "concept", "title", "summary", "content_hash", "diff", "assets")


def _ai_mem_record(obj: Mapping[str, Any]) -> Record:
    memory_id, original = check_foreign_id(obj.get("id"), "ai-mem")
    created = check_timestamp(obj.get("created_at"), "created_at")
    when = created if created is not None else time.time()
    for key in ("session_id", "concept", "title", "summary", "content_hash"):
        check_optional_text(obj.get(key), key, MAX_CONTENT_BYTES)
    if obj.get("assets") is not None and not isinstance(obj["assets"], list):
        raise BadValue('"assets" must be a list')
    unknown = [k for k in obj if k not in _AI_MEM_FIELDS]
    tool = extras(obj, [*_AI_MEM_EXTRAS, *unknown], original, memory_id)
    metadata = dict(check_object(obj.get("metadata"), "metadata"))
    if tool:
        metadata["ai_mem"] = tool
    return Record(
        id=memory_id,
        content=check_content(obj.get("content")),
        kind=map_kind(obj.get("type"), _AI_MEM_KINDS, "type"),
        project=check_project(obj.get("project")),
        tags=check_tags(obj.get("tags")),
        metadata=check_metadata(metadata),
        created_at=when,
        updated_at=when,
        importance=check_importance(obj.get("importance_score"), "importance_score"),
    )


def read_ai_mem(data: bytes, name: str) -> ImportFile:
    records: list[Record] = []
    for number, obj in json_lines(data, name):
        if "snapshot" in obj and "content" not in obj:
            # The header of a snapshot; several when snapshots were concatenated.
            if not isinstance(obj["snapshot"], dict):
                refuse(name, f"line {number}", '"snapshot" must be an object')
            continue
        try:
            records.append(_ai_mem_record(obj))
        except BadValue as e:
            refuse(name, f"line {number}", str(e))
    unique, duplicates = dedupe(records)
    return ImportFile(name, "ai-mem", unique, duplicates)

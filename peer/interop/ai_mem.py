"""ai-mem: its exports and snapshots, as NDJSON or as one JSON document.

What ai-mem's own CLI writes: ``export x.jsonl`` one observation per line;
``export x.json`` a JSON array of them; ``snapshot export`` a ``{"snapshot":
meta}`` line and then one observation per line, or with ``-f json`` one
object ``{"snapshot": meta, "observations": [...]}``. A snapshot's ``count``
(or ``total_count``) must match the observations that follow it, as in
peer's own export: a mismatch means the file was cut short or edited.

An observation's ``project`` is usually the absolute path of the working
directory; peer's project is its last component, and the path is kept as
``metadata["ai_mem"]["project_path"]``. Attachments (``assets``) can be
whole files: content beyond :data:`ASSET_CONTENT_CAP` is left out (the
asset keeps its name, path and ``content_bytes``) and the import says so,
rather than one log file refusing a whole snapshot.

A memory's ``type`` maps onto a peer kind (:data:`_AI_MEM_KINDS`), its
``importance_score`` onto importance; ``type`` and every field peer's model
has no place for are kept under ``metadata["ai_mem"]``. ai-mem has no
``updated_at``: a memory's ``created_at`` stands for both.
"""

from __future__ import annotations

import json
import ntpath
import posixpath
import re
import time
from collections.abc import Iterator, Mapping
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
    utf8_size,
)

__all__ = ["ASSET_CONTENT_CAP", "read_ai_mem"]

#: An attachment's content above this many bytes is left out of the import.
ASSET_CONTENT_CAP = 16 * 1024
_COUNT_KEYS = ("count", "total_count")

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


def _project(value: Any) -> tuple[str | None, str | None]:
    """(peer project, the full path when ai-mem's project was an absolute path)."""
    project = check_project(value)
    if project is None:
        return None, None
    if project.startswith("/"):
        path: Any = posixpath
    elif re.match(r"[A-Za-z]:[\\/]", project) or project.startswith("\\\\"):
        path = ntpath
    else:
        return project, None
    name = path.basename(path.normpath(project))
    return (name or project), project


def _assets(value: Any, dropped: list[str]) -> Any:
    """The attachments with oversized content left out (named in ``dropped``)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise BadValue('"assets" must be a list')
    out: list[Any] = []
    for asset in value:
        content = asset.get("content") if isinstance(asset, dict) else None
        if isinstance(content, str) and len(content) > ASSET_CONTENT_CAP // 4:
            size = utf8_size(content, "assets")
            if size > ASSET_CONTENT_CAP:
                asset = {k: v for k, v in asset.items() if k != "content"}
                asset["content_bytes"] = size
                dropped.append(f"{asset.get('name') or asset.get('path') or asset.get('id') or 'an attachment'} ({size:,} bytes)")
        out.append(asset)
    return out


def _ai_mem_record(obj: Mapping[str, Any], dropped: list[str]) -> Record:
    memory_id, original = check_foreign_id(obj.get("id"), "ai-mem")
    created = check_timestamp(obj.get("created_at"), "created_at")
    when = created if created is not None else time.time()
    for key in ("session_id", "concept", "title", "summary", "content_hash"):
        check_optional_text(obj.get(key), key, MAX_CONTENT_BYTES)
    obj = dict(obj)
    if "assets" in obj:
        obj["assets"] = _assets(obj["assets"], dropped)
    project, project_path = _project(obj.get("project"))
    unknown = [k for k in obj if k not in _AI_MEM_FIELDS]
    tool = extras(obj, [*_AI_MEM_EXTRAS, *unknown], original, memory_id)
    if project_path is not None:
        tool["project_path"] = project_path
    metadata = dict(check_object(obj.get("metadata"), "metadata"))
    if tool:
        metadata["ai_mem"] = tool
    return Record(
        id=memory_id,
        content=check_content(obj.get("content")),
        kind=map_kind(obj.get("type"), _AI_MEM_KINDS, "type"),
        project=project,
        tags=check_tags(obj.get("tags")),
        metadata=check_metadata(metadata),
        created_at=when,
        updated_at=when,
        importance=check_importance(obj.get("importance_score"), "importance_score"),
        fixed_time=True,
    )


def _check_count(name: str, where: str, header: Mapping[str, Any] | None, held: int) -> None:
    for key in _COUNT_KEYS:
        value = header.get(key) if header is not None else None
        if isinstance(value, int) and not isinstance(value, bool) and value != held:
            refuse(
                name,
                where,
                f'the snapshot\'s "{key}" says {value:,} but {held:,} observations follow (the file was cut short or edited)',
            )


def _document(data: bytes, name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, observation) for a JSON document: an array, or {"snapshot", "observations"}."""
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        refuse(name, "", "not UTF-8 text")
    except json.JSONDecodeError as e:
        refuse(name, f"line {e.lineno}", f"not valid JSON ({e.msg} at column {e.colno})")
    except RecursionError:
        refuse(name, "", "JSON nested too deeply")
    header: Mapping[str, Any] | None = None
    if isinstance(doc, dict) and isinstance(doc.get("observations"), list):
        if not isinstance(doc.get("snapshot", {}), dict):
            refuse(name, "", '"snapshot" must be an object')
        header = doc.get("snapshot")
        observations = doc["observations"]
    elif isinstance(doc, list):
        observations = doc
    else:
        refuse(name, "", 'expected an array of observations, or an object with "snapshot" and "observations"')
    _check_count(name, "", header, len(observations))
    for number, obj in enumerate(observations, start=1):
        if not isinstance(obj, dict):
            refuse(name, f"observation {number}", "expected a JSON object")
        yield f"observation {number}", obj


def _lines(data: bytes, name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, observation) for NDJSON, checking each snapshot header's count against what follows it."""
    header: tuple[int, Mapping[str, Any]] | None = None
    held = 0
    for number, obj in json_lines(data, name):
        if "snapshot" in obj and "content" not in obj:
            # The header of a snapshot; several when snapshots were concatenated.
            if not isinstance(obj["snapshot"], dict):
                refuse(name, f"line {number}", '"snapshot" must be an object')
            if header is not None:
                _check_count(name, f"line {header[0]}", header[1], held)
            header, held = (number, obj["snapshot"]), 0
            if isinstance(obj.get("observations"), list):  # a compact JSON snapshot on one line
                yield from _document(json.dumps(obj).encode(), name)
                header = None
            continue
        held += 1
        yield f"line {number}", obj
    if header is not None:
        _check_count(name, f"line {header[0]}", header[1], held)


def read_ai_mem(data: bytes, name: str) -> ImportFile:
    records: list[Record] = []
    dropped: list[str] = []
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    first_line = head.split(b"\n", 1)[0].strip()
    # A JSON document (ai-mem writes them indented): its first line is not an object by itself.
    items = _document(data, name) if head.startswith(b"[") or first_line == b"{" else _lines(data, name)
    for where, obj in items:
        try:
            records.append(_ai_mem_record(obj, dropped))
        except BadValue as e:
            refuse(name, where, str(e))
    unique, duplicates = dedupe(records)
    notes: tuple[str, ...] = ()
    if dropped:
        shown = ", ".join(dropped[:5]) + (f" and {len(dropped) - 5:,} more" if len(dropped) > 5 else "")
        notes = (
            f"left out the content of {len(dropped):,} attachment(s) over {ASSET_CONTENT_CAP // 1024} KiB: {shown}"
            " (their names, paths and sizes are kept in metadata.ai_mem.assets)",
        )
    return ImportFile(name, "ai-mem", unique, duplicates, notes)

"""Claude Memory (the Claude Memory RAG Server): its JSON export and its .tar.gz backup with .npz vectors.

The JSON export is one document: ``{"memories": [...], "memory_count": N,
...}`` (or a bare list of memories). The backup is a .tar.gz holding, at
its root, ``memories.json`` (each memory with its ``embedding`` inline),
``embeddings.npz``, ``manifest.json`` and ``checksums.sha256``. The tool's
``embeddings.npz`` holds ONE array, ``embeddings`` (N rows, float64), whose
row i belongs to ``memories[i]``: there are no ids, so the row count must
equal the memory count, and a memory without an inline vector takes its
row. (Arrays ``ids`` + ``embeddings``, or one array per memory id, are read
too.) The embedding model is named by each memory, not by the manifest. It is read from memory,
never extracted: every entry is checked (no unsafe path, no link, a known
name within its size limit, a matching checksum) before it is parsed, and
each .npz array's header before numpy reads the array.

A memory's ``category`` maps onto a peer kind (:data:`_CLAUDE_KINDS`); it
and every field peer's model has no place for are kept under
``metadata["claude_memory"]``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import tarfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

from peer.errors import ImportFormatError

from .records import (
    MAX_IMPORT_BYTES,
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
    check_vector,
    dedupe,
    extras,
    is_number,
    map_kind,
    refuse,
    unit_float32,
)

__all__ = [
    "MAX_ARCHIVE_MEMBERS",
    "MAX_ARCHIVE_BYTES",
    "MAX_MEMBER_BYTES",
    "read_claude_json",
    "read_claude_archive",
]

#: Limits on what a .tar.gz backup may hold, checked before reading a member.
MAX_ARCHIVE_MEMBERS = 64
MAX_ARCHIVE_BYTES = 4 << 30
MAX_MEMBER_BYTES = {
    "memories.json": MAX_IMPORT_BYTES // 2,
    "embeddings.npz": MAX_IMPORT_BYTES,
    "manifest.json": 1 << 20,
    "checksums.sha256": 1 << 20,
}

_CLAUDE_KINDS = {
    "preference": "preference",
    "fact": "fact",
    "event": "observation",
    "workflow": "procedure",
    "context": "note",
    "code": "note",
}

_CLAUDE_FIELDS = (
    "id", "content", "category", "context_level", "scope", "project_name", "importance", "embedding_model",
    "embedding", "created_at", "updated_at", "last_accessed", "lifecycle_state", "tags", "metadata", "provenance",
)
#: Kept under metadata["claude_memory"]; so is any field this list does not name.
_CLAUDE_EXTRAS = (
    "category", "context_level", "scope", "last_accessed", "lifecycle_state", "embedding_model", "provenance",
)


def _claude_record(
    obj: Mapping[str, Any], vectors: Mapping[str, bytes | None], default_model: str | None, row: bytes | None = None
) -> Record:
    memory_id, original = check_foreign_id(obj.get("id"), "claude-memory")
    created = check_timestamp(obj.get("created_at"), "created_at")
    updated = check_timestamp(obj.get("updated_at"), "updated_at")
    now = time.time()
    unknown = [k for k in obj if k not in _CLAUDE_FIELDS]
    tool = extras(obj, [*_CLAUDE_EXTRAS, *unknown], original, memory_id)
    metadata = dict(check_object(obj.get("metadata"), "metadata"))
    if tool:
        metadata["claude_memory"] = tool
    model = check_optional_text(obj.get("embedding_model"), "embedding_model", 256) or default_model
    vector = check_vector(obj.get("embedding"))
    if vector is None:
        vector = vectors.get(str(obj.get("id")), row)
    return Record(
        id=memory_id,
        content=check_content(obj.get("content")),
        kind=map_kind(obj.get("category"), _CLAUDE_KINDS, "category"),
        project=check_project(obj.get("project_name"), "project_name"),
        tags=check_tags(obj.get("tags")),
        metadata=check_metadata(metadata),
        created_at=created if created is not None else (updated if updated is not None else now),
        updated_at=updated if updated is not None else (created if created is not None else now),
        importance=check_importance(obj.get("importance")),
        embedding_model=model,
        vector=vector,
        tool="claude_memory",
    )


def _claude_memories(
    doc: Any,
    name: str,
    prefix: str,
    vectors: Mapping[str, bytes | None] | None = None,
    model: str | None = None,
    rows: Sequence[bytes | None] | None = None,
) -> ImportFile:
    if isinstance(doc, dict):
        memories = doc.get("memories")
        if not isinstance(memories, list):
            refuse(name, prefix or "at the top", 'expected an object with a "memories" list (a Claude Memory export)')
        count = doc.get("memory_count")
        if is_number(count) and count != len(memories):
            refuse(
                name,
                prefix or "at the top",
                f'"memory_count" says {count} but the file holds {len(memories):,} memories (it was cut short or edited)',
            )
        model = model or (doc.get("embedding_model") if isinstance(doc.get("embedding_model"), str) else None)
    elif isinstance(doc, list):
        memories = doc
    else:
        refuse(name, prefix or "at the top", 'expected an object with a "memories" list (a Claude Memory export)')
    if rows is not None and len(rows) != len(memories):
        refuse(
            name,
            "embeddings.npz",
            f"holds {len(rows):,} rows for {len(memories):,} memories (row i belongs to memory i, so the two must match)",
        )
    records: list[Record] = []
    for number, obj in enumerate(memories, start=1):
        where = f"{prefix + ' ' if prefix else ''}memory {number}"
        if not isinstance(obj, dict):
            refuse(name, where, "expected a JSON object")
        if isinstance(obj.get("id"), str):
            where += f" (id {obj['id'][:40]})"
        try:
            records.append(_claude_record(obj, vectors or {}, model, rows[number - 1] if rows is not None else None))
        except BadValue as e:
            refuse(name, where, str(e))
    unique, duplicates = dedupe(records)
    return ImportFile(name, "claude-memory", unique, duplicates)


def _parse_json_document(data: bytes, name: str, prefix: str = "") -> Any:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        refuse(name, prefix or "at the top", "not UTF-8 text")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        refuse(name, f"{prefix + ' ' if prefix else ''}line {e.lineno}", f"not valid JSON ({e.msg} at column {e.colno})")
    except RecursionError:
        refuse(name, prefix or "at the top", "JSON nested too deeply")


def read_claude_json(data: bytes, name: str) -> ImportFile:
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
                    refuse(name, "", f"holds more than {MAX_ARCHIVE_MEMBERS} entries; not a Claude Memory backup")
                if declared > MAX_ARCHIVE_BYTES:
                    # Stop before decompressing what would be skipped anyway.
                    refuse(name, "", f"unpacks to more than {MAX_ARCHIVE_BYTES >> 30} GiB; not a Claude Memory backup")
        except (tarfile.TarError, EOFError, OSError, _zlib_error()) as e:
            raise ImportFormatError(f"{name} is damaged ({e}); nothing was imported") from None
        for member in members:
            path = member.name
            parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
            if path.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", path):
                refuse(name, f"entry {path!r}", "an unsafe path; the backup is refused")
            if member.isdir():
                continue
            if not member.isfile():
                refuse(name, f"entry {path!r}", "not a regular file (links and devices are refused)")
            base = parts[-1] if parts else ""
            limit = MAX_MEMBER_BYTES.get(base)
            if limit is None:
                continue  # something else the tool put there: not read
            if base in files:
                refuse(name, f"entry {path!r}", f"a second {base}")
            if member.size > limit:
                refuse(name, base, f"larger than {limit:,} bytes")
            try:
                handle = archive.extractfile(member)
                body = handle.read(limit + 1) if handle is not None else b""
            except (tarfile.TarError, EOFError, OSError, _zlib_error()) as e:
                raise ImportFormatError(f"{name} is damaged at {base} ({e}); nothing was imported") from None
            if len(body) != member.size:
                refuse(name, base, "truncated")
            files[base] = body
    return files


def _zlib_error() -> type[Exception]:
    import zlib

    return zlib.error


def _verify_checksums(files: Mapping[str, bytes], name: str) -> None:
    listing = files.get("checksums.sha256")
    if listing is None:
        refuse(name, "", "has no checksums.sha256; it is not a complete Claude Memory backup")
    sums: dict[str, str] = {}
    for number, line in enumerate(listing.decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        match = re.fullmatch(r"\s*([0-9a-fA-F]{64})\s+\*?(.+?)\s*", line)
        if match is None:
            refuse(name, f"checksums.sha256 line {number}", "expected a SHA-256 and a file name")
        sums[match.group(2).replace("\\", "/").rsplit("/", 1)[-1]] = match.group(1).lower()
    for base, body in files.items():
        if base == "checksums.sha256":
            continue
        expected = sums.get(base)
        if expected is None:
            refuse(name, base, "has no checksum in checksums.sha256; the backup is refused")
        if hashlib.sha256(body).hexdigest() != expected:
            refuse(name, base, "checksum mismatch (the backup is damaged or was changed)")
    for base in sums:
        if base in MAX_MEMBER_BYTES and base not in files:
            refuse(name, base, "listed in checksums.sha256 but missing from the archive")


def _npz_vectors(data: bytes, name: str) -> tuple[dict[str, bytes | None], list[bytes | None] | None]:
    """Vectors from embeddings.npz: (by memory id, by row).

    The tool writes one 2-D array ``embeddings`` whose rows follow the
    memories' order (by row); ``ids`` with ``embeddings``, or one 1-D array
    per memory id, give vectors by id.

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
                refuse(name, "embeddings.npz", "holds Python objects; only numbers and strings are read")
            if math.prod(shape) * max(1, dtype.itemsize) > MAX_IMPORT_BYTES:
                refuse(name, "embeddings.npz", "holds an array larger than 1 GiB")
            with archive.open(info) as f:
                arrays[info.filename[: -len(".npy")]] = np.lib.format.read_array(f, allow_pickle=False)
    except ImportFormatError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        refuse(name, "embeddings.npz", f"not a readable .npz file ({e})")
    vectors: dict[str, bytes | None] = {}
    if "ids" not in arrays and set(arrays) <= {"embeddings", "vectors"} and len(arrays) == 1:
        (matrix,) = arrays.values()
        if matrix.ndim != 2 or matrix.dtype.kind not in "fiu":
            refuse(name, "embeddings.npz", '"embeddings" must be a 2-D array of numbers (one row per memory)')
        by_row: list[bytes | None] = []
        for number, row in enumerate(matrix, start=1):
            try:
                by_row.append(unit_float32(row))
            except BadValue as e:
                refuse(name, "embeddings.npz", f"row {number}: {e}")
        return vectors, by_row
    if "ids" in arrays and ("embeddings" in arrays or "vectors" in arrays):
        ids = arrays["ids"]
        matrix = arrays["embeddings"] if "embeddings" in arrays else arrays["vectors"]
        if ids.ndim != 1 or matrix.ndim != 2 or len(ids) != len(matrix) or matrix.dtype.kind not in "fiu":
            refuse(name, "embeddings.npz", '"ids" and "embeddings" do not line up (one id per row of numbers)')
        rows = [(str(i), row) for i, row in zip(ids.tolist(), matrix, strict=True)]
    else:
        rows = [(key, array) for key, array in arrays.items()]
        if any(a.ndim != 1 or a.dtype.kind not in "fiu" for _, a in rows):
            refuse(name, "embeddings.npz", 'expected arrays "ids" and "embeddings", or one vector per memory id')
    for key, row in rows:
        try:
            vectors[key] = unit_float32(row)
        except BadValue as e:
            refuse(name, "embeddings.npz", f"the vector of {key[:40]}: {e}")
    return vectors, None


def read_claude_archive(data: bytes, name: str) -> ImportFile:
    files = _archive_members(data, name)
    if "memories.json" not in files:
        refuse(name, "", "has no memories.json; it is not a Claude Memory backup")
    _verify_checksums(files, name)
    model = None
    if "manifest.json" in files:
        manifest = _parse_json_document(files["manifest.json"], name, "manifest.json")
        if not isinstance(manifest, dict):
            refuse(name, "manifest.json", "expected a JSON object")
        if isinstance(manifest.get("embedding_model"), str):
            model = manifest["embedding_model"]
    vectors, rows = _npz_vectors(files["embeddings.npz"], name) if "embeddings.npz" in files else ({}, None)
    doc = _parse_json_document(files["memories.json"], name, "memories.json")
    return _claude_memories(doc, name, "memories.json", vectors, model, rows)

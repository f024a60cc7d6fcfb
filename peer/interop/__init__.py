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
   its id, giving one :class:`Action`; ``--dry-run`` stops here.

3. *Apply.* Vectors the file carries are reused when this device's
   embedder made them, the rest embedded; then every version is written in
   one transaction.

Where each part lives: :mod:`.records` (:class:`Record`, :class:`ImportFile`,
the field checks, how foreign ids are kept), one reader per format
(:mod:`.ndjson`, which also writes ``peer export``; :mod:`.claude`;
:mod:`.ai_mem`), and :mod:`.plan` (planning, the strategies, applying).
This module sniffs a file's format and hands it to its reader.
"""

from __future__ import annotations

import json
import re
from typing import IO, Any

from peer.errors import ImportFormatError, PeerError

from .ai_mem import read_ai_mem
from .claude import read_claude_archive, read_claude_json
from .ndjson import EXPORT_FORMAT, export_memories, read_ndjson
from .plan import (
    EMBED_BATCH,
    STRATEGIES,
    Action,
    ImportPlan,
    ImportReport,
    Step,
    apply_import,
    plan_import,
    vector_is_reusable,
)
from .records import FOREIGN_ID_NAMESPACE, MAX_IMPORT_BYTES, ImportFile, Record

__all__ = [
    "FORMATS",
    "STRATEGIES",
    "EXPORT_FORMAT",
    "FOREIGN_ID_NAMESPACE",
    "MAX_IMPORT_BYTES",
    "EMBED_BATCH",
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
    elif head.startswith(b"{") and re.search(rb'"observations"\s*:', head[:1 << 20]):
        return "ai-mem"  # `ai-mem snapshot export -f json`: {"snapshot", "observations"}
    elif head.startswith(b"{") and re.search(rb'"memories"\s*:', head[:1 << 20]):
        return "claude-memory"  # one JSON document over many lines
    elif head.startswith(b"["):
        # A bare array: ai-mem's `export x.json`, or a list of Claude memories.
        start = head[: 1 << 16]
        if re.search(rb'"(session_id|importance_score|content_hash)"\s*:', start):
            return "ai-mem"
        if re.search(rb'"(category|context_level|project_name)"\s*:', start):
            return "claude-memory"
    if not head.startswith((b"{", b"[")):
        try:
            head[: 1 << 16].decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            # Text that is not JSON: most likely notes, one per line.
            raise ImportFormatError(
                "cannot tell the format of this file: it is plain text, not an export of peer or another memory"
                " tool; to add one memory per line, use `peer add --file FILE` (or pass --format ndjson,"
                " claude-memory or ai-mem); nothing was imported"
            )
    raise ImportFormatError(
        "cannot tell the format of this file; pass --format ndjson, claude-memory or ai-mem"
    )


def read_import(data: bytes, name: str, fmt: str = "auto") -> ImportFile:
    """Every memory of an import file, checked; an ImportFormatError naming the line otherwise."""
    if fmt == "auto":
        fmt = sniff_format(data)
    if fmt == "ndjson":
        return read_ndjson(data, name)
    if fmt == "ai-mem":
        return read_ai_mem(data, name)
    if fmt == "claude-memory":
        if data[:2] == b"\x1f\x8b":
            return read_claude_archive(data, name)
        return read_claude_json(data, name)
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

"""Sample files in the formats `peer import` reads, made the way the other tools write them.

Claude Memory RAG Server: a JSON export (``{"version", "schema_version",
"export_date", "export_type", "filters", "memory_count", "memories"}``) and
a ``.tar.gz`` backup (``memories.json``, ``embeddings.npz``,
``manifest.json``, ``checksums.sha256``). ai-mem: an NDJSON snapshot whose
first line is ``{"snapshot": {...}}``, then one observation per line.

Texts mix scripts on purpose: emoji (with joiners and skin tones),
right-to-left Hebrew and Arabic, CJK, combining accents, and the Unicode
line and paragraph separators, which a reader splitting lines with
``str.splitlines`` would cut.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import tarfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

UNICODE_TEXTS = (
    "Deploys go through the 🚀 pipeline; the on-call 👩🏽‍💻 approves them",
    "שלום עולם: the Hebrew greeting the test fixtures use",
    "مرحبا بالعالم — right to left, with an em dash",
    "数据库迁移必须先在预发布环境运行",
    "Cafe\u0301 and na\u00efve spellings differ under NFC",
    "A line\u2028separator and a paragraph\u2029separator inside one memory",
)


def rng(seed: int = 7) -> random.Random:
    return random.Random(seed)


def unit_vector(r: random.Random, dim: int = 384) -> list[float]:
    values = [r.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(v * v for v in values))
    return [round(v / norm, 7) for v in values]


# ai-mem ----------------------------------------------------------------------------


def ai_mem_observation(i: int, **fields: Any) -> dict[str, Any]:
    """One observation with every field ai-mem writes (override or drop any with ``fields``)."""
    obs: dict[str, Any] = {
        "id": str(uuid.UUID(int=i + 1, version=4)),
        "session_id": f"session-{i // 50}",
        "project": f"proj-{i % 7}",
        "type": ("decision", "bugfix", "discovery", "summary", "note", "convention")[i % 6],
        "concept": "how-it-works",
        "title": f"Observation {i}",
        "content": f"Observation number {i}: {UNICODE_TEXTS[i % len(UNICODE_TEXTS)]}",
        "summary": f"summary {i}",
        "created_at": 1_760_000_000.25 + i,
        "importance_score": round((i % 10) / 10, 1),
        "tags": [f"t{i % 3}", "ai-mem"],
        "metadata": {"tool": "Edit", "n": i},
        "content_hash": hashlib.sha256(str(i).encode()).hexdigest(),
        "diff": None,
        "assets": [],
    }
    for key, value in fields.items():
        if value is _DROP:
            obs.pop(key, None)
        else:
            obs[key] = value
    return obs


_DROP = object()


def drop() -> Any:
    """A field value meaning "leave this field out"."""
    return _DROP


def ai_mem_snapshot(observations: Sequence[Mapping[str, Any]], *, raw_lines: Mapping[int, str] | None = None) -> bytes:
    """The snapshot file; ``raw_lines`` replaces given 1-based lines (the snapshot header is line 1) verbatim."""
    lines = [json.dumps({"snapshot": {"version": 1, "created_at": 1_760_000_000.0, "count": len(observations)}})]
    lines += [json.dumps(o, ensure_ascii=False) for o in observations]
    for number, text in (raw_lines or {}).items():
        lines[number - 1] = text
    return ("\n".join(lines) + "\n").encode("utf-8")


# Claude Memory RAG Server -------------------------------------------------------------


def claude_memory(i: int, *, vector: list[float] | None = None, **fields: Any) -> dict[str, Any]:
    memory: dict[str, Any] = {
        "id": str(uuid.UUID(int=(1 << 64) + i, version=4)),
        "content": f"Claude memory {i}: {UNICODE_TEXTS[i % len(UNICODE_TEXTS)]}",
        "category": ("preference", "fact", "event", "workflow", "context", "code")[i % 6],
        "context_level": "PROJECT_CONTEXT",
        "scope": "project",
        "project_name": f"proj-{i % 3}",
        "importance": 0.5 + (i % 5) / 10,
        "embedding_model": "all-MiniLM-L6-v2",
        "created_at": "2025-06-01T12:00:00+00:00",
        "updated_at": f"2025-06-02T12:{i % 60:02d}:00Z",
        "last_accessed": "2025-06-03T08:00:00Z",
        "lifecycle_state": "ACTIVE",
        "tags": ["claude", f"c{i % 4}"],
        "metadata": {"source": "chat", "i": i},
        "provenance": {"source": "user_statement", "confidence": 0.9, "created_by": "claude"},
    }
    if vector is not None:
        memory["embedding"] = vector
    for key, value in fields.items():
        if value is _DROP:
            memory.pop(key, None)
        else:
            memory[key] = value
    return memory


def claude_export(memories: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "version": "4.0.0",
        "schema_version": "3.0.0",
        "export_date": "2025-06-04T10:00:00Z",
        "export_type": "full",
        "filters": {},
        "memory_count": len(memories),
        "memories": list(memories),
    }


def claude_backup(
    path: Path,
    memories: Sequence[Mapping[str, Any]],
    vectors: Mapping[str, list[float]],
    *,
    tamper: str | None = None,
    extra: Mapping[str, bytes] | None = None,
) -> Path:
    """A .tar.gz backup; ``tamper`` names a member whose bytes change after its checksum was taken."""
    import numpy as np

    buf = io.BytesIO()
    ids = list(vectors)
    np.savez(
        buf,
        ids=np.array(ids),
        embeddings=np.array([vectors[i] for i in ids], dtype=np.float32).reshape(len(ids), -1),
    )
    files = {
        "memories.json": json.dumps(claude_export(memories), ensure_ascii=False, indent=2).encode("utf-8"),
        "embeddings.npz": buf.getvalue(),
        "manifest.json": json.dumps(
            {"backup_type": "full", "memory_count": len(memories), "embedding_model": "all-MiniLM-L6-v2"}
        ).encode(),
    }
    sums = "".join(f"{hashlib.sha256(body).hexdigest()}  {name}\n" for name, body in files.items())
    files["checksums.sha256"] = sums.encode()
    if tamper is not None:
        files[tamper] = files[tamper].replace(b"Claude memory", b"Claude mem0ry", 1)
    files.update(extra or {})
    with tarfile.open(path, "w:gz") as archive:
        for name, body in files.items():
            info = tarfile.TarInfo(f"backup_20250604/{name}" if not name.startswith(("/", "..")) else name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    return path

"""Sample files in the formats `peer import` reads, laid out the way the other tools' own code writes them.

Claude Memory RAG Server (``src/backup/exporter.py``): ``export_to_json``
writes ``{"version", "schema_version", "export_date", "export_type",
"filters", "memory_count", "memories"}``; ``create_portable_archive``
writes a ``.tar.gz`` whose members sit at the archive root, in this order:
``memories.json`` (``{"version", "schema_version", "export_date",
"memory_count", "memories"}``, each memory with its ``embedding`` inline),
``embeddings.npz`` (``np.savez_compressed`` of ONE array, ``embeddings``,
float64, shape (N, 384), row i belonging to ``memories[i]``; no ids),
``manifest.json`` (``version``, ``schema_version``, ``export_date``,
``export_type``, ``memory_count``, ``projects``, ``includes_embeddings``,
``compression``, ``encryption``; no embedding model) and
``checksums.sha256`` (``sha256  name`` lines).

ai-mem (``src/ai_mem/cli.py``): ``export x.json`` writes a JSON array of
observations (``json.dump(..., indent=2)``), ``export x.jsonl`` one per
line; ``snapshot export`` writes a ``{"snapshot": meta}`` line then one
observation per line, or with ``-f json`` one object ``{"snapshot": meta,
"observations": [...]}``; ``meta`` holds ``snapshot_id``, ``created_at``,
filters and ``count``. An observation is the pydantic model dumped whole:
``project`` is usually the absolute path of the working directory, and
``assets`` a list of ``{"id", "observation_id", "type", "name", "path",
"content", "metadata", "created_at"}``.

This module writes such files itself from those layouts (no code of
either tool is used). Texts mix scripts on purpose: emoji (with joiners
and skin tones), right-to-left Hebrew and Arabic, CJK, combining accents,
and the Unicode line and paragraph separators, which a reader splitting
lines with ``str.splitlines`` would cut.
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
    lines = [json.dumps({"snapshot": snapshot_meta(observations)}, ensure_ascii=True)]
    lines += [json.dumps(o, ensure_ascii=True) for o in observations]
    for number, text in (raw_lines or {}).items():
        lines[number - 1] = text
    return ("\n".join(lines) + "\n").encode("utf-8")


def snapshot_meta(observations: Sequence[Mapping[str, Any]], **fields: Any) -> dict[str, Any]:
    """The ``snapshot`` object ai-mem's ``snapshot export`` writes."""
    meta: dict[str, Any] = {
        "snapshot_id": str(uuid.UUID(int=len(observations) + 99, version=4)),
        "created_at": 1_760_100_000.5,
        "project": None,
        "session_id": None,
        "obs_type": None,
        "since": None,
        "limit": None,
        "note": None,
        "last_observation": observations[-1]["created_at"] if observations else None,
        "count": len(observations),
    }
    meta.update(fields)
    return meta


def ai_mem_json_export(observations: Sequence[Mapping[str, Any]]) -> bytes:
    """``ai-mem export x.json``: a JSON array, indented, ASCII-escaped."""
    return json.dumps(list(observations), indent=2).encode("utf-8")


def ai_mem_json_snapshot(observations: Sequence[Mapping[str, Any]], **meta: Any) -> bytes:
    """``ai-mem snapshot export x.json -f json``: ``{"snapshot": meta, "observations": [...]}``."""
    return json.dumps({"snapshot": snapshot_meta(observations, **meta), "observations": list(observations)}, indent=2).encode()


def ai_mem_asset(observation_id: str, content: str, name: str = "notes.txt") -> dict[str, Any]:
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, observation_id + name)),
        "observation_id": observation_id,
        "type": "file",
        "name": name,
        "path": f"/home/dev/work/{name}",
        "content": content,
        "metadata": {},
        "created_at": 1_760_000_500.0,
    }


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
        "updated_at": f"2025-06-02T12:{i % 60:02d}:00+00:00",
        "last_accessed": "2025-06-03T08:00:00+00:00",
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
        "version": "1.0.0",
        "schema_version": "3.0.0",
        "export_date": "2025-06-04T10:00:00.123456+00:00",
        "export_type": "full",
        "filters": {"project_name": None, "category": None, "context_level": None, "since_date": None, "until_date": None},
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
    inline: bool = True,
) -> Path:
    """A ``.tar.gz`` as ``create_portable_archive`` lays it out (see the module's docstring).

    ``vectors`` by memory id: each goes inline into its memory (as the tool
    writes it) and into row i of ``embeddings.npz``. ``tamper`` names a
    member whose bytes change after its checksum was taken; ``extra`` adds
    members (after the real ones). ``inline=False`` leaves the vectors
    only in ``embeddings.npz`` (so a reader must line its rows up).
    """
    import numpy as np

    rows = [dict(m, embedding=vectors[m["id"]]) if inline and m["id"] in vectors else dict(m) for m in memories]
    files: dict[str, bytes] = {
        "memories.json": json.dumps(
            {
                "version": "1.0.0",
                "schema_version": "3.0.0",
                "export_date": "2025-06-04T10:00:00.123456+00:00",
                "memory_count": len(rows),
                "memories": rows,
            },
            indent=2,  # the tool writes it ASCII-escaped (json.dump's default)
        ).encode("utf-8"),
    }
    if vectors:
        buf = io.BytesIO()
        np.savez_compressed(buf, embeddings=np.array([vectors[m["id"]] for m in memories], dtype=np.float64))
        files["embeddings.npz"] = buf.getvalue()
    files["manifest.json"] = json.dumps(
        {
            "version": "1.0.0",
            "schema_version": "3.0.0",
            "export_date": "2025-06-04T10:00:00.123456+00:00",
            "export_type": "full",
            "memory_count": len(rows),
            "projects": sorted({m["project_name"] for m in memories if m.get("project_name")}),
            "includes_embeddings": bool(vectors),
            "compression": "gzip",
            "encryption": "none",
        },
        indent=2,
    ).encode()
    sums = "".join(f"{hashlib.sha256(body).hexdigest()}  {name}\n" for name, body in files.items())
    files["checksums.sha256"] = sums.encode()
    if tamper is not None:
        files[tamper] = files[tamper].replace(b"Claude memory", b"Claude mem0ry", 1)
    files.update(extra or {})
    with tarfile.open(path, "w:gz") as archive:
        for name, body in files.items():
            info = tarfile.TarInfo(name)  # at the archive root, as the tool's arcname= puts them
            info.size = len(body)
            info.mode = 0o644
            info.mtime = 1_749_031_200
            archive.addfile(info, io.BytesIO(body))
    return path

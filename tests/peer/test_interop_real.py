"""Importing files laid out as the real tools write them (issue 11 item 10).

The samples (:mod:`.interop_samples`) follow the writers' own code: Claude
Memory RAG Server's ``create_portable_archive`` and ai-mem's ``export`` and
``snapshot export``. Real ``peer`` processes; the vectors in Claude
archives are all-MiniLM-L6-v2-shaped, so no model run is needed for them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli_runner import assert_error, ok, ok_json, peer
from tests.support.interop_samples import (
    ai_mem_asset,
    ai_mem_json_export,
    ai_mem_json_snapshot,
    ai_mem_observation,
    ai_mem_snapshot,
    claude_backup,
    claude_memory,
    rng,
    unit_vector,
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    ok(path, "init")
    return path


def test_a_genuine_claude_archive_imports_with_its_vectors(home: Path, tmp_path: Path) -> None:
    r = rng(5)
    memories = [claude_memory(i) for i in range(24)]
    vectors = {m["id"]: unit_vector(r) for m in memories}
    archive = claude_backup(tmp_path / "claude.tar.gz", memories, vectors)
    report = ok_json(home, "import", str(archive))
    assert (report["format"], report["new"], report["vectors_reused"], report["embedded"]) == ("claude-memory", 24, 24, 0)
    assert ok_json(home, "show", memories[7]["id"])["content"] == memories[7]["content"]


def test_vectors_only_in_the_npz_are_matched_to_memories_by_row(home: Path, tmp_path: Path) -> None:
    r = rng(6)
    memories = [claude_memory(i) for i in range(12)]
    vectors = {m["id"]: unit_vector(r) for m in memories}
    archive = claude_backup(tmp_path / "npz-only.tar.gz", memories, vectors, inline=False)
    report = ok_json(home, "import", str(archive))
    assert (report["new"], report["vectors_reused"], report["embedded"]) == (12, 12, 0)
    # Row i is memory i's: what the reader hands the store, vector by vector.
    import numpy as np

    from peer.interop import read_import

    parsed = read_import(archive.read_bytes(), "npz-only.tar.gz")
    for record, memory in zip(parsed.records, memories, strict=True):
        expected = np.asarray(vectors[memory["id"]], dtype="<f8")
        expected = (expected / np.linalg.norm(expected)).astype("<f4")
        assert record.vector == expected.tobytes()


def test_an_npz_whose_rows_do_not_match_the_memories_is_refused(home: Path, tmp_path: Path) -> None:
    import io
    import tarfile

    import numpy as np

    r = rng(7)
    memories = [claude_memory(i) for i in range(5)]
    vectors = {m["id"]: unit_vector(r) for m in memories}
    good = claude_backup(tmp_path / "good.tar.gz", memories, vectors, inline=False)
    # Rebuild it with one row missing (checksums recomputed: a consistent but wrong archive).
    with tarfile.open(good) as t:
        files = {m.name: t.extractfile(m).read() for m in t if m.isfile()}  # type: ignore[union-attr]
    buf = io.BytesIO()
    np.savez_compressed(buf, embeddings=np.array([vectors[m["id"]] for m in memories[:4]]))
    files["embeddings.npz"] = buf.getvalue()
    import hashlib

    files["checksums.sha256"] = "".join(
        f"{hashlib.sha256(files[n]).hexdigest()}  {n}\n" for n in ("memories.json", "embeddings.npz", "manifest.json")
    ).encode()
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as t:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            t.addfile(info, io.BytesIO(body))
    assert_error(peer(home, "import", str(bad)), 1, "embeddings.npz", "4 rows", "5 memories")


def _few_observations(n: int) -> list[dict[str, object]]:
    return [ai_mem_observation(i, project=f"/home/dev/work/proj-{i % 2}") for i in range(n)]


@pytest.mark.parametrize("writer", ["export-json", "snapshot-json"])
def test_ai_mem_json_documents_are_read_like_its_ndjson(home: Path, tmp_path: Path, writer: str) -> None:
    observations = _few_observations(3)
    data = ai_mem_json_export(observations) if writer == "export-json" else ai_mem_json_snapshot(observations)
    path = tmp_path / "ai-mem.json"
    path.write_bytes(data)
    report = ok_json(home, "import", str(path))
    assert (report["format"], report["new"]) == ("ai-mem", 3)
    shown = ok_json(home, "show", str(observations[1]["id"]))
    # An absolute-path project becomes its last component; the path is kept.
    assert shown["project"] == "proj-1"
    assert shown["metadata"]["ai_mem"]["project_path"] == "/home/dev/work/proj-1"


def test_a_large_attachment_does_not_block_the_snapshot(home: Path, tmp_path: Path) -> None:
    observations = _few_observations(3)
    big = "x" * 1_200_000
    observations[2]["assets"] = [ai_mem_asset(str(observations[2]["id"]), big, "dump.log")]
    path = tmp_path / "snap.jsonl"
    path.write_bytes(ai_mem_snapshot(observations))
    done = peer(home, "import", str(path))
    assert done.returncode == 0, done.stderr
    assert "attachment" in done.stdout and "dump.log" in done.stdout  # it says what it left out
    shown = ok_json(home, "show", str(observations[2]["id"]))
    (asset,) = shown["metadata"]["ai_mem"]["assets"]
    assert "content" not in asset and asset["content_bytes"] == 1_200_000 and asset["name"] == "dump.log"


@pytest.mark.parametrize("key", ["count", "total_count"])
def test_header_counts_are_checked(home: Path, tmp_path: Path, key: str) -> None:
    observations = _few_observations(4)
    lines = ai_mem_snapshot(observations).decode().splitlines()
    header = json.loads(lines[0])
    header["snapshot"][key] = 7
    path = tmp_path / "cut.jsonl"
    path.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    assert_error(peer(home, "import", str(path)), 1, key, "7", "4")
    doc = json.loads(ai_mem_json_snapshot(observations))
    doc["snapshot"][key] = 2
    path.write_text(json.dumps(doc))
    assert_error(peer(home, "import", str(path)), 1, key, "2", "4")


def test_reimporting_ai_mem_after_an_edit_there_supersedes_the_untouched_copy(home: Path, tmp_path: Path) -> None:
    observations = _few_observations(3)
    path = tmp_path / "snap.jsonl"
    path.write_bytes(ai_mem_snapshot(observations))
    assert ok_json(home, "import", str(path))["new"] == 3
    # Here, observation 2 is edited in peer; in ai-mem, observations 0 and 2 are edited (ai-mem keeps created_at).
    ok(home, "edit", str(observations[2]["id"]), "--text", "edited in peer")
    observations[0] = {**observations[0], "content": "edited in ai-mem"}
    observations[2] = {**observations[2], "content": "also edited in ai-mem"}
    path.write_bytes(ai_mem_snapshot(observations))
    report = ok_json(home, "import", str(path))
    # 0: the local copy is still what the first import wrote, so ai-mem's edit replaces it, no conflict.
    # 2: both sides changed: a conflict, as the docs say.
    assert (report["updated"], report["unchanged"], report["conflicts"]) == (1, 1, 1), report
    assert ok_json(home, "show", str(observations[0]["id"]))["content"] == "edited in ai-mem"
    (conflict,) = ok_json(home, "conflicts")
    assert conflict["id"] == str(observations[2]["id"])


def test_reimporting_a_newer_claude_export_supersedes_an_untouched_import(home: Path, tmp_path: Path) -> None:
    from tests.support.interop_samples import claude_export

    memories = [claude_memory(i, embedding_model="another-model") for i in range(3)]
    path = tmp_path / "claude.json"
    path.write_text(json.dumps(claude_export(memories), indent=2))
    assert ok_json(home, "import", str(path))["new"] == 3
    ok(home, "edit", str(memories[2]["id"]), "--text", "edited in peer")
    # Edited in Claude Memory afterwards (its updated_at moves on).
    memories[0] = {**memories[0], "content": "edited in claude", "updated_at": "2025-07-01T09:00:00+00:00"}
    memories[2] = {**memories[2], "content": "also edited in claude", "updated_at": "2025-07-01T09:00:00+00:00"}
    path.write_text(json.dumps(claude_export(memories), indent=2))
    report = ok_json(home, "import", str(path))
    assert (report["updated"], report["unchanged"], report["conflicts"]) == (1, 1, 1), report
    assert ok_json(home, "show", str(memories[0]["id"]))["content"] == "edited in claude"
    assert [c["id"] for c in ok_json(home, "conflicts")] == [str(memories[2]["id"])]

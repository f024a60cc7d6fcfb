"""`peer export` and `peer import`: peer's NDJSON, Claude Memory (JSON and .tar.gz) and ai-mem snapshots.

The in-process tests use a device whose embedder is the HashEmbedder (the
10,000-record imports and the strategy table are about the store, not
search); the acceptance tests run the real `peer` command, with the real
model where a test searches what it imported.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import struct
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.device import Device
from peer.errors import ImportFormatError, StoreError
from peer.home import Home
from peer.interop import (
    FOREIGN_ID_NAMESPACE,
    ImportReport,
    apply_import,
    export_memories,
    plan_import,
    read_import,
    sniff_format,
    vector_is_reusable,
)
from peer.memory import Draft
from peer.search.embedder import MINILM_ID, Embedder, HashEmbedder, embedder_for
from tests.support.cli_runner import assert_error, ndjson, ok, ok_json, peer
from tests.support.groups import admit, found
from tests.support.interop_samples import (
    UNICODE_TEXTS,
    ai_mem_observation,
    ai_mem_snapshot,
    claude_backup,
    claude_export,
    claude_memory,
    drop,
    rng,
    unit_vector,
)

HASH = HashEmbedder(384)


class HashDevice(Device):
    """A device whose embedder is the HashEmbedder: no model, microseconds per text."""

    @property
    def embedder(self) -> Embedder:
        return HASH


@asynccontextmanager
async def hash_device_at(home: Home) -> AsyncIterator[Device]:
    device = HashDevice(home, await home.open_store())
    try:
        yield device
    finally:
        await device.close()


@asynccontextmanager
async def hash_device(path: Path) -> AsyncIterator[Device]:
    """A new device (its own group) with the HashEmbedder."""
    async with hash_device_at(await found(path, "importer")) as device:
        yield device


async def run_import(
    device: Device, data: bytes, *, fmt: str = "auto", strategy: str = "merge", dry_run: bool = False
) -> ImportReport:
    plan = await plan_import(device.store, read_import(data, "sample", fmt), strategy)
    if dry_run:
        return ImportReport(plan, dry_run=True)
    return await apply_import(device, plan)


def counts(report: ImportReport) -> dict[str, int]:
    out = report.to_json()
    return {k: out[k] for k in ("new", "updated", "unchanged", "skipped", "conflicts")}


async def export_bytes(device: Device) -> bytes:
    out = io.BytesIO()
    await export_memories(device.store, out)
    return out.getvalue()


def lines_of(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode("utf-8").split("\n") if line]


def as_file(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")


# ai-mem at scale ------------------------------------------------------------------------------


async def test_ai_mem_snapshot_of_ten_thousand_observations(tmp_path: Path, aio_loop: object) -> None:
    observations = []
    for i in range(10_000):
        fields: dict[str, Any] = {}
        if i % 100 == 3:
            fields["id"] = f"obs-{i}"  # not a UUID
        if i % 7 == 5:
            for key in ("session_id", "project", "concept", "title", "summary", "importance_score", "tags",
                        "metadata", "content_hash", "diff", "assets"):
                fields[key] = drop()
        observations.append(ai_mem_observation(i, **fields))
    # Ids seen again later in the file: the last occurrence wins.
    repeats = [ai_mem_observation(i, content=f"rewritten observation {i} ✍️") for i in (0, 1, 2)]
    data = ai_mem_snapshot(observations + repeats)

    async with hash_device(tmp_path / "home") as device:
        report = await run_import(device, data)
        assert counts(report) == {"new": 10_000, "updated": 0, "unchanged": 0, "skipped": 0, "conflicts": 0}
        assert report.to_json()["duplicates"] == 3 and report.to_json()["records"] == 10_000
        stats = await device.store.stats()
        assert stats.memories == 10_000 and stats.versions == 10_000

        first = await device.store.get(observations[0]["id"])
        assert first.content == "rewritten observation 0 ✍️"
        second = await device.store.get(observations[6]["id"])
        assert (second.kind, second.project, second.tags) == ("decision", "proj-6", ("ai-mem", "t0"))
        assert second.importance == 0.6
        assert second.created_at == second.updated_at == 1_760_000_000.25 + 6
        assert second.metadata["tool"] == "Edit" and second.metadata["n"] == 6
        assert second.metadata["ai_mem"] == {
            "session_id": "session-0", "type": "decision", "concept": "how-it-works", "title": "Observation 6",
            "summary": "summary 6", "content_hash": observations[6]["content_hash"], "assets": [],
        }
        assert second.content == observations[6]["content"]  # emoji, joiners and all
        kinds = {(await device.store.get(observations[i]["id"])).kind for i in range(6, 12)}
        assert kinds == {"decision", "error", "observation", "session_summary", "note", "procedure"}

        mapped_id = str(uuid.uuid5(FOREIGN_ID_NAMESPACE, "ai-mem:obs-103"))
        mapped = await device.store.get(mapped_id)
        assert mapped.metadata["ai_mem"]["id"] == "obs-103" and mapped.content == observations[103]["content"]

        sparse = await device.store.get(observations[5]["id"])
        assert (sparse.project, sparse.tags, sparse.importance) == (None, (), None)
        assert sparse.metadata == {"ai_mem": {"type": "convention"}} and sparse.kind == "procedure"

        separators = [o for o in observations[:12] if "\u2028" in o["content"]]
        assert separators and (await device.store.get(separators[0]["id"])).content == separators[0]["content"]

        # Importing the same snapshot again writes nothing.
        before = await device.store.max_seq()
        again = await run_import(device, data)
        assert counts(again)["unchanged"] == 10_000 and again.to_json()["embedded"] == 0
        assert await device.store.max_seq() == before


async def test_claude_export_of_ten_thousand_memories(tmp_path: Path, aio_loop: object) -> None:
    sparse = ("category", "context_level", "scope", "project_name", "importance", "created_at", "updated_at",
              "last_accessed", "lifecycle_state", "tags", "metadata", "provenance", "embedding_model")
    memories = [claude_memory(i, **({key: drop() for key in sparse} if i % 9 == 4 else {})) for i in range(10_000)]
    memories += [claude_memory(i, content=f"rewritten {i} 🔁") for i in (1, 2)]
    data = json.dumps(claude_export(memories), ensure_ascii=False).encode()
    async with hash_device(tmp_path / "home") as device:
        report = await run_import(device, data)
        assert (report.to_json()["new"], report.to_json()["duplicates"]) == (10_000, 2)
        assert (await device.store.stats()).memories == 10_000
        assert (await device.store.get(memories[1]["id"])).content == "rewritten 1 🔁"
        bare = await device.store.get(memories[4]["id"])
        assert (bare.kind, bare.project, bare.tags, bare.importance, bare.metadata) == ("note", None, (), None, {})

# Strategies -------------------------------------------------------------------------------


def _edit_line(data: bytes, **changes: Any) -> bytes:
    lines = lines_of(data)
    lines[1].update(changes)
    return as_file(lines)


@pytest.mark.parametrize(
    "scenario, strategy, action, winner, siblings",
    [
        # Only the file changed since the export.
        ("file-edited", "skip", "skipped", "local v1", []),
        ("file-edited", "overwrite", "updated", "file v2", []),
        ("file-edited", "merge", "updated", "file v2", []),
        # Only this store changed: the file is an old export.
        ("local-edited", "skip", "skipped", "local v2", []),
        ("local-edited", "overwrite", "updated", "local v1", []),
        ("local-edited", "merge", "skipped", "local v2", []),
        # Both changed; the file's change is the newer one, or the older one.
        ("both-file-newer", "skip", "skipped", "local v2", []),
        ("both-file-newer", "overwrite", "updated", "file v2", []),
        ("both-file-newer", "merge", "conflicts", "file v2", ["local v2"]),
        ("both-local-newer", "merge", "conflicts", "local v2", ["file v2"]),
        # A memory from another tool (no version) that differs from the local one.
        ("foreign-newer", "merge", "conflicts", "file v2", ["local v1"]),
        ("foreign-older", "merge", "conflicts", "local v1", ["file v2"]),
        # Forgotten here after the export.
        ("forgotten", "skip", "skipped", None, []),
        ("forgotten", "overwrite", "updated", "local v1", []),
        ("forgotten", "merge", "skipped", None, []),
        ("forgotten-file-newer", "merge", "updated", "file v2", []),
    ],
)
async def test_strategy(
    tmp_path: Path, aio_loop: object, scenario: str, strategy: str, action: str, winner: str | None, siblings: list[str]
) -> None:
    async with hash_device(tmp_path / "home") as device:
        (memory_id,) = await device.add([Draft("local v1", kind="fact", project="app", tags=("x",))])
        exported = await export_bytes(device)
        local = await device.store.get(memory_id)
        data = exported
        if scenario == "file-edited":
            data = _edit_line(exported, content="file v2")
        elif scenario == "local-edited":
            await device.edit(memory_id, content="local v2")
        elif scenario.startswith("both"):
            await device.edit(memory_id, content="local v2")
            edited = (await device.store.get(memory_id)).updated_at
            data = _edit_line(exported, content="file v2", updated_at=edited + (60 if "file-newer" in scenario else -60))
        elif scenario.startswith("foreign"):
            data = _edit_line(
                exported, content="file v2", version=None, updated_at=local.updated_at + (60 if "newer" in scenario else -60)
            )
        elif scenario.startswith("forgotten"):
            await device.forget(memory_id)
            if scenario == "forgotten-file-newer":
                data = _edit_line(exported, content="file v2", updated_at=local.updated_at + 3600)

        report = await run_import(device, data, strategy=strategy)
        assert counts(report)[action] == 1, counts(report)

        memory = await device.store.get(memory_id)
        if winner is None:
            assert memory.deleted
        else:
            assert not memory.deleted and memory.content == winner
        conflicts = await device.store.conflicts()
        if siblings:
            (live,) = conflicts
            assert [v.content for v in live] == [winner, *siblings]
            assert memory.siblings == len(siblings)
        else:
            assert conflicts == [] and memory.siblings == 0

        # Whatever happened, the same file again changes nothing.
        before = await device.store.max_seq()
        again = await run_import(device, data, strategy=strategy)
        assert counts(again)["new"] + counts(again)["updated"] + counts(again)["conflicts"] == 0, counts(again)
        assert await device.store.max_seq() == before


@pytest.mark.parametrize("file_newer", [True, False])
async def test_an_imported_sibling_resolves_alike_on_another_device(
    tmp_path: Path, aio_loop: object, file_newer: bool
) -> None:
    a_home = await found(tmp_path / "a", "alpha")
    b_home = await admit(a_home, tmp_path / "b", "bravo")
    async with hash_device_at(a_home) as a, hash_device_at(b_home) as b:
        (memory_id,) = await a.add([Draft("local v1")])
        exported = await export_bytes(a)
        await a.edit(memory_id, content="local v2")
        edited = (await a.store.get(memory_id)).updated_at
        data = _edit_line(exported, content="file v2", updated_at=edited + (60 if file_newer else -60))
        assert counts(await run_import(a, data))["conflicts"] == 1
        async for batch in a.store.missing_for(await b.store.vector()):
            await b.store.apply(batch)
        on_a, on_b = await a.store.conflicts(), await b.store.conflicts()
        assert [(v.version, v.state) for v in on_a[0]] == [(v.version, v.state) for v in on_b[0]]
        assert on_b[0][0].content == ("file v2" if file_newer else "local v2")

async def test_import_keeps_created_and_updated_times_and_a_dry_run_writes_nothing(
    tmp_path: Path, aio_loop: object
) -> None:
    record: dict[str, Any] = {
        "id": str(uuid.uuid4()), "content": "kept as it was", "kind": "decision", "project": None, "tags": [],
        "metadata": {}, "created_at": 1_600_000_000.5, "updated_at": 1_650_000_000.25, "importance": None,
    }
    async with hash_device(tmp_path / "home") as device:
        dry = await run_import(device, as_file([record]), dry_run=True)
        assert counts(dry)["new"] == 1 and await device.store.max_seq() == 0
        await run_import(device, as_file([record]))
        memory = await device.store.get(record["id"])
        assert (memory.created_at, memory.updated_at) == (1_600_000_000.5, 1_650_000_000.25)



async def test_an_import_planned_before_another_write_writes_nothing(tmp_path: Path, aio_loop: object) -> None:
    async with hash_device(tmp_path / "home") as device:
        (memory_id,) = await device.add([Draft("first text")])
        header, line = lines_of(await export_bytes(device))
        line["content"] = "text from the file"
        data = as_file([line, {"id": str(uuid.uuid4()), "content": "a new one"}])
        plan = await plan_import(device.store, read_import(data, "sample"), "overwrite")
        assert counts(ImportReport(plan, dry_run=True))["new"] == 1
        await device.edit(memory_id, content="edited meanwhile")  # another process, between plan and apply
        before = await device.store.max_seq()
        with pytest.raises(StoreError, match="changed while it was being imported"):
            await apply_import(device, plan)
        assert await device.store.max_seq() == before
        assert (await device.store.get(memory_id)).content == "edited meanwhile"

# Vectors that come with the file ---------------------------------------------------------------


def test_which_vectors_are_reused() -> None:
    minilm = embedder_for(MINILM_ID)  # not loaded: only its id and dimensions are read
    assert vector_is_reusable("all-MiniLM-L6-v2", minilm)
    assert vector_is_reusable("sentence-transformers/all-MiniLM-L6-v2", minilm)
    assert vector_is_reusable(MINILM_ID, minilm)
    assert not vector_is_reusable("text-embedding-3-small", minilm)
    assert not vector_is_reusable("all-MiniLM-L6-v2", HASH)
    assert vector_is_reusable("hash-384", HASH) and not vector_is_reusable(None, HASH)


async def test_claude_export_fields_and_vectors(tmp_path: Path, aio_loop: object) -> None:
    r = rng()
    vectors = {i: unit_vector(r) for i in range(6)}
    memories = [claude_memory(i, vector=vectors[i], embedding_model="hash-384") for i in range(4)]
    memories.append(claude_memory(4, vector=vectors[4][:100], embedding_model="hash-384"))  # wrong size: re-embedded
    memories.append(claude_memory(5, embedding_model=drop(), id="not-a-uuid", tags=drop(), metadata=drop()))
    data = json.dumps(claude_export(memories), indent=2).encode()
    assert sniff_format(data) == "claude-memory"
    async with hash_device(tmp_path / "home") as device:
        report = await run_import(device, data)
        assert counts(report)["new"] == 6
        assert (report.vectors_reused, report.embedded) == (4, 2)

        first = await device.store.get(memories[0]["id"])
        assert (first.kind, first.project, first.tags, first.importance) == ("preference", "proj-0", ("c0", "claude"), 0.5)
        assert first.metadata["source"] == "chat"
        assert first.metadata["claude_memory"] == {
            "category": "preference", "context_level": "PROJECT_CONTEXT", "scope": "project",
            "last_accessed": "2025-06-03T08:00:00+00:00", "lifecycle_state": "ACTIVE", "embedding_model": "hash-384",
            "provenance": {"source": "user_statement", "confidence": 0.9, "created_by": "claude"},
        }
        assert first.created_at == 1_748_779_200.0  # 2025-06-01T12:00:00Z
        assert first.updated_at == 1_748_865_600.0  # 2025-06-02T12:00:00Z
        kinds = [(await device.store.get(m["id"])).kind for m in memories[:4]]
        assert kinds == ["preference", "fact", "observation", "procedure"]

        mapped = await device.store.get(str(uuid.uuid5(FOREIGN_ID_NAMESPACE, "claude-memory:not-a-uuid")))
        assert mapped.metadata["claude_memory"]["id"] == "not-a-uuid" and mapped.tags == ()

        stored = {c.memory_id: c for c in await device.store.changes_since(0)}
        for i in range(4):
            vector = struct.unpack("<384f", stored[memories[i]["id"]].embedding)
            assert max(abs(a - b) for a, b in zip(vector, vectors[i], strict=True)) < 1e-6
        assert stored[memories[4]["id"]].embedding == HASH.embed([memories[4]["content"]])[0].astype("<f4").tobytes()


# Bad files: one clear message that names the place, nothing imported --------------------------------

_ID = "021dc9f3-8499-40ba-9b11-88cdcd19431e"  # fixed: it appears in test ids, which must be the same in every run


@pytest.mark.parametrize(
    "fmt, data, words",
    [
        ("ndjson", b'{"id": "%s", "content": "a"}\n{"id": \n' % _ID.encode(), ["sample line 2:", "not valid JSON"]),
        ("ndjson", b'{"content": "no id"}\n', ["line 1", '"id" is missing']),
        ("ndjson", b'{"id": "12", "content": "x"}\n', ["line 1", "not a memory id"]),
        ("ndjson", b'{"id": "%s", "content": "x", "kind": "Not A Kind"}\n' % _ID.encode(), ["line 1", '"kind"']),
        ("ndjson", b'{"id": "%s", "content": "x", "importance": 2}\n' % _ID.encode(), ["line 1", "between 0 and 1"]),
        ("ndjson", b'{"id": "%s", "content": "x", "colour": "red"}\n' % _ID.encode(), ["line 1", "colour"]),
        ("ndjson", b'{"id": "%s", "content": "   "}\n' % _ID.encode(), ["line 1", "non-empty"]),
        ("ndjson", b'{"id": "%s", "content": "\xff"}\n' % _ID.encode(), ["line 1", "UTF-8"]),
        ("ndjson", b'{"id": "%s", "content": "x\\ud800"}\n' % _ID.encode(), ["line 1", "surrogate"]),
        ("ndjson", b'{"id": "%s", "content": "x", "metadata": {"k": "\\udfff"}}\n' % _ID.encode(),
         ["line 1", "metadata"]),
        ("ndjson", b'{"peer_export": 9}\n', ["line 1", "newer peer"]),
        ("ndjson", b'{"peer_export": 1, "count": 2}\n{"id": "%s", "content": "x"}\n' % _ID.encode(),
         ["line 3", "announces 2", "cut short"]),
        ("ai-mem", ai_mem_snapshot([ai_mem_observation(i) for i in range(9)], raw_lines={7: '{"id": "x", "content": ""}'}),
         ["sample line 7:", "content"]),
        ("ai-mem", ai_mem_snapshot([ai_mem_observation(0, created_at="yesterday")]), ["line 2", "created_at"]),
        ("ai-mem", ai_mem_snapshot([ai_mem_observation(0, importance_score=5)]), ["line 2", "importance_score"]),
        ("ai-mem", ai_mem_snapshot([ai_mem_observation(0, tags="one")]), ["line 2", "tags"]),
        ("ai-mem", ai_mem_snapshot([ai_mem_observation(0)], raw_lines={2: '{"id": "a\\udc00", "content": "x"}'}),
         ["line 2", "surrogate"]),
        ("claude-memory", json.dumps(claude_export([claude_memory(0, embedding=[[1.0], [1.0, 2.0]])])).encode(),
         ["memory 1", "embedding"]),
        ("claude-memory", json.dumps(claude_export([claude_memory(0, embedding=[1.0, float("nan")])])).encode(),
         ["memory 1", "not a finite number"]),
        ("claude-memory", json.dumps(claude_export([claude_memory(0), claude_memory(1, content=None)]), indent=1).encode(),
         ["memory 2 (id ", '"content"']),
        ("claude-memory", b'{\n  "memories": [\n    {"id": 1,}\n  ]\n}', ["sample line 3:", "not valid JSON"]),
        ("claude-memory", json.dumps({**claude_export([claude_memory(0)]), "memory_count": 5}).encode(), ["memory_count"]),
        ("claude-memory", json.dumps({"memories": {}}).encode(), ['"memories" list']),
        ("auto", b"just some text\n", ["cannot tell the format", "--format"]),
    ],
)
def test_bad_files_name_the_line(fmt: str, data: bytes, words: list[str]) -> None:
    with pytest.raises(ImportFormatError) as caught:
        read_import(data, "sample", fmt)
    message = caught.value.message
    for word in words:
        assert word in message, (word, message)
    if fmt != "auto":
        assert message.endswith("nothing was imported")


_SAMPLES = (
    ai_mem_snapshot([ai_mem_observation(i) for i in range(3)]),
    json.dumps(claude_export([claude_memory(i, vector=[0.5, -0.25, 1.0]) for i in range(3)]), indent=1).encode(),
    b'{"peer_export": 1, "count": 1}\n{"id": "%s", "content": "x", "tags": ["a"], "version": "AB:1"}\n' % _ID.encode(),
)


@settings(max_examples=300, deadline=None)
@given(
    sample=st.sampled_from(_SAMPLES),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.binary(max_size=6), st.integers(0, 8)), min_size=1, max_size=4),
)
def test_a_damaged_file_is_refused_with_a_message(sample: bytes, edits: list[tuple[int, bytes, int]]) -> None:
    """Any bytes spliced into any place: the file reads, or it is refused with an ImportFormatError (never a traceback)."""
    data = bytearray(sample)
    for at, insert, cut in edits:
        at %= len(data) + 1
        data[at : at + cut] = insert
    try:
        read_import(bytes(data), "sample")
    except ImportFormatError as e:
        assert e.message.startswith("sample") or "format" in e.message

def test_formats_are_told_apart() -> None:
    assert sniff_format(b'\xef\xbb\xbf{"peer_export": 1}\n') == "ndjson"
    assert read_import(b'\xef\xbb\xbf{"id": "%s", "content": "x"}\r\n' % _ID.encode(), "bom").records[0].id == _ID
    assert sniff_format(b'{"peer_export": 1, "count": 0}\n') == "ndjson"
    assert sniff_format(b'{"id": "x", "content": "y"}\n') == "ndjson"
    assert sniff_format(ai_mem_snapshot([ai_mem_observation(0)])) == "ai-mem"
    assert sniff_format(ai_mem_snapshot([ai_mem_observation(0)]).split(b"\n", 1)[1]) == "ai-mem"
    assert sniff_format(json.dumps(claude_export([claude_memory(0)])).encode()) == "claude-memory"
    assert sniff_format(b"\x1f\x8b\x08\x00") == "claude-memory"


# Acceptance: the real command --------------------------------------------------------------------


def _store_fingerprint(home: Path) -> tuple[str, dict[str, Any]]:
    """The store file's bytes (after a read-only command has checkpointed its log) and `peer stats`."""
    stats = ok_json(home, "stats")
    stats.pop("index", None)
    return hashlib.sha256((home / "peer.db").read_bytes()).hexdigest(), stats


def _fields(memory: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in memory.items() if k not in ("version", "siblings")}


def test_export_import_round_trip_every_field_and_search(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ok(a, "init", "--name", "alpha")
    ok(b, "init", "--name", "bravo")
    items: list[dict[str, Any]] = [
        {"content": UNICODE_TEXTS[0], "kind": "procedure", "project": "ops", "tags": ["deploy", "🚀"],
         "metadata": {"nested": {"list": [1, 2.5, None, True]}, "שם": "ערך"}, "importance": 0.75,
         "created_at": 1_700_000_000.125},
        {"content": UNICODE_TEXTS[2], "kind": "fact"},
        {"content": UNICODE_TEXTS[5], "kind": "note", "project": "ops", "tags": ["sep"]},
        {"content": "Use pytest -q in the repo root to run the test suite", "kind": "procedure", "project": "app"},
        {"content": "this one will be forgotten", "kind": "note"},
    ]
    ids = ok_json(a, "add", "--file", "-", input=ndjson(items))["ids"]
    ok(a, "forget", ids[4])
    export = tmp_path / "out.ndjson"
    assert ok_json(a, "export", str(export))["exported"] == 4
    assert stat.S_IMODE(os.stat(export).st_mode) == 0o600
    header, *memories = lines_of(export.read_bytes())
    assert header["peer_export"] == 1 and header["count"] == 4 and header["device_id"]
    assert ids[4] not in {m["id"] for m in memories}  # a tombstone is not exported
    assert set(memories[0]) == {"id", "content", "kind", "project", "tags", "metadata", "created_at", "updated_at",
                                "importance", "version"}

    report = ok_json(b, "import", str(export))
    assert (report["format"], report["new"], report["embedded"]) == ("ndjson", 4, 4)
    on_a = sorted((_fields(m) for m in ok_json(a, "list")), key=lambda m: m["id"])
    listed_b = ok_json(b, "list")
    on_b_versions = [m["version"] for m in listed_b]
    on_b = sorted((_fields(m) for m in listed_b), key=lambda m: m["id"])
    assert on_a == on_b and len(on_b) == 4
    assert next(m for m in on_b if m["id"] == ids[0])["created_at"] == 1_700_000_000.125

    # The imported memories are found by meaning (the real model embedded them).
    found_ = ok_json(b, "search", "how do I run the tests", "-k", "1")
    assert found_[0]["id"] == ids[3]

    # Importing it again changes nothing.
    again = ok_json(b, "import", str(export))
    assert (again["unchanged"], again["new"], again["updated"]) == (4, 0, 0)
    assert (ok_json(b, "stats")["versions"], ok_json(b, "list", "--limit", "1")[0]["version"]) == (4, on_b_versions[0])

    # Filters; `-` writes to stdout.
    only_ops = lines_of(ok(a, "export", "-", "--project", "ops", "--kind", "procedure").encode())
    assert only_ops[0]["filters"] == {"project": "ops", "kind": "procedure", "since": None} and len(only_ops) == 2
    assert lines_of(ok(a, "export", "-", "--since", "2099-01-01").encode())[0]["count"] == 0


def test_bad_line_and_dry_run_change_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "init")
    ok(home, "add", "already here", "--kind", "fact")
    good = [ai_mem_observation(i) for i in range(10)]
    bad_file = tmp_path / "bad.ndjson"
    bad_file.write_bytes(ai_mem_snapshot(good, raw_lines={7: '{"id": "x", "content": "ok", "created_at": [1]}'}))
    before = _store_fingerprint(home)

    done = peer(home, "import", str(bad_file))
    assert_error(done, 1, f"{bad_file} line 7:", "created_at", "nothing was imported")
    assert _store_fingerprint(home) == before

    good_file = tmp_path / "good.ndjson"
    good_file.write_bytes(ai_mem_snapshot(good))
    dry = ok_json(home, "import", str(good_file), "--dry-run")
    assert (dry["dry_run"], dry["format"], dry["new"], dry["records"]) == (True, "ai-mem", 10, 10)
    assert _store_fingerprint(home) == before
    assert "would import" in ok(home, "import", "-", "--dry-run", input=good_file.read_text())

    done = peer(home, "import", str(tmp_path / "missing.json"))
    assert_error(done, 1, "cannot read", "missing.json")
    done = peer(home, "import", str(good_file), "--strategy", "newest")
    assert done.returncode == 2 and "newest" in done.stderr


def test_claude_backup_with_vectors_checksums_and_unsafe_entries(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "init")
    r = rng(3)
    memories = [claude_memory(i) for i in range(40)]
    vectors = {m["id"]: unit_vector(r) for m in memories}
    backup = claude_backup(tmp_path / "backup.tar.gz", memories, vectors)
    before = _store_fingerprint(home)

    tampered = claude_backup(tmp_path / "tampered.tar.gz", memories, vectors, tamper="memories.json")
    assert_error(peer(home, "import", str(tampered)), 1, "memories.json", "checksum mismatch")
    evil = claude_backup(tmp_path / "evil.tar.gz", memories, vectors, extra={"../../evil.json": b"{}"})
    assert_error(peer(home, "import", str(evil)), 1, "unsafe path")
    assert _store_fingerprint(home) == before

    # all-MiniLM-L6-v2 vectors of 384 dimensions are this device's model's: no model run.
    report = ok_json(home, "import", str(backup))
    assert (report["format"], report["new"], report["vectors_reused"], report["embedded"]) == ("claude-memory", 40, 40, 0)
    shown = ok_json(home, "show", memories[9]["id"])
    assert shown["content"] == memories[9]["content"] and shown["kind"] == "procedure"
    assert shown["metadata"]["claude_memory"]["provenance"]["source"] == "user_statement"


def test_merge_keeps_both_as_siblings_in_peer_conflicts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "init")
    memory_id = ok_json(home, "add", "the build uses make", "--kind", "fact")["id"]
    export = tmp_path / "out.ndjson"
    ok(home, "export", str(export))
    ok(home, "edit", memory_id, "--text", "the build uses ninja")
    header, record = lines_of(export.read_bytes())
    record.update(content="the build uses bazel", updated_at=record["updated_at"] + 3600)
    export.write_bytes(as_file([header, record]))

    merged = ok_json(home, "import", str(export))  # merge is the default
    assert (merged["strategy"], merged["conflicts"]) == ("merge", 1)
    (conflict,) = ok_json(home, "conflicts")
    assert conflict["id"] == memory_id
    text = json.dumps(conflict)
    assert "the build uses bazel" in text and "the build uses ninja" in text
    assert ok_json(home, "show", memory_id)["content"] == "the build uses bazel"  # the newer wins
    assert "1 unchanged" in ok(home, "import", str(export))

"""The MCP `consolidate`, `merge` and `unmerge` tools through the SDK's own client.

A small home holds an exact copy, a reworded note and two template
sentences about different subjects; an assistant asks for suggestions,
merges one group, and undoes it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.support.cli_runner import ok, ok_json

from .client import call, fails, mcp_session

WIFI = "The office wifi password rotates every Monday; ask IT for the new one."
TESTS = "Run the test suite with pytest -q from the repository root."
TESTS_AGAIN = "Run the test suite from the repository root with pytest -q."
ENCODER = "Look up the codec for the given encoding and return its IncrementalEncoder class or factory function."
DECODER = "Look up the codec for the given encoding and return its IncrementalDecoder class or factory function."


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    ok(path, "init")
    for text, tag in ((WIFI, "office"), (TESTS, "testing"), (TESTS_AGAIN, "ci"), (ENCODER, "codecs"), (DECODER, "codecs")):
        ok(path, "add", text, "--project", "work", "--tag", tag)
    ok(path, "add", WIFI.upper(), "--project", "work", "--tag", "copy", "--allow-duplicate")
    return path


def ids_of(home: Path) -> dict[str, str]:
    return {m["content"]: m["id"] for m in ok_json(home, "list")}


async def test_consolidate_suggests_and_merge_and_unmerge_change_the_store(home: Path) -> None:
    held = ids_of(home)
    versions = ok_json(home, "stats")["versions"]
    with trio.fail_after(120):
        async with mcp_session(home, "--project", "work") as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            found = await call(session, "consolidate", {})
            assert ok_json(home, "stats")["versions"] == versions  # suggesting writes nothing
            groups = {frozenset(m["id"] for m in g["members"]): g for g in found["groups"]}
            exact = groups[frozenset({held[WIFI], held[WIFI.upper()]})]
            near = groups[frozenset({held[TESTS], held[TESTS_AGAIN]})]
            merged = await call(session, "merge", {"ids": [held[TESTS], held[TESTS_AGAIN]], "keep": held[TESTS]})
            listed = await call(session, "list", {})
            await fails(session, "get", {"ids": [held[TESTS_AGAIN]]}, "merged into", held[TESTS])
            await fails(session, "merge", {"ids": [held[TESTS_AGAIN], held[WIFI]]}, "already merged", held[TESTS])
            await fails(session, "merge", {"ids": [held[WIFI]]}, "at least two")
            back = await call(session, "unmerge", {"id": held[TESTS_AGAIN][:8]})
            await fails(session, "unmerge", {"id": held[TESTS_AGAIN]}, "not merged")
            after = await call(session, "list", {})
    annotations = tools["consolidate"].annotations
    assert annotations is not None and annotations.read_only_hint is True
    annotations = tools["merge"].annotations
    assert annotations is not None and annotations.destructive_hint is True and annotations.read_only_hint is False
    # The exact copy and the reworded note are suggested; the two codec sentences are not one fact.
    assert exact["kind"] == "exact" and exact["auto_merge"] is True and exact["keep"] == held[WIFI]
    assert near["kind"] == "near" and near["similarity"] >= 0.9
    assert frozenset({held[ENCODER], held[DECODER]}) not in groups
    assert found["total"] == len(found["groups"]) == 2 and found["project"] == "work" and found["hint"]
    member = exact["members"][0]
    assert member["snippet"] == WIFI and member["tags"] == ["office"] and member["updated"].endswith("Z")
    # merge: the other leaves lists and search, its tags go to the survivor; unmerge brings it back.
    assert merged["id"] == held[TESTS] and merged["merged"] == [held[TESTS_AGAIN]]
    assert held[TESTS_AGAIN] not in {m["id"] for m in listed["memories"]}
    assert back == {"id": held[TESTS_AGAIN], "was_merged_into": held[TESTS]}
    assert held[TESTS_AGAIN] in {m["id"] for m in after["memories"]}
    restored = ok_json(home, "show", held[TESTS_AGAIN])
    assert (restored["content"], restored["tags"], restored["deleted"]) == (TESTS_AGAIN, ["ci"], False)
    assert ok_json(home, "show", held[TESTS])["tags"] == ["testing"]

"""`peer mcp` through the SDK's own client: tools, search quality, pages, bad input, other writers.

One home of 1,000 real paragraphs (plus three memories an assistant would
write) is built once for the module with the real CLI and the real model;
each test starts its own `peer mcp` subprocess on it.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from peer.dev.corpus import paragraphs
from tests.support.cli_runner import PEER, ndjson, ok, ok_json

from .client import call, fails, mcp_session

PYTEST = "Run the test suite with pytest: `.venv/bin/python -m pytest tests -x -q`; `make test` runs all of it."
DEPLOY = "Deploys go out from the release branch on Thursdays after the changelog is reviewed."
DATABASE = "The staging database is reset every night at 02:00 UTC from the anonymised production dump."


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("mcp") / "home"
    ok(path, "init", "--name", "laptop")
    ok(path, "add", "--file", "-", "--project", "pydocs", input=ndjson([{"content": p} for p in paragraphs(1000)]))
    ok(path, "reindex")
    yield path


def live_count(home: Path) -> int:
    return int(ok_json(home, "stats")["memories"])


EXPECTED_TOOLS = {
    # name: (read_only, destructive, idempotent)
    "remember": (False, False, False),
    "search": (True, None, None),
    "get": (True, None, None),
    "update": (False, True, False),
    "forget": (False, True, True),
    "list": (True, None, None),
    "conflicts": (True, None, None),
    "resolve": (False, True, False),
    "status": (True, None, None),
    "sync": (False, False, True),
    "consolidate": (True, None, None),
    "merge": (False, True, False),
    "unmerge": (False, False, False),
}


async def test_every_tool_has_schemas_annotations_and_a_description(home: Path) -> None:
    with trio.fail_after(60):
        async with mcp_session(home) as session:
            listed = (await session.list_tools()).tools
    assert {t.name for t in listed} == set(EXPECTED_TOOLS)
    for tool in listed:
        read_only, destructive, idempotent = EXPECTED_TOOLS[tool.name]
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is read_only, tool.name
        assert tool.annotations.destructive_hint is destructive, tool.name
        assert tool.annotations.idempotent_hint is idempotent, tool.name
        assert tool.description and len(tool.description) > 40, tool.name
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema is not None and tool.output_schema["type"] == "object", tool.name
    schemas = {t.name: t for t in listed}
    assert schemas["remember"].input_schema["required"] == ["content"]
    assert schemas["search"].input_schema["required"] == ["query"]
    assert {"results", "next_cursor", "widened"} <= set(schemas["search"].output_schema["properties"])  # type: ignore[index]
    hit = json.dumps(schemas["search"].output_schema)
    for field in ("score", "snippet", "has_conflict", "updated", "tags", "project", "kind"):
        assert f'"{field}"' in hit, field


async def test_the_pytest_memory_comes_first_among_a_thousand_paragraphs(home: Path) -> None:
    with trio.fail_after(120):
        async with mcp_session(home, "--project", "webapp") as session:
            ids = {}
            for text, kind, tags in ((PYTEST, "procedure", "testing,ci"), (DEPLOY, "decision", ["release"]),
                                     (DATABASE, "fact", "staging")):
                made = await call(session, "remember", {"content": text, "kind": kind, "tags": tags})
                assert made["project"] == "webapp" and made["kind"] == kind
                ids[text] = made["id"]
            found = await call(session, "search", {"query": "how do I run the tests"})
            # The guessed spellings a model might use mean the same.
            guessed = await call(session, "search", {"q": "how do I run the tests", "top_k": 3})
            again = await call(session, "remember", {"text": PYTEST + " ", "project": "webapp"})
            await call(session, "forget", {"id": again["id"]})
    assert found["results"][0]["id"] == ids[PYTEST], found["results"][:3]
    first = found["results"][0]
    assert first["kind"] == "procedure" and first["project"] == "webapp" and first["tags"] == ["ci", "testing"]
    assert first["snippet"].startswith("Run the test suite") and first["has_conflict"] is False
    assert first["updated"].endswith("Z")
    assert [r["id"] for r in guessed["results"]] == [r["id"] for r in found["results"][:3]]
    # The same text again: remember says which memory it repeats.
    assert [s["id"] for s in again["similar"]][:1] == [ids[PYTEST]] and again["note"]


async def test_get_update_forget_and_list_pages(home: Path) -> None:
    with trio.fail_after(120):
        async with mcp_session(home) as session:
            made = await call(session, "remember", {
                "content": "The VPN config lives in ops/vpn.conf", "project": "ops", "metadata": {"source": "wiki"},
            })
            memory_id = made["id"]
            got = await call(session, "get", {"ids": memory_id[:8]})
            await call(session, "update", {"id": memory_id, "content": "The VPN config moved to infra/vpn/wg0.conf",
                                           "tags": ["network"]})
            updated = await call(session, "get", {"ids": [memory_id]})
            found = await call(session, "search", {"query": "where is the wireguard vpn config", "project": "ops"})
            await call(session, "forget", {"id": memory_id})
            gone = await fails(session, "get", {"ids": [memory_id]}, "forgotten")
            after = await call(session, "search", {"query": "where is the wireguard vpn config", "project": "ops"})
            # Every live memory, in pages of 100: each once, none missing.
            seen: list[str] = []
            cursor = None
            pages = 0
            while True:
                page = await call(session, "list", {"all_projects": True, "limit": 100, "cursor": cursor})
                seen.extend(m["id"] for m in page["memories"])
                pages += 1
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            # A search paginates too: the second page continues the first.
            first = await call(session, "search", {"query": "exceptions raised by the interpreter", "limit": 5,
                                                   "all_projects": True})
            second = await call(session, "search", {"query": "exceptions raised by the interpreter", "limit": 5,
                                                    "all_projects": True, "cursor": first["next_cursor"]})
            both = await call(session, "search", {"query": "exceptions raised by the interpreter", "limit": 10,
                                                  "all_projects": True})
    (memory,) = got["memories"]
    assert memory["content"] == "The VPN config lives in ops/vpn.conf" and memory["metadata"] == {"source": "wiki"}
    assert updated["memories"][0]["content"].startswith("The VPN config moved") and updated["memories"][0]["tags"] == ["network"]
    assert updated["memories"][0]["metadata"] == {"source": "wiki"}
    assert found["results"][0]["id"] == memory_id
    assert "forgotten" in gone and all(r["id"] != memory_id for r in after["results"])
    assert len(seen) == len(set(seen)) == live_count(home) and pages >= 10
    assert [r["id"] for r in first["results"] + second["results"]] == [r["id"] for r in both["results"]]


async def test_results_stay_within_the_token_budget(home: Path) -> None:
    with trio.fail_after(120):
        async with mcp_session(home) as session:
            page = await call(session, "list", {"all_projects": True, "limit": 100})
            # Three memories of about 5,000 tokens each: one fits in an answer, not two.
            chapters = [" ".join(paragraphs(300)[i * 100 : (i + 1) * 100])[:20000] for i in range(3)]
            ids = [(await call(session, "remember", {"content": c, "project": "scratch"}))["id"] for c in chapters]
            many = await call(session, "get", {"ids": ids})
            big = await call(session, "remember", {"content": "long note " * 3500, "project": "scratch"})
            one = await call(session, "get", {"ids": [big["id"]]})
            for memory_id in [*ids, big["id"]]:
                await call(session, "forget", {"id": memory_id})
    for result in (page, many, one):
        assert len(json.dumps(result)) / 4 <= 8000
    # What did not fit is named, to fetch next; a memory longer than the budget is cut and says so.
    assert [m["id"] for m in many["memories"]] + many["omitted_ids"] == ids and many["omitted_ids"]
    assert all(not m["truncated"] for m in many["memories"])
    assert one["memories"][0]["truncated"] is True and one["memories"][0]["content_chars"] == len("long note " * 3500)


BAD_CALLS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("get", {"ids": ["0123abcd-0000-4000-8000-000000000000"]}, ("no memory",)),
    ("get", {"ids": ["not-an-id!"]}, ("not a memory id",)),
    ("update", {"id": "ffffffff", "content": "x"}, ("no memory",)),
    ("forget", {"id": "ffffffff"}, ("no memory",)),
    ("remember", {"content": "   "}, ("empty",)),
    ("remember", {"content": "x" * (1 << 20 + 1)}, ("limited to",)),
    ("remember", {"content": "fine", "importance": "very"}, ("importance",)),
    ("remember", {"content": "fine", "importance": 3}, ("between 0 and 1",)),
    ("remember", {"content": "fine", "kind": "Not A Kind"}, ("not a kind",)),
    ("remember", {"content": "fine", "colour": "blue"}, ("no parameter 'colour'", "content")),
    ("remember", {"kind": "fact"}, ("missing content",)),
    ("search", {"query": "x", "limit": "lots"}, ("limit",)),
    ("search", {"query": "x", "limit": 0}, ("limit",)),
    ("search", {"query": "x", "cursor": "page two"}, ("cursor",)),
    ("search", {"query": "x", "since": "last tuesdayish"}, ("neither a duration",)),
    ("search", {"query": "x", "q": "y"}, ("give one",)),
    ("list", {"tags": 7}, ("tags",)),
    ("resolve", {"id": "ffffffff", "keep": "a:1"}, ("no memory",)),
]


async def test_bad_input_is_a_one_line_tool_error_and_the_next_call_works(home: Path) -> None:
    before = live_count(home)
    with trio.fail_after(120):
        async with mcp_session(home) as session:
            for tool, arguments, words in BAD_CALLS:
                await fails(session, tool, arguments, *words)
                await call(session, "status", {})
            unknown = await session.call_tool("recall", {"query": "x"})
            still = await call(session, "search", {"query": "how do I run the tests", "limit": 1})
    assert unknown.is_error
    assert still["results"]
    assert live_count(home) == before  # nothing was written


async def test_a_memory_added_by_the_cli_is_searchable_through_the_server_at_once(home: Path) -> None:
    with trio.fail_after(120):
        async with mcp_session(home) as session:
            await call(session, "search", {"query": "warm up", "limit": 1})
            added = ok(home, "add", "The coffee machine on floor 3 needs descaling every second Monday",
                       "--project", "office").strip()
            found = await call(session, "search", {"query": "when to descale the coffee machine", "project": "office"})
            ok(home, "forget", added)
            after = await call(session, "search", {"query": "when to descale the coffee machine", "project": "office"})
    assert found["results"][0]["id"] == added
    assert all(r["id"] != added for r in after["results"])


async def test_the_default_project_comes_from_the_workspace(home: Path, tmp_path: Path) -> None:
    repo = tmp_path / "acme-api"
    (repo / ".git").mkdir(parents=True)
    (repo / "src").mkdir()
    workspace = tmp_path / "billing"
    workspace.mkdir()
    # Another project's memory about dev ports: what the search below may widen to (search shows
    # only results close in meaning or holding every keyword, so an unrelated one would not do).
    ok(home, "add", "the billing service's dev server listens on port 9090", "--project", "billing-dev")
    ok(home, "add", "Run the test suite with pytest -q from the repository root", "--project", "billing-dev")
    with trio.fail_after(120):
        # No roots from the client: the git repository of the working directory.
        async with mcp_session(home, cwd=repo / "src") as session:
            made = await call(session, "remember", {"content": "acme-api uses port 8443 in development"})
            found = await call(session, "search", {"query": "which port does the dev server use"})
            other = await call(session, "search", {"query": "how do I run the tests"})
            status = await call(session, "status", {})
            await call(session, "forget", {"id": made["id"]})
        # The client's workspace root wins over the working directory.
        async with mcp_session(home, cwd=repo, roots=[workspace]) as session:
            rooted = await call(session, "remember", {"content": "billing invoices are numbered per year"})
            await call(session, "forget", {"id": rooted["id"]})
        # --project wins over both.
        async with mcp_session(home, "--project", "forced", cwd=repo, roots=[workspace]) as session:
            forced = await call(session, "remember", {"content": "a note for the forced project"})
            await call(session, "forget", {"id": forced["id"]})
    assert made["project"] == "acme-api" and status["default_project"] == "acme-api"
    # The project's own memory first; then, as it holds fewer than a page, other projects' (and it says so).
    assert found["project"] == "acme-api" and found["results"][0]["id"] == made["id"]
    assert found["widened"] and "other projects" in found["note"]
    assert {r["project"] for r in found["results"][1:]} - {"acme-api"}
    # Nothing in acme-api is close to this question (its port note is filtered out as unrelated): widened.
    assert other["widened"] and made["id"] not in {r["id"] for r in other["results"]}
    assert "pytest" in other["results"][0]["snippet"]
    assert rooted["project"] == "billing"
    assert forced["project"] == "forced"


def test_peer_context_prints_the_project_block(home: Path, tmp_path: Path) -> None:
    ok(home, "add", "Always run the linter before pushing", "--project", "ctx", "--importance", "0.9", "--kind", "preference")
    ok(home, "add", "The CI cache key includes the lock file hash", "--project", "ctx")
    block = ok(home, "context", "--project", "ctx")
    data = ok_json(home, "context", "--project", "ctx")
    small = ok(home, "context", "--all-projects", "--limit", "300")
    assert block.startswith("# Memories from peer (project ctx: 2 memories)")
    assert block.index("Always run the linter") < block.index("The CI cache key")  # important first
    assert [m["section"] for m in data["memories"]] == ["important", "recent"]
    assert len(small) / 4 <= 300


def test_print_config_names_this_peer_and_this_home(home: Path) -> None:
    code = ok(home, "mcp", "--print-config", "claude-code")
    desktop = json.loads(ok(home, "mcp", "--print-config", "claude-desktop"))
    vscode = json.loads(ok(home, "mcp", "--print-config", "vscode"))
    assert code.startswith("claude mcp add --transport stdio --scope user peer -- /")
    entry = desktop["mcpServers"]["peer"]
    assert Path(entry["command"]).is_absolute() and entry["args"][-3:] == ["--home", str(home.resolve()), "mcp"][-3:]
    assert vscode["servers"]["peer"]["type"] == "stdio"
    # The printed command really starts this server.
    done = subprocess.run([entry["command"], *entry["args"], "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "MCP" in done.stdout


async def test_a_client_that_disconnects_mid_call_leaves_the_store_consistent(home: Path) -> None:
    before = live_count(home)
    content = "a note written while the client went away " + " ".join(paragraphs(40))
    with trio.fail_after(120):
        async with mcp_session(home) as session:
            await call(session, "status", {})
            with trio.move_on_after(0.05):
                await session.call_tool("remember", {"content": content, "project": "gone"})
        # The server saw stdin close and exited; the next one finds a healthy store.
        async with mcp_session(home) as session:
            listed = await call(session, "list", {"project": "gone"})
            for memory in listed["memories"]:
                await call(session, "forget", {"id": memory["id"]})
    # All of the memory or none of it, and nothing damaged.
    assert len(listed["memories"]) <= 1
    assert live_count(home) == before
    assert ok_json(home, "doctor")["healthy"]


def test_stdout_carries_protocol_messages_only(home: Path) -> None:
    """Raw JSON-RPC on the pipes, as a host sends it: every stdout line is a JSON-RPC message; logs go to stderr."""
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "search", "arguments": {"query": "how do I run the tests", "all_projects": True}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "search", "arguments": "not an object"}},
    ]
    server = subprocess.Popen(
        [*PEER, "--home", str(home), "mcp", "--verbose"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=home,
    )
    assert server.stdin is not None and server.stdout is not None
    watchdog = threading.Timer(120, server.kill)  # a hung server fails the test instead of hanging it
    watchdog.start()
    try:
        # stdin stays open until every answer is in, as a host keeps it (EOF ends the session).
        server.stdin.write("".join(json.dumps(r) + "\n" for r in requests))
        server.stdin.flush()
        lines: list[str] = []
        while len([m for m in lines if "id" in json.loads(m)]) < 3:
            line = server.stdout.readline()
            assert line, "peer mcp closed stdout early"
            lines.append(line)
        rest, errors = server.communicate(timeout=60)  # closes stdin: the session ends
    finally:
        watchdog.cancel()
    messages = [json.loads(line) for line in [*lines, *rest.splitlines()]]
    assert all(m.get("jsonrpc") == "2.0" for m in messages), messages
    answers = {m["id"]: m for m in messages if "id" in m}
    assert answers[2]["result"]["structuredContent"]["results"], answers[2]
    assert answers[3]["result"]["isError"] is True, answers[3]
    assert "peer mcp: INFO" in errors  # the log went to stderr
    assert server.returncode == 0

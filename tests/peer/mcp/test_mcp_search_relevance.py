"""The MCP `search` tool returns nothing for a query with no answer and the right short note for a terse one.

Same home as the CLI's relevance tests (tests/support/relevance.py): real
model, real `peer mcp` subprocess driven by the SDK's client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.support.relevance import NO_ANSWER, build

from .client import call, mcp_session


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    home = tmp_path_factory.mktemp("mcp-relevance") / "home"
    yield home, build(home)


async def test_the_search_tool_says_no_match_and_finds_terse_answers(store: tuple[Path, dict[str, str]]) -> None:
    home, ids = store
    with trio.fail_after(120):
        async with mcp_session(home) as session:
            empty = {q: await call(session, "search", {"query": q, "all_projects": True}) for q in NO_ANSWER}
            linter = await call(session, "search", {"query": "which linter do we use", "all_projects": True})
            code = await call(session, "search", {"query": "LIC-7730", "all_projects": True})
    assert {q: found["results"] for q, found in empty.items()} == {q: [] for q in NO_ANSWER}
    assert linter["results"][0]["id"] == ids["ruff"], linter["results"][:3]
    assert code["results"][0]["id"] == ids["license"], code["results"][:3]

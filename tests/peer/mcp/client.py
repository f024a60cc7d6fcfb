"""Driving ``peer mcp`` as an assistant's host does: a subprocess, the SDK's own stdio client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_types import CallToolResult, ListRootsResult, Root

from tests.support.cli_runner import PEER


@asynccontextmanager
async def mcp_session(
    home: Path, *extra: str, cwd: Path | None = None, roots: Sequence[Path] | None = None
) -> AsyncIterator[ClientSession]:
    """``peer --home HOME mcp EXTRA...`` started by the SDK's stdio client, initialized."""
    params = StdioServerParameters(
        command=PEER[0], args=[*PEER[1:], "--home", str(home), "mcp", *extra], cwd=str(cwd or home)
    )
    callback = None
    if roots is not None:
        listed = ListRootsResult(roots=[Root(uri=f"file://{p}", name=p.name) for p in roots])  # type: ignore[arg-type]

        async def list_roots(context: Any) -> ListRootsResult:
            return listed

        callback = list_roots
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write, list_roots_callback=callback) as session:
            await session.initialize()
            yield session


async def call(session: ClientSession, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A tool call that must succeed; its structured result (checked equal to its text)."""
    result = await session.call_tool(tool, arguments)
    text = _text(result)
    assert not result.is_error, f"{tool}({arguments}) failed: {text}"
    assert isinstance(result.structured_content, dict)
    assert json.loads(text) == result.structured_content
    return result.structured_content


async def fails(session: ClientSession, tool: str, arguments: dict[str, Any], *words: str) -> str:
    """A tool call that must end in one ``error: ...`` line naming ``words``; returns the line."""
    result = await session.call_tool(tool, arguments)
    text = _text(result)
    assert result.is_error, f"{tool}({arguments}) succeeded: {text}"
    assert text.startswith("error: ") and "\n" not in text, text
    for word in words:
        assert word.lower() in text.lower(), (word, text)
    return text


def _text(result: CallToolResult) -> str:
    (block,) = result.content
    assert block.type == "text"
    return block.text

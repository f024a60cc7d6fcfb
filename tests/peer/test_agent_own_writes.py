"""A memory written through the agent's local API (a warm `peer add`/`edit`) reaches the other devices.

The agent's store watch sees commits made by other processes (SQLite's
data_version); a command the agent answers commits on the agent's own
connection, which that check cannot see. These writes must still be pushed
to the other devices like any other change.
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

import trio

from peer.agent_client import ask_agent
from peer.config import AgentConfig
from peer.home import Home
from tests.support.agents import agents_naming_each_other
from tests.support.groups import admit, found
from tests.support.waiting import wait_until_async

FAST = AgentConfig(sync_interval=3600, debounce=0.05, backoff_max=2)


async def text_of(home: Home, memory_id: str) -> str | None:
    async with await home.open_store() as store:
        return next((m.content for m in await store.list() if m.id == memory_id), None)



async def ask(home: Home, method: str, params: dict[str, Any]) -> Any:
    return await trio.to_thread.run_sync(partial(ask_agent, home.path, method, params))


async def test_an_add_and_an_edit_answered_by_the_agent_reach_the_other_device(tmp_path: Any, aio_loop: object) -> None:
    a = await found(tmp_path / "a")
    b = await admit(a, tmp_path / "b")
    with trio.fail_after(120):
        async with agents_naming_each_other(a, b, FAST):
            # The sync interval is an hour: only the change itself can carry these across.
            added = await ask(a, "add", {"id": str(uuid.uuid4()), "content": "the release branch is cut on Thursdays",
                                         "kind": "fact", "tags": [], "metadata": {}, "allow_duplicate": False})
            memory_id = added["id"]
            await wait_until_async(partial(text_of, b, memory_id), 30, "the agent-answered add on B")
            await ask(a, "edit", {"id": memory_id, "content": "the release branch is cut on Wednesdays"})

            async def edited() -> bool:
                return await text_of(b, memory_id) == "the release branch is cut on Wednesdays"

            await wait_until_async(edited, 30, "the agent-answered edit on B")
            counts = (await ask(a, "hello", {}))["answered"]
    assert counts.get("add") == 1 and counts.get("edit") == 1

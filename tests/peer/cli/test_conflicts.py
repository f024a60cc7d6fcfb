"""Concurrent edits on two devices: `peer conflicts` shows the same winner on both, `peer resolve` clears it.

The devices sync in this process; the commands run as a person runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from peer.home import Home
from peer.memory import Draft
from peer.store import Store
from peer.sync import Syncer
from tests.support.cli_runner import assert_error, ok, ok_json, peer
from tests.support.groups import admit, found

T = TypeVar("T")

DEADLINE = 60


async def _serve(nursery: trio.Nursery, home: Home, store: Store) -> int:
    syncer = Syncer(store, home.identity().signing_key)
    port: int = await nursery.start(lambda task_status: syncer.serve("127.0.0.1", 0, task_status=task_status))
    return port


async def _sync(home: Home, store: Store, port: int) -> None:
    await Syncer(store, home.identity().signing_key).sync_with("127.0.0.1", port)


async def _in_thread(fn: Callable[[], T]) -> T:
    # The command runs in a subprocess while this test's agent keeps serving.
    return await trio.to_thread.run_sync(fn)


async def _conflicts(home: Home) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = await _in_thread(lambda: ok_json(home.path, "conflicts"))
    return listed


async def test_conflict_shown_alike_and_resolved_everywhere(tmp_path: Path, aio_loop: object) -> None:
    a_home = await found(tmp_path / "a", "alpha")
    b_home = await admit(a_home, tmp_path / "b", "bravo")
    with trio.fail_after(DEADLINE):
        async with (
            await a_home.open_store() as a,
            await b_home.open_store() as b,
            trio.open_nursery() as nursery,
        ):
            port = await _serve(nursery, a_home, a)
            memory_id = await a.add(Draft("the build uses make"))
            await _sync(b_home, b, port)
            assert await _conflicts(a_home) == [] and await _conflicts(b_home) == []

            # Both devices edit the same memory before they hear of each other's edit.
            await a.edit(memory_id, content="the build uses ninja")
            await b.edit(memory_id, content="the build uses bazel")
            await _sync(b_home, b, port)

            on_a, on_b = await _conflicts(a_home), await _conflicts(b_home)
            assert on_a == on_b, "both devices must show the same siblings and the same winner"
            [conflict] = on_a
            assert conflict["id"] == memory_id
            contents = {v["content"]: v for v in conflict["versions"]}
            assert set(contents) == {"the build uses ninja", "the build uses bazel"}
            assert sum(v["winner"] for v in conflict["versions"]) == 1
            assert conflict["versions"][0]["winner"]
            winner = conflict["versions"][0]["content"]
            assert (await a.get(memory_id)).content == winner == (await b.get(memory_id)).content
            text = await _in_thread(lambda: ok(b_home.path, "conflicts"))
            assert memory_id in text and "winner" in text
            assert all(v["version"] in text for v in conflict["versions"])

            # Keep the version that lost, on alpha; bravo learns it at the next sync.
            loser = next(v for v in conflict["versions"] if not v["winner"])
            result = await _in_thread(lambda: ok_json(a_home.path, "resolve", memory_id[:8], "--keep", loser["version"]))
            assert result["id"] == memory_id
            # A version the memory does not have is refused, clearly.
            missing = await _in_thread(lambda: peer(a_home.path, "resolve", memory_id, "--keep", "AAAA:1"))
            assert_error(missing, 1, "version")
            await _sync(b_home, b, port)
            assert await _conflicts(a_home) == [] and await _conflicts(b_home) == []
            assert (await _in_thread(lambda: ok(b_home.path, "conflicts"))).strip() == "no conflicts"
            for store in (a, b):
                memory = await store.get(memory_id)
                assert memory.content == loser["content"] and memory.siblings == 0
            nursery.cancel_scope.cancel()

"""Shared by the relay tests: devices of one group taking turns at a relay, and what a user would compare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peer.home import Home
from peer.memory import Draft
from peer.relay import ExchangeResult, RelaySpec, sync_relay

SENTINEL = "zebra-sentinel-7f3a"


async def turn(home: Home, spec: RelaySpec) -> ExchangeResult:
    """The device starts, exchanges with the relay once, and exits."""
    async with await home.open_store() as store:
        return await sync_relay(store, home.identity().signing_key, home.path, spec)


async def view(home: Home) -> dict[str, Any]:
    """What a user compares between devices: every memory, every conflict, the members."""
    async with await home.open_store() as store:
        return {
            "memories": sorted((m.id, m.content) for m in await store.list()),
            "conflicts": sorted(sorted(v.version for v in c) for c in await store.conflicts()),
            "members": sorted(store.membership.records()),
        }


Step = tuple[str, str, str]


async def writes(home: Home, ids: dict[str, str], plan: list[Step]) -> None:
    """(action, name, text) steps: add, edit, forget; every text carries the sentinel."""
    async with await home.open_store() as store:
        for action, name, text in plan:
            if action == "add":
                ids[name] = await store.add(Draft(f"{text} {SENTINEL} ({name})", project="relay"))
            elif action == "edit":
                await store.edit(ids[name], content=f"{text} {SENTINEL}")
            else:
                await store.forget(ids[name])


ROUNDS: list[tuple[list[Step], list[Step]]] = [
    ([("add", "a1", "desk one"), ("add", "a2", "desk two")], [("add", "b1", "laptop one")]),
    ([("add", "a3", "desk three"), ("edit", "b1", "laptop one, seen at the desk")],
     [("add", "b2", "laptop two"), ("edit", "a1", "desk one, edited on the laptop")]),
    # a2 edited on both sides before either reads the other's edit: a conflict, the same on both.
    ([("edit", "a2", "the desk's take on two"), ("forget", "a3", "")],
     [("edit", "a2", "the laptop's take on two"), ("add", "b3", "laptop three")]),
    ([("add", "a4", "desk four"), ("forget", "b2", "")], [("edit", "a4", "desk four, from the laptop")]),
    ([("add", "a5", "desk five")], [("forget", "b3", ""), ("add", "b4", "laptop four")]),
]


async def session(home: Home, spec: RelaySpec, ids: dict[str, str], plan: list[Step], *, offline_start: bool = False) -> None:
    """One run of a device: it exchanges when it starts (unless the relay is out of reach then), works, exchanges as it exits."""
    if not offline_start:
        await turn(home, spec)
    await writes(home, ids, plan)
    await turn(home, spec)


async def five_rounds(a: Home, b: Home, spec_a: RelaySpec, spec_b: RelaySpec, ids: dict[str, str], rounds: int = 5) -> None:
    """A runs, then B, never together; in round 3 B edits a2 before it reaches the relay: a conflict."""
    for number, (a_plan, b_plan) in enumerate(ROUNDS[:rounds]):
        await session(a, spec_a, ids, a_plan)
        await session(b, spec_b, ids, b_plan, offline_start=number == 2)
    await turn(a, spec_a)


def relay_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())

"""Three devices take turns at a folder relay while its files are damaged at random: they still converge.

Seeded, so a failure replays. Each step one device adds or edits a memory,
or exchanges, or the relay's files suffer what engines and people do to
them: a file deleted, truncated, bit-flipped, replaced by an older copy of
itself, or copied as a conflict copy. After the storm, a few clean rounds
of exchanges must bring every device to the same memories, holding every
memory ever added (nothing is forgotten in this test, so the expected set
is exact).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from peer.home import Home
from peer.memory import Draft
from peer.relay import RelaySpec, add_relay
from protocol import parse_relay_name
from tests.support.groups import admit, found

from .harness import turn, view


def owned_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and parse_relay_name(p.name) is not None)


def damage(rng: random.Random, root: Path, history: dict[str, bytes]) -> None:
    files = owned_files(root)
    if not files:
        return
    victim = rng.choice(files)
    data = victim.read_bytes()
    kind = rng.choice(["delete", "truncate", "flip", "revert", "conflict"])
    if kind == "delete":
        victim.unlink()
    elif kind == "truncate":
        victim.write_bytes(data[: rng.randrange(len(data))])
    elif kind == "flip":
        at = rng.randrange(len(data))
        victim.write_bytes(data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :])
    elif kind == "revert" and victim.name in history and history[victim.name] != data:
        victim.write_bytes(history[victim.name])
    else:
        stem, dot, ext = victim.name.rpartition(".")
        (victim.parent / f"{stem}.sync-conflict-20261204-101010-ABCDEFG.{ext}").write_bytes(data)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_three_devices_converge_through_random_damage(tmp_path: Path, aio_loop: object, seed: int) -> None:
    rng = random.Random(seed)
    root = tmp_path / "relay"
    root.mkdir()
    a = await found(tmp_path / "a", "a")
    b = await admit(a, tmp_path / "b", "b")
    c = await admit(a, tmp_path / "c", "c")
    devices: list[Home] = [a, b, c]
    specs: dict[Path, RelaySpec] = {h.path: add_relay(h.path, str(root), name="r") for h in devices}
    added: set[str] = set()
    known: dict[Path, list[str]] = {h.path: [] for h in devices}
    history: dict[str, bytes] = {}
    for step in range(36):
        home = rng.choice(devices)
        action = rng.random()
        if action < 0.3:
            async with await home.open_store() as store:
                memory_id = await store.add(Draft(f"step {step} on {home.path.name}"))
            added.add(memory_id)
            known[home.path].append(memory_id)
        elif action < 0.4 and known[home.path]:
            async with await home.open_store() as store:
                await store.edit(rng.choice(known[home.path]), content=f"edited at step {step}")
        elif action < 0.75:
            for f in owned_files(root):
                history.setdefault(f.name, f.read_bytes())
            await turn(home, specs[home.path])
            async with await home.open_store() as store:
                known[home.path] = [m.id for m in await store.list()]
        else:
            damage(rng, root, history)
    for _ in range(3):
        for home in devices:
            await turn(home, specs[home.path])
    views = [await view(h) for h in devices]
    assert views[0] == views[1] == views[2]
    assert {memory_id for memory_id, _ in views[0]["memories"]} == added

"""Relays as a folder: devices that never run together converge through it, and nothing readable is on it."""

from __future__ import annotations

from pathlib import Path

from peer.home import Home
from peer.relay import RelaySpec, add_relay
from tests.support.groups import admit, found

from .harness import SENTINEL, five_rounds, relay_bytes, turn, view, writes


async def pair(tmp_path: Path) -> tuple[Home, Home, RelaySpec, Path]:
    root = tmp_path / "Dropbox"
    root.mkdir()
    desk = await found(tmp_path / "desk", "desk")
    laptop = await admit(desk, tmp_path / "laptop", "laptop")
    spec = add_relay(desk.path, str(root))
    add_relay(laptop.path, str(root))
    return desk, laptop, spec, root


async def test_two_devices_that_never_run_together_converge_over_five_rounds(tmp_path: Path, aio_loop: object) -> None:
    desk, laptop, spec, root = await pair(tmp_path)
    ids: dict[str, str] = {}
    await five_rounds(desk, laptop, spec, spec, ids)
    desk_view, laptop_view = await view(desk), await view(laptop)
    assert desk_view == laptop_view
    assert len(desk_view["memories"]) == 6  # 5 + 4 added, 3 forgotten
    assert len(desk_view["conflicts"]) == 1  # a2, edited on both sides
    assert SENTINEL.encode() not in relay_bytes(root)
    # Once both hold everything, a no-change exchange reads only state records and writes nothing.
    again = await turn(laptop, spec)
    quiet = await turn(desk, spec)
    assert again.segments_read == quiet.segments_read == 0
    assert not quiet.state_written and quiet.segment_written == 0
    assert quiet.files_read == 2  # the two state records


async def test_a_device_paired_later_catches_up_from_the_relay_alone(tmp_path: Path, aio_loop: object) -> None:
    desk, laptop, spec, root = await pair(tmp_path)
    ids: dict[str, str] = {}
    await five_rounds(desk, laptop, spec, spec, ids, rounds=3)
    await turn(laptop, spec)
    # Both hold everything, and both said so: their segments are gone from the relay.
    assert not list((root).rglob("*.seg"))
    phone = await admit(desk, tmp_path / "phone", "phone")
    await turn(desk, spec)  # the desk's agent exchanges once more before it shuts down
    add_relay(phone.path, str(root))
    result = await turn(phone, spec)
    assert result.versions_added > 0
    assert (await view(phone))["memories"] == (await view(desk))["memories"]
    assert (await view(phone))["conflicts"] == (await view(desk))["conflicts"]


async def test_a_device_compacts_its_segments_and_writes_only_what_changed(tmp_path: Path, aio_loop: object) -> None:
    desk, laptop, spec, root = await pair(tmp_path)
    await turn(laptop, spec)  # the laptop says it holds nothing, then stays away
    ids: dict[str, str] = {}
    written = []
    for n in range(10):
        await writes(desk, ids, [("add", f"n{n}", f"note {n}"), ("add", f"m{n}", f"more {n}")])
        written.append((await turn(desk, spec)).segment_written)
    segments = list(root.rglob(f"{desk.identity().device_id}-*.seg"))
    # Two new versions per exchange, until 8 segments were live: then one segment with everything.
    assert written[:8] == [2] * 8 and written[8] == 18 and written[9] == 2
    assert len(segments) == 2
    result = await turn(laptop, spec)
    assert result.versions_added == 20
    assert (await view(laptop))["memories"] == (await view(desk))["memories"]


async def test_a_member_learned_from_a_segment_is_read_in_the_same_exchange(tmp_path: Path, aio_loop: object) -> None:
    desk, laptop, spec, root = await pair(tmp_path)
    await turn(desk, spec)
    phone = await admit(laptop, tmp_path / "phone", "phone")  # the desk has never heard of it
    add_relay(phone.path, str(root))
    ids: dict[str, str] = {}
    await writes(phone, ids, [("add", "p1", "written on the phone")])
    await turn(phone, spec)
    await writes(laptop, ids, [("add", "l1", "written on the laptop")])
    await turn(laptop, spec)  # its segment carries the member list, the phone included
    result = await turn(desk, spec)
    assert result.problems == ()
    assert sorted(c for _, c in (await view(desk))["memories"]) == sorted(
        c for _, c in (await view(laptop))["memories"]
    )
    assert len((await view(desk))["memories"]) == 2

"""The agent and relays: it exchanges at start and soon after a local change; ``peer status`` shows each relay."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio

from peer.agent import run_agent
from peer.config import AgentConfig
from peer.memory import Draft
from peer.relay import RelayUnavailable, add_relay
from peer.sync.report import status_report
from tests.support.groups import admit, found

from .harness import turn, view

FAST = AgentConfig(sync_interval=30, debounce=0.05, backoff_max=2)


async def test_the_agent_exchanges_at_start_and_after_a_change_and_status_shows_it(
    tmp_path: Path, aio_loop: object
) -> None:
    root = tmp_path / "nas"
    root.mkdir()
    desk = await found(tmp_path / "desk", "desk")
    laptop = await admit(desk, tmp_path / "laptop", "laptop")
    spec = add_relay(desk.path, str(root), name="nas")
    add_relay(laptop.path, str(root), name="nas")
    async with await laptop.open_store() as store:
        await store.add(Draft("written on the laptop before the desk's agent started"))
    await turn(laptop, spec)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_agent, desk, host="127.0.0.1", port=0, config=FAST, discovery=False))
            while len((await view(desk))["memories"]) < 1:  # read at start
                await trio.sleep(0.1)
            # The agent may already have written a segment at start (its membership records):
            # what shows the change was exchanged is a segment that was not there before it.
            segments = f"{desk.identity().device_id}-*.seg"
            before = {p.name for p in root.rglob(segments)}
            async with await desk.open_store() as store:  # another process writes on the desk
                await store.add(Draft("written on the desk while its agent runs"))
            while not {p.name for p in root.rglob(segments)} - before:
                await trio.sleep(0.1)
            nursery.cancel_scope.cancel()

    await turn(laptop, spec)
    assert len((await view(laptop))["memories"]) == 2
    report = await status_report(desk)
    (relay,) = report.to_json()["relays"]
    assert relay["name"] == "nas" and relay["reachable"] is True and relay["last_write"] is not None
    assert relay["devices"][laptop.identity().device_id]["lacks"] == 1  # its record predates the desk's note
    assert "relay nas" in report.describe() and "reachable" in report.describe()
    root.rename(tmp_path / "unmounted")
    with pytest.raises(RelayUnavailable):
        await turn(desk, spec)
    text = (await status_report(desk)).describe()
    assert "unreachable" in text and "not mounted" in text

"""The agent acts on what its Finder reports, whatever the Finder is (the seam `run_agent(finder=...)`).

A scripted Finder stands in for mDNS: the agent must sync with a device as
soon as it is reported, write the peer into its status as seen on the LAN,
and stop counting it as present once it is reported gone. The real mDNS
Finder is tested in test_discovery.py and, between namespaces, in test_lan.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import trio

from peer.agent import run_agent
from peer.config import AgentConfig
from peer.home import Home
from peer.memory import Draft
from peer.sync import read_status
from peer.sync.discovery import Advert, Appeared, Event, Gone, group_hash
from protocol import PROTOCOL_VERSION
from tests.support.groups import admit, found

FAST = AgentConfig(sync_interval=30, debounce=0.05, backoff_max=2)


class ScriptedFinder:
    """A Finder whose events the test sends; records what the agent asked it to advertise."""

    def __init__(self, device_id: str, group_id: bytes, port: int, interfaces: Sequence[str]) -> None:
        self.advertised = (device_id, group_id, port, tuple(interfaces))
        self.send, self._receive = trio.open_memory_channel[Event](16)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    def events(self) -> trio.MemoryReceiveChannel[Event]:
        return self._receive


async def holds(home: Home, memory_id: str) -> bool:
    async with await home.open_store() as store:
        return memory_id in {m.id for m in await store.list()}


async def test_the_agent_syncs_with_what_its_finder_reports(tmp_path: Path, aio_loop: object) -> None:
    a = await found(tmp_path / "a")
    b = await admit(a, tmp_path / "b")
    finders: list[ScriptedFinder] = []

    def make_finder(device_id: str, group_id: bytes, port: int, interfaces: Sequence[str]) -> ScriptedFinder:
        finders.append(ScriptedFinder(device_id, group_id, port, interfaces))
        return finders[-1]

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            port_b = await nursery.start(
                partial(run_agent, b, host="127.0.0.1", port=0, config=FAST, discovery=False)
            )
            await nursery.start(partial(
                run_agent, a, host="127.0.0.1", port=0, config=FAST, discovery=True, finder=make_finder,
            ))
            (finder,) = finders
            device_a, group_a, _, interfaces = finder.advertised
            assert device_a == a.identity().device_id and interfaces == ("127.0.0.1",)

            async with await a.open_store() as store:
                memory_id = await store.add(Draft("the finder told the agent where b listens"))
            await trio.sleep(0.5)
            assert not await holds(b, memory_id)  # nobody reported b yet: nothing to sync with

            b_id = b.identity().device_id
            advert = Advert(b_id, group_hash(group_a), PROTOCOL_VERSION, ("127.0.0.1",), port_b)
            await finder.send.send(Appeared(advert))
            while not await holds(b, memory_id):
                await trio.sleep(0.05)

            def peer_b() -> dict[str, object]:
                """B as A's status file shows it (written every half second), or {} before it is listed."""
                status = read_status(a)
                assert status is not None
                return next((p for p in status["peers"] if p["device_id"] == b_id), {})

            while peer_b().get("source") != "mdns":
                await trio.sleep(0.05)
            assert peer_b()["present"] is True
            await finder.send.send(Gone(b_id))
            while peer_b()["present"]:
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

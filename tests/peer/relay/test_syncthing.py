"""A folder relay carried by two real Syncthing instances, each in its own network namespace.

Syncthing runs with global discovery, relays, NAT traversal and local
discovery off, and the other instance's static address: nothing leaves the
private LAN of :mod:`tests.netns`. peer on host 1 writes into folder 1,
Syncthing carries the files to folder 2, peer on host 2 reads them there
(the filesystem is shared; only the network is split). A conflict that
Syncthing resolves with a ``.sync-conflict-`` copy is ignored by peer.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from peer.relay import add_relay
from protocol import parse_relay_name
from tests.support.groups import admit, found
from tests.support.netns import Lan, netns_unavailable_reason, private_lan

from .harness import SENTINEL, relay_bytes, turn, view, writes

SYNCTHING = "/usr/bin/syncthing"
FOLDER_ID = "peer-relay"
PORT = 22000


def _skip_reason() -> str | None:
    if not os.path.exists(SYNCTHING):
        return f"{SYNCTHING} is not installed (Debian syncthing; `make test-system-deps` installs it as root)"
    return netns_unavailable_reason()


def _device_id(home: Path) -> str:
    env = {**os.environ, "STNODEFAULTFOLDER": "1", "HOME": str(home)}
    subprocess.run([SYNCTHING, "generate", f"--home={home}"], check=True, capture_output=True, env=env, timeout=60)
    done = subprocess.run([SYNCTHING, f"--home={home}", "--device-id"], check=True, capture_output=True, text=True,
                          env=env, timeout=30)
    return done.stdout.strip()


def _config(folder: Path, me: int, ids: list[str], addresses: list[str]) -> str:
    devices_in_folder = "".join(f'<device id="{i}"></device>' for i in ids)
    devices = "".join(
        f'<device id="{i}" name="host{n + 1}" compression="metadata" introducer="false">'
        f"<address>tcp://{a}:{PORT}</address><autoAcceptFolders>false</autoAcceptFolders></device>"
        for n, (i, a) in enumerate(zip(ids, addresses, strict=True))
    )
    return f"""<configuration version="36">
<folder id="{FOLDER_ID}" label="{FOLDER_ID}" path="{folder}" type="sendreceive" rescanIntervalS="2"
 fsWatcherEnabled="true" fsWatcherDelayS="1" ignorePerms="false" autoNormalize="true">
<filesystemType>basic</filesystemType>{devices_in_folder}<minDiskFree unit="%">0</minDiskFree>
<maxConflicts>10</maxConflicts>
</folder>
{devices}
<gui enabled="false"><address>127.0.0.1:0</address></gui>
<options>
<listenAddress>tcp://{addresses[me]}:{PORT}</listenAddress>
<globalAnnounceEnabled>false</globalAnnounceEnabled>
<localAnnounceEnabled>false</localAnnounceEnabled>
<relaysEnabled>false</relaysEnabled>
<natEnabled>false</natEnabled>
<urAccepted>-1</urAccepted>
<autoUpgradeIntervalH>0</autoUpgradeIntervalH>
<crashReportingEnabled>false</crashReportingEnabled>
<startBrowser>false</startBrowser>
<minHomeDiskFree unit="%">0</minHomeDiskFree>
</options>
</configuration>
"""


@pytest.fixture
def syncthing_pair(tmp_path: Path) -> Iterator[tuple[Lan, Path, Path]]:
    reason = _skip_reason()
    if reason is not None:
        print(f"skipping the Syncthing relay test: {reason}")
        pytest.skip(reason)
    folders = [tmp_path / "sync1", tmp_path / "sync2"]
    homes = [tmp_path / "st1", tmp_path / "st2"]
    for f in folders:
        (f / ".stfolder").mkdir(parents=True)
    ids = [_device_id(h) for h in homes]
    with private_lan(2) as lan:
        addresses = [h.address for h in lan.hosts]
        for n, (home, folder) in enumerate(zip(homes, folders, strict=True)):
            (home / "config.xml").write_text(_config(folder, n, ids, addresses))
            env = {**os.environ, "STNODEFAULTFOLDER": "1", "STNOUPGRADE": "1", "HOME": str(home)}
            log = (home / "syncthing.log").open("wb")
            lan.hosts[n].popen(SYNCTHING, "serve", f"--home={home}", "--no-browser", "--no-restart",
                               stdout=log, stderr=subprocess.STDOUT, env=env)
        yield lan, folders[0], folders[1]


def _owned(folder: Path) -> dict[str, bytes]:
    out = {}
    for group in folder.glob("peer-*"):
        for f in group.iterdir():
            if f.is_file() and parse_relay_name(f.name) is not None:
                out[f"{group.name}/{f.name}"] = f.read_bytes()
    return out


async def carried(src: Path, dst: Path, timeout: float = 90) -> None:
    """Wait until Syncthing made dst's peer files the same as src's."""
    with trio.fail_after(timeout):
        while True:
            want = _owned(src)
            if want and _owned(dst) == want:
                return
            await trio.sleep(0.25)


async def test_a_folder_carried_by_syncthing_between_two_namespaces(
    tmp_path: Path, syncthing_pair: tuple[Lan, Path, Path], aio_loop: object
) -> None:
    lan, one, two = syncthing_pair
    desk = await found(tmp_path / "desk", "desk")
    laptop = await admit(desk, tmp_path / "laptop", "laptop")
    spec_desk = add_relay(desk.path, str(one), name="sync")
    spec_laptop = add_relay(laptop.path, str(two), name="sync")
    ids: dict[str, str] = {}

    await turn(laptop, spec_laptop)
    await carried(two, one)
    await writes(desk, ids, [("add", "a1", "desk one"), ("add", "a2", "desk two")])
    await turn(desk, spec_desk)
    await carried(one, two)
    await turn(laptop, spec_laptop)
    await writes(laptop, ids, [("edit", "a1", "desk one, edited on the laptop"), ("add", "b1", "laptop one")])
    await turn(laptop, spec_laptop)
    await carried(two, one)
    await turn(desk, spec_desk)
    assert await view(desk) == await view(laptop)
    assert len((await view(desk))["memories"]) == 3

    # A real conflict for Syncthing: while host 2 is cut off, its copy of the desk's state record is
    # changed there, and the desk writes a new one on host 1. Syncthing keeps the newer and renames
    # the other *.sync-conflict-*; peer never reads the copy (and repairs the record if needed).
    desk_id = desk.identity().device_id
    desk_state = next(two.glob("peer-*")) / f"{desk_id}.state"
    lan.hosts[1].link_down()
    desk_state.write_bytes(b"written on the laptop's side by something else")
    # Each side scans its change before it hears of the other's: the watcher waits 1 s, rescans every 2 s.
    await trio.sleep(4)
    await writes(desk, ids, [("add", "a3", "desk three")])
    await turn(desk, spec_desk)
    await trio.sleep(4)
    lan.hosts[1].link_up()
    with trio.fail_after(60):
        while not [p for p in [*one.rglob("*sync-conflict*"), *two.rglob("*sync-conflict*")] if desk_id in p.name]:
            await trio.sleep(0.25)
    await turn(desk, spec_desk)  # rewrites its record, had the foreign copy won
    await carried(one, two)
    result = await turn(laptop, spec_laptop)
    again = await turn(desk, spec_desk)
    assert result.problems == again.problems == ()
    assert len((await view(laptop))["memories"]) == 4
    assert await view(desk) == await view(laptop)
    assert SENTINEL.encode() not in relay_bytes(one) + relay_bytes(two)

"""LAN discovery: adverts and their validation, the table, and real multicast between network namespaces.

The first tests need nothing special. The loopback test multicasts on
127.0.0.1 only. The namespace tests run each device as a process in its own
namespace of a private LAN (tests/support/netns.py, tests/support/discovery_probe.py) and
skip, saying why, without root.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from peer.aio.mdns import CachedService
from peer.sync.discovery import (
    SERVICE_TYPE,
    Advert,
    Appeared,
    Discovery,
    DiscoveryError,
    Gone,
    InvalidAdvert,
    Neighbourhood,
    advert_properties,
    group_hash,
    instance_name,
    parse_advert,
)
from protocol import PROTOCOL_VERSION
from protocol.ids import device_id_for
from tests.support.netns import Host, Lan, private_lan, requires_netns
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[3]
GROUP = bytes(range(16))


def new_device_id() -> str:
    return device_id_for(os.urandom(32))


def service(
    device_id: str,
    group: bytes = GROUP,
    *,
    port: int = 7847,
    addresses: tuple[str, ...] = ("10.0.0.2",),
    protocol: int = PROTOCOL_VERSION,
    name: str | None = None,
    complete: bool = True,
    alive: bool = True,
    problem: str | None = None,
    **override: Any,
) -> CachedService:
    """What the mDNS cache would hold for a device advertising these (``properties=None``: no TXT record)."""
    props = override.pop("properties", dict(advert_properties(device_id, group, protocol)))
    assert not override, override
    return CachedService(
        name or f"{instance_name(device_id)}.{SERVICE_TYPE}", props, port, addresses, complete, alive, problem
    )


# Adverts ----------------------------------------------------------------------


def test_group_hash_is_short_stable_and_does_not_show_the_group_id() -> None:
    other = bytes(16)
    assert group_hash(GROUP) == group_hash(bytes(GROUP))
    assert len(group_hash(GROUP)) == 16 and int(group_hash(GROUP), 16) >= 0
    assert group_hash(GROUP) != group_hash(other)
    assert GROUP.hex()[:8] not in group_hash(GROUP)


def test_an_advert_reads_back_with_its_addresses_in_order() -> None:
    device = new_device_id()
    advert = parse_advert(service(device, addresses=("fd00::5", "10.0.0.9", "10.0.0.10", "10.0.0.9")))
    assert advert == Advert(device, group_hash(GROUP), PROTOCOL_VERSION, ("10.0.0.9", "10.0.0.10", "fd00::5"), 7847)
    # The instance label is a DNS label: letters, digits and one dash, under 63 bytes.
    label = instance_name(device)
    assert len(label) <= 63 and label.replace("-", "").isalnum()


def txt(device_id: str, **changes: bytes | None) -> dict[bytes, bytes | None]:
    """This device's TXT record with some values changed (None: a bare key, no value)."""
    props: dict[bytes, bytes | None] = dict(advert_properties(device_id, GROUP))
    for key, value in changes.items():
        props[key.encode()] = value
    return props


GARBAGE: list[tuple[str, Any, str]] = [
    ("no TXT record", lambda d: {"properties": None}, "no TXT"),
    ("empty TXT record", lambda d: {"properties": {}}, "id is missing"),
    ("bare id key", lambda d: {"properties": txt(d, id=None)}, "id is missing"),
    ("non-UTF-8 id", lambda d: {"properties": txt(d, id=b"\xff\xfe")}, "not ASCII"),
    ("oversized id", lambda d: {"properties": txt(d, id=b"A" * 255)}, "255 bytes"),
    ("bad id", lambda d: {"properties": txt(d, id=b"hello")}, "not a device id"),
    ("no group hash", lambda d: {"properties": txt(d, g=None)}, "g is missing"),
    ("bad group hash", lambda d: {"properties": txt(d, g=b"G" * 16)}, "not a group hash"),
    ("bad version", lambda d: {"properties": txt(d, v=b"1.0")}, "not a protocol version"),
    ("port 0", lambda d: {"port": 0}, "not a TCP port"),
    ("port 70000", lambda d: {"port": 70000}, "not a TCP port"),
    ("no address", lambda d: {"addresses": ()}, "no usable address"),
    ("useless addresses", lambda d: {"addresses": ("0.0.0.0", "224.0.0.251", "not-an-ip")}, "no usable address"),
    ("another device's name", lambda d: {"name": f"peer-{'A' * 26}.{SERVICE_TYPE}"}, "does not match"),
    ("unreadable records", lambda d: {"problem": "BadTypeInNameException: junk"}, "BadTypeInName"),
]


@pytest.mark.parametrize("change,words", [(c, w) for _, c, w in GARBAGE], ids=[case for case, _, _ in GARBAGE])
def test_a_garbage_advert_is_refused_with_the_reason(change: Any, words: str) -> None:
    device = new_device_id()
    with pytest.raises(InvalidAdvert, match=words):
        parse_advert(service(device, **change(device)))


# The table ----------------------------------------------------------------------


def test_the_table_reports_arrivals_changes_and_departures() -> None:
    me, other = new_device_id(), new_device_id()
    table = Neighbourhood(me, group_hash(GROUP))
    first = service(other)
    assert table.update([service(me), first]) == [Appeared(parse_advert(first))]
    assert table.update([service(me), first]) == []  # nothing changed: nothing said
    moved = service(other, port=9000, addresses=("10.0.0.3",))
    assert table.update([moved]) == [Appeared(parse_advert(moved))]
    # Records being refreshed (SRV alive, TXT not yet back): still there, worth asking for.
    assert table.update([service(other, complete=False, properties=None)]) == []
    assert table.unresolved == [f"{instance_name(other)}.{SERVICE_TYPE}"]
    # Its SRV record expired: gone.
    assert table.update([service(other, alive=False)]) == [Gone(other)]
    assert table.peers == {}
    assert table.update([first]) == [Appeared(parse_advert(first))]
    assert table.update([]) == [Gone(other)]


def test_one_device_id_under_two_names_does_not_flap() -> None:
    me, other = new_device_id(), new_device_id()
    table = Neighbourhood(me, group_hash(GROUP))
    upper = service(other, port=7001)
    lower = service(other, port=7002, name=f"{instance_name(other).lower()}.{SERVICE_TYPE}")
    assert table.update([upper, lower]) == [Appeared(parse_advert(upper))]
    assert table.update([upper, lower]) == []


def test_foreign_and_incompatible_devices_are_not_peers_and_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    me, stranger, future = new_device_id(), new_device_id(), new_device_id()
    table = Neighbourhood(me, group_hash(GROUP))
    seen = [service(stranger, group=bytes(16)), service(future, protocol=PROTOCOL_VERSION + 1)]
    with caplog.at_level(logging.INFO, logger="peer.sync.discovery"):
        for _ in range(5):  # a sweep sees them every second
            assert table.update(seen) == []
    assert table.peers == {}
    foreign = [r.getMessage() for r in caplog.records if "another group" in r.getMessage()]
    assert len(foreign) == 1 and stranger[:5] in foreign[0]
    incompatible = [r.getMessage() for r in caplog.records if "protocol version" in r.getMessage()]
    assert len(incompatible) == 1 and future[:5] in incompatible[0]


def test_the_table_is_capped_and_garbage_logging_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    me = new_device_id()
    table = Neighbourhood(me, group_hash(GROUP), max_peers=3)
    crowd = [service(new_device_id()) for _ in range(10)]
    garbage = [service(new_device_id(), port=0, name=f"junk-{i}.{SERVICE_TYPE}") for i in range(2000)]
    with caplog.at_level(logging.DEBUG, logger="peer.sync.discovery"):
        events = table.update(crowd + garbage)
        table.update(crowd + garbage)
    assert len(table.peers) == 3 and all(isinstance(e, Appeared) for e in events) and len(events) == 3
    assert len(caplog.records) <= 15, len(caplog.records)


def test_an_interface_must_be_an_ip_address_of_this_machine() -> None:
    with pytest.raises(DiscoveryError, match="by its IP address, not 'eth0'"):
        Discovery(new_device_id(), GROUP, 7847, ["eth0"])

    async def start() -> None:
        # TEST-NET-1: documentation only, never configured on a machine.
        discovery = Discovery(new_device_id(), GROUP, 7847, ["192.0.2.77"])
        with trio.fail_after(10):
            await discovery.run()

    with pytest.raises(DiscoveryError, match="192.0.2.77 .* not an address of this machine"):
        trio.run(start)


# Loopback (no root) ----------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="multicast on loopback is a Linux behaviour")
async def test_two_devices_find_each_other_on_loopback(aio_loop: object) -> None:
    """Both on 127.0.0.1, in one process, inside trio-asyncio as in the agent; what `make demo` can use without root."""
    group = os.urandom(16)  # nobody else's tests on this machine share it
    a, b, stranger = new_device_id(), new_device_id(), new_device_id()
    options: dict[str, Any] = {"ttl_s": 4, "sweep_interval_s": 0.2}
    first = Discovery(a, group, 41001, ["127.0.0.1"], **options)
    second = Discovery(b, group, 41002, ["127.0.0.1"], **options)
    foreign = Discovery(stranger, os.urandom(16), 41003, ["127.0.0.1"], **options)
    stop_second = trio.CancelScope()

    async def run_second(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with stop_second:
            await second.run(task_status=task_status)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(foreign.run)
            async with trio.open_nursery() as starting:  # the two registrations in parallel
                starting.start_soon(nursery.start, first.run)
                starting.start_soon(nursery.start, run_second)
            event = await first.events().receive()
            assert event == Appeared(Advert(b, group_hash(group), PROTOCOL_VERSION, ("127.0.0.1",), 41002))
            stop_second.cancel()  # a goodbye
            assert await first.events().receive() == Gone(b)
            assert first.peers == {}
            nursery.cancel_scope.cancel()


# Network namespaces (root) ------------------------------------------------------------


class Probe:
    """One discovering device: tests/support/discovery_probe.py in a namespace, its events read as they come."""

    def __init__(self, host: Host, log_path: Path, *args: str, explicit: bool = True) -> None:
        self.host = host
        self.log_path = log_path
        self.history: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        with log_path.open("w") as log_file:
            self.process = host.popen(
                sys.executable, "-m", "tests.support.discovery_probe", *args, *(["--interface", host.address] if explicit else []),
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, text=True,
            )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(json.loads(line))
        self._queue.put(None)

    def wait_for(self, event: str, timeout: float = 15.0, **fields: Any) -> dict[str, Any]:
        """The next event of this kind whose fields match; fails with what was seen instead."""
        def next_match() -> dict[str, Any] | None:
            try:
                got = self._queue.get(timeout=0.1)
            except queue.Empty:
                return None
            if got is None:  # the probe exited: nothing more will come
                raise AssertionError(f"no {event} {fields} in {self.host}: the probe exited; saw {self.history};"
                                     f" log:\n{self.log()}")
            self.history.append(got)
            if got["event"] == event and all(got.get(k) == v for k, v in fields.items()):
                return got
            return None

        return wait_until(
            next_match, timeout, f"{event} {fields} in {self.host}", interval=0,
            detail=lambda: f"saw {self.history}; log:\n{self.log()}",
        )

    def drain(self, seconds: float) -> list[dict[str, Any]]:
        """Every event within the next ``seconds``."""
        seen = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if got is None:
                break
            self.history.append(got)
            seen.append(got)
        return seen

    def stop(self) -> int:
        """Close stdin (the probe says goodbye and exits); its exit status."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(15)

    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def lan() -> Iterator[Lan]:
    requires_netns()
    with private_lan(3) as made:
        yield made


def device(
    lan_host: Host, tmp_path: Path, name: str, device_id: str, group: bytes, *options: str,
    ttl: int = 8, explicit: bool = True,
) -> Probe:
    """A device with short timings: records live ``ttl`` seconds, queried every ttl/6."""
    return Probe(
        lan_host, tmp_path / f"{name}.log", "run", "--device-id", device_id, "--group", group.hex(),
        "--port", str(7000 + lan_host.index), "--ttl", str(ttl), "--sweep", "0.2", *options, explicit=explicit,
    )


@pytest.mark.netns
def test_devices_of_a_group_find_each_other_and_a_foreign_one_is_ignored(lan: Lan, tmp_path: Path) -> None:
    a_id, b_id, c_id = new_device_id(), new_device_id(), new_device_id()
    host_a, host_b, host_c = lan.hosts
    started = time.monotonic()
    a = device(host_a, tmp_path, "a", a_id, GROUP, ttl=4)
    b = device(host_b, tmp_path, "b", b_id, GROUP, ttl=4)
    c = device(host_c, tmp_path, "c", c_id, bytes(16), ttl=4)
    seen_b = a.wait_for("appeared", device_id=b_id)
    seen_a = b.wait_for("appeared", device_id=a_id)
    print(f"\ndiscovery: a saw b {time.monotonic() - started:.2f} s after both were launched "
          f"(a registered at {a.history[0]['t']:.2f} s of its life, saw b at {seen_b['t']:.2f} s)")
    assert (seen_b["addresses"], seen_b["port"]) == ([host_b.address], 7002)
    assert (seen_a["addresses"], seen_a["port"]) == ([host_a.address], 7001)
    c.wait_for("started")
    # Longer than a TTL (4 s): b's records were refreshed in time (no Gone,
    # no new Appeared), and many sweeps (every 0.2 s) saw c.
    later = a.drain(5.0)
    assert all(e.get("device_id") != c_id for e in a.history + later), a.history
    assert later == [], later  # and no flapping of b either
    refusals = [line for line in a.log().splitlines() if "it belongs to another group" in line]
    assert len(refusals) == 1, a.log()
    assert c_id[:5] in refusals[0]
    stopping = time.monotonic()
    assert b.stop() == 0
    a.wait_for("gone", timeout=5, device_id=b_id)
    print(f"discovery: a reported b gone {time.monotonic() - stopping:.2f} s after b was told to stop")
    for probe in (a, c):
        assert probe.stop() == 0
    for probe in (a, b, c):
        assert "Traceback" not in probe.log(), probe.log()


@pytest.mark.netns
def test_garbage_adverts_are_ignored_and_do_not_stop_discovery(lan: Lan, tmp_path: Path) -> None:
    a_id, b_id = new_device_id(), new_device_id()
    host_a, host_b, host_c = lan.hosts
    a = device(host_a, tmp_path, "a", a_id, GROUP, "--log-level", "DEBUG")
    b = device(host_b, tmp_path, "b", b_id, GROUP)
    a.wait_for("appeared", device_id=b_id)
    garbage = Probe(host_c, tmp_path / "garbage.log", "garbage", "--group-hash", group_hash(GROUP),
                    "--flood", "1000", "--repeat", "2")
    garbage.wait_for("sent", timeout=30)
    garbage.wait_for("sent", timeout=10)
    later = a.drain(2.0)
    assert later == [], later  # nothing passed on; b neither lost nor re-announced
    assert a.process.poll() is None, a.log()
    log = a.log()
    assert "ignoring mDNS advert" in log and "Traceback" not in log, log
    # Rate limited: a thousand and more garbage adverts, a handful of lines.
    assert log.count("ignoring mDNS advert") <= 20, log
    assert log.count("speaks protocol version 999") == 1, log
    # Still discovering: b's goodbye arrives and is reported.
    assert b.stop() == 0
    a.wait_for("gone", timeout=5, device_id=b_id)
    assert garbage.stop() == 0 and a.stop() == 0
    assert "Traceback" not in garbage.log(), garbage.log()


@pytest.mark.netns
def test_a_device_follows_its_network_cable_pulled_plugged_back_new_address(lan: Lan, tmp_path: Path) -> None:
    a_id, b_id = new_device_id(), new_device_id()
    host_a, host_b, _ = lan.hosts
    a = device(host_a, tmp_path, "a", a_id, GROUP, ttl=4)
    # b as a user runs it: no interface given, it takes its machine's addresses and watches them.
    b = device(host_b, tmp_path, "b", b_id, GROUP, "--address-check", "0.5", ttl=4, explicit=False)
    seen = a.wait_for("appeared", device_id=b_id)
    assert seen["addresses"] == [host_b.address]
    b.wait_for("appeared", device_id=a_id)
    host_b.link_down()
    down = time.monotonic()
    a.wait_for("gone", timeout=10, device_id=b_id)  # its records expire: TTL 4 s
    print(f"\ncable pulled: a reported b gone after {time.monotonic() - down:.2f} s (TTL 4 s)")
    host_b.link_up()
    up = time.monotonic()
    again = a.wait_for("appeared", timeout=10, device_id=b_id)
    print(f"plugged back: a saw b again after {time.monotonic() - up:.2f} s")
    assert again["addresses"] == [host_b.address]
    b.wait_for("appeared", timeout=10, device_id=a_id)
    # b's machine gets a second address: b advertises again, with both.
    extra = f"{lan.subnet}.{100 + host_b.index}"
    host_b.run("ip", "addr", "add", f"{extra}/24", "dev", host_b.interface)
    moved = a.wait_for("appeared", timeout=10, device_id=b_id)
    assert sorted(moved["addresses"]) == sorted([host_b.address, extra])
    assert a.stop() == 0 and b.stop() == 0
    assert "addresses changed" in b.log(), b.log()

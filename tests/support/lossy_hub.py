"""A LAN whose links lose and delay packets, for kernels without ``tc netem``.

Theory of operation. Where the kernel has sch_netem, tests/support/netns.py puts
``tc netem`` on every host's link. Some kernels (the CI machines' among
them) are built without it, and without any qdisc that could delay
packets. This module builds the same impaired LAN in user space: every
host namespace gets a TAP interface ``eth0`` instead of a veth, and one
process, the *hub*, holds the other end of every TAP. The hub reads each
Ethernet frame a host sends and hands it to every other host after
``delay_ms``, dropping it on each of those links with probability
``loss`` (independently), as a hub with ``netem loss L delay D`` on every
port would. The hosts' kernels, TCP stacks and multicast are the real
ones; only the wire is simulated.

The hub runs inside the LAN's switch namespace (``python -m tests.support.lossy_hub``),
creates the TAPs there, prints ``ready``, and the harness moves each TAP
into its host (a TAP's file descriptor keeps working across namespaces).
When the hub exits, its TAPs disappear; :class:`HubLan` kills it and
deletes every namespace on close, like :class:`tests.support.netns.Lan`.
"""

from __future__ import annotations

import fcntl
import heapq
import os
import random
import secrets
import selectors
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.netns import HOST_INTERFACE, PREFIX, Host, Lan, _ip, reap_leftovers

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
ROOT = Path(__file__).resolve().parents[2]


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def run_hub(names: list[str], loss: float, delay_s: float, seed: int) -> None:
    """Forward frames between the TAPs ``names``, lossy and late, until killed."""
    rng = random.Random(seed)
    fds = [open_tap(n) for n in names]
    print("ready", flush=True)
    sel = selectors.DefaultSelector()
    for fd in fds:
        sel.register(fd, selectors.EVENT_READ)
    due: list[tuple[float, int, int, bytes]] = []  # (when, tie-breaker, fd, frame)
    count = 0
    while True:
        timeout = None if not due else max(0.0, due[0][0] - time.monotonic())
        for key, _ in sel.select(timeout):
            source = key.fd
            while True:
                try:
                    frame = os.read(source, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    frame = b""
                if not frame:
                    break
                when = time.monotonic() + delay_s
                for fd in fds:
                    if fd != source and rng.random() >= loss:
                        count += 1
                        heapq.heappush(due, (when, count, fd, frame))
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, _, fd, frame = heapq.heappop(due)
            try:
                os.write(fd, frame)
            except OSError:
                pass  # the host's interface is down or gone: the frame is lost


class HubLan(Lan):
    """Hosts joined by the lossy hub instead of a bridge."""

    hub: subprocess.Popen[str] | None = None

    @classmethod
    def create_lossy(cls, hosts: int, *, loss: float, delay_ms: float) -> HubLan:
        token = secrets.token_hex(3)
        name = f"{PREFIX}-{os.getpid()}-{token}"
        subnet = f"10.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"
        lan = cls(name=name, subnet=subnet, switch=f"{name}-sw")
        try:
            lan._add_namespace(lan.switch)
            taps = [f"tap{i + 1}" for i in range(hosts)]
            lan.hub = subprocess.Popen(
                ["ip", "netns", "exec", lan.switch, sys.executable, "-m", "tests.support.lossy_hub",
                 str(loss), str(delay_ms / 1000), str(secrets.randbits(32)), *taps],
                stdout=subprocess.PIPE, text=True, cwd=ROOT,
            )
            lan.processes.append(lan.hub)
            assert lan.hub.stdout is not None
            if lan.hub.stdout.readline().strip() != "ready":
                raise RuntimeError("the lossy hub did not start")
            for i, tap in enumerate(taps, start=1):
                host = Host(lan=lan, index=i, ns=f"{name}-h{i}", address=f"{subnet}.{i}", port=tap)
                lan._add_namespace(host.ns)
                _ip("-n", lan.switch, "link", "set", tap, "netns", host.ns)
                _ip("-n", host.ns, "link", "set", tap, "name", HOST_INTERFACE)
                _ip("-n", host.ns, "addr", "add", f"{host.address}/24", "dev", HOST_INTERFACE)
                _ip("-n", host.ns, "link", "set", HOST_INTERFACE, "multicast", "on", "up")
                _ip("-n", host.ns, "route", "replace", "224.0.0.0/4", "dev", HOST_INTERFACE)
                lan.hosts.append(host)
        except BaseException:
            lan.close()
            raise
        return lan


@contextmanager
def lossy_lan(hosts: int, *, loss: float = 0.10, delay_ms: float = 100.0) -> Iterator[HubLan]:
    """A LAN of ``hosts`` hosts whose every link loses ``loss`` of the frames and delays them ``delay_ms``."""
    reap_leftovers()
    lan = HubLan.create_lossy(hosts, loss=loss, delay_ms=delay_ms)
    try:
        yield lan
    finally:
        lan.close()


if __name__ == "__main__":
    run_hub(sys.argv[4:], float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]))

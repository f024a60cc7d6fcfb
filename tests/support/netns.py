"""A private LAN made of network namespaces, for tests and benchmarks.

Theory of operation: one *switch* namespace holds a Linux bridge ``br0``;
every host is a namespace of its own, joined to the switch by a veth pair
whose host end is ``eth0`` (address ``10.X.Y.N/24``) and whose other end
is a port of the bridge. Both ends are created directly inside their
namespaces (``ip -n SWITCH link add ... peer ... netns HOST``), so nothing
ever appears in, or is routed through, the machine's own network
namespace: multicast sent on ``eth0`` reaches the other hosts and nobody
else. ``link_down`` pulls a host's cable (the bridge port goes down, the
host sees NO-CARRIER but keeps its address and routes); ``netem`` adds
loss and delay on every host's ``eth0`` (each packet crosses exactly one
netem, the sender's).

Names are ``peerns-PID-TOKEN-...``: PID is the creating process, so a
later run can tell a crashed run's leftovers (PID gone) from a LAN that a
concurrent run is still using, and TOKEN keeps two LANs of one process
apart. :func:`private_lan` always deletes what it created (killing the
processes still running inside), whether the body returns, fails or is
interrupted, and first reaps leftovers of crashed runs.

Needs Linux, root and iproute2; :func:`netns_unavailable_reason` says
why not when it cannot run, and :func:`requires_netns` turns that into a
pytest skip. ``tc netem`` needs the kernel's sch_netem (see
:func:`netem_unavailable_reason`).
"""

from __future__ import annotations

import atexit
import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PREFIX",
    "Host",
    "Lan",
    "NetemUnavailable",
    "netem_unavailable_reason",
    "netns_unavailable_reason",
    "private_lan",
    "reap_leftovers",
    "requires_netem",
    "requires_netns",
]

#: Every namespace this module creates is named ``PREFIX-PID-TOKEN-ROLE``.
PREFIX = "peerns"
#: The host end of each host's veth pair.
HOST_INTERFACE = "eth0"
_IP_TIMEOUT_S = 20.0


class NetemUnavailable(RuntimeError):
    """``tc qdisc ... netem`` does not work on this machine; the message says why."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=_IP_TIMEOUT_S)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _in_ns(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _ip("netns", "exec", ns, *args, check=check)


# Availability ------------------------------------------------------------


@functools.cache
def netns_unavailable_reason() -> str | None:
    """None when network namespaces can be made here, else why not (one line)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run the suite as root, as CI does)"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2's `ip` command"
    probe = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}-probe"
    try:
        done = _ip("netns", "add", probe, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return f"`ip netns add` does not run here: {e}"
    if done.returncode != 0:
        return f"`ip netns add` fails here: {done.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@functools.cache
def netem_unavailable_reason() -> str | None:
    """None when ``tc netem`` works here, else why not (one line)."""
    reason = netns_unavailable_reason()
    if reason is not None:
        return reason
    if shutil.which("tc") is None:
        return "tc netem needs iproute2's `tc` command"
    probe = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}-probe"
    _ip("netns", "add", probe)
    try:
        _ip("-n", probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
        done = _in_ns(probe, "tc", "qdisc", "add", "dev", "probe0", "root", "netem", "loss", "1%", check=False)
        if done.returncode == 0:
            return None
        return f"tc netem does not work here ({done.stderr.strip()}): {_netem_diagnosis()}"
    finally:
        _ip("netns", "del", probe, check=False)


def _netem_diagnosis() -> str:
    """Why the kernel refuses netem, from its config when it is readable."""
    import gzip

    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            config = f.read()
    except OSError:
        return "the kernel has no sch_netem (try `modprobe sch_netem`)"
    if "CONFIG_NET_SCH_NETEM=" in config:
        return "sch_netem is a module that is not loaded (try `modprobe sch_netem`)"
    if "# CONFIG_MODULES is not set" in config:
        return "this kernel was built without CONFIG_NET_SCH_NETEM and without module support"
    return "this kernel was built without CONFIG_NET_SCH_NETEM"


def requires_netns() -> None:
    """Skip the calling test, saying why, unless network namespaces can be made here."""
    import pytest

    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def requires_netem() -> None:
    """Skip the calling test, saying why, unless ``tc netem`` works here."""
    import pytest

    reason = netem_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


# Hosts and the LAN ---------------------------------------------------------


@dataclass
class Host:
    """One machine of the LAN: a namespace with ``eth0`` on the switch."""

    lan: Lan
    index: int
    ns: str
    address: str
    #: This host's port on the bridge, in the switch namespace.
    port: str
    interface: str = HOST_INTERFACE

    def command(self, *args: str) -> list[str]:
        """``args`` as a command line that runs inside this host."""
        return ["ip", "netns", "exec", self.ns, *args]

    def run(self, *args: str, check: bool = True, timeout: float = 60.0, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run a command inside this host and wait for it (output captured as text)."""
        done = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} in {self.ns} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a command inside this host; the LAN kills it when it closes."""
        process: subprocess.Popen[Any] = subprocess.Popen(self.command(*args), **kwargs)
        self.lan.processes.append(process)
        return process

    def link_down(self) -> None:
        """Pull this host's cable: its bridge port goes down (the host keeps its address)."""
        _ip("-n", self.lan.switch, "link", "set", self.port, "down")

    def link_up(self) -> None:
        """Plug the cable back in."""
        _ip("-n", self.lan.switch, "link", "set", self.port, "up")

    def __str__(self) -> str:
        return f"{self.ns} ({self.address})"


@dataclass(eq=False)
class Lan:
    """A switch namespace and its hosts; build it with :func:`private_lan`."""

    name: str
    subnet: str  # "10.X.Y"
    switch: str
    hosts: list[Host] = field(default_factory=list)
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    closed: bool = False

    @classmethod
    def create(cls, hosts: int = 2) -> Lan:
        token = secrets.token_hex(3)
        name = f"{PREFIX}-{os.getpid()}-{token}"
        subnet = f"10.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"
        lan = cls(name=name, subnet=subnet, switch=f"{name}-sw")
        _LIVE.add(lan)
        try:
            lan._add_namespace(lan.switch)
            _ip("-n", lan.switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
            _ip("-n", lan.switch, "link", "set", "br0", "up")
            for _ in range(hosts):
                lan.add_host()
        except BaseException:
            lan.close()
            raise
        return lan

    def _add_namespace(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self.namespaces.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def add_host(self) -> Host:
        """One more machine on the switch (a "foreign" device is just another host)."""
        index = len(self.hosts) + 1
        if index > 250:
            raise ValueError("a LAN holds at most 250 hosts")
        host = Host(lan=self, index=index, ns=f"{self.name}-h{index}", address=f"{self.subnet}.{index}", port=f"port{index}")
        self._add_namespace(host.ns)
        _ip("-n", self.switch, "link", "add", host.port, "type", "veth", "peer", "name", host.interface, "netns", host.ns)
        _ip("-n", self.switch, "link", "set", host.port, "master", "br0")
        _ip("-n", self.switch, "link", "set", host.port, "up")
        _ip("-n", host.ns, "addr", "add", f"{host.address}/24", "dev", host.interface)
        _ip("-n", host.ns, "link", "set", host.interface, "multicast", "on", "up")
        # Multicast leaves by eth0 even for a program that does not pick
        # an interface (there is no default route in a test host).
        _ip("-n", host.ns, "route", "replace", "224.0.0.0/4", "dev", host.interface)
        self.hosts.append(host)
        return host

    def netem(self, *, loss_percent: float = 10.0, delay_ms: float = 100.0) -> None:
        """Loss and delay on every host's ``eth0`` (raises :class:`NetemUnavailable` if the kernel lacks it)."""
        reason = netem_unavailable_reason()
        if reason is not None:
            raise NetemUnavailable(reason)
        for host in self.hosts:
            _in_ns(host.ns, "tc", "qdisc", "replace", "dev", host.interface, "root", "netem",
                   "loss", f"{loss_percent}%", "delay", f"{delay_ms}ms")

    def clear_netem(self) -> None:
        for host in self.hosts:
            _in_ns(host.ns, "tc", "qdisc", "del", "dev", host.interface, "root", check=False)

    def close(self) -> None:
        """Kill what runs inside and delete every namespace; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        _LIVE.discard(self)
        for process in self.processes:
            _stop(process)
        for ns in reversed(self.namespaces):
            _delete_namespace(ns)


def _stop(process: subprocess.Popen[Any], grace_s: float = 2.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(grace_s)


def _delete_namespace(ns: str) -> None:
    # `ip netns pids` names every process whose network namespace this is,
    # including children that outlived the process we started.
    done = _ip("netns", "pids", ns, check=False)
    for pid in done.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass
    for _ in range(20):
        if _ip("netns", "del", ns, check=False).returncode == 0 or ns not in _namespaces():
            return
        time.sleep(0.05)


def _namespaces() -> list[str]:
    # Lines look like "name (id: 3)" or just "name".
    done = _ip("netns", "list", check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_leftovers() -> list[str]:
    """Delete namespaces of ours whose creating process is gone; returns their names."""
    reaped = []
    for ns in _namespaces():
        parts = ns.split("-")
        if len(parts) < 3 or parts[0] != PREFIX or not parts[1].isdigit():
            continue
        if _pid_alive(int(parts[1])):
            continue
        _delete_namespace(ns)
        reaped.append(ns)
    return reaped


# Every LAN not yet closed, so that an interpreter exiting without reaching
# a `finally` (a test runner killed by SIGINT twice, say) still cleans up.
_LIVE: set[Lan] = set()


@atexit.register
def _close_live() -> None:
    for lan in list(_LIVE):
        lan.close()


@contextmanager
def private_lan(hosts: int = 2) -> Iterator[Lan]:
    """A fresh LAN of ``hosts`` hosts, deleted on exit whatever happens."""
    reap_leftovers()
    lan = Lan.create(hosts)
    try:
        yield lan
    finally:
        lan.close()


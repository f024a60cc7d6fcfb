"""The namespace harness itself: hosts can talk, and nothing it made outlives a failure, an interrupt or a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.netns import (
    PREFIX,
    NetemUnavailable,
    netem_unavailable_reason,
    private_lan,
    reap_leftovers,
    requires_netem,
    requires_netns,
)

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.netns


def namespaces() -> set[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in done.stdout.splitlines() if line.strip()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_hosts_reach_each_other_over_the_bridge_and_nothing_else() -> None:
    requires_netns()
    with private_lan(2) as lan:
        a, b = lan.hosts
        # A multicast datagram from a reaches b through the bridge.
        listener = b.popen(sys.executable, "-c", textwrap.dedent(f"""
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("", 40000))
            group = socket.inet_aton("224.0.0.251") + socket.inet_aton("{b.address}")
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
            s.settimeout(10)
            print("ready", flush=True)
            print(s.recvfrom(100)[0].decode(), flush=True)
        """), stdout=subprocess.PIPE, text=True)
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "ready"
        a.run(sys.executable, "-c", textwrap.dedent("""
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(b"hello over the bridge", ("224.0.0.251", 40000))
        """))
        assert listener.stdout.readline().strip() == "hello over the bridge"
        # A host holds only its own loopback and eth0, with MULTICAST on.
        links = a.run("ip", "-o", "link").stdout
        assert {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()} == {"lo", "eth0"}
        assert "MULTICAST" in a.run("ip", "link", "show", "eth0").stdout


def test_everything_is_deleted_when_the_body_fails() -> None:
    requires_netns()
    with pytest.raises(RuntimeError, match="the test failed"), private_lan(2) as lan:
        sleeper = lan.hosts[0].popen("sleep", "60")
        made = set(lan.namespaces)
        assert made <= namespaces()
        raise RuntimeError("the test failed")
    assert not made & namespaces()
    assert sleeper.poll() is not None


def test_everything_is_deleted_when_the_run_is_interrupted(tmp_path: Path) -> None:
    requires_netns()
    script = textwrap.dedent("""
        import sys, time
        from tests.support.netns import private_lan
        with private_lan(2) as lan:
            worker = lan.hosts[1].popen("sleep", "60")
            print(" ".join(lan.namespaces), worker.pid, flush=True)
            time.sleep(60)
    """)
    run = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    assert run.stdout is not None
    *made, worker = run.stdout.readline().split()
    assert set(made) <= namespaces()
    run.send_signal(signal.SIGINT)  # Ctrl-C: KeyboardInterrupt in the body
    _, err = run.communicate(timeout=20)
    assert run.returncode != 0 and "KeyboardInterrupt" in err
    assert not set(made) & namespaces()
    assert not alive(int(worker))


def test_leftovers_of_a_killed_run_are_reaped_by_the_next_one() -> None:
    requires_netns()
    script = textwrap.dedent("""
        import time
        from tests.support.netns import private_lan
        with private_lan(1) as lan:
            print(" ".join(lan.namespaces), flush=True)
            time.sleep(60)
    """)
    run = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert run.stdout is not None
    made = set(run.stdout.readline().split())
    run.kill()  # no finally, no atexit
    run.wait(10)
    assert made <= namespaces() and all(ns.startswith(f"{PREFIX}-{run.pid}-") for ns in made)
    with private_lan(1) as lan:  # reaps before it builds
        assert not made & namespaces()
        # A LAN of a process still running is not a leftover.
        assert set(lan.namespaces) <= namespaces()
        assert not set(lan.namespaces) & set(reap_leftovers())


def test_netem_adds_loss_and_delay_to_every_link() -> None:
    requires_netem()
    with private_lan(2) as lan:
        lan.netem(loss_percent=10, delay_ms=100)
        for host in lan.hosts:
            shown = host.run("tc", "qdisc", "show", "dev", host.interface).stdout
            assert "netem" in shown and "loss 10%" in shown and "delay 100ms" in shown, shown
        lan.clear_netem()
        assert "netem" not in lan.hosts[0].run("tc", "qdisc", "show", "dev", "eth0").stdout


def test_without_netem_the_harness_says_why() -> None:
    requires_netns()
    reason = netem_unavailable_reason()
    if reason is None:
        pytest.skip("tc netem works here (see the test above)")
    with private_lan(1) as lan, pytest.raises(NetemUnavailable, match="netem"):
        lan.netem()

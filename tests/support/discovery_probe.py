"""A discovering device in its own process, for tests that put devices in network namespaces.

A process lives in one network namespace, so each device of a multi-host
test is one of these, started with ``ip netns exec NS python -m
tests.support.discovery_probe ...``.

``run``: a :class:`peer.discovery.Discovery` (on the ``--interface``
addresses, else on every address of its namespace) that prints one JSON line per
event on stdout (``started``, ``appeared``, ``gone``, ``stopped``, each
with ``t``: seconds since the process started) and logs on stderr. It
stops (with an mDNS goodbye) when stdin reaches end of file.

``garbage``: adverts of our service type that break every rule, sent
from plain zeroconf: a dozen hand-made ones, registered (so they also
answer queries), and a flood of ``--flood`` more, announced only; plus a
datagram that is not DNS at all. Prints ``sent`` once everything has gone
out (and again after each repetition), and runs until stdin closes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from typing import Any

_START = time.monotonic()


def _say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": round(time.monotonic() - _START, 3), **fields}), flush=True)


def _run(args: argparse.Namespace) -> None:
    import trio

    from peer.sync.discovery import Appeared, Discovery

    discovery = Discovery(
        args.device_id,
        bytes.fromhex(args.group),
        args.port,
        args.interface,
        ttl_s=args.ttl,
        requery_interval_s=args.requery,
        sweep_interval_s=args.sweep,
        address_check_interval_s=args.address_check,
        protocol=args.protocol,
    )

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(discovery.run)
            _say("started")

            async def report() -> None:
                async for event in discovery.events():
                    if isinstance(event, Appeared):
                        advert = event.advert
                        _say("appeared", device_id=advert.device_id, addresses=list(advert.addresses),
                             port=advert.port, protocol=advert.protocol)
                    else:
                        _say("gone", device_id=event.device_id)

            nursery.start_soon(report)
            # End of stdin is the signal to stop: the test closes it, or dies.
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()
        _say("stopped")

    trio.run(main)


def _garbage(args: argparse.Namespace) -> None:
    # Plain zeroconf, before anything imports trio_asyncio (which would
    # hand zeroconf's thread a trio-backed loop).
    import asyncio
    import socket

    from zeroconf import ServiceInfo, Zeroconf

    kind = "_peer-sync._tcp.local."
    address = args.interface[0]
    ids = ["GARBAGE" + "A" * 19, "GARBAGE" + "B" * 19]  # well-formed device ids
    good_id = "QQQQQQQQQQQQQQQQQQQQQQQQQQ"  # a well-formed device id nobody has
    ours = args.group_hash

    def advert(label: str, properties: dict[bytes, bytes | None] | bytes, port: int = 7847,
               addresses: list[str] | None = None, ttl: int = 120) -> ServiceInfo:
        return ServiceInfo(kind, f"{label}.{kind}", port=port, properties=properties,
                           server=f"{label.lower()}.local.", host_ttl=ttl, other_ttl=ttl,
                           parsed_addresses=addresses if addresses is not None else [address])

    handmade = [
        advert("peer-EMPTYTXT", {}),
        advert("peer-NOID", {b"g": ours.encode(), b"v": b"1"}),
        advert("peer-NONUTF8", {b"id": b"\xff\xfe\xfd", b"g": ours.encode(), b"v": b"1"}),
        advert("peer-OVERSIZED", {b"id": b"A" * 200, b"g": ours.encode(), b"v": b"1"}),
        advert("peer-NOTANID", {b"id": b"not-a-device-id", b"g": ours.encode(), b"v": b"1"}),
        advert("peer-MISMATCHAAAAAAAAAAAAAAAAAA", {b"id": good_id.encode(), b"g": ours.encode(), b"v": b"1"}),
        advert(f"peer-{ids[0]}", {b"id": ids[0].encode(), b"g": b"zz", b"v": b"1"}),
        advert(f"peer-{ids[1]}", {b"id": ids[1].encode(), b"g": ours.encode(), b"v": b"one"}),
        advert("peer-BAREKEYS", b"\x02id\x01g\x01v"),
        advert("peer-PORTZERO", {b"id": b"PORTZERO", b"g": ours.encode(), b"v": b"1"}, port=0),
        advert("peer-BADADDRESS", {b"id": b"BADADDRESS", b"g": ours.encode(), b"v": b"1"},
               addresses=["0.0.0.0", "224.0.0.1"]),
        # Well formed, of our group, but from the future: ignored, said once at INFO.
        advert(f"peer-{good_id}", {b"id": good_id.encode(), b"g": ours.encode(), b"v": b"999"}),
    ]
    flood = [
        advert(f"{args.flood_prefix}-{i}", {b"id": f"flood{i}".encode(), b"g": os.urandom(8).hex().encode(), b"v": b"1"})
        for i in range(args.flood)
    ]

    zc = Zeroconf(interfaces=[address], use_asyncio=False)
    loop = zc.loop
    assert loop is not None

    async def register_all() -> None:
        # In parallel: one by one, the probing would take 1.5 s per advert.
        await asyncio.gather(*[zc.async_register_service(info, strict=False) for info in handmade])

    asyncio.run_coroutine_threadsafe(register_all(), loop).result(30)
    stop = threading.Event()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address))

    def announce() -> None:
        for _ in range(args.repeat):
            for info in handmade + flood:
                zc.send(zc.generate_service_broadcast(info, None))
            sock.sendto(b"\x00\x01this is not DNS" * 20, ("224.0.0.251", 5353))
            _say("sent", count=len(handmade) + len(flood))
            if stop.wait(1.0):
                return

    thread = threading.Thread(target=announce, daemon=True)
    thread.start()
    sys.stdin.read()
    stop.set()
    thread.join()
    zc.close()
    _say("stopped")


def main() -> None:
    parser = argparse.ArgumentParser(prog="discovery_probe")
    parser.add_argument("mode", choices=["run", "garbage"])
    parser.add_argument("--interface", action="append", default=[])
    parser.add_argument("--device-id")
    parser.add_argument("--group", help="group id, hex")
    parser.add_argument("--group-hash", help="garbage: the group hash to forge")
    parser.add_argument("--port", type=int, default=7847)
    parser.add_argument("--ttl", type=int, default=120)
    parser.add_argument("--requery", type=float, default=None)
    parser.add_argument("--sweep", type=float, default=1.0)
    parser.add_argument("--address-check", type=float, default=30.0,
                        help="without --interface: how often to look for new addresses")
    parser.add_argument("--protocol", type=int, default=None)
    parser.add_argument("--flood", type=int, default=1000)
    parser.add_argument("--flood-prefix", default="flood", help="garbage: instance names of the flood (so rounds differ)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    if args.mode == "run":
        if args.protocol is None:
            from protocol import PROTOCOL_VERSION

            args.protocol = PROTOCOL_VERSION
        _run(args)
    else:
        _garbage(args)


if __name__ == "__main__":
    main()

"""LAN discovery: advertise this device over mDNS, and report the group's other devices.

Theory of operation. Every agent advertises one DNS-SD service of type
``_peer-sync._tcp.local.``: instance ``peer-<DEVICEID>`` (a device id is 26
characters of A-Z2-7, a valid DNS label), server ``peer-<deviceid>.local.``,
the SSH listener's port, the addresses it advertises on, and a TXT record
``id`` = device id, ``g`` = :func:`group_hash` of the group id (members
skip foreign groups without the group id being revealed), ``v`` = the
protocol version (:data:`protocol.PROTOCOL_VERSION`). The same agent
browses for that type and reports what it finds as events on a channel:
:class:`Appeared` for a device of the same group hash and protocol version
(again whenever its port or addresses change) and :class:`Gone` when it
leaves (goodbye) or its records expire. An advert is only a hint: the
agent syncs with a device only after SSH has proved it holds a member's key.

The mDNS work is done by zeroconf on its own thread (see
:mod:`peer.aio.mdns` for why not on the trio-asyncio loop). The trio side
is *level-triggered*: instead of trusting each browser callback to be
delivered and interpreted in order, a sweep reads every cached instance
of the type (on a browser callback, and at least every
``sweep_interval_s``) and :class:`Neighbourhood` reconciles its table with
what it finds. So a missed or reordered callback cannot leave a stale
entry, expiry needs no callback at all (an instance whose PTR record has
expired is simply no longer listed), and goodbyes are noticed within a
second. Callbacks only wake the sweep (through the trio token, coalesced).

Staleness and returning devices. Records are advertised with a TTL of
``ttl_s`` (120 s, the RFC 6762 host-record TTL) so that a device unplugged
without a goodbye is reported gone within about two minutes. zeroconf
keeps any PTR record for at least 1,125 s (its guard against refresh
storms), so liveness is judged on the SRV record instead: an instance
whose SRV record has expired is gone. zeroconf's browser only refreshes
PTR records, so every ``requery_interval_s`` (a sixth of the TTL) a query
for the type lists, as known answers, the instances whose SRV record is
still younger than half its TTL; exactly the others answer, which
refreshes their records in every cache on the LAN at once. The same query
finds devices that came back after their records expired here.

Interfaces. Explicit addresses (``--interface``, ``[agent] interfaces``):
zeroconf binds to those only; a wrong one is a :class:`DiscoveryError` at
start. None given (real users): this machine's non-loopback IPv4
addresses, checked every ``address_check_interval_s``; when the set
changes, discovery closes (goodbye, every peer reported Gone) and starts
again on the new set. IPv6 addresses work when given explicitly.

Hostile LANs. Everything read from the network is validated
(:func:`parse_advert`): missing, oversized (> 64 bytes) or non-ASCII TXT
values, bad device ids, absurd ports and addresses are dropped and logged
at DEBUG, at most a few lines a minute. The table holds at most
``max_peers`` devices, the logs of foreign devices at most as many
names, and zeroconf's own cache is capped (10,000 records), so a flood of
adverts costs CPU for a while but never unbounded memory.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import trio

from peer.aio.mdns import CachedService, MdnsEndpoint, machine_addresses
from peer.errors import DiscoveryError
from protocol import PROTOCOL_VERSION, format_device_id, is_device_id

__all__ = [
    "SERVICE_TYPE",
    "Advert",
    "Appeared",
    "Gone",
    "Event",
    "Finder",
    "Discovery",
    "DiscoveryError",
    "InvalidAdvert",
    "Neighbourhood",
    "group_hash",
    "instance_name",
    "advert_properties",
    "parse_advert",
]

log = logging.getLogger(__name__)

SERVICE_TYPE: Final = "_peer-sync._tcp.local."
DEFAULT_TTL_S: Final = 120
DEFAULT_SWEEP_INTERVAL_S: Final = 1.0
DEFAULT_ADDRESS_CHECK_INTERVAL_S: Final = 30.0
DEFAULT_MAX_PEERS: Final = 1000
#: TXT values longer than this are refused (ours are at most 26 bytes).
MAX_TXT_VALUE: Final = 64
#: Addresses kept per advert.
MAX_ADDRESSES: Final = 16

_GROUP_HASH_CONTEXT: Final = b"peer-sync group\0"
_GROUP_HASH_RE: Final = re.compile(r"[0-9a-f]{16}")
_VERSION_RE: Final = re.compile(r"[0-9]{1,6}")
_INSTANCE_PREFIX: Final = "peer-"
#: More instances than zeroconf's cache (10,000 records, 4 per instance) can hold.
_MAX_SERVICES_PER_SWEEP: Final = 5000
_EVENT_BUFFER: Final = 256
_MIN_SWEEP_GAP_S: Final = 0.1
_REQUEST_TIMEOUT_MS: Final = 3000
_REQUEST_BACKOFF_S: Final = 10.0
_MAX_REQUESTS: Final = 4
_CLOSE_TIMEOUT_S: Final = 5.0


def group_hash(group_id: bytes) -> str:
    """What the TXT record says of the group: 16 hex characters of a hash of the group id."""
    return hashlib.sha256(_GROUP_HASH_CONTEXT + group_id).hexdigest()[:16]


def instance_name(device_id: str) -> str:
    """The DNS-SD instance a device advertises: ``peer-<DEVICEID>``."""
    return f"{_INSTANCE_PREFIX}{device_id}"


def advert_properties(device_id: str, group_id: bytes, protocol: int = PROTOCOL_VERSION) -> dict[bytes, bytes]:
    """The TXT record of this device's advert."""
    return {
        b"id": device_id.encode("ascii"),
        b"g": group_hash(group_id).encode("ascii"),
        b"v": str(protocol).encode("ascii"),
    }


def _device_of_instance(name: str) -> str | None:
    """The device id in a full instance name, when the name has our shape."""
    suffix = "." + SERVICE_TYPE
    if not name.lower().endswith(suffix.lower()):
        return None
    label = name[: -len(suffix)]
    if not label.lower().startswith(_INSTANCE_PREFIX):
        return None
    device_id = label[len(_INSTANCE_PREFIX) :].upper()
    return device_id if is_device_id(device_id) else None


@dataclass(frozen=True, slots=True)
class Advert:
    """A same-shaped advert seen on the LAN (not yet proof of anything)."""

    device_id: str
    group_hash: str
    protocol: int
    #: IPv4 first, then IPv6, each in numeric order.
    addresses: tuple[str, ...]
    port: int


@dataclass(frozen=True, slots=True)
class Appeared:
    """A device of this group is on the LAN at ``advert``'s addresses (sent again when they change)."""

    advert: Advert


@dataclass(frozen=True, slots=True)
class Gone:
    """The device said goodbye, or its records expired."""

    device_id: str


Event = Appeared | Gone


class InvalidAdvert(ValueError):
    """An advert of our service type that does not follow the rules; the message says which."""


def _txt_value(properties: Mapping[bytes, bytes | None], key: bytes) -> str:
    value = properties.get(key)
    if value is None:
        raise InvalidAdvert(f"TXT {key.decode()!s} is missing")
    if len(value) > MAX_TXT_VALUE:
        raise InvalidAdvert(f"TXT {key.decode()!s} is {len(value)} bytes long")
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidAdvert(f"TXT {key.decode()!s} is not ASCII") from None


def _address_key(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[int, int]:
    return (address.version, int(address))


def parse_advert(service: CachedService) -> Advert:
    """The advert in a cached service, or :class:`InvalidAdvert` saying what is wrong with it."""
    if service.problem is not None:
        raise InvalidAdvert(service.problem)
    if service.properties is None:
        raise InvalidAdvert("no TXT record")
    device_id = _txt_value(service.properties, b"id")
    if not is_device_id(device_id):
        raise InvalidAdvert(f"TXT id {device_id!r} is not a device id")
    if _device_of_instance(service.name) != device_id:
        raise InvalidAdvert(f"the instance name does not match TXT id {device_id}")
    hashed = _txt_value(service.properties, b"g")
    if not _GROUP_HASH_RE.fullmatch(hashed):
        raise InvalidAdvert(f"TXT g {hashed!r} is not a group hash")
    version = _txt_value(service.properties, b"v")
    if not _VERSION_RE.fullmatch(version):
        raise InvalidAdvert(f"TXT v {version!r} is not a protocol version")
    port = service.port
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise InvalidAdvert(f"port {port!r} is not a TCP port")
    parsed: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
    for text in service.addresses[: MAX_ADDRESSES * 4]:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if address.is_unspecified or address.is_multicast:
            continue
        parsed[str(address)] = address
    if not parsed:
        raise InvalidAdvert("no usable address")
    ordered = sorted(parsed.items(), key=lambda item: _address_key(item[1]))[:MAX_ADDRESSES]
    return Advert(device_id, hashed, int(version), tuple(text for text, _ in ordered), port)


class _LogBudget:
    """At most ``per_minute`` lines a minute; says how many were held back."""

    def __init__(self, per_minute: int = 10) -> None:
        self.per_minute = per_minute
        self.tokens = float(per_minute)
        self.stamp = time.monotonic()
        self.suppressed = 0

    def take(self) -> int | None:
        """None: stay quiet; else the number of lines held back since the last one."""
        now = time.monotonic()
        self.tokens = min(float(self.per_minute), self.tokens + (now - self.stamp) * self.per_minute / 60)
        self.stamp = now
        if self.tokens < 1:
            self.suppressed += 1
            return None
        self.tokens -= 1
        held, self.suppressed = self.suppressed, 0
        return held


class Neighbourhood:
    """The same-group devices on the LAN, reconciled with each sweep of the mDNS cache (no I/O)."""

    def __init__(self, device_id: str, group_hash: str, *, max_peers: int = DEFAULT_MAX_PEERS) -> None:
        if max_peers < 1:
            raise ValueError("max_peers must be at least 1")
        self.device_id = device_id
        self.group_hash = group_hash
        self.max_peers = max_peers
        self._peers: dict[str, Advert] = {}
        #: Instances seen without their SRV/TXT/address records: worth asking for.
        self.unresolved: list[str] = []
        self._told_foreign: set[str] = set()
        self._told_incompatible: set[str] = set()
        self._rejected: dict[str, str] = {}
        self._budget = _LogBudget()

    @property
    def peers(self) -> Mapping[str, Advert]:
        return dict(self._peers)

    def update(self, services: Iterable[CachedService]) -> list[Event]:
        """Reconcile the table with every instance the cache lists now; the events, in order."""
        events: list[Event] = []
        seen: set[str] = set()
        unresolved: list[str] = []
        for service in services:
            if service.problem is None and not service.alive:
                continue  # silent for a whole TTL: gone, until it answers again
            if service.problem is None and not service.complete:
                hinted = _device_of_instance(service.name)
                if hinted is not None and hinted != self.device_id:
                    # Keep a known device while its records are being refreshed.
                    seen.add(hinted)
                    unresolved.append(service.name)
                continue
            try:
                advert = parse_advert(service)
            except InvalidAdvert as e:
                self._reject(service.name, str(e))
                continue
            if advert.device_id == self.device_id or advert.device_id in seen:
                continue  # ourselves; or a second instance for one device id (first one wins)
            if advert.group_hash != self.group_hash:
                self._tell_once(
                    self._told_foreign, advert.device_id,
                    "ignoring device %s on the LAN: it belongs to another group",
                )
                continue
            if advert.protocol != PROTOCOL_VERSION:
                self._tell_once(
                    self._told_incompatible, advert.device_id,
                    "ignoring device %s on the LAN: it speaks protocol version "
                    f"{advert.protocol}, this device {PROTOCOL_VERSION} (update peer on both)",
                )
                continue
            seen.add(advert.device_id)
            known = self._peers.get(advert.device_id)
            if known == advert:
                continue
            if known is None and len(self._peers) >= self.max_peers:
                self._reject(service.name, f"already {self.max_peers} devices in the table")
                continue
            self._peers[advert.device_id] = advert
            events.append(Appeared(advert))
        for device_id in [d for d in self._peers if d not in seen]:
            del self._peers[device_id]
            events.append(Gone(device_id))
        self.unresolved = unresolved
        return events

    def clear(self) -> list[Event]:
        """Forget every device (discovery restarts); a Gone for each."""
        events: list[Event] = [Gone(device_id) for device_id in self._peers]
        self._peers.clear()
        return events

    def _tell_once(self, told: set[str], device_id: str, message: str) -> None:
        # Once per device, not once per sweep: the sweep sees it every second.
        if device_id in told or len(told) >= self.max_peers:
            return
        told.add(device_id)
        log.info(message, format_device_id(device_id))

    def _reject(self, name: str, reason: str) -> None:
        if self._rejected.get(name) == reason:
            return
        if len(self._rejected) >= 4 * self.max_peers:
            self._rejected.clear()
        self._rejected[name] = reason
        if not log.isEnabledFor(logging.DEBUG):
            return
        held = self._budget.take()
        if held is not None:
            more = f" ({held} similar lines held back)" if held else ""
            log.debug("ignoring mDNS advert %.120r: %s%s", name, reason, more)


class Finder(Protocol):
    """What the agent needs from discovery (tests may pass a fake)."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None: ...

    def events(self) -> trio.MemoryReceiveChannel[Event]: ...


def _check_interfaces(interfaces: Sequence[str]) -> list[str]:
    checked = []
    for text in interfaces:
        try:
            address = ipaddress.ip_address(text.strip())
        except ValueError:
            raise DiscoveryError(f"an interface for LAN discovery is given by its IP address, not {text!r}") from None
        if address.is_unspecified or address.is_multicast:
            raise DiscoveryError(f"{text} cannot be used for LAN discovery: give an address of one of this machine's interfaces")
        checked.append(str(address))
    return list(dict.fromkeys(checked))


class Discovery:
    """Advertise this device and browse for the others of its group, until cancelled.

    ``await nursery.start(discovery.run)`` returns once the advert is
    registered and browsing has begun (or, with no explicit interfaces and
    no network yet, once discovery is waiting for an address); read the
    events from :meth:`events`. The channel closes when :meth:`run` ends,
    so run it once per instance.
    """

    def __init__(
        self,
        device_id: str,
        group_id: bytes,
        port: int,
        interfaces: Sequence[str] = (),
        *,
        ttl_s: int = DEFAULT_TTL_S,
        requery_interval_s: float | None = None,
        sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S,
        address_check_interval_s: float = DEFAULT_ADDRESS_CHECK_INTERVAL_S,
        max_peers: int = DEFAULT_MAX_PEERS,
        protocol: int = PROTOCOL_VERSION,
    ) -> None:
        if not is_device_id(device_id):
            raise ValueError(f"not a device id: {device_id!r}")
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is not a TCP port")
        if ttl_s < 1:
            raise ValueError("ttl_s must be at least 1 s")
        self.device_id = device_id
        self.group_hash = group_hash(group_id)
        self.port = port
        self.interfaces = _check_interfaces(interfaces)
        self.ttl_s = ttl_s
        # Several queries per TTL: a record is refreshed in time even when
        # an answer or two is lost.
        self.requery_interval_s = ttl_s / 6 if requery_interval_s is None else requery_interval_s
        self.sweep_interval_s = sweep_interval_s
        self.address_check_interval_s = address_check_interval_s
        self._properties = advert_properties(device_id, group_id, protocol)
        self._table = Neighbourhood(device_id, self.group_hash, max_peers=max_peers)
        self._send, self._receive = trio.open_memory_channel[Event](_EVENT_BUFFER)
        self._changed = trio.Event()
        self._wake_pending = False
        self._requested: dict[str, float] = {}
        self._requests = 0

    def events(self) -> trio.MemoryReceiveChannel[Event]:
        """The one stream of :class:`Appeared` and :class:`Gone` events."""
        return self._receive

    @property
    def peers(self) -> Mapping[str, Advert]:
        """The devices of this group on the LAN now, by device id."""
        return self._table.peers

    @property
    def _browse_delay_ms(self) -> int:
        # zeroconf's browser queries at most this often; it must be well
        # under the TTL or it cannot refresh records before they expire.
        return int(min(10_000, max(250, self.ttl_s * 1000 / 8)))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Advertise and browse until cancelled; then say goodbye and close."""
        started = False
        try:
            while True:
                if self.interfaces:
                    addresses = self.interfaces
                else:
                    addresses = await trio.to_thread.run_sync(machine_addresses)
                if not addresses:
                    log.info(
                        "LAN discovery waits for a network address (checking every %d s)",
                        self.address_check_interval_s,
                    )
                    if not started:
                        task_status.started()
                        started = True
                    await self._wait_for_change(addresses)
                    continue
                try:
                    endpoint = await self._open(addresses)
                except DiscoveryError as e:
                    if self.interfaces:
                        raise  # the user named them: tell them now
                    log.warning("%s; trying again in %d s", e, self.address_check_interval_s)
                    if not started:
                        task_status.started()
                        started = True
                    await trio.sleep(self.address_check_interval_s)
                    continue
                failed = False
                try:
                    if not started:
                        task_status.started()
                        started = True
                    await self._serve(endpoint, addresses)
                except DiscoveryError as e:
                    failed = True
                    log.warning("LAN discovery failed (%s); starting it again in %d s", e, self.address_check_interval_s)
                finally:
                    with trio.CancelScope(shield=True):
                        await self._close(endpoint)
                for event in self._table.clear():
                    await self._emit(event)
                if failed:
                    await trio.sleep(self.address_check_interval_s)
        finally:
            self._send.close()

    async def _open(self, addresses: Sequence[str]) -> MdnsEndpoint:
        endpoint = await trio.to_thread.run_sync(MdnsEndpoint.open, addresses)
        try:
            endpoint.browse(SERVICE_TYPE, self._on_change())
            instance = instance_name(self.device_id)

            def register() -> None:
                endpoint.register(
                    SERVICE_TYPE,
                    instance,
                    server=f"{instance.lower()}.local.",
                    port=self.port,
                    properties=self._properties,
                    addresses=addresses,
                    ttl_s=self.ttl_s,
                )

            await trio.to_thread.run_sync(register)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._close(endpoint)
            raise
        log.info(
            "advertising device %s on the LAN (%s, port %d)",
            format_device_id(self.device_id), ", ".join(addresses), self.port,
        )
        return endpoint

    async def _close(self, endpoint: MdnsEndpoint) -> None:
        with trio.move_on_after(_CLOSE_TIMEOUT_S) as scope:
            await trio.to_thread.run_sync(endpoint.close, abandon_on_cancel=True)
        if scope.cancelled_caught:
            log.warning("LAN discovery took over %d s to close; left behind", _CLOSE_TIMEOUT_S)

    def _on_change(self) -> Callable[[], None]:
        """The browser's callback: wake the sweep, from zeroconf's thread, at most once per sweep."""
        token = trio.lowlevel.current_trio_token()

        def wake() -> None:
            self._wake_pending = False
            self._changed.set()

        def on_change() -> None:
            if self._wake_pending:
                return
            self._wake_pending = True
            try:
                token.run_sync_soon(wake)
            except trio.RunFinishedError:
                pass

        return on_change

    async def _serve(self, endpoint: MdnsEndpoint, addresses: Sequence[str]) -> None:
        """Sweep and re-query until the machine's addresses change (never, with explicit interfaces)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sweep, endpoint, nursery)
            nursery.start_soon(self._requery, endpoint)
            if not self.interfaces:
                await self._wait_for_change(addresses)
                log.info("this machine's addresses changed: advertising again")
                nursery.cancel_scope.cancel()

    async def _wait_for_change(self, addresses: Sequence[str]) -> None:
        while True:
            await trio.sleep(self.address_check_interval_s)
            now = await trio.to_thread.run_sync(machine_addresses)
            if set(now) != set(addresses):
                return

    async def _sweep(self, endpoint: MdnsEndpoint, nursery: trio.Nursery) -> None:
        while True:
            with trio.move_on_after(self.sweep_interval_s):
                await self._changed.wait()
            self._changed = trio.Event()
            services = await trio.to_thread.run_sync(endpoint.services, SERVICE_TYPE, _MAX_SERVICES_PER_SWEEP)
            for event in self._table.update(services):
                await self._emit(event)
            self._ask_for_records(endpoint, nursery)
            # A flood of adverts wakes the sweep constantly: let it coalesce.
            await trio.sleep(_MIN_SWEEP_GAP_S)

    def _ask_for_records(self, endpoint: MdnsEndpoint, nursery: trio.Nursery) -> None:
        """Ask for the missing records of a few incomplete instances (at most one request per name per 10 s)."""
        now = trio.current_time()
        for name in self._table.unresolved:
            if self._requests >= _MAX_REQUESTS:
                return
            if self._requested.get(name, 0.0) > now:
                continue
            if len(self._requested) >= self._table.max_peers:
                self._requested = {n: t for n, t in self._requested.items() if t > now}
                if len(self._requested) >= self._table.max_peers:
                    return
            self._requested[name] = now + _REQUEST_BACKOFF_S
            self._requests += 1
            nursery.start_soon(self._ask, endpoint, name)

    async def _ask(self, endpoint: MdnsEndpoint, name: str) -> None:
        try:
            await trio.to_thread.run_sync(
                endpoint.request, SERVICE_TYPE, name, _REQUEST_TIMEOUT_MS, abandon_on_cancel=True
            )
        finally:
            self._requests -= 1
        self._changed.set()

    async def _requery(self, endpoint: MdnsEndpoint) -> None:
        while True:
            await trio.sleep(self.requery_interval_s)
            await trio.to_thread.run_sync(endpoint.query, SERVICE_TYPE)

    async def _emit(self, event: Event) -> None:
        try:
            await self._send.send(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # nobody reads the events any more

"""mDNS through zeroconf on a private asyncio loop: the I/O half of LAN discovery.

zeroconf is an asyncio library. Its synchronous ``Zeroconf`` normally runs
its own event loop in a thread made with ``asyncio.new_event_loop()``, but
once trio_asyncio is imported (peer always imports it) that function
returns a trio-backed ``SyncTrioEventLoop``: not a place to run zeroconf's
sockets and timers. So :class:`MdnsEndpoint` makes a plain selector loop
itself, runs it in a daemon thread, and builds the ``Zeroconf`` inside it
(``use_asyncio=True``). zeroconf then works exactly as in any threaded
program: its loop never competes with the trio loop, and the synchronous
methods below are blocking calls meant for a worker thread (the trio side
wraps them in ``trio.to_thread.run_sync``); zeroconf allows them because
the caller is not on zeroconf's loop. Cache reads and known-answer queries
run on zeroconf's loop, the only thread that mutates the cache.

Nothing here knows trio or peer's rules for adverts: :mod:`peer.discovery`
decides what a cached service means. Foreign errors are translated here
into :class:`~peer.errors.DiscoveryError`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import ifaddr

# Exported by zeroconf's package for compatibility, but not in its __all__.
from zeroconf import (  # type: ignore[attr-defined]
    DNSOutgoing,
    DNSPointer,
    DNSQuestion,
    NonUniqueNameException,
    ServiceBrowser,
    ServiceInfo,
    Zeroconf,
    current_time_millis,
)
from zeroconf import (
    Error as ZeroconfError,
)

from ..errors import DiscoveryError

__all__ = ["CachedService", "MdnsEndpoint", "machine_addresses"]

log = logging.getLogger(__name__)

# DNS constants (RFC 1035, RFC 2782): a query message, record types, the IN class.
_FLAGS_QUERY: Final = 0x0000
_TYPE_PTR: Final = 12
_TYPE_SRV: Final = 33
_CLASS_IN: Final = 1

#: How long a call into zeroconf's loop may take before it counts as stuck.
_LOOP_CALL_TIMEOUT_S: Final = 10.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CachedService:
    """What the cache holds for one instance of a browsed type, unjudged."""

    name: str
    #: The TXT record's key/value pairs; None until a TXT record is known.
    properties: Mapping[bytes, bytes | None] | None
    port: int | None
    addresses: tuple[str, ...]
    #: SRV, TXT and at least one address are known.
    complete: bool
    #: The SRV record has not expired: the device answered within its TTL.
    alive: bool
    #: Why the cached records could not even be read (a malformed name...).
    problem: str | None = None


def machine_addresses() -> list[str]:
    """This machine's IPv4 addresses, loopback excluded, sorted."""
    found: set[str] = set()
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):  # IPv6 comes as (address, flowinfo, scope)
                continue
            address = ipaddress.IPv4Address(ip.ip)
            if not (address.is_loopback or address.is_unspecified or address.is_multicast):
                found.add(str(address))
    return sorted(found, key=ipaddress.IPv4Address)


def _local_addresses() -> set[str]:
    found: set[str] = set()
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            found.add(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
    return found


class MdnsEndpoint:
    """One ``Zeroconf`` bound to chosen addresses, on its own loop and thread.

    Build it with :meth:`open` and always :meth:`close` it: closing sends
    goodbyes for what was registered and stops the thread.
    """

    def __init__(self, zc: Zeroconf, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self._zc = zc
        self._loop = loop
        self._thread = thread
        self._browser: ServiceBrowser | None = None
        self._closed = False

    @classmethod
    def open(cls, interfaces: Sequence[str]) -> MdnsEndpoint:
        """Listen and answer on ``interfaces`` (IP addresses of this machine) only. Blocking."""
        if not interfaces:
            raise ValueError("mDNS needs at least one interface address")
        local = _local_addresses()
        for address in interfaces:
            if address.split("%")[0] not in local:
                raise DiscoveryError(
                    f"cannot use {address} for LAN discovery: it is not an address of this machine "
                    "(check --interface or [agent] interfaces)"
                )
        loop = asyncio.SelectorEventLoop()
        thread = threading.Thread(target=loop.run_forever, name="peer-mdns", daemon=True)
        thread.start()

        async def create() -> Zeroconf:
            return Zeroconf(interfaces=list(interfaces), use_asyncio=True)

        try:
            zc = asyncio.run_coroutine_threadsafe(create(), loop).result(_LOOP_CALL_TIMEOUT_S)
        except (OSError, ZeroconfError, FutureTimeout) as e:
            _stop_loop(loop, thread)
            where = ", ".join(interfaces)
            raise DiscoveryError(f"cannot start LAN discovery on {where}: {str(e) or type(e).__name__}") from e
        except BaseException:
            _stop_loop(loop, thread)
            raise
        return cls(zc, loop, thread)

    def _on_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on zeroconf's loop and wait for its result."""

        async def call() -> T:
            return fn()

        try:
            return asyncio.run_coroutine_threadsafe(call(), self._loop).result(_LOOP_CALL_TIMEOUT_S)
        except FutureTimeout as e:
            raise DiscoveryError(f"the mDNS thread did not answer within {_LOOP_CALL_TIMEOUT_S:.0f} s") from e
        except RuntimeError as e:  # the loop was closed under us
            raise DiscoveryError(f"the mDNS thread has stopped ({e})") from e

    def register(
        self,
        service_type: str,
        instance: str,
        *,
        server: str,
        port: int,
        properties: Mapping[bytes, bytes],
        addresses: Sequence[str],
        ttl_s: int,
    ) -> None:
        """Probe for ``instance``'s name, then announce it. Blocking (about 1.5 s)."""
        name = f"{instance}.{service_type}"
        info = ServiceInfo(
            service_type,
            name,
            port=port,
            properties=dict(properties),
            server=server,
            host_ttl=ttl_s,
            other_ttl=ttl_s,
            parsed_addresses=list(addresses),
        )
        try:
            self._zc.register_service(info, allow_name_change=False)
        except NonUniqueNameException as e:
            raise DiscoveryError(
                f"another device on the LAN already advertises {name}: is a copy of this "
                "device's home running on another machine?"
            ) from e
        except (OSError, ZeroconfError, FutureTimeout) as e:
            raise DiscoveryError(f"cannot advertise {name} on the LAN: {str(e) or type(e).__name__}") from e

    def browse(self, service_type: str, on_change: Callable[[], None]) -> None:
        """Start asking for ``service_type``; ``on_change()`` (from another thread) when the cache changes."""
        if self._browser is not None:
            raise RuntimeError("this endpoint already browses")

        def handler(**_: Any) -> None:
            on_change()

        self._browser = ServiceBrowser(self._zc, service_type, handlers=[handler])

    def query(self, service_type: str) -> None:
        """Ask once who offers ``service_type``; devices that must refresh their records answer. Blocking briefly.

        zeroconf keeps a PTR record at least 1,125 s whatever its TTL (a
        guard against refresh storms), and its browser re-asks only before
        that expires; so liveness is judged on SRV records (TTL as
        advertised), and this query keeps them fresh: it lists as known
        answers the instances whose SRV record still has more than half of
        its TTL left, with that remaining time as TTL, so exactly the
        others answer (RFC 6762, 7.1). It also finds devices that came
        back after their records expired here.
        """
        zc = self._zc

        def send() -> None:
            now = current_time_millis()
            out = DNSOutgoing(_FLAGS_QUERY)
            out.add_question(DNSQuestion(service_type, _TYPE_PTR, _CLASS_IN))
            for record in zc.cache.async_all_by_details(service_type, _TYPE_PTR, _CLASS_IN):
                alias = getattr(record, "alias", None)
                if not isinstance(alias, str) or record.is_expired(now):
                    continue
                srv = zc.cache.get_by_details(alias, _TYPE_SRV, _CLASS_IN)
                left = _srv_ttl_left(zc, alias, now)
                if srv is not None and left * 2 > srv.ttl:
                    out.add_answer_at_time(DNSPointer(record.name, _TYPE_PTR, _CLASS_IN, int(left), alias, now), now)
            zc.async_send(out)

        self._on_loop(send)

    def services(self, service_type: str, limit: int) -> list[CachedService]:
        """Every instance of ``service_type`` with an unexpired PTR record, at most ``limit``. Blocking briefly."""
        zc = self._zc

        def read() -> list[CachedService]:
            now = current_time_millis()
            found: list[CachedService] = []
            for record in zc.cache.async_all_by_details(service_type, _TYPE_PTR, _CLASS_IN):
                if len(found) >= limit:
                    break
                if record.is_expired(now):
                    continue
                name = getattr(record, "alias", "")
                found.append(_read_service(zc, service_type, name, now))
            return found

        return self._on_loop(read)

    def request(self, service_type: str, name: str, timeout_ms: int) -> None:
        """Ask for the SRV, TXT and address records of ``name``; they land in the cache. Blocking."""
        try:
            self._zc.get_service_info(service_type, name, timeout=timeout_ms)
        except (OSError, ZeroconfError, FutureTimeout, ValueError) as e:
            log.debug("asking for the records of %s failed: %s", name, e)

    def close(self) -> None:
        """Stop browsing, say goodbye for what was registered, stop the thread. Blocking; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._browser is not None:
                self._browser.cancel()
            self._zc.close()  # sends the goodbyes first
        except (OSError, ZeroconfError, FutureTimeout, RuntimeError) as e:
            log.warning("closing LAN discovery did not finish cleanly (%s); other devices forget this one when its records expire", e)
        finally:
            _stop_loop(self._loop, self._thread)


def _read_service(zc: Zeroconf, service_type: str, name: str, now: float) -> CachedService:
    """One instance from the cache; on zeroconf's loop."""
    try:
        info = ServiceInfo(service_type, name)
        complete = info.load_from_cache(zc, now)
        properties = dict(info.properties) if info.text else ({} if complete else None)
        addresses = tuple(info.parsed_scoped_addresses())
        return CachedService(name, properties, info.port, addresses, complete, _srv_ttl_left(zc, name, now) > 0)
    except Exception as e:  # garbage from the LAN must never stop the sweep
        return CachedService(name, None, None, (), False, False, problem=f"{type(e).__name__}: {e}")


def _srv_ttl_left(zc: Zeroconf, name: str, now: float) -> float:
    """Seconds until the cached SRV record of ``name`` expires (0 when there is none)."""
    srv = zc.cache.get_by_details(name, _TYPE_SRV, _CLASS_IN)
    if srv is None:
        return 0.0
    return max(0.0, (srv.created + srv.ttl * 1000 - now) / 1000)


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    if not loop.is_closed():
        try:
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:
            pass  # already closed under us
    thread.join(_LOOP_CALL_TIMEOUT_S)
    if not thread.is_alive() and not loop.is_closed():
        loop.close()

"""``peer agent``: the long-running side of a device, which keeps its store in sync.

Theory of operation. One trio nursery runs, side by side:

* the **SSH listener**, serving sync sessions to members and the join
  subsystem to devices holding an invite;
* **discovery** (mDNS, :mod:`peer.discovery`): it advertises this device
  and reports the group's other devices as they appear, move and leave.
  A discovered service is only a hint: nothing is trusted until SSH has
  proved the other side holds a member's key;
* the **watcher**, which notices versions written by other ``peer``
  processes on the same store (``peer add``, ``peer edit``...) through
  SQLite's ``PRAGMA data_version``, checked as soon as a file of the store
  is written (inotify, :class:`peer.watch.FileWrites`) and every
  :data:`WATCH_INTERVAL_S` anyway;
* one **worker per peer** (discovered, or listed in ``[agent] peers``),
  which syncs with it when it appears, after local changes (at once after
  a quiet spell, else ``debounce`` seconds after the previous session),
  and every ``sync_interval`` seconds (anti-entropy), with exponential
  backoff and jitter after failures;
* the **relay task** (:mod:`peer.relay.worker`): one exchange with every
  relay of ``peer relay list`` at start, a few seconds after a change, and
  every ``sync_interval`` seconds, with backoff after failures;
* the **status writer**: ``agent.json`` in the home directory, which
  ``peer status`` reads from another process;
* **scheduled backups** when ``[backup] enabled = true``
  (:func:`peer.backup.run_scheduled_backups`).

One session per peer at a time: a worker holds the peer's lock while its
session runs, and a session the peer opens meanwhile is refused with
BUSY (the peer retries in a moment; the running session already carries
both directions). Two agents that start a session to each other at the
same instant would both get BUSY and could collide again and again (a
handshake over a slow link outlasts the retry delay), so then the session
opened by the smaller device id goes on and the other side drops its own.
A session a device opens while its own previous one still runs here
replaces that one: the device gave up on it (it crashed or timed out),
and waiting for the old one to time out would refuse it for a minute.

Who needs a sync after a change is decided by the vectors, not guessed:
each peer's vector as of its last sync is in the store (``peers`` table),
so a change is pushed to every peer that does not hold it yet, which also
relays what one peer brought to the others.

Shutdown: cancelling :func:`run_agent` (the CLI does it on SIGINT/SIGTERM)
stops the listener and discovery (with an mDNS goodbye), cancels running
sessions (each side keeps every batch it stored; the next sync resends
the rest), writes a last status and closes the store. Versions are
committed in transactions, so nothing committed is lost, even to SIGKILL.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import trio

from peer.search.sidecar import index_state
from peer.sync import (
    DEFAULT_LISTEN,
    WILDCARDS,
    AgentLock,
    Syncer,
    SyncSummary,
    parse_address,
    write_status,
)
from protocol import (
    PeerBusy,
    PeerError,
    SyncSession,
    TransportError,
    TrustError,
    format_device_id,
)

from . import localapi
from .aio import JOIN_SUBSYSTEM, SYNC_SUBSYSTEM, ByteStream, StreamHandler
from .config import AgentConfig, BackupConfig
from .device import Device
from .home import Home
from .relay.worker import RelayWorker
from .warm import WarmCommands
from .watch import FileWrites, StoreWatch

if TYPE_CHECKING:
    from peer.sync.discovery import Finder

__all__ = [
    "run_agent",
    "run_until_signalled",
    "Listening",
]

log = logging.getLogger(__name__)

#: How often the watcher asks SQLite whether another process wrote.
WATCH_INTERVAL_S: Final = 0.25
#: After a file write that did not show as a commit yet: look again this soon (see watch).
WATCH_RECHECK_S: Final = 0.02
#: The first wait after a failure; it doubles with each further failure, up to ``backoff_max``.
BACKOFF_BASE_S: Final = 1.0
#: The longest wait before retrying a peer that did not answer: a peer that is still
#: advertised (or configured) but unreachable costs one TCP handshake per few seconds,
#: and a healed partition is noticed within that time. Refusals back off to ``backoff_max``.
UNREACHABLE_MAX_S: Final = 5.0
#: How long an automatic sync may take to connect and log in (a LAN answers in milliseconds;
#: this leaves room for loss and delay).
AGENT_CONNECT_TIMEOUT_S: Final = 8.0
#: How soon to try again when the peer was busy syncing with us.
BUSY_RETRY_S: Final = (0.2, 1.0)
#: How long the worker of a device that left the LAN goes on trying (while it fails) before it ends.
GONE_GRACE_S: Final = 60.0
#: How long a refused (BUSY) session stays open for the peer to read why.
BUSY_LINGER_S: Final = 2.0
#: The status file is rewritten at most this often (and once more when the agent stops).
STATUS_EVERY_S: Final = 0.5
#: What closing the store may take when the agent stops, before it exits anyway.
CLOSE_TIMEOUT_S: Final = 10.0

#: ``listening(host, port, device_id)``, called once the listener really accepts connections.
Listening = Callable[[str, int, str], None]


@dataclass
class _Peer:
    """What the agent knows about one other device, and its worker's state."""

    key: str  # the device id, or "address:HOST:PORT" for a configured peer not reached yet
    device_id: str | None
    addresses: list[tuple[str, int]] = field(default_factory=list)
    source: str = "mdns"  # "mdns" or "config"
    present: bool = True
    absent_since: float | None = None  # trio clock: when discovery last said it left
    dirty: bool = True  # a sync is wanted as soon as the backoff allows
    failures: int = 0
    not_before: float = 0.0  # monotonic: no attempt before this (backoff)
    quiet_until: float = 0.0  # trio clock: a change is synced at once after this (debounce)
    next_periodic: float = 0.0  # monotonic: the next anti-entropy round
    last_attempt: float | None = None  # wall clock
    last_sync: float | None = None  # wall clock of the last complete sync
    last_result: str = "never synced"
    last_summary: dict[str, Any] | None = None
    last_error: str | None = None
    refused: bool = False  # the last failure was a refusal (not a member, wrong group)
    logged: set[str] = field(default_factory=set)  # error kinds already logged at WARNING
    wake: trio.Event = field(default_factory=trio.Event)
    cancel: trio.CancelScope | None = None

    def poke(self) -> None:
        self.wake.set()

    def to_json(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "addresses": [f"{h}:{p}" if ":" not in h else f"[{h}]:{p}" for h, p in self.addresses],
            "source": self.source,
            "present": self.present,
            "last_attempt": self.last_attempt,
            "last_sync": self.last_sync,
            "last_result": self.last_result,
            "last_summary": self.last_summary,
            "failures": self.failures,
        }


def _backoff(failures: int, ceiling: float) -> float:
    """Exponential backoff with full jitter between half and all of the step."""
    step = min(ceiling, BACKOFF_BASE_S * 2 ** min(failures - 1, 30))
    return random.uniform(step / 2, step)


class _Agent:
    def __init__(
        self,
        home: Home,
        device: Device,
        config: AgentConfig,
        *,
        interfaces: Sequence[str],
        discovery: bool,
        static_peers: Sequence[str],
    ) -> None:
        self.home = home
        self.device = device
        self.store = device.store
        self.config = config
        self.interfaces = list(interfaces)
        self.discovery = discovery
        self.static_peers = list(static_peers)
        self.identity = home.identity()
        self.peers: dict[str, _Peer] = {}
        self.locks: dict[str, trio.Lock] = {}  # one session per device id at a time
        self.inbound: dict[str, trio.CancelScope] = {}  # the session each device opened, while it runs
        self.outbound: dict[str, trio.CancelScope] = {}  # the session this device opened to each, while it runs
        self.index_lock = trio.Lock()
        self.status_dirty = trio.Event()
        self.started = time.time()
        self.listen: tuple[str, int] | None = None
        self.membership = b""
        self.nursery: trio.Nursery | None = None
        #: The everyday commands answered on the local API (peer.warm); set before it serves.
        self.warm: WarmCommands | None = None
        #: True while warm_up runs (at most one at a time).
        self.warming = False
        #: Set by :meth:`wrote`; read and cleared by :meth:`watch`.
        self.own_writes = False
        self.syncer = Syncer(
            self.store, self.identity.signing_key, after_sync=self._after_sync, connect_timeout=AGENT_CONNECT_TIMEOUT_S
        )
        self.relays = RelayWorker(
            home, self.store, interval=config.sync_interval, backoff_max=config.backoff_max, after_read=self._after_relay
        )

    # Sessions ----------------------------------------------------------------------
    def _lock(self, device_id: str) -> trio.Lock:
        return self.locks.setdefault(device_id, trio.Lock())

    async def _after_sync(self, summary: SyncSummary) -> None:
        """Versions arrived: index them, and relay them to the peers that lack them."""
        await self._index_received(summary.added > 0)
        await self._changed(exclude=summary.peer_device_id)

    async def _index_received(self, arrived: bool = True) -> None:
        """Bring the search index up to date with versions that arrived; build it if this device has none yet.

        A device that never searched has no index, and a CLI import leaves it
        to the first search. The agent has time to spare: after memories
        arrive it builds the index in the background, then loads the model,
        so the first search (``peer search``, an assistant through
        ``peer mcp``) does not wait for them (34 s at 100,000 memories).
        """
        async with self.index_lock:
            warning = await self.device.catch_up_index()
            if warning:
                log.warning("%s", warning)
        if arrived and not self.warming and not index_state(self.home.index_dir, 0).exists:
            self.warming = True
            assert self.nursery is not None
            self.nursery.start_soon(self.warm_up)

    async def warm_up(self) -> None:
        """Load the index (building it if need be) and the model, so the next command is quick; never fatal."""
        if self.warm is None:
            self.warming = False
            return
        try:
            await self.warm.warm()
        except PeerError as e:
            log.warning("could not get the search index and model ready (%s); the next search tries again", e.message)
        finally:
            self.warming = False

    async def handle(self, stream: ByteStream) -> None:
        """A member opened a sync session: serve it, unless a session with it is already running."""
        lock = self._lock(stream.peer_device_id)
        previous = self.inbound.get(stream.peer_device_id)
        outbound = self.outbound.get(stream.peer_device_id)
        if previous is not None:
            # The device opened a new session while its previous one still runs here: it gave
            # up on that one (it crashed, or timed out), so that one ends and this one runs.
            previous.cancel()
        elif outbound is not None and stream.peer_device_id < self.store.device_id:
            # Both devices opened a session to each other at once. Refusing both (BUSY) and
            # retrying would collide again whenever a handshake outlasts the retry delay, so
            # the session opened by the smaller device id goes on, on both sides.
            log.debug("device %s opened a session while this one opened one to it: serving its own",
                      format_device_id(stream.peer_device_id))
            outbound.cancel()
        elif lock.locked():
            session = SyncSession(
                self.store.device_id, self.store.group_id, await self.store.vector(),
                await self.store.membership_digest(), peer_device_id=stream.peer_device_id,
            )
            log.debug("refused a session from device %s: one with it is already running",
                      format_device_id(stream.peer_device_id))
            data = session.send_error(PeerBusy("a sync session with this device is already running"))
            with trio.move_on_after(BUSY_LINGER_S):
                try:
                    await stream.send_all(data)
                    await stream.send_eof()
                    # Let the peer read the refusal before the channel closes under its HELLO.
                    while await stream.receive_some(1 << 16):
                        pass
                except PeerError:
                    pass
            return
        async with lock:
            peer = self.peers.get(stream.peer_device_id)
            with trio.CancelScope() as scope:
                self.inbound[stream.peer_device_id] = scope
                try:
                    await self.syncer.handle(stream)
                except PeerError as e:
                    log.info("sync from device %s failed: %s", format_device_id(stream.peer_device_id), e)
                    raise
                finally:
                    if self.inbound.get(stream.peer_device_id) is scope:
                        del self.inbound[stream.peer_device_id]
            if scope.cancelled_caught:
                log.info("sync from device %s replaced by its newer session", format_device_id(stream.peer_device_id))
                return
            await self._check_membership()
            if peer is not None:
                # A complete session it opened counts as a sync with it.
                peer.last_sync = time.time()
                peer.last_result = "ok (it connected)"
                self._status_changed()

    async def _after_relay(self) -> None:
        """Versions arrived from a relay: index them and offer them to the LAN peers."""
        await self._index_received()
        await self._changed()

    async def _changed(self, exclude: str | None = None) -> None:
        """This store changed: mark every peer that does not hold our vector yet (and exchange with the relays)."""
        self.relays.poke()
        vector = await self.store.vector()
        for peer in list(self.peers.values()):
            if peer.device_id is None or peer.device_id == exclude:
                if peer.device_id is None:
                    peer.dirty = True
                    peer.poke()
                continue
            known = await self.store.known_peer(peer.device_id)
            if known is None or known.vector.merge(vector) != known.vector:
                peer.dirty = True
                peer.poke()

    async def _check_membership(self) -> None:
        """The group changed (a device joined or was revoked, here or learned by a sync): tell every peer now.

        A change of members travels like any change, at once: a revocation
        must reach the other members before the revoked device does. Refused
        peers are retried (devices admitted by another member refuse each
        other until one of them has learned of the other), and the workers of
        revoked devices end: nobody syncs with them any more.
        """
        await self.store.refresh()
        digest = await self.store.membership_digest()
        if digest == self.membership:
            return
        self.membership = digest
        for peer in list(self.peers.values()):
            if self._stop_if_revoked(peer):
                continue
            peer.not_before = 0.0
            peer.dirty = True
            peer.poke()

    def _revoked(self, device_id: str | None) -> bool:
        return device_id is not None and self.store.membership.revocation_of(device_id) is not None

    def _stop_if_revoked(self, peer: _Peer) -> bool:
        """End the worker of a revoked device; True if it was revoked."""
        if not self._revoked(peer.device_id):
            return False
        assert peer.device_id is not None
        log.info("device %s %s: no more syncs with it", format_device_id(peer.device_id),
                 self.syncer.revoked_text(peer.device_id))
        if peer.cancel is not None:
            peer.cancel.cancel()
        return True

    async def _sync_once(self, peer: _Peer) -> None:
        """One attempt: try the peer's addresses in order until one answers."""
        if not peer.addresses:
            raise TransportError("no address known")
        errors: list[str] = []
        for host, port in list(peer.addresses):
            try:
                summary = await self.syncer.sync_with(host, port)
            except TrustError:
                raise  # another address will not make a stranger a member
            except PeerBusy:
                raise
            except TransportError as e:
                errors.append(f"{host}:{port}: {e}")
                continue
            self._reached(peer, summary, host, port)
            return
        raise TransportError("; ".join(errors))

    def _reached(self, peer: _Peer, summary: SyncSummary, host: str, port: int) -> None:
        peer.last_sync = time.time()
        peer.last_summary = summary.to_json()
        peer.last_result = "ok"
        if peer.device_id is None:
            # A configured address answered: from now on the device is known by its id.
            peer.device_id = summary.peer_device_id
        if (host, port) in peer.addresses and peer.addresses[0] != (host, port):
            peer.addresses.remove((host, port))
            peer.addresses.insert(0, (host, port))
        level = logging.INFO if summary.sent or summary.received or peer.failures else logging.DEBUG
        log.log(level, "synced: %s", summary.describe())

    async def worker(self, peer: _Peer) -> None:
        """Sync with one peer when wanted, for as long as it is known."""
        with trio.CancelScope() as scope:
            peer.cancel = scope
            while True:
                now = trio.current_time()
                due = max(now if peer.dirty else peer.next_periodic, peer.not_before)
                if due <= now:
                    await self._attempt(peer)
                    continue
                peer.wake = trio.Event()
                with trio.move_on_at(due):
                    await peer.wake.wait()
                    # Debounce, leading edge: a change after a quiet spell is synced at once; one
                    # within `debounce` seconds of the last session waits out the rest of that
                    # time, so a burst of local writes settles into few sessions.
                    await trio.sleep_until(peer.quiet_until)

    async def _attempt(self, peer: _Peer) -> None:
        try:
            await self._attempt_once(peer)
        finally:
            peer.quiet_until = trio.current_time() + self.config.debounce

    async def _attempt_once(self, peer: _Peer) -> None:
        peer.dirty = False
        peer.last_attempt = time.time()
        interval = self.config.sync_interval
        lock = self._lock(peer.device_id) if peer.device_id is not None else trio.Lock()
        try:
            if lock.locked():
                raise PeerBusy("a session with it is already running")
            async with lock:
                log.debug("syncing with %s at %s", peer.key, ", ".join(f"{h}:{p}" for h, p in peer.addresses))
                with trio.CancelScope() as scope:
                    if peer.device_id is not None:
                        self.outbound[peer.device_id] = scope
                    try:
                        await self._sync_once(peer)
                    finally:
                        if peer.device_id is not None and self.outbound.get(peer.device_id) is scope:
                            del self.outbound[peer.device_id]
                if scope.cancelled_caught:
                    raise PeerBusy("it opened a session to this device at the same moment, and that one goes on")
        except PeerBusy:
            # Not a failure: the running session carries both directions. Check again soon.
            peer.dirty = True
            peer.not_before = trio.current_time() + random.uniform(*BUSY_RETRY_S)
            log.debug("device %s is busy syncing with this one; trying again shortly", peer.key)
            return
        except PeerError as e:
            self._failed(peer, e)
            if isinstance(e, TrustError) and self._stop_if_revoked(peer):
                return
            if (
                not peer.present
                and peer.absent_since is not None
                and trio.current_time() - peer.absent_since > GONE_GRACE_S
                and peer.cancel is not None
            ):
                log.debug("device %s is gone and unreachable: no more syncs until it is back", peer.key)
                peer.cancel.cancel()
            return
        finally:
            self._status_changed()
            await self._check_membership()
        peer.failures = 0
        peer.refused = False
        peer.last_error = None
        peer.logged.clear()
        peer.not_before = 0.0
        peer.next_periodic = trio.current_time() + random.uniform(0.9 * interval, 1.1 * interval)

    def _failed(self, peer: _Peer, error: PeerError) -> None:
        peer.failures += 1
        peer.last_error = str(error)
        peer.last_result = f"failed: {error}"
        peer.refused = isinstance(error, TrustError)
        if peer.refused:
            # A device that is not (or no longer) a member will not become one by retrying soon;
            # but when the membership changes, refused peers are tried again at once.
            delay = self.config.backoff_max
        elif isinstance(error, TransportError):
            delay = _backoff(peer.failures, min(UNREACHABLE_MAX_S, self.config.backoff_max))
        else:
            delay = _backoff(peer.failures, self.config.backoff_max)
        peer.not_before = trio.current_time() + delay
        peer.dirty = True
        name = format_device_id(peer.device_id) if peer.device_id else peer.key
        kind = type(error).__name__
        # Log each kind of failure once per peer until it next succeeds: no log flood while a peer is away.
        if kind not in peer.logged:
            peer.logged.add(kind)
            log.warning("sync with %s failed: %s (retrying with backoff)", name, error)
        else:
            log.debug("sync with %s failed again: %s (next try in %.1f s)", name, error, delay)

    # Peers -------------------------------------------------------------------------
    def _start_worker(self, peer: _Peer) -> None:
        assert self.nursery is not None
        self.peers[peer.key] = peer
        self.nursery.start_soon(self._run_worker, peer)
        self._status_changed()

    async def _run_worker(self, peer: _Peer) -> None:
        try:
            await self.worker(peer)
        finally:
            if self.peers.get(peer.key) is peer:
                del self.peers[peer.key]
                self._status_changed()

    def appeared(self, device_id: str, addresses: Sequence[tuple[str, int]]) -> None:
        """Discovery saw ``device_id`` (again) at ``addresses``."""
        if device_id == self.store.device_id or self._revoked(device_id):
            return  # a revoked device may still advertise itself: nobody syncs with it
        peer = self.peers.get(device_id)
        if peer is None:
            # Maybe a configured address that turned out to be this device.
            peer = next((p for p in self.peers.values() if p.device_id == device_id), None)
        if peer is None:
            log.info("found device %s on the LAN at %s", format_device_id(device_id),
                     ", ".join(f"{h}:{p}" for h, p in addresses))
            self._start_worker(_Peer(device_id, device_id, list(addresses), source="mdns"))
            return
        changed = list(addresses) != peer.addresses[: len(addresses)]
        if peer.source == "mdns":
            peer.addresses = list(addresses)
        else:
            peer.addresses = list(dict.fromkeys([*peer.addresses, *addresses]))
        if not peer.present:
            log.info("device %s is back on the LAN at %s", format_device_id(device_id),
                     ", ".join(f"{h}:{p}" for h, p in addresses))
        if not peer.present or changed:
            peer.present = True
            peer.absent_since = None
            peer.dirty = True
            peer.not_before = 0.0  # back on the network: try now, whatever the backoff said
            peer.poke()
        self._status_changed()

    def gone(self, device_id: str) -> None:
        """Discovery saw ``device_id`` leave (goodbye, or its records expired)."""
        peer = self.peers.get(device_id)
        if peer is None or peer.source != "mdns":
            return
        log.info("device %s left the LAN", format_device_id(device_id))
        peer.present = False
        peer.absent_since = trio.current_time()
        self._status_changed()  # `peer status` shows it gone now, not at the next sync
        # Its worker goes on for a while: an advert can vanish while the device is still
        # reachable (a flood of adverts evicting its records from the mDNS cache, a lost
        # packet), and syncs must not stop for that. The worker ends once the device has
        # been gone for GONE_GRACE_S without a sync succeeding (see _attempt).
        peer.poke()

    def add_static_peers(self) -> None:
        for text in self.static_peers:
            host, port = parse_address(text)
            self._start_worker(_Peer(f"address:{host}:{port}", None, [(host, port)], source="config"))

    # Tasks -------------------------------------------------------------------------
    async def watch(self) -> None:
        """Notice versions written by other processes on this store."""
        watch = await StoreWatch.start(self.store)
        seq = await self.store.last_seq()
        self.membership = await self.store.membership_digest()
        writes = FileWrites(self.store.path.parent, self.store.path.name)
        timeout = WATCH_INTERVAL_S
        try:
            while True:
                # Woken by a write to the store's files, or after the poll interval anyway.
                with trio.move_on_after(timeout) as scope:
                    await writes.wait()
                changed = await watch.changed()
                if self.own_writes:
                    # A command this agent answered wrote the store (its own connection: no data_version change).
                    changed, self.own_writes = True, False
                if not changed:
                    # A write seen before its commit reached the shared WAL index: look once more
                    # shortly (the index is memory-mapped, and its update raises no event).
                    timeout = WATCH_RECHECK_S if not scope.cancelled_caught else WATCH_INTERVAL_S
                    continue
                timeout = WATCH_INTERVAL_S
                await self._check_membership()
                latest = await self.store.last_seq()
                if latest != seq:
                    seq = latest
                    await self.store.refresh()
                    await self._changed()
        finally:
            writes.close()

    async def discover(
        self, make_finder: FinderFactory, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        from peer.sync.discovery import Appeared, Gone

        assert self.listen is not None
        finder = make_finder(self.store.device_id, self.store.group_id, self.listen[1], self.interfaces)
        async with trio.open_nursery() as nursery:
            await nursery.start(finder.run)
            task_status.started()
            async for event in finder.events():
                if isinstance(event, Appeared):
                    advert = event.advert
                    self.appeared(advert.device_id, [(a, advert.port) for a in advert.addresses])
                elif isinstance(event, Gone):
                    self.gone(event.device_id)

    def wrote(self) -> None:
        """A command answered by this agent wrote the store: the watch treats it as a change."""
        self.own_writes = True

    def _status_changed(self) -> None:
        self.status_dirty.set()

    def status(self, running: bool = True) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "running": running,
            "device_id": self.store.device_id,
            "started_at": self.started,
            "updated_at": time.time(),
            "listen": None if self.listen is None else f"{self.listen[0]}:{self.listen[1]}",
            "discovery": self.discovery,
            "interfaces": self.interfaces,
            "peers": [p.to_json() for p in sorted(self.peers.values(), key=lambda p: p.key)],
        }

    def write_status(self, running: bool = True) -> None:
        write_status(self.home, self.status(running))

    # Local API (peer.localapi) ------------------------------------------------------
    def local_methods(self) -> dict[str, Any]:
        """The methods ``HOME/agent.sock`` answers (see :mod:`peer.localapi`)."""

        warm = self.warm.methods() if self.warm is not None else {}

        async def ping(params: dict[str, Any]) -> dict[str, Any]:
            return {"pid": os.getpid(), "device_id": self.store.device_id}

        async def hello(params: dict[str, Any]) -> dict[str, Any]:
            # What this agent answers, so a client tells an older agent before it asks (peer.agent_client),
            # and how many of the commands it answered (tests check the agent really did).
            return {"pid": os.getpid(), "device_id": self.store.device_id,
                    "methods": ["ping", "hello", "status", "sync_now", *warm],
                    "answered": dict(self.warm.answered) if self.warm is not None else {}}

        async def status(params: dict[str, Any]) -> dict[str, Any]:
            return self.status()

        async def sync_now(params: dict[str, Any]) -> dict[str, Any]:
            """Sync with every known peer now; with ``wait`` (seconds), report how each attempt ended."""
            wait = params.get("wait", 0)
            if not isinstance(wait, (int, float)) or not 0 <= wait <= 60:
                raise PeerError("wait must be a number of seconds between 0 and 60")
            asked = time.time()
            peers = list(self.peers.values())
            for peer in peers:
                peer.dirty = True
                peer.not_before = 0.0
                peer.poke()
            with trio.move_on_after(wait):
                # Done when each peer's attempt began after the request and no session with it still runs.
                while any(
                    p.last_attempt is None or p.last_attempt < asked
                    or (p.device_id is not None and self._lock(p.device_id).locked())
                    for p in peers
                ):
                    await trio.sleep(0.05)
            return {"asked": len(peers), "peers": [p.to_json() for p in peers]}

        return {**warm, "ping": ping, "hello": hello, "status": status, "sync_now": sync_now}

    async def serve_local_api(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The local API, unless the platform refuses the socket: then the agent runs on without it."""
        started = False
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(localapi.serve, self.home.path, self.local_methods())
                task_status.started()
                started = True
        except (PeerError, OSError) as e:
            log.warning("the local API is off (%s); `peer mcp` cannot ask this agent to sync", e)
            if not started:
                task_status.started()

    async def publish_status(self) -> None:
        while True:
            self.write_status()
            self.status_dirty = trio.Event()
            await self.status_dirty.wait()
            await trio.sleep(STATUS_EVERY_S)


#: Makes the agent's discovery: (device id, group id, listening port, interfaces) -> a Finder.
FinderFactory = Callable[[str, bytes, int, Sequence[str]], "Finder"]


def _mdns_finder(device_id: str, group_id: bytes, port: int, interfaces: Sequence[str]) -> Finder:
    from peer.sync.discovery import Discovery

    return Discovery(device_id, group_id, port, interfaces)


def _join_handler(home: Home, device: Device) -> dict[str, StreamHandler]:
    from peer.pairing import join_handler

    handler: StreamHandler = join_handler(home, device.store)
    return {JOIN_SUBSYSTEM: handler}


async def run_agent(
    home: Home,
    *,
    host: str = DEFAULT_LISTEN[0],
    port: int = DEFAULT_LISTEN[1],
    config: AgentConfig | None = None,
    backup: BackupConfig | None = None,
    interfaces: Sequence[str] | None = None,
    discovery: bool | None = None,
    peers: Sequence[str] | None = None,
    listening: Listening | None = None,
    finder: FinderFactory | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve and sync this device until cancelled; ``task_status.started(port)`` once listening.

    ``interfaces``, ``discovery`` and ``peers`` override ``config`` (the
    ``[agent]`` section of config.toml) when given; ``backup`` (``[backup]``)
    runs scheduled backups when enabled. ``finder`` makes the discovery
    (default: mDNS, :class:`peer.sync.discovery.Discovery`); tests pass a fake.
    """
    config = config or AgentConfig()
    interfaces = list(config.interfaces if interfaces is None else interfaces)
    if not interfaces and host not in WILDCARDS:
        # Listening on one address: advertise that one (peers could reach no other), and
        # never multicast on interfaces the agent was not asked to use.
        interfaces = [host]
    elif host not in WILDCARDS and host not in interfaces:
        log.warning("listening on %s but advertising on %s: other devices will not reach this one;"
                    " listen on 0.0.0.0 or on an advertised address", host, ", ".join(interfaces))
    # One agent per home; taken before the store opens, so a second agent changes nothing.
    lock = AgentLock.acquire(home) if home.exists() else None
    try:
        device = await Device.open(home)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    agent = _Agent(
        home,
        device,
        config,
        interfaces=interfaces,
        discovery=config.discovery if discovery is None else discovery,
        static_peers=config.peers if peers is None else peers,
    )
    try:
        async with trio.open_nursery() as nursery:
            agent.nursery = nursery
            handlers = {**_join_handler(home, device), SYNC_SUBSYSTEM: agent.handle}
            bound: int = await nursery.start(partial(agent.syncer.serve, host, port, handlers=handlers))
            agent.listen = (host, bound)
            if lock is not None:
                lock.listening(host, bound)
            log.info("listening on %s:%d as device %s", host, bound, format_device_id(agent.store.device_id))
            if agent.discovery:
                await nursery.start(agent.discover, finder or _mdns_finder)
            agent.add_static_peers()
            nursery.start_soon(agent.watch)
            agent.warm = await WarmCommands.start(home, device, agent.index_lock)
            agent.warm.on_write = agent.wrote
            nursery.start_soon(agent.warm.keep_index_saved)
            if home.index_dir.exists():
                # A device that has searched before: load the model and the index now, not on the first command.
                agent.warming = True
                nursery.start_soon(agent.warm_up)
            await nursery.start(agent.serve_local_api)
            nursery.start_soon(agent.publish_status)
            await nursery.start(agent.relays.run)
            if backup is not None and backup.enabled:
                from .backup import run_scheduled_backups

                await nursery.start(partial(run_scheduled_backups, home, device.store, backup))
            if listening is not None:
                listening(host, bound, agent.store.device_id)
            task_status.started(bound)
    finally:
        # Shielded so a cancelled agent still says it stopped, bounded so a stuck close cannot hang the exit.
        with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
            agent.write_status(running=False)
            await device.close()
        if lock is not None:
            lock.release()


async def run_until_signalled(home: Home, **kwargs: Any) -> None:
    """:func:`run_agent` until SIGINT or SIGTERM, then a clean shutdown."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_agent, home, **kwargs))
            async for signum in signals:
                log.info("%s received: shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break

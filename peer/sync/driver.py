"""The sync driver: one :class:`~protocol.session.SyncSession` run over a byte stream against a store.

Theory of operation. Both ends run :func:`sync_over`, symmetric: nobody
waits for a turn. Two trio tasks share the session (it is a plain state
machine; trio runs one task at a time, so no lock is needed):

* the *receiver* reads bytes, feeds the session and handles its events in
  order: membership records are applied before anything that follows
  them (versions may be signed by devices, or sealed under key epochs,
  that only those records introduce); each VERSIONS batch is applied in
  one store transaction, together with the session's ``progress`` (the
  peer sends per origin in counter order, FLAG_ORDERED, so what arrived
  is provably held up to there and a cut session keeps it);
  :class:`SessionComplete` is the moment the peer's whole vector is merged;
* the *sender* waits for the peer's HELLO, then sends MEMBERS, every
  version the peer's vector does not cover (read from the store in slices,
  cut into batches), and DONE.

After completing, each side half-closes (EOF) and waits, briefly, for the
other's EOF: neither closes the connection while the other may still be
reading what it sent. Whatever fails, this side sends an ERROR frame
saying why (unless the peer's ERROR is the cause) and raises; the versions
already stored stay stored with the progress they proved, and the next
sync sends only the rest.

:class:`Syncer` is what ``peer sync`` and ``peer agent`` share: who is
trusted (the store's *current* membership, re-read for every
connection), connecting, serving, and what to do after a sync (reindex
what arrived).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from peer.aio import (
    CONNECT_TIMEOUT_S,
    DEFAULT_PORT,
    READ_TIMEOUT_S,
    SYNC_SUBSYSTEM,
    ByteStream,
    StreamHandler,
    Transport,
    ssh_transport,
)
from peer.store import ApplyPipeline, ApplyResult, Store
from peer.units import human_size, plural
from protocol import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_SIZE,
    FLAG_ORDERED,
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Done,
    HelloReceived,
    LocalProtocolError,
    Members,
    MembersReceived,
    PeerDone,
    PeerError,
    SessionComplete,
    SyncSession,
    TrustError,
    VersionsBatch,
    VersionsReceived,
    batches,
    format_device_id,
)

__all__ = [
    "SyncSummary",
    "SyncProgress",
    "ProgressCallback",
    "AfterSync",
    "sync_over",
    "Syncer",
    "DEFAULT_PORT",
]

log = logging.getLogger(__name__)

#: How long a side that completed waits for the other's EOF before closing anyway.
CLOSE_GRACE_S: Final = 5.0
#: How long sending the ERROR frame may take when giving up.
ERROR_SEND_S: Final = 2.0
#: How many times `peer sync` tries when the other side is busy syncing with this device.
BUSY_ATTEMPTS: Final = 5
#: Versions read from the store per query while sending.
READ_SLICE: Final = 1000


@dataclass(frozen=True, slots=True)
class SyncSummary:
    """What one completed sync did, seen from this side."""

    peer_device_id: str
    sent: int  # versions sent
    received: int  # versions received (some may have been held already)
    added: int  # versions received that were new here
    bytes_sent: int
    bytes_received: int
    seconds: float
    #: What went wrong after the sync itself completed (the index catch-up), for the person.
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "received": self.received,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "seconds": round(self.seconds, 3),
            "added": self.added,
            "peer": self.peer_device_id,
        }

    def describe(self) -> str:
        """One line for people: ``sent 3, received 5 versions (2.1 kB) in 0.4 s``."""
        total = self.bytes_sent + self.bytes_received
        return (
            f"sent {self.sent:,}, received {plural(self.received, 'version')} ({human_size(total)}) in {self.seconds:.1f} s"
            f" with device {format_device_id(self.peer_device_id)}"
        )


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """Where a running sync is; ``to_send`` is known once the peer's HELLO arrived."""

    sent: int
    to_send: int
    received: int
    bytes_sent: int
    bytes_received: int


ProgressCallback = Callable[[SyncProgress], None]
#: Called after every completed sync (e.g. to bring the search index up to date).
AfterSync = Callable[["SyncSummary"], Awaitable[None]]


class _Counted:
    """The stream, counting bytes both ways."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.sent = 0
        self.received = 0

    async def send_all(self, data: bytes) -> None:
        await self.stream.send_all(data)
        self.sent += len(data)

    async def receive_some(self) -> bytes:
        data = await self.stream.receive_some(1 << 20)
        self.received += len(data)
        return data


async def sync_over(
    stream: ByteStream,
    store: Store,
    *,
    progress: ProgressCallback | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> SyncSummary:
    """Run one complete sync session over ``stream`` (the caller closes it); raises a PeerError if it fails.

    ``stream.peer_device_id`` (what the transport authenticated) must
    match the device id in the peer's HELLO.
    """
    started = time.monotonic()
    await store.refresh()
    start_vector = await store.vector()
    session = SyncSession(
        store.device_id,
        store.group_id,
        start_vector,
        await store.membership_digest(),
        # Store.missing_for reads per origin in counter order: promise it, so the peer keeps its progress.
        flags=FLAG_ORDERED,
        peer_device_id=stream.peer_device_id,
    )
    wire = _Counted(stream)
    peer_hello = trio.Event()
    done_sent = trio.Event()
    failures: list[BaseException] = []
    counts = {"to_send": 0, "received": 0, "added": 0}

    def report() -> None:
        if progress is not None:
            progress(
                SyncProgress(session.versions_sent, counts["to_send"], counts["received"], wire.sent, wire.received)
            )

    async def send() -> None:
        await peer_hello.wait()
        peer_vector = session.peer_vector
        assert peer_vector is not None
        counts["to_send"] = await store.count_missing_for(peer_vector)
        report()
        await wire.send_all(session.send(Members(session.members_to_send(store.membership.records()))))
        async for slice_ in store.missing_for(peer_vector, READ_SLICE):
            for batch in batches(slice_, max_count=batch_size, max_bytes=batch_bytes):
                await wire.send_all(session.send(VersionsBatch(batch)))
                report()
        await wire.send_all(session.send(Done(session.versions_sent)))
        done_sent.set()

    # Decoding the next frames overlaps with applying the previous batch (the
    # store verifies in a worker thread and writes in SQLite's); the applier
    # takes events strictly in order, so members still come before versions.
    to_apply, applying = trio.open_memory_channel[MembersReceived | VersionsReceived | SessionComplete](1)

    async def receive() -> None:
        async with to_apply:
            while True:
                event = session.next_event()
                if event is NEED_DATA:
                    session.receive_data(await wire.receive_some())
                elif event is PAUSED:
                    await done_sent.wait()
                elif isinstance(event, HelloReceived):
                    peer_hello.set()
                elif isinstance(event, (MembersReceived, VersionsReceived)):
                    await to_apply.send(event)
                elif isinstance(event, PeerDone):
                    pass
                elif isinstance(event, SessionComplete):
                    await to_apply.send(event)
                    return
                else:  # pragma: no cover - ConnectionClosed cannot come before SessionComplete
                    raise LocalProtocolError(f"unexpected {type(event).__name__} before the session completed")

    async def apply() -> None:
        # Batch N+1 is verified (a worker thread) while batch N is written (SQLite's thread).
        # A failure is carried out of the nursery by hand: trio would wrap it in an ExceptionGroup.
        failed: list[PeerError] = []
        async with applying, trio.open_nursery() as checks, ApplyPipeline(store, checks) as pipeline:
            try:
                await apply_events(pipeline)
            except PeerError as e:
                failed.append(e)
                checks.cancel_scope.cancel()
        if failed:
            raise failed[0]

    async def apply_events(pipeline: ApplyPipeline) -> None:
        def written(result: ApplyResult) -> None:
            counts["received"] = pipeline.written
            counts["added"] += result.added
            report()

        async for event in applying:
            if isinstance(event, MembersReceived):
                written(await pipeline.drain())  # what follows is checked against these records
                if event.records:
                    await store.apply_membership(event.records)
            elif isinstance(event, VersionsReceived):
                written(await pipeline.submit(event.versions, progress=event.progress))
            else:
                written(await pipeline.drain())
                # Our DONE may still be on its way out; the peer must get it before we half-close.
                await done_sent.wait()
                await store.merge_vector(event.peer_vector)
                await store.remember_peer(stream.peer_device_id, event.peer_vector, via="sync")
                return
        # The connection failed: still store the batches that arrived whole.
        written(await pipeline.drain())

    send_scope, receive_scope, apply_scope = trio.CancelScope(), trio.CancelScope(), trio.CancelScope()

    async def guarded(task: Callable[[], Awaitable[None]], scope: trio.CancelScope, *stop: trio.CancelScope) -> None:
        with scope:
            try:
                await task()
            except PeerError as e:
                failures.append(e)
                for other in stop:
                    other.cancel()

    try:
        await wire.send_all(session.start())
        async with trio.open_nursery() as nursery:
            # When the connection fails, the applier still stores the batches
            # that arrived whole (it stops once the receiver's channel closes);
            # when storing fails, everything stops.
            nursery.start_soon(guarded, send, send_scope, receive_scope)
            nursery.start_soon(guarded, receive, receive_scope, send_scope)
            nursery.start_soon(guarded, apply, apply_scope, send_scope, receive_scope)
    except PeerError as e:
        failures.append(e)
    except BaseException:
        # Cancelled (Ctrl-C, a deadline): still tell the peer why the session ends.
        await _send_error(wire, session, None)
        raise
    if failures:
        failure = failures[0]
        await _send_error(wire, session, failure)
        raise failure
    report()
    if await _finish(wire, session):
        # The peer closed after taking in all we sent: it holds our vector too.
        await store.remember_peer(stream.peer_device_id, start_vector, via="sync")
    return SyncSummary(
        peer_device_id=stream.peer_device_id,
        sent=session.versions_sent,
        received=counts["received"],
        added=counts["added"],
        bytes_sent=wire.sent,
        bytes_received=wire.received,
        seconds=time.monotonic() - started,
    )


async def _send_error(wire: _Counted, session: SyncSession, failure: BaseException | None) -> None:
    try:
        data = session.send_error(failure)
    except PeerError:
        return
    if not data:
        return
    with trio.CancelScope(shield=True), trio.move_on_after(ERROR_SEND_S):
        try:
            await wire.send_all(data)
        except PeerError:
            pass  # the connection is what failed; the peer will notice it too


async def _finish(wire: _Counted, session: SyncSession) -> bool:
    """Half-close, then give the peer a moment to finish reading and close its side.

    True when the peer closed cleanly: it completed too (it half-closes
    only after storing everything we sent).
    """
    with trio.move_on_after(CLOSE_GRACE_S):
        try:
            await wire.stream.send_eof()
            while not isinstance(session.next_event(), ConnectionClosed):
                session.receive_data(await wire.receive_some())
            return True
        except PeerError as e:
            # Our side completed and merged; whatever the peer does now cannot undo that.
            log.debug("after a complete sync, closing failed: %s", e)
    return False


class Syncer:
    """One device's side of every sync: what ``peer sync`` and ``peer agent`` share.

    Trust comes from the store's membership, re-read for each connection,
    so a device revoked (by any process) is refused from the next
    connection on. ``after_sync`` runs after every completed sync that
    brought new versions (the CLI and the agent bring the index up to date there).
    """

    def __init__(
        self,
        store: Store,
        signing_key: Ed25519PrivateKey,
        *,
        after_sync: AfterSync | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
        transport: Transport | None = None,
    ) -> None:
        self.store = store
        self._transport = transport
        self._signing_key = signing_key
        self._after_sync = after_sync
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout

    @property
    def device_id(self) -> str:
        return self.store.device_id

    def _member(self, device_id: str) -> bool:
        return device_id != self.store.device_id and self.store.membership.is_member(device_id)

    @property
    def transport(self) -> Transport:
        """The transport given, else SSH (loaded on first use: a command that never connects does not pay for it)."""
        if self._transport is None:
            self._transport = ssh_transport()
        return self._transport

    async def authorize(self, device_id: str) -> bool:
        """Whether ``device_id`` may connect now (the server's check)."""
        await self.store.refresh()
        return self._member(device_id)

    def revoked_text(self, device_id: str) -> str | None:
        """``was revoked from this group by NAME (ID) on DATE``, or None if ``device_id`` was not."""
        found = self.store.membership.revocation_of(device_id)
        if found is None:
            return None
        by, at_ms = found
        info = self.store.membership.member_info(by)
        who = f"{info.name} ({format_device_id(by)})" if info else format_device_id(by)
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at_ms / 1000))
        return f"was revoked from this group by {who} on {when}"

    async def explain(self, device_id: str) -> str | None:
        """What a refused device is told (the server's side): that it was revoked, by whom and when."""
        text = self.revoked_text(device_id)
        if text is None:
            return None
        return f"device {format_device_id(device_id)} is not a member any more: it {text}; it can no longer sync with this group"

    async def sync_with(self, host: str, port: int = DEFAULT_PORT, *, progress: ProgressCallback | None = None) -> SyncSummary:
        """Connect to the member at ``host:port`` and run one sync; ``after_sync`` follows a complete one."""
        await self.store.refresh()
        hosts: list[str] = []

        def trust_host(device_id: str) -> bool:
            hosts.append(device_id)
            return self._member(device_id)

        try:
            stream = await self.transport.connect(
                host,
                port,
                self._signing_key,
                trust_host=trust_host,
                subsystem=SYNC_SUBSYSTEM,
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
            )
        except TrustError as e:
            revoked = self.revoked_text(hosts[-1]) if hosts and not self._member(hosts[-1]) else None
            if revoked is not None:
                raise TrustError(
                    f"{host}:{port} is device {format_device_id(hosts[-1])}, which is not a member any more:"
                    f" it {revoked}; this device no longer syncs with it"
                ) from e
            raise
        try:
            summary = await sync_over(stream, self.store, progress=progress)
        finally:
            await stream.aclose()
        await self._after(summary)
        return summary

    async def handle(self, stream: ByteStream) -> None:
        """Serve one sync session a member opened (the server's SYNC_SUBSYSTEM handler)."""
        peer = format_device_id(stream.peer_device_id)
        log.debug("sync with device %s started", peer)
        summary = await sync_over(stream, self.store)
        # As for the sessions this device opens: one INFO line per session
        # that moved versions; the periodic no-change ones only with --verbose.
        moved = summary.sent or summary.received
        log.log(logging.INFO if moved else logging.DEBUG, "synced: %s", summary.describe())
        await self._after(summary)

    async def _after(self, summary: SyncSummary) -> None:
        if self._after_sync is not None and summary.added:
            await self._after_sync(summary)

    async def serve(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        handlers: Mapping[str, StreamHandler] | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` for members' syncs (and ``handlers``' other subsystems, e.g. joining).

        ``handlers`` may replace the sync handler too (the agent wraps it to allow one session per peer).
        """
        await self.transport.serve(
            self._signing_key,
            host=host,
            port=port,
            authorize=self.authorize,
            explain=self.explain,
            handlers={SYNC_SUBSYSTEM: self.handle, **(handlers or {})},
            read_timeout=self.read_timeout,
            task_status=task_status,
        )

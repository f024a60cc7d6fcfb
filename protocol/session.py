"""One bidirectional sync session, as a sans-I/O state machine.

Theory of operation. Both devices run the same session; nothing waits for
a turn. Each side:

1. sends HELLO at once (:meth:`SyncSession.start`): protocol version,
   device id, group id, its version vector, its membership digest;
2. once the other's HELLO has arrived, sends MEMBERS (all its membership
   records when the two digests differ, an empty MEMBERS frame when they
   agree: the frame is always there, so "members and key material first"
   is a matter of frame order, not of timing);
3. sends VERSIONS batches holding every sealed version whose dot the
   other's vector does not cover;
4. ends with DONE, carrying the number of versions it sent.

The session tracks the two directions separately, ``our_state`` for what
this side has sent and ``their_state`` for what it has received. Both move
through the same table, :data:`TRANSITIONS`, ``START -> HELLO -> MEMBERS
(-> MEMBERS...) -> VERSIONS (-> VERSIONS...) -> DONE``, and every frame,
sent or received, goes through one method, ``_process(direction, frame)``:
look the move up, run the guards the table lists for it, count, move
(ERROR frames alone bypass it: they end the session in any state). A
frame that has no entry for the state of its direction is a
:class:`LocalProtocolError` when we send it and a
:class:`RemoteProtocolError` when we receive it, and the message names the
frame and the state. The guards are the rules the states alone do not
capture, each written once for both directions: MEMBERS, VERSIONS and DONE
need the HELLO of the other direction (what to send depends on what the
other holds); VERSIONS and DONE need a non-empty member list first when the
digests differ; versions must be of this group; DONE's count must match;
a HELLO must be this session's own (sent) or acceptable (received: same
protocol version and group, another device, the one expected). Any error
moves both directions to ``ERROR`` for good.

:class:`SessionComplete` is the one event after which the receiver may
merge the sender's vector into its own. It comes only when the peer's DONE
has been received, every VERSIONS before it has been delivered as an
event, and this side's DONE has been sent. A session cut at any byte
never produces it: the receiver keeps the versions it got (applying one
twice is a no-op) and does not merge the vector, so the next session
resends whatever is still missing.

Resumable sessions. A side whose HELLO carries :data:`FLAG_ORDERED`
promises to send its versions per origin in ascending counter order and
never to return to an origin it left (the store's natural order, like
Syncthing's index sequence). The session checks the promise in both
directions (a broken one is a protocol error) and, for such a peer, gives
every :class:`VersionsReceived` a ``progress`` vector: what the receiver
provably holds once it has stored this batch and every one before it. The
sender holds every version of origin ``o`` up to ``V[o]`` (``V`` its HELLO
vector: a vector only ever covers what its device holds) and sends all of
those above the receiver's vector, in order; so when the stream has
reached counter ``c`` of ``o`` the receiver holds all of ``o`` up to
``min(c, V[o])``, and all up to ``V[o]`` once the stream moved on to
another origin. Merging ``progress`` right after storing the batch makes a
cut session's work durable: the next session's HELLO carries it and the
sender starts where the stream stopped.

The session holds no versions: the driver reads them from its store in
batches and calls ``send(VersionsBatch(...))`` as it goes, then
``send(Done(...))``. Synchronous drivers can use :func:`outgoing` with a
:class:`VersionSource`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeVar

from .clock import VersionVector
from .errors import (
    LocalProtocolError,
    NotAMember,
    PeerBusy,
    PeerError,
    RemoteProtocolError,
    TrustError,
    UnsupportedFormat,
    WrongGroup,
)
from .frames import (
    DEFAULT_MAX_FRAME_SIZE,
    END_OF_STREAM,
    FLAG_ORDERED,
    MAX_MESSAGE_BYTES,
    NEED_DATA,
    PROTOCOL_VERSION,
    Done,
    ErrorCode,
    ErrorFrame,
    Frame,
    FrameDecoder,
    Hello,
    Members,
    NeedData,
    VersionsBatch,
    encode_frame,
    frame_name,
)
from .ids import format_device_id
from .sealing import SealedVersion

__all__ = [
    "SessionState",
    "TRANSITIONS",
    "HelloReceived",
    "MembersReceived",
    "VersionsReceived",
    "PeerDone",
    "SessionComplete",
    "ConnectionClosed",
    "Event",
    "Paused",
    "PAUSED",
    "SyncSession",
    "VersionSource",
    "error_frame_for",
    "batches",
    "outgoing",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_BATCH_BYTES",
]

DEFAULT_BATCH_SIZE: Final = 256
#: Well under the frame limit, so that one batch is one modest SQLite transaction.
DEFAULT_BATCH_BYTES: Final = 1 << 20


class SessionState(enum.Enum):
    """Where one direction of the session is (``our_state`` / ``their_state``)."""

    START = "start"  #: HELLO not yet sent (or received)
    HELLO = "hello"  #: HELLO done; MEMBERS comes next
    MEMBERS = "members"  #: member records done (possibly none); more MEMBERS or VERSIONS next
    VERSIONS = "versions"  #: at least one VERSIONS batch done
    DONE = "done"  #: DONE done; nothing else may follow
    ERROR = "error"  #: the session failed; nothing else may follow


# The table itself is below the session (its guards need the class); see _RULES.


# Events ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HelloReceived:
    """The other device's HELLO: who it is and what it holds.

    ``vector`` is what to compute the outgoing versions from (every sealed
    version whose dot it does not cover). It is *not* to be merged into the
    local vector yet: only :class:`SessionComplete` allows that.
    ``members_needed`` is true when the membership digests differ, so this
    side must send all its member records before any version.
    """

    device_id: str
    vector: VersionVector
    membership_digest: bytes
    flags: int
    members_needed: bool


@dataclass(frozen=True, slots=True)
class MembersReceived:
    """Membership records from the other device (empty when the digests agreed).

    Apply them before the versions that follow: those may be signed by
    members or sealed under key epochs that only these records introduce.
    """

    records: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class VersionsReceived:
    """A batch of sealed versions, not yet verified: check and store them in one transaction.

    Versions whose dot the local vector already covers may arrive; dropping
    duplicates is the store's job.

    ``progress`` (only from a peer that sent :data:`FLAG_ORDERED`, else
    None) is what this side provably holds once this batch and all the
    earlier ones are stored: merge it into the local vector then, ideally
    in the same transaction. It is cumulative over the session.
    """

    versions: tuple[SealedVersion, ...]
    progress: VersionVector | None = None


@dataclass(frozen=True, slots=True)
class PeerDone:
    """The other device has sent everything (``count`` versions, all delivered as events)."""

    count: int


@dataclass(frozen=True, slots=True)
class SessionComplete:
    """Both directions finished: the peer's DONE arrived after all its batches, and ours was sent.

    Only now may the receiver merge ``peer_vector`` into its own vector
    (and only if it stored every version it received). An interrupted
    session never emits this event; the versions it delivered are kept,
    the vector is not merged, and the next session resends the rest.
    """

    peer_vector: VersionVector


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The other side closed the stream after the session completed."""


Event = HelloReceived | MembersReceived | VersionsReceived | PeerDone | SessionComplete | ConnectionClosed


class Paused(enum.Enum):
    """Returned by ``next_event`` when only this side can move the session on.

    The peer has sent DONE; the session waits for this side's own DONE
    before it can report :class:`SessionComplete`.
    """

    PAUSED = "PAUSED"


PAUSED: Final = Paused.PAUSED


# Errors <-> ERROR frames ---------------------------------------------


def _clip(message: str) -> str:
    raw = message.encode("utf-8")[:MAX_MESSAGE_BYTES]
    return raw.decode("utf-8", "ignore")


def error_frame_for(exc: BaseException) -> ErrorFrame:
    """The ERROR frame that tells the other device why this side gives up."""
    if isinstance(exc, UnsupportedFormat):
        code = ErrorCode.VERSION
    elif isinstance(exc, WrongGroup):
        code = ErrorCode.WRONG_GROUP
    elif isinstance(exc, NotAMember):
        code = ErrorCode.NOT_A_MEMBER
    elif isinstance(exc, PeerBusy):
        code = ErrorCode.BUSY
    elif isinstance(exc, (RemoteProtocolError, TrustError)):
        code = ErrorCode.PROTOCOL
    else:
        code = ErrorCode.INTERNAL
    return ErrorFrame(int(code), _clip(str(exc)) or type(exc).__name__)


def _printable(text: str) -> str:
    # The message comes from the other device and ends up on a terminal.
    return "".join(c if c.isprintable() else "?" for c in text)


_RECEIVED_ERRORS: Final[dict[int, Callable[[str], PeerError]]] = {
    ErrorCode.VERSION: UnsupportedFormat,
    ErrorCode.WRONG_GROUP: WrongGroup,
    ErrorCode.NOT_A_MEMBER: NotAMember,
    ErrorCode.BUSY: PeerBusy,
}


# The session ----------------------------------------------------------


class SyncSession:
    """One sync with one other device, fed bytes and asked for events (h11 style).

    ``receive_data(b"")`` means the other side closed the stream.
    ``next_event()`` returns an :data:`Event`, :data:`NEED_DATA` or
    :data:`PAUSED`, and raises a :class:`PeerError` when the session fails:
    :class:`RemoteProtocolError` (or its :class:`DecodeError`) for anything
    the other device got wrong, :class:`UnsupportedFormat` for another
    protocol version, :class:`WrongGroup` for another group,
    :class:`TrustError` when the device is not the one expected, and the
    class matching the code of an ERROR frame the other device sent.
    ``send(frame)`` returns the bytes to write, or raises
    :class:`LocalProtocolError`. After any failure, :meth:`send_error`
    gives the ERROR frame to send before closing.

    ``peer_device_id``, when the transport already authenticated the other
    device (SSH), is checked against the device id in its HELLO.

    ``protocol_version`` is a test hook, not a setting: it makes a session
    that claims another version, so tests can watch both sides refuse each
    other. Drivers never pass it; a real device speaks
    :data:`~protocol.frames.PROTOCOL_VERSION` only.
    """

    __slots__ = (
        "_hello",
        "_decoder",
        "_peer_device_id",
        "_ours",
        "_theirs",
        "_peer_hello",
        "_complete_pending",
        "_complete",
        "_failure",
        "_error_sent",
        "_peer_error",
    )

    def __init__(
        self,
        device_id: str,
        group_id: bytes,
        vector: VersionVector,
        membership_digest: bytes,
        *,
        flags: int = 0,
        peer_device_id: str | None = None,
        protocol_version: int = PROTOCOL_VERSION,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self._hello = Hello(protocol_version, device_id, group_id, vector, membership_digest, flags)
        self._decoder = FrameDecoder(max_frame_size)
        self._peer_device_id = peer_device_id
        self._ours = _Direction(ours=True)
        self._theirs = _Direction(ours=False)
        self._peer_hello: Hello | None = None
        self._complete_pending = False
        self._complete = False
        self._failure: PeerError | None = None
        self._error_sent = False
        self._peer_error = False

    # Introspection ----------------------------------------------------
    @property
    def hello(self) -> Hello:
        return self._hello

    @property
    def our_state(self) -> SessionState:
        return self._ours.state

    @property
    def their_state(self) -> SessionState:
        return self._theirs.state

    @property
    def peer_hello(self) -> Hello | None:
        return self._peer_hello

    @property
    def peer_vector(self) -> VersionVector | None:
        """The other device's vector once its HELLO arrived: send what it does not cover."""
        return None if self._peer_hello is None else self._peer_hello.vector

    @property
    def members_needed(self) -> bool:
        """Whether the membership digests differ (known once the peer's HELLO arrived)."""
        if self._peer_hello is None:
            raise LocalProtocolError("the other device's HELLO has not arrived yet")
        return self._peer_hello.membership_digest != self._hello.membership_digest

    def members_to_send(self, records: Iterable[bytes]) -> tuple[bytes, ...]:
        """All of ``records`` when the digests differ, none when they agree."""
        return tuple(records) if self.members_needed else ()

    @property
    def versions_sent(self) -> int:
        return self._ours.versions

    @property
    def versions_received(self) -> int:
        return self._theirs.versions

    @property
    def complete(self) -> bool:
        """True once :class:`SessionComplete` has been returned."""
        return self._complete

    @property
    def failure(self) -> PeerError | None:
        return self._failure

    def _peer_name(self) -> str:
        if self._peer_hello is not None:
            return f"device {format_device_id(self._peer_hello.device_id)}"
        if self._peer_device_id is not None:
            return f"device {format_device_id(self._peer_device_id)}"
        return "the other device"

    def _ordered(self, direction: _Direction) -> bool:
        """Whether the sender of ``direction`` promised per-origin ascending order (FLAG_ORDERED)."""
        hello = self._hello if direction.ours else self._peer_hello
        return hello is not None and bool(hello.flags & FLAG_ORDERED)

    def _progress(self) -> VersionVector | None:
        """What the versions received so far prove this side holds (None unless the peer sends in order)."""
        theirs = self._theirs
        if self._peer_hello is None or not self._ordered(theirs):
            return None
        sender = self._peer_hello.vector
        held = {origin: sender.get(origin) for origin in theirs.finished}
        if theirs.origin is not None:
            held[theirs.origin] = min(theirs.last, sender.get(theirs.origin))
        return VersionVector({o: c for o, c in held.items() if c > 0})

    def _other(self, direction: _Direction) -> _Direction:
        return self._theirs if direction.ours else self._ours

    def _fail(self, exc: PeerError) -> PeerError:
        self._ours.state = self._theirs.state = SessionState.ERROR
        if self._failure is None:
            self._failure = exc
        return exc

    # The one path of every frame, sent or received ----------------------
    def _process(self, direction: _Direction, frame: Frame) -> None:
        """Check ``frame`` against the table and its guards, then move ``direction`` on.

        Raises the error the first broken rule gives for this direction; the
        caller fails the session with it. Nothing changes unless every rule holds.
        """
        rule = _RULES.get((direction.state, type(frame)))
        if rule is None:
            name, state = frame_name(frame), direction.state.name
            if direction.ours:
                raise LocalProtocolError(f"cannot send {name} in state {state}")
            raise RemoteProtocolError(f"{self._peer_name()} sent {name}, which is not allowed in state {state}")
        for guard in rule.guards:
            refusal = guard(self, direction, frame)
            if refusal is not None:
                raise refusal
        if isinstance(frame, Members):
            direction.records += len(frame.records)
        elif isinstance(frame, VersionsBatch):
            direction.versions += len(frame.versions)
            if self._ordered(direction):
                for version in frame.versions:
                    direction.advance(version.header.dot.origin, version.header.dot.counter)
        direction.state = rule.next
        if self._ours.state is SessionState.DONE and self._theirs.state is SessionState.DONE:
            # Both DONE: the table has no move out of DONE, so this happens once.
            self._complete_pending = True

    # Sending ----------------------------------------------------------
    def start(self) -> bytes:
        """This side's HELLO; send it at once, without waiting for the other's."""
        return self.send(self._hello)

    def send(self, frame: Frame) -> bytes:
        """The bytes of ``frame``, after checking that this side may send it now."""
        if isinstance(frame, ErrorFrame):
            return self._send_error_frame(frame)
        if self._failure is not None:
            raise LocalProtocolError(
                f"cannot send {frame_name(frame)}: this sync session already failed ({self._failure})"
            )
        data = encode_frame(frame)
        if len(data) - 4 > self._decoder.max_frame_size:
            raise self._fail(
                LocalProtocolError(
                    f"a {frame_name(frame)} frame of {len(data) - 4} bytes is above the limit of"
                    f" {self._decoder.max_frame_size} bytes; send smaller batches"
                )
            )
        try:
            self._process(self._ours, frame)
        except PeerError as e:
            raise self._fail(e) from None
        return data

    def _send_error_frame(self, frame: ErrorFrame) -> bytes:
        if self._error_sent:
            raise LocalProtocolError("this side already sent an ERROR in this session")
        self._error_sent = True
        self._fail(LocalProtocolError(f"this side ended the session: {frame.message}"))
        return encode_frame(frame)

    def send_error(self, exc: BaseException | None = None) -> bytes:
        """The ERROR frame to send after a failure (``exc``, or the session's own).

        Returns ``b""`` when there is nothing useful to send: an ERROR was
        already sent, or the other device is the one that sent an ERROR.
        """
        if self._error_sent or self._peer_error:
            return b""
        cause = exc if exc is not None else self._failure
        if cause is None:
            cause = LocalProtocolError("the sync was cancelled")
        return self._send_error_frame(error_frame_for(cause))

    # Receiving --------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Bytes from the other device; ``b""`` when it closed the stream."""
        try:
            self._decoder.receive_data(data)
        except PeerError as e:
            raise self._fail(e) from None

    def next_event(self) -> Event | NeedData | Paused:
        if self._failure is not None:
            raise LocalProtocolError(f"this sync session already failed ({self._failure}); start a new one")
        if self._complete_pending:
            self._complete_pending = False
            self._complete = True
            assert self._peer_hello is not None
            return SessionComplete(self._peer_hello.vector)
        try:
            frame = self._decoder.next_frame()
        except PeerError as e:
            raise self._fail(e) from None
        if frame is NEED_DATA or frame is END_OF_STREAM:
            if self._theirs.state is SessionState.DONE:
                if self._ours.state is not SessionState.DONE:
                    return PAUSED
                return ConnectionClosed() if frame is END_OF_STREAM else NEED_DATA
            if frame is NEED_DATA:
                return NEED_DATA
            raise self._fail(
                RemoteProtocolError(
                    f"{self._peer_name()} closed the connection before it finished sending (state"
                    f" {self._theirs.state.name}); nothing is lost, the next sync resends what is missing"
                )
            )
        try:
            return self._receive(frame)
        except PeerError as e:
            raise self._fail(e) from None

    def _receive(self, frame: Frame) -> Event:
        if isinstance(frame, ErrorFrame):
            self._peer_error = True
            make = _RECEIVED_ERRORS.get(frame.code, RemoteProtocolError)
            raise make(f"{self._peer_name()} ended the sync: {_printable(frame.message)}")
        self._process(self._theirs, frame)
        if isinstance(frame, Hello):
            self._peer_hello = frame
            return HelloReceived(
                device_id=frame.device_id,
                vector=frame.vector,
                membership_digest=frame.membership_digest,
                flags=frame.flags,
                members_needed=frame.membership_digest != self._hello.membership_digest,
            )
        if isinstance(frame, Members):
            return MembersReceived(frame.records)
        if isinstance(frame, VersionsBatch):
            return VersionsReceived(frame.versions, self._progress())
        assert isinstance(frame, Done), frame
        return PeerDone(frame.count)


# The table and its guards ---------------------------------------------


@dataclass(slots=True)
class _Direction:
    """What one direction of the session has done: its state and what it counted."""

    ours: bool  #: this side's sending direction (else what the other device sends)
    state: SessionState = SessionState.START
    records: int = 0
    versions: int = 0
    #: With FLAG_ORDERED: the origin being sent, its last counter, and the origins already left.
    origin: str | None = None
    last: int = 0
    finished: set[str] = field(default_factory=set)

    def out_of_order(self, origin: str, counter: int) -> bool:
        """Whether a version at (origin, counter) would break the per-origin ascending order."""
        if origin == self.origin:
            return counter <= self.last
        return origin in self.finished

    def advance(self, origin: str, counter: int) -> None:
        if origin != self.origin:
            if self.origin is not None:
                self.finished.add(self.origin)
            self.origin = origin
        self.last = counter


#: A rule beyond the state: given the session, the direction a frame moves
#: and the frame, the error that refuses it (worded for that direction), or None.
_Guard = Callable[[SyncSession, _Direction, Frame], "PeerError | None"]


def _hello_is_expected(s: SyncSession, d: _Direction, frame: Frame) -> PeerError | None:
    """Ours: the session's own HELLO. Theirs: same version and group, another device, the one expected."""
    assert isinstance(frame, Hello)
    ours = s._hello
    if d.ours:
        return None if frame == ours else LocalProtocolError("send this session's own HELLO (use start())")
    them, me = format_device_id(frame.device_id), format_device_id(ours.device_id)
    if frame.version != ours.version:
        return UnsupportedFormat(
            f"device {them} speaks sync protocol version {frame.version} and device"
            f" {me} version {ours.version}; upgrade peer on the older one"
        )
    if frame.group_id != ours.group_id:
        return WrongGroup(
            f"device {them} belongs to group {frame.group_id.hex()} and device"
            f" {me} to group {ours.group_id.hex()}; only members of one group"
            " sync together (pair them with `peer invite` and `peer join`)"
        )
    if frame.device_id == ours.device_id:
        return RemoteProtocolError(
            f"the other side has this device's own id ({them}): a device cannot sync with itself;"
            " if a peer home directory was copied, run `peer init` on the copy"
        )
    if s._peer_device_id is not None and frame.device_id != s._peer_device_id:
        return TrustError(
            f"the device at the other end says it is {them}, but its key belongs to"
            f" {format_device_id(s._peer_device_id)}; refusing to sync"
        )
    return None


def _after_other_hello(s: SyncSession, d: _Direction, frame: Frame) -> PeerError | None:
    """Everything after HELLO depends on what the other side holds, so it waits for the other's HELLO."""
    if s._other(d).state is not SessionState.START:
        return None
    name, state = frame_name(frame), d.state.name
    if d.ours:
        return LocalProtocolError(f"cannot send {name} before the other device's HELLO arrived (state {state})")
    return RemoteProtocolError(f"{s._peer_name()} sent {name} before this side's HELLO (state {state})")


def _members_first(s: SyncSession, d: _Direction, frame: Frame) -> PeerError | None:
    """When the membership digests differ, member records come before any version and before DONE."""
    if d.records or not s.members_needed:
        return None
    name, state = frame_name(frame), d.state.name
    if d.ours:
        return LocalProtocolError(
            f"cannot send {name} in state {state}: the membership digests differ,"
            " so this side's member records must be sent first"
        )
    return RemoteProtocolError(
        f"{s._peer_name()} sent {name} in state {state} without its member records,"
        " though the membership digests differ"
    )


def _of_this_group(s: SyncSession, d: _Direction, frame: Frame) -> PeerError | None:
    """Every version in a batch belongs to this session's group."""
    assert isinstance(frame, VersionsBatch)
    group_id = s._hello.group_id
    for version in frame.versions:
        if version.header.group_id != group_id:
            if d.ours:
                return LocalProtocolError(f"version {version.header.dot} belongs to another group than this session")
            return WrongGroup(
                f"{s._peer_name()} sent version {version.header.dot} of group"
                f" {version.header.group_id.hex()}, not of this group {group_id.hex()}"
            )
    return None


def _in_order(s: SyncSession, d: _Direction, frame: Frame) -> PeerError | None:
    """With FLAG_ORDERED, versions go per origin in ascending counter order, never back to an origin left."""
    assert isinstance(frame, VersionsBatch)
    if not s._ordered(d):
        return None
    # Checked on a scratch copy: nothing changes unless every guard holds.
    probe = _Direction(ours=d.ours, origin=d.origin, last=d.last, finished=set(d.finished))
    for version in frame.versions:
        dot = version.header.dot
        if probe.out_of_order(dot.origin, dot.counter):
            if d.ours:
                return LocalProtocolError(
                    f"version {dot} breaks the per-origin counter order this side promised (FLAG_ORDERED)"
                )
            return RemoteProtocolError(
                f"{s._peer_name()} sent version {dot} out of the per-origin counter order it promised"
            )
        probe.advance(dot.origin, dot.counter)
    return None


def _count_matches(s: SyncSession, d: _Direction, frame: Frame) -> PeerError | None:
    """DONE counts every version sent in the session in that direction."""
    assert isinstance(frame, Done)
    if frame.count == d.versions:
        return None
    if d.ours:
        return LocalProtocolError(f"DONE says {frame.count} versions but this side sent {d.versions}")
    return RemoteProtocolError(
        f"{s._peer_name()} says it sent {frame.count} versions, but {d.versions} arrived; the connection lost data"
    )


@dataclass(frozen=True, slots=True)
class _Rule:
    next: SessionState
    guards: tuple[_Guard, ...] = ()


_START, _HELLO, _MEMBERS, _VERSIONS, _DONE = (
    SessionState.START,
    SessionState.HELLO,
    SessionState.MEMBERS,
    SessionState.VERSIONS,
    SessionState.DONE,
)
_BATCH_GUARDS: Final = (_after_other_hello, _members_first, _of_this_group, _in_order)
_DONE_GUARDS: Final = (_after_other_hello, _members_first, _count_matches)

#: Every legal move of one direction, with the guards it must pass: the one table.
_RULES: Final[Mapping[tuple[SessionState, type[Frame]], _Rule]] = {
    (_START, Hello): _Rule(_HELLO, (_hello_is_expected,)),
    (_HELLO, Members): _Rule(_MEMBERS, (_after_other_hello,)),
    (_MEMBERS, Members): _Rule(_MEMBERS, (_after_other_hello,)),
    (_MEMBERS, VersionsBatch): _Rule(_VERSIONS, _BATCH_GUARDS),
    (_VERSIONS, VersionsBatch): _Rule(_VERSIONS, _BATCH_GUARDS),
    (_MEMBERS, Done): _Rule(_DONE, _DONE_GUARDS),
    (_VERSIONS, Done): _Rule(_DONE, _DONE_GUARDS),
}

#: Every legal move of one direction: (state, frame type) -> next state (the table without its guards).
TRANSITIONS: Final[Mapping[tuple[SessionState, type[Frame]], SessionState]] = {
    key: rule.next for key, rule in _RULES.items()
}


# Feeding a session from a synchronous source ---------------------------


class VersionSource(Protocol):
    """Where a synchronous driver gets the versions the other device lacks."""

    def missing(self, vector: VersionVector) -> Iterable[SealedVersion]:
        """Every sealed version held whose dot ``vector`` does not cover."""
        ...


_T = TypeVar("_T")


def _chunks(items: Iterable[_T], size_of: Callable[[_T], int], max_count: int, max_bytes: int) -> Iterator[tuple[_T, ...]]:
    if max_count < 1 or max_bytes < 1:
        raise ValueError("batch limits must be positive")
    batch: list[_T] = []
    size = 0
    for item in items:
        item_size = size_of(item)
        if batch and (len(batch) >= max_count or size + item_size > max_bytes):
            yield tuple(batch)
            batch, size = [], 0
        batch.append(item)
        size += item_size
    if batch:
        yield tuple(batch)


def _sealed_size(version: SealedVersion) -> int:
    # Close enough to the encoded size (two length prefixes of a few bytes).
    return len(version.header_bytes) + len(version.box) + len(version.signature) + 12


def batches(
    versions: Iterable[SealedVersion],
    *,
    max_count: int = DEFAULT_BATCH_SIZE,
    max_bytes: int = DEFAULT_BATCH_BYTES,
) -> Iterator[tuple[SealedVersion, ...]]:
    """Group versions into batches of at most ``max_count`` versions and about ``max_bytes``.

    A version larger than ``max_bytes`` travels alone. Async drivers can use
    this on each slice they read from their store.
    """
    return _chunks(versions, _sealed_size, max_count, max_bytes)


def outgoing(
    session: SyncSession,
    source: VersionSource,
    *,
    members: Iterable[bytes] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> Iterator[bytes]:
    """All the bytes this side sends after the other's HELLO: MEMBERS, VERSIONS batches, DONE.

    ``members`` are this side's membership records; they are sent only when
    the digests differ. Call after :class:`HelloReceived`.
    """
    peer_vector = session.peer_vector
    if peer_vector is None:
        raise LocalProtocolError("outgoing() needs the other device's HELLO; call it after HelloReceived")
    records = session.members_to_send(members)
    record_batches = list(_chunks(records, len, max(len(records), 1), max_batch_bytes)) or [()]
    for record_batch in record_batches:
        yield session.send(Members(record_batch))
    for batch in batches(source.missing(peer_vector), max_count=batch_size, max_bytes=max_batch_bytes):
        yield session.send(VersionsBatch(batch))
    yield session.send(Done(session.versions_sent))

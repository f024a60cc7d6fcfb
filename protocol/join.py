"""The join exchange (pairing a new device), as a sans-I/O state machine.

Theory of operation. A device joins a group in one request and one answer,
over a channel the joiner opened with its own device key (the transport's
join subsystem)::

    joiner   --- JOIN_REQUEST --------------------->  inviter
    joiner   <-- JOIN_ACCEPT  or  JOIN_REJECT ------  inviter

Both ends run a :class:`JoinSession`, one as :attr:`JoinRole.JOINER`, the
other as :attr:`JoinRole.INVITER`. The exchange has one state, shared by
both ends, and one table, :data:`TRANSITIONS`, keyed by (state, which role
sends, frame type). Every frame, sent or received, goes through
``_process(sender, frame)``: a frame with no entry is refused, as a
:class:`LocalProtocolError` when this side sends it and a
:class:`RemoteProtocolError` when it arrives, and the message names what
was expected instead. So the joiner can only send JOIN_REQUEST and only
first; the inviter answers once, with JOIN_ACCEPT or JOIN_REJECT, and only
after a request; nothing follows the answer.

The one rule beyond the table: when the transport authenticated the
joiner's key (``peer_device_id``), a JOIN_REQUEST must be for that same
key, so that nobody joins with a key whose private half it does not hold.

What the machine does not decide: whether the invite is genuine, unused
and unexpired, and whether the joiner may be admitted. Those need the
inviter's databases, so the driver decides after :class:`JoinRequested`
and sends the answer. An ERROR frame from either side ends the exchange
with a :class:`RemoteProtocolError`. After any failure on the inviter's
side, :meth:`JoinSession.refuse` gives the JOIN_REJECT to send before
closing: a refusal says nothing about why, so it reveals nothing about the
invite.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from .errors import LocalProtocolError, PeerError, RemoteProtocolError, TrustError
from .frames import (
    END_OF_STREAM,
    NEED_DATA,
    EndOfStream,
    ErrorCode,
    ErrorFrame,
    Frame,
    FrameDecoder,
    JoinAccept,
    JoinReject,
    JoinRequest,
    NeedData,
    encode_frame,
    frame_name,
)
from .ids import device_id_for, format_device_id

__all__ = [
    "JOIN_MAX_FRAME_SIZE",
    "JoinRole",
    "JoinState",
    "TRANSITIONS",
    "JoinRequested",
    "JoinAccepted",
    "JoinRejected",
    "JoinEvent",
    "JoinSession",
]

#: A JOIN_ACCEPT carries every membership record of the group; 4 MiB is plenty.
JOIN_MAX_FRAME_SIZE: Final = 4 << 20


class JoinRole(enum.Enum):
    JOINER = "joiner"  #: the new device: sends the request
    INVITER = "inviter"  #: the member that made the invite: answers it


class JoinState(enum.Enum):
    """Where the exchange is; the same on both ends."""

    START = "start"  #: nothing sent yet
    REQUESTED = "requested"  #: JOIN_REQUEST done; the inviter's answer comes next
    ACCEPTED = "accepted"  #: JOIN_ACCEPT done: the joiner is a member
    REJECTED = "rejected"  #: JOIN_REJECT done: nothing changed
    ERROR = "error"  #: the exchange failed; nothing else may follow


_JOINER, _INVITER = JoinRole.JOINER, JoinRole.INVITER

#: Every legal move: (state, sending role, frame type) -> next state.
TRANSITIONS: Final[Mapping[tuple[JoinState, JoinRole, type[Frame]], JoinState]] = {
    (JoinState.START, _JOINER, JoinRequest): JoinState.REQUESTED,
    (JoinState.REQUESTED, _INVITER, JoinAccept): JoinState.ACCEPTED,
    (JoinState.REQUESTED, _INVITER, JoinReject): JoinState.REJECTED,
}

_FINAL: Final = frozenset({JoinState.ACCEPTED, JoinState.REJECTED})


# Events ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinRequested:
    """(Inviter) A joiner asks to be admitted: check its invite, then send JOIN_ACCEPT or JOIN_REJECT.

    ``device_id`` is the joiner's, derived from its key (and, when the
    transport authenticated a key, already checked to be that one).
    """

    request: JoinRequest
    device_id: str


@dataclass(frozen=True, slots=True)
class JoinAccepted:
    """(Joiner) The inviter admitted this device: check the records, then create the store."""

    accept: JoinAccept


@dataclass(frozen=True, slots=True)
class JoinRejected:
    """(Joiner) The inviter refused; ``code`` is usually :attr:`ErrorCode.INVITE_REFUSED`."""

    code: int
    message: str


JoinEvent = JoinRequested | JoinAccepted | JoinRejected


def _printable(text: str) -> str:
    # The message comes from the other device and ends up on a terminal.
    return "".join(c if c.isprintable() else "?" for c in text)


# The session ----------------------------------------------------------


class JoinSession:
    """One end of one join exchange, fed bytes and asked for events (h11 style).

    ``send(frame)`` returns the bytes to write or raises
    :class:`LocalProtocolError`. ``receive_data(b"")`` means the other side
    closed the stream. ``next_event()`` returns a :data:`JoinEvent`,
    :data:`NEED_DATA`, or :data:`END_OF_STREAM` once the stream ended after
    the answer; it raises :class:`RemoteProtocolError` (or its
    :class:`DecodeError`) for anything the other side got wrong, including
    closing before the answer, and :class:`TrustError` for a request made
    for another key than the one the transport authenticated
    (``peer_device_id``, inviter only). Any failure moves the state to
    ``ERROR`` for good.
    """

    __slots__ = ("role", "_peer_device_id", "_decoder", "_state", "_failure", "_refused")

    def __init__(
        self,
        role: JoinRole,
        *,
        peer_device_id: str | None = None,
        max_frame_size: int = JOIN_MAX_FRAME_SIZE,
    ) -> None:
        self.role = role
        self._peer_device_id = peer_device_id
        self._decoder = FrameDecoder(max_frame_size)
        self._state = JoinState.START
        self._failure: PeerError | None = None
        self._refused = False

    @property
    def state(self) -> JoinState:
        return self._state

    @property
    def failure(self) -> PeerError | None:
        return self._failure

    @property
    def _peer_role(self) -> JoinRole:
        return _INVITER if self.role is _JOINER else _JOINER

    def _fail(self, exc: PeerError) -> PeerError:
        self._state = JoinState.ERROR
        if self._failure is None:
            self._failure = exc
        return exc

    # The one path of every frame, sent or received ----------------------
    def _process(self, sender: JoinRole, frame: Frame) -> None:
        state = self._state
        name = frame_name(frame)
        if isinstance(frame, ErrorFrame) and sender is not self.role:
            raise RemoteProtocolError(f"the {sender.value} failed: {_printable(frame.message)}")
        next_state = TRANSITIONS.get((state, sender, type(frame)))
        if next_state is None:
            expected = " or ".join(frame_name(t) for (s, r, t) in TRANSITIONS if s is state and r is sender)
            instead = f"; expected {expected}" if expected else "; nothing may come now"
            if sender is self.role:
                raise LocalProtocolError(f"the {sender.value} cannot send {name} in state {state.name}{instead}")
            raise RemoteProtocolError(f"the {sender.value} sent {name} in state {state.name}{instead}")
        for guard in _GUARDS.get(type(frame), ()):
            refusal = guard(self, sender, frame)
            if refusal is not None:
                raise refusal
        self._state = next_state

    # Sending ----------------------------------------------------------
    def send(self, frame: Frame) -> bytes:
        """The bytes of ``frame`` (JOIN_REQUEST for a joiner; JOIN_ACCEPT or JOIN_REJECT for an inviter)."""
        if self._failure is not None:
            raise LocalProtocolError(f"cannot send {frame_name(frame)}: this join already failed ({self._failure})")
        data = encode_frame(frame)
        try:
            self._process(self.role, frame)
        except PeerError as e:
            raise self._fail(e) from None
        return data

    def refuse(self, message: str) -> bytes:
        """(Inviter) The JOIN_REJECT to send instead of an answer: after a failure, or to decline a request.

        The code is always :attr:`ErrorCode.INVITE_REFUSED`, whatever went
        wrong. Returns ``b""`` when there is nothing to send: the answer
        was already sent (a refusal cannot follow it).
        """
        if self.role is not _INVITER:
            raise LocalProtocolError("only the inviter refuses a join; a joiner just closes the connection")
        if self._refused or self._state in _FINAL:
            return b""
        frame = JoinReject(int(ErrorCode.INVITE_REFUSED), message)
        if self._state is JoinState.REQUESTED:
            return self.send(frame)
        self._refused = True
        self._fail(LocalProtocolError("this side refused the join"))
        return encode_frame(frame)

    # Receiving --------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Bytes from the other side; ``b""`` when it closed the stream."""
        try:
            self._decoder.receive_data(data)
        except PeerError as e:
            raise self._fail(e) from None

    def next_event(self) -> JoinEvent | NeedData | EndOfStream:
        if self._failure is not None:
            raise LocalProtocolError(f"this join already failed ({self._failure})")
        try:
            frame = self._decoder.next_frame()
            if frame is NEED_DATA:
                return NEED_DATA
            if frame is END_OF_STREAM:
                if self._state in _FINAL:
                    return END_OF_STREAM
                raise RemoteProtocolError(
                    f"the other device closed the connection during pairing (state {self._state.name})"
                )
            self._process(self._peer_role, frame)
        except PeerError as e:
            raise self._fail(e) from None
        if isinstance(frame, JoinRequest):
            return JoinRequested(frame, device_id_for(frame.device_key))
        if isinstance(frame, JoinAccept):
            return JoinAccepted(frame)
        assert isinstance(frame, JoinReject), frame
        return JoinRejected(frame.code, _printable(frame.message))


# Guards: rules beyond the table ----------------------------------------


def _for_the_authenticated_key(session: JoinSession, sender: JoinRole, frame: Frame) -> PeerError | None:
    """A received JOIN_REQUEST is for the key the transport authenticated (when it did)."""
    assert isinstance(frame, JoinRequest)
    expected = session._peer_device_id
    if sender is session.role or expected is None:
        return None
    joiner = device_id_for(frame.device_key)
    if joiner == expected:
        return None
    return TrustError(
        f"the join request is for device {format_device_id(joiner)}, but the connection authenticated as"
        f" {format_device_id(expected)}"
    )


_GUARDS: Final[Mapping[type[Frame], tuple[Callable[[JoinSession, JoinRole, Frame], PeerError | None], ...]]] = {
    JoinRequest: (_for_the_authenticated_key,),
}

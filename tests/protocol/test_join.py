"""The join exchange's rules, without SSH: two JoinSessions passing bytes."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from protocol import (
    END_OF_STREAM,
    NEED_DATA,
    DecodeError,
    Done,
    ErrorCode,
    ErrorFrame,
    FrameDecoder,
    JoinAccept,
    JoinAccepted,
    JoinReject,
    JoinRejected,
    JoinRequest,
    JoinRequested,
    JoinRole,
    JoinSession,
    JoinState,
    LocalProtocolError,
    RemoteProtocolError,
    TrustError,
    device_id_of,
    encode_frame,
    raw_public_key,
)
from protocol.join import TRANSITIONS

GROUP = bytes(range(16))
JOINER_KEY = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
JOINER = device_id_of(JOINER_KEY)
STRANGER = device_id_of(Ed25519PrivateKey.from_private_bytes(b"\x02" * 32))
REFUSAL = "the invite was refused; ask for a new one"


def request() -> JoinRequest:
    return JoinRequest.create(
        secret=b"s" * 32,
        invite_id=b"invite-1",
        device_key=raw_public_key(JOINER_KEY),
        exchange_key=raw_public_key(X25519PrivateKey.from_private_bytes(b"\x03" * 32)),
        name="laptop",
    )


def accept() -> JoinAccept:
    return JoinAccept(GROUP, (b"record one", b"record two"), "team")


def only_frame(data: bytes) -> object:
    decoder = FrameDecoder()
    decoder.receive_data(data)
    frame = decoder.next_frame()
    assert decoder.next_frame() is NEED_DATA
    return frame


def inviter_with(data: bytes, *, peer: str | None = JOINER) -> JoinSession:
    inviter = JoinSession(JoinRole.INVITER, peer_device_id=peer)
    inviter.receive_data(data)
    return inviter


def test_a_request_and_its_acceptance() -> None:
    joiner, inviter = JoinSession(JoinRole.JOINER), JoinSession(JoinRole.INVITER, peer_device_id=JOINER)
    inviter.receive_data(joiner.send(request()))
    assert joiner.state is JoinState.REQUESTED
    assert inviter.next_event() == JoinRequested(request(), JOINER)
    assert inviter.next_event() is NEED_DATA  # the answer is this side's to give
    joiner.receive_data(inviter.send(accept()))
    assert joiner.next_event() == JoinAccepted(accept())
    assert joiner.state is inviter.state is JoinState.ACCEPTED
    joiner.receive_data(b"")
    assert joiner.next_event() is END_OF_STREAM


def test_a_rejection_reaches_the_joiner_as_an_event() -> None:
    joiner, inviter = JoinSession(JoinRole.JOINER), JoinSession(JoinRole.INVITER)
    inviter.receive_data(joiner.send(request()))
    assert isinstance(inviter.next_event(), JoinRequested)
    joiner.receive_data(inviter.refuse(REFUSAL))  # the driver declines (unknown or used invite)
    assert joiner.next_event() == JoinRejected(ErrorCode.INVITE_REFUSED, REFUSAL)
    assert joiner.state is inviter.state is JoinState.REJECTED
    assert inviter.refuse(REFUSAL) == b""  # one answer only


def test_the_same_bytes_arriving_one_at_a_time_give_the_same_event() -> None:
    inviter = JoinSession(JoinRole.INVITER, peer_device_id=JOINER)
    events = []
    for byte in encode_frame(request()):
        inviter.receive_data(bytes((byte,)))
        events.append(inviter.next_event())
    assert events[:-1] == [NEED_DATA] * (len(events) - 1)
    assert events[-1] == JoinRequested(request(), JOINER)


# The inviter's refusals -------------------------------------------------


@pytest.mark.parametrize(
    ("opening", "error", "message"),
    [
        (encode_frame(Done(0)), RemoteProtocolError, "the joiner sent DONE in state START; expected JOIN_REQUEST"),
        (encode_frame(accept()), RemoteProtocolError, "the joiner sent JOIN_ACCEPT in state START; expected JOIN_REQUEST"),
        (encode_frame(ErrorFrame(1, "bye")), RemoteProtocolError, "the joiner failed: bye"),
        (b"\x00\x00\x00\x01\x7f", DecodeError, "unknown frame type"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", DecodeError, "above the limit"),
        (b"", RemoteProtocolError, "closed the connection during pairing"),
        (b"\x00\x00", DecodeError, "ended inside a frame"),
    ],
)
def test_the_inviter_refuses_anything_but_a_request_first(opening: bytes, error: type[Exception], message: str) -> None:
    inviter = inviter_with(opening)
    inviter.receive_data(b"")
    with pytest.raises(error, match=message):
        inviter.next_event()
    assert inviter.state is JoinState.ERROR
    # What the inviter sends then: a refusal that says nothing of why.
    assert only_frame(inviter.refuse(REFUSAL)) == JoinReject(ErrorCode.INVITE_REFUSED, REFUSAL)
    assert inviter.refuse(REFUSAL) == b""
    with pytest.raises(LocalProtocolError, match="already failed"):
        inviter.send(accept())


def test_a_request_for_another_key_than_the_connections_is_refused() -> None:
    inviter = inviter_with(encode_frame(request()), peer=STRANGER)
    with pytest.raises(TrustError, match="authenticated as"):
        inviter.next_event()
    assert only_frame(inviter.refuse(REFUSAL)) == JoinReject(ErrorCode.INVITE_REFUSED, REFUSAL)


def test_a_second_request_is_refused() -> None:
    inviter = inviter_with(encode_frame(request()) * 2)
    assert isinstance(inviter.next_event(), JoinRequested)
    with pytest.raises(RemoteProtocolError, match="sent JOIN_REQUEST in state REQUESTED; nothing may come now"):
        inviter.next_event()


# The joiner's refusals --------------------------------------------------


def requested_joiner() -> JoinSession:
    joiner = JoinSession(JoinRole.JOINER, peer_device_id=STRANGER)
    joiner.send(request())
    return joiner


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (encode_frame(Done(0)), "the inviter sent DONE in state REQUESTED; expected JOIN_ACCEPT or JOIN_REJECT"),
        (encode_frame(request()), "the inviter sent JOIN_REQUEST in state REQUESTED"),
        (encode_frame(ErrorFrame(5, "disk full\x1b[2J")), r"the inviter failed: disk full\?\[2J"),
        (b"", "closed the connection during pairing"),
        (encode_frame(accept())[:-1], "ended inside a frame"),
    ],
)
def test_the_joiner_refuses_anything_but_an_answer(answer: bytes, message: str) -> None:
    joiner = requested_joiner()
    joiner.receive_data(answer)
    joiner.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match=message):
        joiner.next_event()
    assert joiner.state is JoinState.ERROR


def test_nothing_may_follow_the_answer() -> None:
    joiner = requested_joiner()
    joiner.receive_data(encode_frame(accept()) + encode_frame(JoinReject(ErrorCode.INVITE_REFUSED, "changed my mind")))
    assert isinstance(joiner.next_event(), JoinAccepted)
    with pytest.raises(RemoteProtocolError, match="sent JOIN_REJECT in state ACCEPTED; nothing may come now"):
        joiner.next_event()


def test_an_answer_before_the_request_is_refused() -> None:
    joiner = JoinSession(JoinRole.JOINER)
    joiner.receive_data(encode_frame(accept()))
    with pytest.raises(RemoteProtocolError, match="sent JOIN_ACCEPT in state START"):
        joiner.next_event()


# Local misuse -----------------------------------------------------------


def test_each_role_sends_only_its_own_frames_in_turn() -> None:
    with pytest.raises(LocalProtocolError, match="the joiner cannot send JOIN_ACCEPT in state START; expected JOIN_REQUEST"):
        JoinSession(JoinRole.JOINER).send(accept())
    with pytest.raises(LocalProtocolError, match="the inviter cannot send JOIN_ACCEPT in state START; nothing may"):
        JoinSession(JoinRole.INVITER).send(accept())
    with pytest.raises(LocalProtocolError, match="the inviter cannot send JOIN_REQUEST"):
        JoinSession(JoinRole.INVITER).send(request())
    joiner = requested_joiner()
    with pytest.raises(LocalProtocolError, match="the joiner cannot send JOIN_REQUEST in state REQUESTED"):
        joiner.send(request())
    with pytest.raises(LocalProtocolError, match="only the inviter refuses"):
        JoinSession(JoinRole.JOINER).refuse(REFUSAL)
    inviter = inviter_with(encode_frame(request()))
    inviter.next_event()
    inviter.send(accept())
    with pytest.raises(LocalProtocolError, match="cannot send JOIN_REJECT in state ACCEPTED"):
        inviter.send(JoinReject(ErrorCode.INVITE_REFUSED, REFUSAL))


def test_the_table_is_one_request_then_one_answer() -> None:
    assert TRANSITIONS == {
        (JoinState.START, JoinRole.JOINER, JoinRequest): JoinState.REQUESTED,
        (JoinState.REQUESTED, JoinRole.INVITER, JoinAccept): JoinState.ACCEPTED,
        (JoinState.REQUESTED, JoinRole.INVITER, JoinReject): JoinState.REJECTED,
    }

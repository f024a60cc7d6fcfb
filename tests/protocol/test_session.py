from __future__ import annotations

import pytest

from protocol import (
    DecodeError,
    Dot,
    LocalProtocolError,
    NotAMember,
    PeerError,
    RemoteProtocolError,
    TrustError,
    UnsupportedFormat,
    VersionVector,
    WrongGroup,
    next_counter,
)
from protocol.frames import (
    NEED_DATA,
    PROTOCOL_VERSION,
    Done,
    ErrorCode,
    ErrorFrame,
    FrameDecoder,
    Hello,
    Members,
    VersionsBatch,
    encode_frame,
)
from protocol.ids import device_id_for
from protocol.session import (
    PAUSED,
    TRANSITIONS,
    ConnectionClosed,
    Event,
    HelloReceived,
    MembersReceived,
    PeerDone,
    SessionComplete,
    SessionState,
    SyncSession,
    VersionsReceived,
    outgoing,
)
from tests.support.protocol_frames import GROUP, device_id, device_key, make_version
from tests.support.protocol_sessions import DIGEST, KEY_A, KEY_B, A, B, MemorySource, stores

OTHER_GROUP = bytes(range(100, 116))




class Side:
    """A synchronous driver: answers the peer's HELLO with everything it lacks."""

    def __init__(self, session: SyncSession, source: MemorySource, members: tuple[bytes, ...] = (), batch_size: int = 256):
        self.session, self.source, self.members, self.batch_size = session, source, members, batch_size
        self.events: list[Event] = []

    def pump(self) -> bytes:
        out = bytearray()
        while True:
            event = self.session.next_event()
            if event is NEED_DATA or event is PAUSED:
                return bytes(out)
            self.events.append(event)
            if isinstance(event, HelloReceived):
                out += b"".join(outgoing(self.session, self.source, members=self.members, batch_size=self.batch_size))

    def received(self) -> set[Dot]:
        return {v.header.dot for e in self.events if isinstance(e, VersionsReceived) for v in e.versions}

    def completions(self) -> list[SessionComplete]:
        return [e for e in self.events if isinstance(e, SessionComplete)]


def session(me: str, source: MemorySource, *, group: bytes = GROUP, digest: bytes = DIGEST, **kw: object) -> SyncSession:
    return SyncSession(me, group, source.vector, digest, **kw)  # type: ignore[arg-type]


def exchange(a: Side, b: Side) -> tuple[int, int]:
    """Run both sides to the end, passing bytes; returns the bytes sent each way."""
    to_b, to_a = a.session.start(), b.session.start()
    sent_ab = sent_ba = 0
    while to_a or to_b:
        sent_ab += len(to_b)
        sent_ba += len(to_a)
        b.session.receive_data(to_b)
        a.session.receive_data(to_a)
        to_b, to_a = a.pump(), b.pump()
    return sent_ab, sent_ba




def test_two_sessions_exchange_exactly_what_each_lacks() -> None:
    source_a, source_b, a_versions, b_versions = stores()
    a = Side(session(A, source_a), source_a, batch_size=2)
    b = Side(session(B, source_b), source_b, batch_size=2)
    exchange(a, b)
    assert a.received() == {v.header.dot for v in b_versions}
    assert b.received() == {v.header.dot for v in a_versions[2:]}
    assert a.completions() == [SessionComplete(source_b.vector)]
    assert b.completions() == [SessionComplete(source_a.vector)]
    assert a.session.complete and b.session.complete
    assert (a.session.versions_sent, a.session.versions_received) == (4, 4)
    # Batches of two: A sent VERSIONS twice, B sent VERSIONS twice.
    assert sum(isinstance(e, VersionsReceived) for e in b.events) == 2
    # SessionComplete is last, right after the peer's DONE.
    assert isinstance(a.events[-2], PeerDone) and a.events[-2].count == 4


def test_members_first_when_digests_differ() -> None:
    source_a, source_b, _, _ = stores()
    a = Side(session(A, source_a, digest=b"\x01" * 32), source_a, members=(b"member A", b"epoch 1"))
    b = Side(session(B, source_b, digest=b"\x02" * 32), source_b, members=(b"member B",))
    exchange(a, b)
    kinds_at_b = [type(e) for e in b.events]
    assert kinds_at_b[:2] == [HelloReceived, MembersReceived]
    assert b.events[1] == MembersReceived((b"member A", b"epoch 1"))
    assert a.events[1] == MembersReceived((b"member B",))
    assert b.completions() and a.completions()


def test_no_member_records_when_digests_agree() -> None:
    source_a, source_b, _, _ = stores()
    a = Side(session(A, source_a), source_a, members=(b"member A",))
    b = Side(session(B, source_b), source_b, members=(b"member B",))
    exchange(a, b)
    assert a.events[1] == MembersReceived(()) and b.events[1] == MembersReceived(())


def full_stream_from_b() -> tuple[bytes, MemorySource]:
    source_a, source_b, _, _ = stores()
    a = Side(session(A, source_a), source_a, batch_size=2)
    b = Side(session(B, source_b), source_b, batch_size=2)
    stream = bytearray(b.session.start())
    b.session.receive_data(a.session.start())
    stream += b.pump()
    return bytes(stream), source_a


def test_session_cut_at_any_byte_never_completes() -> None:
    stream, source_a = full_stream_from_b()
    for cut in range(len(stream)):
        a = Side(session(A, source_a), source_a)
        a.session.start()
        if cut:  # receive_data(b"") would already mean "the connection closed"
            a.session.receive_data(stream[:cut])
        a.pump()
        assert not a.completions(), cut
        a.session.receive_data(b"")  # the connection drops here
        with pytest.raises(RemoteProtocolError):
            a.pump()
        assert not a.completions() and not a.session.complete, cut
        assert a.session.their_state is SessionState.ERROR
    # The control: the whole stream completes.
    a = Side(session(A, source_a), source_a)
    a.session.start()
    a.session.receive_data(stream)
    a.pump()
    assert len(a.completions()) == 1


def test_cut_session_explains_that_nothing_is_lost() -> None:
    stream, source_a = full_stream_from_b()
    a = Side(session(A, source_a), source_a)
    a.session.start()
    first_frame_end = 4 + int.from_bytes(stream[:4], "big")
    a.session.receive_data(stream[:first_frame_end])
    a.pump()
    a.session.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed the connection before it finished sending.*next sync resends"):
        a.pump()


def test_paused_until_our_done_then_complete_then_closed() -> None:
    source_a, source_b, _, _ = stores()
    a = session(A, source_a)
    b = Side(session(B, source_b), source_b)
    b.session.receive_data(a.start())
    a.receive_data(b.session.start() + b.pump())
    a.receive_data(b"")  # the other side half-closed after its DONE: fine
    events: list[object] = []
    while (event := a.next_event()) is not PAUSED:
        events.append(event)
    assert [type(e) for e in events] == [HelloReceived, MembersReceived, VersionsReceived, PeerDone]
    assert a.next_event() is PAUSED  # only this side can move on now
    for chunk in outgoing(a, source_a):
        b.session.receive_data(chunk)
    assert a.next_event() == SessionComplete(source_b.vector)
    assert a.next_event() == ConnectionClosed()


def test_hello_size_grows_with_devices_not_versions() -> None:
    def vector_of_store(devices: list[str], n_versions: int) -> VersionVector:
        # Dots as stores assign them: round-robin authors, counters following a millisecond clock.
        counters: dict[str, int] = {}
        for i in range(n_versions):
            origin = devices[i % len(devices)]
            counters[origin] = next_counter(counters.get(origin, 0), 1_763_000_000_000 + i)
        return VersionVector(counters)

    def hello_size(devices: list[str], n_versions: int) -> int:
        vector = vector_of_store(devices, n_versions)
        return len(SyncSession(devices[0], GROUP, vector, DIGEST).start())

    devices = [device_id_for(i.to_bytes(32, "big")) for i in range(1, 101)]
    small, large = hello_size(devices[:5], 10), hello_size(devices[:5], 100_000)
    assert small == large
    assert hello_size(devices[:6], 100_000) > large
    assert hello_size(devices[:100], 100_000) > hello_size(devices[:50], 100_000) > large


def test_no_change_sync_of_large_stores_moves_a_few_hundred_bytes() -> None:
    # Two stores of 100,000 versions that hold the same versions: the vector is all that is exchanged.
    devices = [device_id_for(i.to_bytes(32, "big")) for i in range(1, 4)]
    vector = VersionVector({d: 1_763_000_000_000 + 33_333 for d in devices})
    a = Side(SyncSession(devices[0], GROUP, vector, DIGEST), MemorySource(vector=vector))
    b = Side(SyncSession(devices[1], GROUP, vector, DIGEST), MemorySource(vector=vector))
    sent_ab, sent_ba = exchange(a, b)
    assert a.completions() and b.completions()
    assert sent_ab + sent_ba < 500, (sent_ab, sent_ba)


def test_another_protocol_version_is_refused_on_both_sides() -> None:
    source_a, source_b, _, _ = stores()
    a = session(A, source_a)
    b = session(B, source_b, protocol_version=PROTOCOL_VERSION + 1)
    a.receive_data(b.start())
    b.receive_data(a.start())
    with pytest.raises(UnsupportedFormat, match=rf"version {PROTOCOL_VERSION + 1} .* version {PROTOCOL_VERSION}; upgrade peer"):
        a.next_event()
    with pytest.raises(UnsupportedFormat, match="upgrade peer on the older one"):
        b.next_event()
    assert a.our_state is SessionState.ERROR and a.their_state is SessionState.ERROR
    # The ERROR frame to send says the same to the other side.
    d = FrameDecoder()
    d.receive_data(a.send_error())
    frame = d.next_frame()
    assert isinstance(frame, ErrorFrame) and frame.code == ErrorCode.VERSION and "upgrade peer" in frame.message
    assert a.send_error() == b""  # only one ERROR per session


def test_another_group_is_refused_on_both_sides() -> None:
    source_a, source_b, _, _ = stores()
    a = session(A, source_a)
    b = session(B, source_b, group=OTHER_GROUP)
    a.receive_data(b.start())
    b.receive_data(a.start())
    for side in (a, b):
        with pytest.raises(WrongGroup) as info:
            side.next_event()
        assert GROUP.hex() in str(info.value) and OTHER_GROUP.hex() in str(info.value)
        assert "peer invite" in str(info.value)
        d = FrameDecoder()
        d.receive_data(side.send_error())
        frame = d.next_frame()
        assert isinstance(frame, ErrorFrame) and frame.code == ErrorCode.WRONG_GROUP


def test_error_frame_from_peer_is_raised_with_its_message() -> None:
    source_a, source_b, _, _ = stores()
    a = session(A, source_a)
    b = session(B, source_b)
    a.start()
    a.receive_data(b.start() + b.send_error(NotAMember("device A is no longer a member\x1b[2J")))
    assert isinstance(a.next_event(), HelloReceived)
    with pytest.raises(NotAMember, match="ended the sync: device A is no longer a member") as info:
        a.next_event()
    assert "\x1b" not in str(info.value)  # terminal escapes from the other side are neutralised
    assert a.send_error() == b""  # no point answering an ERROR with an ERROR


def test_hello_of_an_unexpected_device_is_a_trust_error() -> None:
    source_a, source_b, _, _ = stores()
    a = session(A, source_a, peer_device_id=device_id(device_key(99)))
    a.start()
    a.receive_data(session(B, source_b).start())
    with pytest.raises(TrustError, match="says it is"):
        a.next_event()


def test_a_device_cannot_sync_with_itself() -> None:
    source_a, _, _, _ = stores()
    a = session(A, source_a)
    a.receive_data(session(A, source_a).start())
    a.start()
    with pytest.raises(RemoteProtocolError, match="cannot sync with itself"):
        a.next_event()


def hello_of(me: str, digest: bytes = DIGEST, vector: VersionVector | None = None) -> bytes:
    return encode_frame(Hello(PROTOCOL_VERSION, me, GROUP, vector or VersionVector(), digest))


def feed(frames: bytes, *, digest: bytes = DIGEST) -> SyncSession:
    a = SyncSession(A, GROUP, VersionVector({A: 1005}), digest)
    a.start()
    a.receive_data(frames)
    return a


def drain(s: SyncSession) -> list[object]:
    events: list[object] = []
    while (event := s.next_event()) is not NEED_DATA and event is not PAUSED:
        events.append(event)
    return events


VERSION_B = make_version(KEY_B, 2000)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (encode_frame(VersionsBatch((VERSION_B,))), "sent VERSIONS, which is not allowed in state START"),
        (hello_of(B) + encode_frame(VersionsBatch((VERSION_B,))), "sent VERSIONS, which is not allowed in state HELLO"),
        (hello_of(B) + hello_of(B), "sent HELLO, which is not allowed in state HELLO"),
        (
            hello_of(B) + encode_frame(Members(())) + encode_frame(VersionsBatch((VERSION_B,))) + encode_frame(Members(())),
            "sent MEMBERS, which is not allowed in state VERSIONS",
        ),
        (
            hello_of(B) + encode_frame(Members(())) + encode_frame(Done(0)) + encode_frame(Done(0)),
            "sent DONE, which is not allowed in state DONE",
        ),
        (
            hello_of(B) + encode_frame(Members(())) + encode_frame(Done(0)) + encode_frame(VersionsBatch((VERSION_B,))),
            "sent VERSIONS, which is not allowed in state DONE",
        ),
        (hello_of(B) + encode_frame(Members(())) + encode_frame(Done(2)), "says it sent 2 versions, but 0 arrived"),
        (
            hello_of(B, digest=b"\x09" * 32) + encode_frame(Members(())) + encode_frame(VersionsBatch((VERSION_B,))),
            "without its member records",
        ),
        (b"\x00\x00\x00\x01\x7f", "unknown frame type"),
    ],
)
def test_frames_out_of_order_are_remote_protocol_errors(frames: bytes, message: str) -> None:
    a = feed(frames)
    with pytest.raises(RemoteProtocolError, match=message):
        drain(a)
    assert (a.our_state, a.their_state) == (SessionState.ERROR, SessionState.ERROR)
    with pytest.raises(LocalProtocolError, match="already failed"):
        a.next_event()


def test_frames_before_our_hello_are_refused() -> None:
    a = SyncSession(A, GROUP, VersionVector(), DIGEST)
    a.receive_data(hello_of(B) + encode_frame(Members(())))
    assert isinstance(a.next_event(), HelloReceived)  # a HELLO may arrive before ours is sent
    with pytest.raises(RemoteProtocolError, match="before this side's HELLO"):
        a.next_event()


def test_versions_already_covered_are_delivered_not_refused() -> None:
    covered = make_version(KEY_A, 1001)  # A's own vector covers A:1001
    a = feed(hello_of(B) + encode_frame(Members(())) + encode_frame(VersionsBatch((covered,))) + encode_frame(Done(1)))
    events = drain(a)
    assert VersionsReceived((covered,)) in events and PeerDone(1) in events


def test_version_of_another_group_is_refused() -> None:
    stranger = make_version(KEY_B, 2001, group=OTHER_GROUP)
    a = feed(hello_of(B) + encode_frame(Members(())) + encode_frame(VersionsBatch((stranger,))))
    with pytest.raises(WrongGroup, match="not of this group"):
        drain(a)


def test_local_misuse_names_the_event_and_the_state() -> None:
    a = SyncSession(A, GROUP, VersionVector(), DIGEST)
    with pytest.raises(LocalProtocolError, match="cannot send VERSIONS in state START"):
        a.send(VersionsBatch((VERSION_B,)))
    assert a.our_state is SessionState.ERROR
    with pytest.raises(LocalProtocolError, match="already failed"):
        a.start()

    a = SyncSession(A, GROUP, VersionVector(), DIGEST)
    a.start()
    with pytest.raises(LocalProtocolError, match="before the other device's HELLO"):
        a.send(Members(()))

    a = SyncSession(A, GROUP, VersionVector(), DIGEST)
    a.start()
    a.receive_data(hello_of(B, digest=b"\x05" * 32))
    a.next_event()
    a.send(Members(()))
    with pytest.raises(LocalProtocolError, match="member records must be sent first"):
        a.send(VersionsBatch((VERSION_B,)))

    a = SyncSession(A, GROUP, VersionVector(), DIGEST)
    a.start()
    a.receive_data(hello_of(B))
    a.next_event()
    a.send(Members(()))
    with pytest.raises(LocalProtocolError, match="DONE says 3 versions but this side sent 0"):
        a.send(Done(3))

    a = SyncSession(A, GROUP, VersionVector(), DIGEST)
    a.start()
    a.receive_data(hello_of(B))
    a.next_event()
    a.send(Members(()))
    with pytest.raises(LocalProtocolError, match="belongs to another group"):
        a.send(VersionsBatch((make_version(KEY_B, 2001, group=OTHER_GROUP),)))


def test_oversized_batch_is_refused_locally() -> None:
    a = SyncSession(A, GROUP, VersionVector(), DIGEST, max_frame_size=150)
    a.start()
    a.receive_data(hello_of(B))
    a.next_event()
    a.send(Members(()))
    with pytest.raises(LocalProtocolError, match="send smaller batches"):
        a.send(VersionsBatch((VERSION_B,)))


def test_transition_table_is_the_documented_chain() -> None:
    assert TRANSITIONS[(SessionState.START, Hello)] is SessionState.HELLO
    assert (SessionState.HELLO, VersionsBatch) not in TRANSITIONS  # members always come first
    assert all(state is not SessionState.DONE for state, _ in TRANSITIONS)  # nothing after DONE


def test_decode_errors_are_remote_protocol_errors() -> None:
    a = feed(b"\x00\x00\x00\x02\x04\x80")
    with pytest.raises(DecodeError):
        a.next_event()
    assert isinstance(a.failure, PeerError)


def test_stream_fed_one_byte_at_a_time_gives_the_same_events() -> None:
    stream, source_a = full_stream_from_b()
    whole = Side(session(A, source_a), source_a)
    whole.session.start()
    whole.session.receive_data(stream)
    whole.pump()
    bytewise = Side(session(A, source_a), source_a)
    bytewise.session.start()
    for i in range(len(stream)):
        bytewise.session.receive_data(stream[i : i + 1])
        bytewise.pump()
    assert bytewise.events == whole.events and len(whole.completions()) == 1

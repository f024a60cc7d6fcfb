from __future__ import annotations

import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    DecodeError,
    LocalProtocolError,
    RemoteProtocolError,
    VersionVector,
)
from protocol.codec import encode_uvarint
from protocol.frames import (
    END_OF_STREAM,
    NEED_DATA,
    PROTOCOL_VERSION,
    TAG_DONE,
    Done,
    ErrorFrame,
    Frame,
    FrameDecoder,
    Hello,
    JoinAccept,
    JoinRequest,
    Members,
    ReceiveBuffer,
    VersionsBatch,
    decode_frame,
    encode_frame,
    frame_name,
)
from protocol.session import SyncSession
from tests.support.protocol_frames import (
    GROUP,
    A,
    sample_frames,
)


def stream() -> bytes:
    return b"".join(encode_frame(f) for f in sample_frames())


def drain(decoder: FrameDecoder) -> list[Frame]:
    out: list[Frame] = []
    while True:
        frame = decoder.next_frame()
        if frame is NEED_DATA or frame is END_OF_STREAM:
            return out
        out.append(frame)


def test_every_frame_round_trips() -> None:
    for frame in sample_frames():
        data = encode_frame(frame)
        assert int.from_bytes(data[:4], "big") == len(data) - 4
        assert decode_frame(data[4], data[5:]) == frame


def test_decoder_whole_stream_then_end() -> None:
    d = FrameDecoder()
    d.receive_data(stream())
    assert drain(d) == sample_frames()
    assert d.next_frame() is NEED_DATA
    d.receive_data(b"")
    assert d.next_frame() is END_OF_STREAM


def test_decoder_one_byte_at_a_time_never_raises_for_lack_of_bytes() -> None:
    d = FrameDecoder()
    got: list[Frame] = []
    for i in range(len(data := stream())):
        d.receive_data(data[i : i + 1])
        got.extend(drain(d))
    assert got == sample_frames()


@given(st.lists(st.integers(1, 200), max_size=50))
def test_decoder_any_chunking(cuts: list[int]) -> None:
    data = stream()
    d = FrameDecoder()
    got: list[Frame] = []
    pos = 0
    for n in cuts:
        d.receive_data(data[pos : pos + n])
        pos += n
        got.extend(drain(d))
    d.receive_data(data[pos:])
    got.extend(drain(d))
    assert got == sample_frames()


def test_trailing_partial_frame_waits_then_end_of_stream_is_an_error() -> None:
    d = FrameDecoder()
    d.receive_data(encode_frame(Done(3)) + encode_frame(Done(4))[:3])
    assert d.next_frame() == Done(3)
    assert d.next_frame() is NEED_DATA
    d.receive_data(b"")
    with pytest.raises(DecodeError, match="ended inside a frame"):
        d.next_frame()


def test_oversized_frame_refused_from_its_length_alone() -> None:
    d = FrameDecoder(max_frame_size=1024)
    d.receive_data((1025).to_bytes(4, "big"))
    with pytest.raises(DecodeError, match="above the limit of 1024"):
        d.next_frame()
    # The decoder is spent: it repeats the error rather than resynchronising on garbage.
    with pytest.raises(DecodeError):
        d.next_frame()


def test_huge_claimed_length_with_default_limit() -> None:
    d = FrameDecoder()
    d.receive_data(b"\xff\xff\xff\xff\x01")
    with pytest.raises(RemoteProtocolError):
        d.next_frame()


def test_unknown_tag_and_empty_frame_and_trailing_bytes_in_payload() -> None:
    for data in (
        b"\x00\x00\x00\x01\x7f",  # unknown tag
        b"\x00\x00\x00\x00",  # length 0
        b"\x00\x00\x00\x03" + bytes((TAG_DONE,)) + b"\x01\x00",  # DONE with a trailing byte
        b"\x00\x00\x00\x03" + bytes((TAG_DONE,)) + b"\x80\x00",  # non-minimal varint
    ):
        d = FrameDecoder()
        d.receive_data(data)
        with pytest.raises(DecodeError):
            d.next_frame()


def test_hello_of_another_version_is_read_from_its_prefix() -> None:
    future = Hello(PROTOCOL_VERSION + 1, A, GROUP, VersionVector({A: 5}), b"\x07" * 32, 3)
    # A future HELLO may carry fields this version cannot parse after the frozen prefix.
    data = bytearray(encode_frame(future))
    data += b"\xff\xfe future fields"
    data[:4] = (len(data) - 4).to_bytes(4, "big")
    d = FrameDecoder()
    d.receive_data(bytes(data))
    hello = d.next_frame()
    assert isinstance(hello, Hello)
    assert (hello.version, hello.device_id, hello.group_id) == (PROTOCOL_VERSION + 1, A, GROUP)
    assert hello.vector == VersionVector()


def test_frames_validate_on_construction() -> None:
    # Built on this side: this side's bug, a local error (not "malformed", which blames the sender).
    with pytest.raises(LocalProtocolError):
        Hello(PROTOCOL_VERSION, "not a device", GROUP, VersionVector(), bytes(32))
    with pytest.raises(LocalProtocolError):
        Hello(PROTOCOL_VERSION, A, b"short", VersionVector(), bytes(32))
    with pytest.raises(LocalProtocolError):
        Hello(PROTOCOL_VERSION, A, GROUP, VersionVector(), bytes(31))
    with pytest.raises(LocalProtocolError):
        Members((b"",))
    with pytest.raises(LocalProtocolError):
        VersionsBatch(())
    with pytest.raises(LocalProtocolError):
        Done(-1)
    with pytest.raises(LocalProtocolError):
        ErrorFrame(1, "x" * 5000)
    with pytest.raises(LocalProtocolError):
        ErrorFrame(1, "\ud800")  # not encodable as UTF-8
    with pytest.raises(LocalProtocolError):
        JoinRequest(b"", b"k" * 32, b"x" * 32, "n", b"p" * 32)


def test_a_bad_hello_is_local_when_built_and_remote_when_received() -> None:
    lowercase = A.lower()  # the right length, but not a device id
    with pytest.raises(LocalProtocolError, match="is not a device id") as built:
        Hello(PROTOCOL_VERSION, lowercase, GROUP, VersionVector(), bytes(32))
    assert not isinstance(built.value, RemoteProtocolError)
    # The same HELLO as bytes from the other side: a DecodeError, never a LocalProtocolError.
    data = encode_frame(Hello(PROTOCOL_VERSION, A, GROUP, VersionVector(), bytes(32))).replace(A.encode(), lowercase.encode())
    d = FrameDecoder()
    d.receive_data(data)
    with pytest.raises(DecodeError, match="malformed HELLO: .* is not a device id") as received:
        d.next_frame()
    assert not isinstance(received.value, LocalProtocolError)
    with pytest.raises(DecodeError, match="is not a device id"):
        decode_frame(data[4], data[5:])
    session = SyncSession(A, GROUP, VersionVector(), bytes(32))
    session.receive_data(data)
    with pytest.raises(DecodeError, match="malformed HELLO"):
        session.next_event()


def test_frame_codecs_are_one_row_per_frame_type() -> None:
    # Every frame type has one tag and one name, and each tag decodes back to its type.
    from protocol import frames

    codecs = frames._CODECS
    assert set(codecs) == set(typing.get_args(Frame))
    assert len({c.tag for c in codecs.values()}) == len(codecs)
    assert len({c.name for c in codecs.values()}) == len(codecs)
    assert {frame_name(t) for t in codecs} == {c.name for c in codecs.values()}
    assert frames._BY_TAG == {c.tag: c for c in codecs.values()}


def test_join_proof_binds_secret_and_keys() -> None:
    request = JoinRequest.create(secret=b"secret", invite_id=b"id", device_key=b"k" * 32, exchange_key=b"x" * 32, name="n")
    assert request.proof_matches(b"secret")
    assert not request.proof_matches(b"other secret")
    swapped = JoinRequest(request.invite_id, b"K" * 32, request.exchange_key, request.name, request.proof)
    assert not swapped.proof_matches(b"secret")


def test_join_accept_name_flag_is_canonical() -> None:
    data = encode_frame(JoinAccept(GROUP, (), None))
    # Flag 0 followed by a non-empty name: a second encoding of "no name" must be refused.
    forged = data[:-1] + b"\x01a"
    forged = (len(forged) - 4).to_bytes(4, "big") + forged[4:]
    d = FrameDecoder()
    d.receive_data(forged)
    with pytest.raises(DecodeError):
        d.next_frame()


def test_many_frames_in_one_large_chunk_then_a_split_one() -> None:
    # More than 64 KiB of frames at once: exercises the buffer's compaction.
    frames = [Done(i) for i in range(20_000)]
    data = b"".join(encode_frame(f) for f in frames)
    tail = encode_frame(Members((b"x" * 1000,)))
    d = FrameDecoder()
    d.receive_data(data + tail[:500])
    assert drain(d) == frames
    d.receive_data(tail[500:])
    assert drain(d) == [Members((b"x" * 1000,))]
    assert d.buffered == 0


@given(st.integers(min_value=0, max_value=(1 << 84) - 1), st.binary(max_size=3))
def test_receive_buffer_reads_a_varint_incrementally(n: int, prefix: bytes) -> None:
    encoded = encode_uvarint(n)
    buf = ReceiveBuffer()
    buf.append(prefix)
    for byte in encoded[:-1]:
        buf.append(bytes((byte,)))
        assert buf.maybe_uvarint(len(prefix)) is None  # incomplete: not an error, no result
    buf.append(encoded[-1:] + b"after")
    assert buf.maybe_uvarint(len(prefix)) == (n, len(prefix) + len(encoded))
    assert len(buf) == len(prefix) + len(encoded) + 5  # nothing consumed


def test_receive_buffer_refuses_malformed_varints() -> None:
    for data, why in ((b"\x80\x00", "non-minimal"), (b"\xff" * 12, "too long")):
        buf = ReceiveBuffer()
        buf.append(data)
        with pytest.raises(DecodeError, match=why):
            buf.maybe_uvarint()

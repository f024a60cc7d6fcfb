"""Frames: the units of the sync and pairing wire protocol, and their decoder.

A frame on the wire is::

    u32 big-endian N | u8 tag | payload (N - 1 bytes)

``N`` counts the tag and the payload, so it is at least 1; a decoder
refuses any ``N`` above its maximum frame size as soon as the four length
bytes have arrived, before it buffers the body. Payloads use the canonical
encoding of :mod:`protocol.codec` (minimal LEB128 varints, varint-length-
prefixed bytes and UTF-8 text) and must be consumed exactly: trailing bytes
inside a frame are an error, so every frame has exactly one encoding.

Payloads, field by field (``vv`` is a :class:`VersionVector` encoding,
``bytes``/``str`` are length-prefixed, ``raw(n)`` is n bytes as they are)::

    HELLO         uvarint version | str device id | raw(16) group id
                  | vv vector | raw(32) membership digest | uvarint flags
    MEMBERS       uvarint n | n x bytes membership record (opaque here)
    VERSIONS      uvarint n | n x bytes sealed version (n >= 1)
    DONE          uvarint number of versions sent in this session
    ERROR         uvarint code | str message
    JOIN_REQUEST  bytes invite id | raw(32) joiner's Ed25519 public key
                  | raw(32) joiner's X25519 public key | str device name
                  | raw(32) proof = HMAC-SHA256(invite secret, see join_proof)
    JOIN_ACCEPT   raw(16) group id | uvarint n | n x bytes membership record
                  | bool has name | str group name ("" when absent)
    JOIN_REJECT   uvarint code | str message

The first three fields of HELLO (version, device id, group id) are frozen
for all protocol versions to come, so that two devices speaking different
versions can still read who the other is and refuse each other clearly. A
HELLO whose version differs from :data:`PROTOCOL_VERSION` is decoded from
that prefix alone; its other fields read as empty (see :class:`Hello`).

Membership records are the business of :mod:`protocol.membership`; frames
carry them as opaque byte strings. Flags in HELLO are reserved: senders set
0 and receivers ignore bits they do not know.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from .clock import VersionVector
from .codec import MAX_VARINT_BYTES, Reader, Writer
from .errors import DecodeError, LocalProtocolError, PeerError
from .ids import is_device_id
from .sealing import MAX_SEALED_BYTES, SealedVersion

__all__ = [
    "FLAG_ORDERED",
    "PROTOCOL_VERSION",
    "DEFAULT_MAX_FRAME_SIZE",
    "MAX_MEMBER_RECORD_BYTES",
    "MAX_MESSAGE_BYTES",
    "GROUP_ID_BYTES",
    "DIGEST_BYTES",
    "TAG_HELLO",
    "TAG_MEMBERS",
    "TAG_VERSIONS",
    "TAG_DONE",
    "TAG_ERROR",
    "TAG_JOIN_REQUEST",
    "TAG_JOIN_ACCEPT",
    "TAG_JOIN_REJECT",
    "ErrorCode",
    "Hello",
    "Members",
    "VersionsBatch",
    "Done",
    "ErrorFrame",
    "JoinRequest",
    "JoinAccept",
    "JoinReject",
    "Frame",
    "frame_name",
    "join_proof",
    "encode_frame",
    "decode_frame",
    "NeedData",
    "NEED_DATA",
    "EndOfStream",
    "END_OF_STREAM",
    "FrameDecoder",
    "ReceiveBuffer",
]

#: The sync protocol this code speaks; a HELLO of any other version is refused.
PROTOCOL_VERSION: Final = 1

#: Large enough for one sealed version of the largest allowed size plus framing.
DEFAULT_MAX_FRAME_SIZE: Final = 8 << 20
MAX_MEMBER_RECORD_BYTES: Final = 1 << 20
MAX_MESSAGE_BYTES: Final = 4096
MAX_NAME_BYTES: Final = 256
MAX_INVITE_ID_BYTES: Final = 64
GROUP_ID_BYTES: Final = 16
DIGEST_BYTES: Final = 32
KEY_BYTES: Final = 32
PROOF_BYTES: Final = 32
_LENGTH_BYTES: Final = 4
_MAX_FLAGS: Final = (1 << 32) - 1
_MAX_CODE: Final = (1 << 16) - 1
_MAX_VERSION: Final = (1 << 16) - 1
# A sealed version inside VERSIONS: the box plus its header and signature.
_MAX_SEALED_ENTRY: Final = MAX_SEALED_BYTES + (1 << 20) + 128
_JOIN_PROOF_LABEL: Final = b"peer/v1/join-proof\x00"

TAG_HELLO: Final = 0x01
TAG_MEMBERS: Final = 0x02
TAG_VERSIONS: Final = 0x03
TAG_DONE: Final = 0x04
TAG_ERROR: Final = 0x05
TAG_JOIN_REQUEST: Final = 0x10
TAG_JOIN_ACCEPT: Final = 0x11
TAG_JOIN_REJECT: Final = 0x12


class ErrorCode(enum.IntEnum):
    """Codes carried by ERROR and JOIN_REJECT; unknown codes are kept as plain ints."""

    PROTOCOL = 1  #: malformed or out-of-order data
    VERSION = 2  #: another protocol version
    WRONG_GROUP = 3  #: the devices belong to different groups
    NOT_A_MEMBER = 4  #: the device is not (or no longer) a member
    INTERNAL = 5  #: the sender failed on its side (store, disk); retry later
    BUSY = 6  #: the sender is already syncing with this device; retry later
    #: The invite is unknown, used, expired, or the proof is wrong. One code
    #: for all of these on purpose: a refusal reveals nothing about the invite.
    INVITE_REFUSED = 16


# Frames ---------------------------------------------------------------


def _invalid(what: str) -> LocalProtocolError:
    # A frame built on this side; decode_frame() re-raises it as a DecodeError.
    return LocalProtocolError(what)


def _utf8_length(what: str, text: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise _invalid(f"{what}: text that is not valid Unicode") from e


def _check_message(what: str, code: int, message: str) -> None:
    if not 0 <= code <= _MAX_CODE:
        raise _invalid(f"{what}: code {code} out of range")
    if _utf8_length(what, message) > MAX_MESSAGE_BYTES:
        raise _invalid(f"{what}: message longer than {MAX_MESSAGE_BYTES} bytes")


def _check_records(what: str, records: tuple[bytes, ...]) -> None:
    for record in records:
        if not isinstance(record, bytes) or not 0 < len(record) <= MAX_MEMBER_RECORD_BYTES:
            raise _invalid(f"{what}: a membership record must be 1 to {MAX_MEMBER_RECORD_BYTES} bytes")


#: HELLO flag: this side sends its versions per origin in ascending counter
#: order, never returning to an origin it left, so the receiver may record
#: durable progress after every batch (see :class:`~protocol.session.VersionsReceived`).
FLAG_ORDERED: Final = 1


@dataclass(frozen=True, slots=True)
class Hello:
    """The first frame each side sends: who it is and what it holds.

    ``vector`` is the sender's version vector, so a HELLO grows with the
    number of replicas, never with the number of versions.
    ``membership_digest`` summarises the sender's member list and key
    epochs; when the two digests differ, both sides send their member
    records before any version.

    A HELLO of another ``version`` is decoded from its frozen prefix only:
    its vector is empty, its digest all zeros and its flags 0. Check
    ``version`` before using anything else.
    """

    version: int
    device_id: str
    group_id: bytes
    vector: VersionVector
    membership_digest: bytes
    flags: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.version <= _MAX_VERSION:
            raise _invalid(f"HELLO: protocol version {self.version} out of range")
        if not is_device_id(self.device_id):
            raise _invalid(f"HELLO: {self.device_id!r} is not a device id")
        if len(self.group_id) != GROUP_ID_BYTES:
            raise _invalid("HELLO: a group id is 16 bytes")
        if not isinstance(self.vector, VersionVector):
            raise _invalid("HELLO: the vector must be a VersionVector")
        if len(self.membership_digest) != DIGEST_BYTES:
            raise _invalid("HELLO: a membership digest is 32 bytes")
        if not 0 <= self.flags <= _MAX_FLAGS:
            raise _invalid("HELLO: flags out of range")


@dataclass(frozen=True, slots=True)
class Members:
    """Membership records (opaque here), sent after HELLO and before any version."""

    records: tuple[bytes, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "records", tuple(self.records))
        _check_records("MEMBERS", self.records)


@dataclass(frozen=True, slots=True)
class VersionsBatch:
    """A non-empty batch of sealed versions, forwarded byte for byte."""

    versions: tuple[SealedVersion, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "versions", tuple(self.versions))
        if not self.versions:
            raise _invalid("VERSIONS: a batch holds at least one version")
        if not all(isinstance(v, SealedVersion) for v in self.versions):
            raise _invalid("VERSIONS: a batch holds sealed versions")


@dataclass(frozen=True, slots=True)
class Done:
    """The sender has sent everything: ``count`` versions in all this session."""

    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.count < 1 << 62:
            raise _invalid("DONE: count out of range")


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """The sender gives up on the session; ``message`` is for the user on the other side."""

    code: int
    message: str

    def __post_init__(self) -> None:
        _check_message("ERROR", self.code, self.message)


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A joining device introduces itself and proves it holds the invite's secret.

    ``device_key`` is the joiner's raw Ed25519 public key (its identity and
    SSH key), ``exchange_key`` its raw X25519 public key, to which the group
    key is wrapped. ``proof`` is :func:`join_proof` over the other fields,
    keyed with the invite secret.
    """

    invite_id: bytes
    device_key: bytes
    exchange_key: bytes
    name: str
    proof: bytes

    def __post_init__(self) -> None:
        if not 0 < len(self.invite_id) <= MAX_INVITE_ID_BYTES:
            raise _invalid(f"JOIN_REQUEST: an invite id is 1 to {MAX_INVITE_ID_BYTES} bytes")
        if len(self.device_key) != KEY_BYTES or len(self.exchange_key) != KEY_BYTES:
            raise _invalid("JOIN_REQUEST: public keys are 32 bytes")
        if _utf8_length("JOIN_REQUEST", self.name) > MAX_NAME_BYTES:
            raise _invalid(f"JOIN_REQUEST: a device name is at most {MAX_NAME_BYTES} bytes")
        if len(self.proof) != PROOF_BYTES:
            raise _invalid("JOIN_REQUEST: a proof is 32 bytes")

    @classmethod
    def create(cls, *, secret: bytes, invite_id: bytes, device_key: bytes, exchange_key: bytes, name: str) -> JoinRequest:
        """A request with its proof computed from the invite ``secret``."""
        proof = join_proof(secret, invite_id=invite_id, device_key=device_key, exchange_key=exchange_key, name=name)
        return cls(invite_id=invite_id, device_key=device_key, exchange_key=exchange_key, name=name, proof=proof)

    def proof_matches(self, secret: bytes) -> bool:
        """Whether the proof was made with ``secret`` (in constant time)."""
        expected = join_proof(
            secret, invite_id=self.invite_id, device_key=self.device_key, exchange_key=self.exchange_key, name=self.name
        )
        return hmac.compare_digest(expected, self.proof)


def join_proof(secret: bytes, *, invite_id: bytes, device_key: bytes, exchange_key: bytes, name: str) -> bytes:
    """HMAC-SHA256 under the invite secret over a domain label and every other JOIN_REQUEST field.

    Binding the keys into the proof means a proof seen once cannot be
    replayed with another device's keys.
    """
    message = Writer().raw(_JOIN_PROOF_LABEL).bytes(invite_id).bytes(device_key).bytes(exchange_key).str(name)
    return hmac.new(secret, message.getvalue(), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class JoinAccept:
    """The inviter admits the joiner: the group, its member records (with the wrapped group key)."""

    group_id: bytes
    records: tuple[bytes, ...]
    group_name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "records", tuple(self.records))
        if len(self.group_id) != GROUP_ID_BYTES:
            raise _invalid("JOIN_ACCEPT: a group id is 16 bytes")
        _check_records("JOIN_ACCEPT", self.records)
        if self.group_name is not None and _utf8_length("JOIN_ACCEPT", self.group_name) > MAX_NAME_BYTES:
            raise _invalid(f"JOIN_ACCEPT: a group name is at most {MAX_NAME_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class JoinReject:
    """The inviter refuses the joiner; ``message`` says what to do."""

    code: int
    message: str

    def __post_init__(self) -> None:
        _check_message("JOIN_REJECT", self.code, self.message)


Frame = Hello | Members | VersionsBatch | Done | ErrorFrame | JoinRequest | JoinAccept | JoinReject


# Payload encodings: one row per frame type ----------------------------
#
# Each frame type has a writer (frame -> payload) and a reader (Reader ->
# frame); :data:`_CODECS` pairs them with the tag and the name, and is the
# only table: the tag lookup, the names and encode_frame() all derive from it.


def _write_hello(w: Writer, frame: Hello) -> None:
    w.uvarint(frame.version).str(frame.device_id).raw(frame.group_id)
    frame.vector.encode_into(w)
    w.raw(frame.membership_digest).uvarint(frame.flags)


def _read_hello(r: Reader) -> Hello:
    version = r.uvarint(limit=_MAX_VERSION)
    device_id = r.str(limit=64)
    group_id = r.raw(GROUP_ID_BYTES)
    if version != PROTOCOL_VERSION:
        # Only the prefix is common to all versions; the rest is not ours to parse.
        r.raw(r.remaining)
        return Hello(version, device_id, group_id, VersionVector(), bytes(DIGEST_BYTES), 0)
    vector = VersionVector.decode_from(r)
    digest = r.raw(DIGEST_BYTES)
    flags = r.uvarint(limit=_MAX_FLAGS)
    return Hello(version, device_id, group_id, vector, digest, flags)


def _write_records(w: Writer, records: tuple[bytes, ...]) -> None:
    w.uvarint(len(records))
    for record in records:
        w.bytes(record)


def _read_records(r: Reader) -> tuple[bytes, ...]:
    # Each record costs at least one byte, so the count cannot exceed what is left.
    n = r.uvarint(limit=r.remaining)
    return tuple(r.bytes(limit=MAX_MEMBER_RECORD_BYTES) for _ in range(n))


def _write_members(w: Writer, frame: Members) -> None:
    _write_records(w, frame.records)


def _read_members(r: Reader) -> Members:
    return Members(_read_records(r))


def _write_versions(w: Writer, frame: VersionsBatch) -> None:
    w.uvarint(len(frame.versions))
    for version in frame.versions:
        w.bytes(version.encode())


def _read_versions(r: Reader) -> VersionsBatch:
    n = r.uvarint(limit=r.remaining)
    return VersionsBatch(tuple(SealedVersion.decode(r.bytes(limit=_MAX_SEALED_ENTRY)) for _ in range(n)))


def _write_done(w: Writer, frame: Done) -> None:
    w.uvarint(frame.count)


def _read_done(r: Reader) -> Done:
    return Done(r.uvarint(limit=(1 << 62) - 1))


def _write_error(w: Writer, frame: ErrorFrame | JoinReject) -> None:
    w.uvarint(frame.code).str(frame.message)


def _read_error(r: Reader) -> ErrorFrame:
    code = r.uvarint(limit=_MAX_CODE)
    return ErrorFrame(code, r.str(limit=MAX_MESSAGE_BYTES))


def _write_join_request(w: Writer, frame: JoinRequest) -> None:
    w.bytes(frame.invite_id).raw(frame.device_key).raw(frame.exchange_key).str(frame.name).raw(frame.proof)


def _read_join_request(r: Reader) -> JoinRequest:
    invite_id = r.bytes(limit=MAX_INVITE_ID_BYTES)
    device_key = r.raw(KEY_BYTES)
    exchange_key = r.raw(KEY_BYTES)
    name = r.str(limit=MAX_NAME_BYTES)
    proof = r.raw(PROOF_BYTES)
    return JoinRequest(invite_id, device_key, exchange_key, name, proof)


def _write_join_accept(w: Writer, frame: JoinAccept) -> None:
    w.raw(frame.group_id)
    _write_records(w, frame.records)
    w.bool(frame.group_name is not None).str(frame.group_name or "")


def _read_join_accept(r: Reader) -> JoinAccept:
    group_id = r.raw(GROUP_ID_BYTES)
    records = _read_records(r)
    has_name = r.bool()
    name = r.str(limit=MAX_NAME_BYTES)
    if not has_name and name:
        raise DecodeError("malformed JOIN_ACCEPT frame: group name present without its flag")
    return JoinAccept(group_id, records, name if has_name else None)


def _read_join_reject(r: Reader) -> JoinReject:
    code = r.uvarint(limit=_MAX_CODE)
    return JoinReject(code, r.str(limit=MAX_MESSAGE_BYTES))


_F = TypeVar("_F", bound=Frame)


@dataclass(frozen=True, slots=True)
class _Codec(Generic[_F]):
    tag: int
    name: str
    write: Callable[[Writer, _F], None]
    read: Callable[[Reader], _F]


_CODECS: Final[Mapping[type[Frame], _Codec[Any]]] = {
    Hello: _Codec(TAG_HELLO, "HELLO", _write_hello, _read_hello),
    Members: _Codec(TAG_MEMBERS, "MEMBERS", _write_members, _read_members),
    VersionsBatch: _Codec(TAG_VERSIONS, "VERSIONS", _write_versions, _read_versions),
    Done: _Codec(TAG_DONE, "DONE", _write_done, _read_done),
    ErrorFrame: _Codec(TAG_ERROR, "ERROR", _write_error, _read_error),
    JoinRequest: _Codec(TAG_JOIN_REQUEST, "JOIN_REQUEST", _write_join_request, _read_join_request),
    JoinAccept: _Codec(TAG_JOIN_ACCEPT, "JOIN_ACCEPT", _write_join_accept, _read_join_accept),
    JoinReject: _Codec(TAG_JOIN_REJECT, "JOIN_REJECT", _write_error, _read_join_reject),
}
_BY_TAG: Final[Mapping[int, _Codec[Any]]] = {codec.tag: codec for codec in _CODECS.values()}
assert len(_BY_TAG) == len(_CODECS), "two frame types share a tag"


def frame_name(frame: Frame | type[Frame]) -> str:
    """The protocol name of a frame (``HELLO``, ``VERSIONS``...), for messages."""
    cls = frame if isinstance(frame, type) else type(frame)
    return _CODECS[cls].name


def encode_frame(frame: Frame) -> bytes:
    """The complete wire bytes of a frame: length, tag, payload."""
    codec = _CODECS.get(type(frame))
    if codec is None:
        raise LocalProtocolError(f"{frame!r} is not a frame")
    w = Writer()
    codec.write(w, frame)
    payload = w.getvalue()
    return (len(payload) + 1).to_bytes(_LENGTH_BYTES, "big") + bytes((codec.tag,)) + payload


def decode_frame(tag: int, payload: bytes) -> Frame:
    """The frame of a tag and payload (the length prefix already removed).

    Raises :class:`DecodeError` for anything malformed, including a frame
    that fails the validation its constructor applies to frames built here.
    """
    codec = _BY_TAG.get(tag)
    if codec is None:
        raise DecodeError(f"malformed data: unknown frame type 0x{tag:02x}; is the other side a peer sync agent?")
    r = Reader(payload, f"{codec.name} frame")
    try:
        frame: Frame = codec.read(r)
    except LocalProtocolError as e:
        # The validators name the frame themselves ("HELLO: ...").
        raise e.as_remote() from None
    r.end()
    return frame


# The incremental decoder ----------------------------------------------


class NeedData(enum.Enum):
    """Returned by decoders that need more bytes before the next result."""

    NEED_DATA = "NEED_DATA"


class EndOfStream(enum.Enum):
    """Returned once the stream ended cleanly, between two frames."""

    END_OF_STREAM = "END_OF_STREAM"


NEED_DATA: Final = NeedData.NEED_DATA
END_OF_STREAM: Final = EndOfStream.END_OF_STREAM


class ReceiveBuffer:
    """Bytes received and not yet consumed.

    Consuming moves an offset and compacts only once the consumed part
    dominates, so a large chunk of many small frames costs linear time.
    """

    __slots__ = ("_data", "_start")

    def __init__(self) -> None:
        self._data = bytearray()
        self._start = 0

    def __len__(self) -> int:
        return len(self._data) - self._start

    def append(self, data: bytes) -> None:
        self._data += data

    def byte_at(self, index: int) -> int:
        """The unconsumed byte at ``index`` (the caller checked the length)."""
        return self._data[self._start + index]

    def maybe_uvarint(self, offset: int = 0) -> tuple[int, int] | None:
        """The varint at ``offset`` and the offset just after it, or None while it is incomplete.

        Consumes nothing (as h11's ``maybe_extract_*``, but the caller
        consumes, so that several fields can be checked before any byte goes).
        The same rules as :meth:`Reader.uvarint`: raises :class:`DecodeError`
        for a non-minimal number or one longer than ``MAX_VARINT_BYTES``.
        """
        result = 0
        available = len(self) - offset
        for i in range(MAX_VARINT_BYTES):
            if i >= available:
                return None
            byte = self._data[self._start + offset + i]
            result |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    raise DecodeError("non-minimal number")
                return result, offset + i + 1
        raise DecodeError("number too long")

    def peek(self, n: int) -> bytes:
        """Up to ``n`` unconsumed bytes, without consuming them."""
        return bytes(self._data[self._start : self._start + n])

    def consume(self, n: int) -> bytes:
        data = self.peek(n)
        self._start += len(data)
        if self._start > 65536 and self._start * 2 > len(self._data):
            del self._data[: self._start]
            self._start = 0
        return data


class FrameDecoder:
    """Splits a byte stream, received in any chunking, into frames.

    ``receive_data(b"")`` marks the end of the stream. ``next_frame()``
    returns the next complete frame, :data:`NEED_DATA` while a frame is
    still incomplete (it never raises for lack of bytes), or
    :data:`END_OF_STREAM` once the stream ended between frames. Malformed
    input raises :class:`DecodeError` (a :class:`RemoteProtocolError`); a
    sealed version of a newer format inside VERSIONS raises
    :class:`UnsupportedFormat`. Nothing else escapes. After an error the
    decoder is spent and repeats that error.
    """

    __slots__ = ("_buf", "_eof", "_error", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if max_frame_size < 1:
            raise ValueError("max_frame_size must be positive")
        self.max_frame_size = max_frame_size
        self._buf = ReceiveBuffer()
        self._eof = False
        self._error: PeerError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames."""
        return len(self._buf)

    @property
    def at_eof(self) -> bool:
        return self._eof

    def receive_data(self, data: bytes) -> None:
        if self._eof:
            if data:
                raise LocalProtocolError("received data after the end of the stream")
            return
        if data:
            self._buf.append(data)
        else:
            self._eof = True

    def next_frame(self) -> Frame | NeedData | EndOfStream:
        if self._error is not None:
            raise self._error
        try:
            return self._next_frame()
        except PeerError as e:
            self._error = e
            raise

    def _next_frame(self) -> Frame | NeedData | EndOfStream:
        buf = self._buf
        if len(buf) < _LENGTH_BYTES:
            return self._incomplete()
        length = int.from_bytes(buf.peek(_LENGTH_BYTES), "big")
        if length == 0:
            raise DecodeError("malformed data: a frame of length 0; is the other side a peer sync agent?")
        if length > self.max_frame_size:
            raise DecodeError(
                f"malformed data: a frame of {length} bytes is above the limit of {self.max_frame_size} bytes"
            )
        end = _LENGTH_BYTES + length
        if len(buf) < end:
            return self._incomplete()
        frame = buf.consume(end)
        return decode_frame(frame[_LENGTH_BYTES], frame[_LENGTH_BYTES + 1 :])

    def _incomplete(self) -> NeedData | EndOfStream:
        if not self._eof:
            return NEED_DATA
        if self._buf:
            raise DecodeError(f"truncated data: the stream ended inside a frame ({len(self._buf)} bytes left over)")
        return END_OF_STREAM

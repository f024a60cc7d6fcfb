"""Relays: the files a device keeps in an untrusted folder so members that never meet still sync.

A relay is a directory that some engine (Dropbox, Syncthing, a NAS share,
an SFTP server) carries between machines. Under ``<relay>/peer-<group id
hex>/`` each device writes only files named after itself, so no engine ever
has to merge two writers' edits:

* ``<DEVICE>.state``: its *state record*, small and signed (below);
* ``<DEVICE>-<NUMBER>.seg``: its *segments*, immutable. A segment is a
  bundle (:mod:`protocol.bundle`, byte for byte the same format and
  verification) made for any device (no recipient), never partial. Its
  base vector is what the relay could already give every member when it
  was written; its sender vector (the segment's *top*) is what its author
  held. ``NUMBER`` is 16 lowercase hex digits.

Every other name (``.x.tmp`` files being written, ``X.sync-conflict-...``,
``X (conflicted copy).seg``, ``~$X``) is foreign and must be ignored.

Theory of operation. Readers trust nothing on the relay, and decide from
state records alone what to read, so a no-change exchange reads only those.
A state record lists the author's live segments with their size, trailer
digest, base and top: a segment whose file is missing, of another size, or
whose bundle does not verify or does not match its listing is *damaged*; a
reader skips it and names it in its own state record, and every device
then treats it as absent. What a member holding only the *meet* (the
component-wise minimum of every current member's vector, as their state
records say) can reach by applying present segments in an order where each
one's base is already covered is the relay's *coverage*
(:func:`relay_coverage`): a writer puts in one new segment every version
that coverage lacks (base = coverage), so nothing is written twice and a
device paired later (whose vector, empty, lowers the meet) causes the next
writer to write what it needs. A segment may be removed by its author once
every current member's vector covers its top (:func:`prunable`); the meet
then covers it too, so coverage does not shrink. Sequence numbers
(``max(last + 1, now in ms)``, like counters) make a reverted copy of a
state record detectable: a reader that saw a higher number from that device
keeps the higher one's word.

State record layout (``bytes``/``str`` varint-length-prefixed, ``vv`` a
version vector, ``raw(n)`` n bytes as they are)::

    raw(16)  magic b"\\x89PEER-RSTATE\\r\\n\\x1a\\n"
    uvarint  format (1)
    bytes    body: raw(16) group id | str device id | uvarint sequence | uvarint written at (ms)
             | vv vector (what the device holds)
             | uvarint n, then n segments: uvarint number | uvarint size | raw(32) digest | vv base | vv top
             | uvarint n, then n str: names of other devices' segments it found damaged
    raw(64)  Ed25519 signature of the device over b"peer/v1/relay-state\\x00" + SHA-256(every byte before it)

Nothing may follow the signature. Segment numbers strictly increase in the
list; damaged names are sorted and unique.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .bundle import BundleHeader
from .clock import VersionVector
from .codec import Reader, Writer
from .errors import BadSignature, NotAMember, PeerError, RelayError, WrongGroup
from .ids import device_id_for, format_device_id, is_device_id

__all__ = [
    "RELAY_STATE_MAGIC",
    "RELAY_FORMAT",
    "RelayName",
    "SegmentRef",
    "RelayState",
    "group_folder",
    "parse_relay_name",
    "state_name",
    "segment_name",
    "temporary_name",
    "seal_state",
    "open_state",
    "check_segment",
    "next_sequence",
    "vector_meet",
    "relay_coverage",
    "prunable",
]

RELAY_STATE_MAGIC: Final = b"\x89PEER-RSTATE\r\n\x1a\n"
RELAY_FORMAT: Final = 1
_SIGN_LABEL: Final = b"peer/v1/relay-state\x00"
_DIGEST_BYTES: Final = 32
_SIGNATURE_BYTES: Final = 64
#: Bounds that keep a hostile state record from costing memory: a device lists
#: few live segments (it compacts them) and few damaged names.
MAX_SEGMENTS: Final = 4096
MAX_DAMAGED: Final = 4096
MAX_STATE_BYTES: Final = 16 << 20
_MAX_NUMBER: Final = (1 << 64) - 1

_STATE_RE: Final = re.compile(r"([A-Z2-7]{26})\.state")
_SEGMENT_RE: Final = re.compile(r"([A-Z2-7]{26})-([0-9a-f]{16})\.seg")


def _damaged(why: str) -> RelayError:
    return RelayError(f"a relay state record is damaged: {why}; its device rewrites it at its next exchange")


def group_folder(group_id: bytes) -> str:
    """The folder of a group inside a relay (the group id is no secret: every sealed header carries it)."""
    if len(group_id) != 16:
        raise ValueError("a group id is 16 bytes")
    return f"peer-{group_id.hex()}"


@dataclass(frozen=True, slots=True)
class RelayName:
    """A file name a device owns: its state record (``number`` None) or one of its segments."""

    device_id: str
    number: int | None

    @property
    def is_state(self) -> bool:
        return self.number is None


def parse_relay_name(name: str) -> RelayName | None:
    """What a name in a group folder is, or None for a foreign name (conflict copies, temporary files)."""
    m = _STATE_RE.fullmatch(name)
    if m:
        return RelayName(m.group(1), None)
    m = _SEGMENT_RE.fullmatch(name)
    if m:
        return RelayName(m.group(1), int(m.group(2), 16))
    return None


def state_name(device_id: str) -> str:
    if not is_device_id(device_id):
        raise ValueError(f"{device_id!r} is not a device id")
    return f"{device_id}.state"


def segment_name(device_id: str, number: int) -> str:
    if not is_device_id(device_id):
        raise ValueError(f"{device_id!r} is not a device id")
    if not 0 <= number <= _MAX_NUMBER:
        raise ValueError("a segment number is 0 to 2**64-1")
    return f"{device_id}-{number:016x}.seg"


def temporary_name(final: str, token: str) -> str:
    """Where a file is written before its rename: a dot name ending in ``.tmp``, foreign to every reader."""
    return f".{final}.{token}.tmp"


@dataclass(frozen=True, slots=True)
class SegmentRef:
    """One live segment as its author's state record lists it."""

    number: int
    size: int
    digest: bytes  # the bundle trailer's SHA-256
    base: VersionVector
    top: VersionVector

    def __post_init__(self) -> None:
        if not 0 <= self.number <= _MAX_NUMBER:
            raise _damaged("segment number out of range")
        if not 0 < self.size < 1 << 62:
            raise _damaged("segment size out of range")
        if len(self.digest) != _DIGEST_BYTES:
            raise _damaged("a segment digest is 32 bytes")

    def name(self, device_id: str) -> str:
        return segment_name(device_id, self.number)


@dataclass(frozen=True, slots=True)
class RelayState:
    """A device's state record: what it holds, its live segments, what it found damaged."""

    group_id: bytes
    device_id: str
    sequence: int
    written_ms: int
    vector: VersionVector
    segments: tuple[SegmentRef, ...] = ()
    damaged: tuple[str, ...] = ()
    format: int = field(default=RELAY_FORMAT)

    def __post_init__(self) -> None:
        if self.format != RELAY_FORMAT:
            raise RelayError(
                f"a relay state record uses format {self.format}, and this peer reads format {RELAY_FORMAT};"
                " upgrade peer"
            )
        if len(self.group_id) != 16:
            raise _damaged("a group id is 16 bytes")
        if not is_device_id(self.device_id):
            raise _damaged(f"{self.device_id!r} is not a device id")
        if not 0 < self.sequence <= _MAX_NUMBER:
            raise _damaged("sequence number out of range")
        if not 0 <= self.written_ms < 1 << 62:
            raise _damaged("time out of range")
        if len(self.segments) > MAX_SEGMENTS or len(self.damaged) > MAX_DAMAGED:
            raise _damaged("too many entries")
        numbers = [s.number for s in self.segments]
        if any(a >= b for a, b in zip(numbers, numbers[1:], strict=False)):
            raise _damaged("segment numbers must strictly increase")
        if list(self.damaged) != sorted(set(self.damaged)):
            raise _damaged("damaged names must be sorted and unique")
        for name in self.damaged:
            parsed = parse_relay_name(name)
            if parsed is None or parsed.is_state:
                raise _damaged(f"{name!r} is not a segment name")

    def segment(self, number: int) -> SegmentRef | None:
        for ref in self.segments:
            if ref.number == number:
                return ref
        return None

    def body(self) -> bytes:
        w = Writer().raw(self.group_id).str(self.device_id).uvarint(self.sequence).uvarint(self.written_ms)
        self.vector.encode_into(w)
        w.uvarint(len(self.segments))
        for ref in self.segments:
            w.uvarint(ref.number).uvarint(ref.size).raw(ref.digest)
            ref.base.encode_into(w)
            ref.top.encode_into(w)
        w.uvarint(len(self.damaged))
        for name in self.damaged:
            w.str(name)
        return w.getvalue()

    @classmethod
    def decode_body(cls, data: bytes, format_version: int = RELAY_FORMAT) -> RelayState:
        r = Reader(data, "relay state record")
        group_id = r.raw(16)
        device_id = r.str(limit=64)
        sequence = r.uvarint(limit=_MAX_NUMBER)
        written_ms = r.uvarint(limit=(1 << 62) - 1)
        vector = VersionVector.decode_from(r)
        count = r.uvarint(limit=MAX_SEGMENTS)
        segments = []
        for _ in range(count):
            number = r.uvarint(limit=_MAX_NUMBER)
            size = r.uvarint(limit=(1 << 62) - 1)
            digest = r.raw(_DIGEST_BYTES)
            base = VersionVector.decode_from(r)
            top = VersionVector.decode_from(r)
            segments.append(SegmentRef(number, size, digest, base, top))
        count = r.uvarint(limit=MAX_DAMAGED)
        damaged = tuple(r.str(limit=64) for _ in range(count))
        r.end()
        return cls(group_id, device_id, sequence, written_ms, vector, tuple(segments), damaged, format_version)


def seal_state(state: RelayState, signing_key: Ed25519PrivateKey) -> bytes:
    """The signed bytes of ``state``; the key must be the device's own."""
    raw = signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    if device_id_for(raw) != state.device_id:
        raise ValueError("a state record is signed by its own device")
    signed = Writer().raw(RELAY_STATE_MAGIC).uvarint(RELAY_FORMAT).bytes(state.body()).getvalue()
    return signed + signing_key.sign(_SIGN_LABEL + hashlib.sha256(signed).digest())


def open_state(
    data: bytes,
    *,
    group_id: bytes,
    member_key: Callable[[str], Ed25519PublicKey | None],
    device_id: str | None = None,
) -> RelayState:
    """Decode and verify a state record; ``device_id`` is the device its file name says wrote it.

    Raises :class:`RelayError` for anything damaged, :class:`WrongGroup`,
    :class:`NotAMember` (the signer is not a current member: a revoked
    device's records count for nothing) or :class:`BadSignature`. Nothing
    else escapes.
    """
    if len(data) > MAX_STATE_BYTES:
        raise _damaged(f"{len(data)} bytes, above the limit of {MAX_STATE_BYTES}")
    if not data.startswith(RELAY_STATE_MAGIC):
        raise _damaged("it does not start with the state record marker")
    if len(data) < len(RELAY_STATE_MAGIC) + 2 + _SIGNATURE_BYTES:
        raise _damaged("it is truncated")
    signed, signature = data[:-_SIGNATURE_BYTES], data[-_SIGNATURE_BYTES:]
    try:
        r = Reader(signed[len(RELAY_STATE_MAGIC) :], "relay state record")
        fmt = r.uvarint(limit=1 << 16)
        if fmt != RELAY_FORMAT:
            raise RelayError(
                f"a relay state record uses format {fmt}, and this peer reads format {RELAY_FORMAT}; upgrade peer"
            )
        body = r.bytes(limit=MAX_STATE_BYTES)
        r.end()
        state = RelayState.decode_body(body, fmt)
    except RelayError:
        raise
    except PeerError as e:
        raise _damaged(str(e)) from None
    if state.group_id != group_id:
        raise WrongGroup(
            f"a relay state record belongs to group {state.group_id.hex()}, and this device belongs to group"
            f" {group_id.hex()}; it was put in the wrong folder"
        )
    if device_id is not None and state.device_id != device_id:
        raise _damaged(
            f"the file of device {format_device_id(device_id)} holds the record of {format_device_id(state.device_id)}"
        )
    key = member_key(state.device_id)
    if key is None:
        raise NotAMember(
            f"a relay state record was written by device {format_device_id(state.device_id)}, which is not a"
            " current member; it is ignored"
        )
    try:
        key.verify(signature, _SIGN_LABEL + hashlib.sha256(signed).digest())
    except InvalidSignature:
        raise BadSignature(
            f"the relay state record of device {format_device_id(state.device_id)} does not carry its signature:"
            " it was altered; it is ignored until that device rewrites it"
        ) from None
    return state


def check_segment(owner: str, ref: SegmentRef, header: BundleHeader, size: int, digest: bytes) -> None:
    """Whether a verified bundle is the segment ``ref`` of ``owner`` lists; raises :class:`RelayError`."""
    problems = []
    if header.sender != owner:
        problems.append(f"it was made by {format_device_id(header.sender)}")
    if header.recipient is not None or header.partial:
        problems.append("it is not a bundle for every device")
    if header.base_vector != ref.base or header.sender_vector != ref.top:
        problems.append("its vectors differ from the listing")
    if size != ref.size or digest != ref.digest:
        problems.append("its size or digest differs from the listing (an older or altered copy)")
    if problems:
        raise RelayError(f"segment {ref.name(owner)} does not match its state record: {'; '.join(problems)}")


def next_sequence(last: int, now_ms: int) -> int:
    """A device's next state sequence number: never reused, even after a restore from an old backup."""
    return max(last + 1, now_ms)


def vector_meet(vectors: Iterable[VersionVector]) -> VersionVector:
    """The component-wise minimum: what every one of ``vectors`` covers (empty for no vectors)."""
    result: dict[str, int] | None = None
    for vector in vectors:
        if result is None:
            result = dict(vector.items())
        else:
            result = {k: min(v, vector.get(k)) for k, v in result.items() if vector.get(k)}
    return VersionVector(result or {})


def relay_coverage(start: VersionVector, segments: Iterable[SegmentRef]) -> VersionVector:
    """What a device holding ``start`` reaches by applying ``segments`` each once its base is covered.

    Order does not matter: this is a fixpoint (each pass adds every
    segment whose base the vector so far dominates).
    """
    covered = start
    pending = list(segments)
    progress = True
    while pending and progress:
        progress = False
        left = []
        for ref in pending:
            if covered.dominates(ref.base):
                covered = covered.merge(ref.top)
                progress = True
            else:
                left.append(ref)
        pending = left
    return covered


def prunable(own: Iterable[SegmentRef], vectors: Mapping[str, VersionVector]) -> list[SegmentRef]:
    """The author's segments every current member's vector (``vectors``, one per member) covers."""
    return [ref for ref in own if all(v.dominates(ref.top) for v in vectors.values())]

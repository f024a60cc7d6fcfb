"""Bundles: the file that carries a sync over an air gap.

Layout of a bundle file (``bytes``/``str`` are varint-length-prefixed,
``vv`` is a version vector encoding, ``raw(n)`` is n bytes as they are)::

    raw(16)  magic  b"\\x89PEER-BUNDLE\\r\\n\\x1a\\n"
    uvarint  format version (1)
    bytes    header: raw(16) group id | str sender device id | vv sender vector
             | vv base vector | uvarint creation time (ms since the epoch)
             | str recipient device id ("" for any device) | bool partial
    entries, each  u8 type | bytes payload
             type 1: one membership record (opaque here); all of them first
             type 2: one sealed version
    trailer  u8 0 | uvarint number of entries
             | raw(32) SHA-256 of every byte from the magic through the entry count
             | raw(64) Ed25519 signature of the sender over a domain label and that digest

The *base vector* is what the recipient was known to hold when the bundle
was made; the bundle carries every version of the sender its base does not
cover (a full bundle has an empty base). A *partial* bundle left versions
out on purpose (an export of one project).

Theory of operation. The reader hashes bytes as it consumes them and checks
the count, the digest and the signature only at the trailer, then requires
the stream to end right there. So a truncated file, entries dropped, added
or swapped, bytes appended after the trailer, and any changed byte are all
detected, but only *by the end of the stream*: entries come out as events
before they are known to be genuine. Callers must read the whole file and
see :class:`BundleEnd` before applying anything (read it twice, or keep
what it held aside until the end).

Errors raised by :class:`BundleReader`: :class:`BundleError` for anything
damaged, truncated, out of order, of an unknown format, or made for another
device; :class:`WrongGroup` for a bundle (or a version in it) of another
group; :class:`NotAMember` when the sender is not a member this device
knows; :class:`BadSignature` when the digest matches but the signature
does not. The last three are :class:`TrustError`. Nothing else escapes.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .clock import VersionVector
from .codec import Reader, Writer, decode_whole, encode_uvarint
from .errors import BadSignature, BundleError, DecodeError, LocalProtocolError, NotAMember, PeerError, WrongGroup
from .frames import END_OF_STREAM, MAX_MEMBER_RECORD_BYTES, NEED_DATA, EndOfStream, NeedData, ReceiveBuffer
from .ids import device_id_of, format_device_id, is_device_id
from .sealing import MAX_SEALED_BYTES, SealedVersion

__all__ = [
    "BUNDLE_MAGIC",
    "BUNDLE_FORMAT",
    "BundleHeader",
    "BundleMemberRecord",
    "BundleVersion",
    "BundleEnd",
    "BundleEvent",
    "BundleWriter",
    "BundleReader",
    "SenderKeyLookup",
]

BUNDLE_MAGIC: Final = b"\x89PEER-BUNDLE\r\n\x1a\n"
BUNDLE_FORMAT: Final = 1

_ENTRY_END: Final = 0
_ENTRY_MEMBER: Final = 1
_ENTRY_VERSION: Final = 2
_DIGEST_BYTES: Final = 32
_SIGNATURE_BYTES: Final = 64
_MAX_HEADER_BYTES: Final = 8 << 20
_MAX_VERSION_ENTRY: Final = MAX_SEALED_BYTES + (1 << 20) + 128
_MAX_ENTRIES: Final = 1 << 40
_SIGN_LABEL: Final = b"peer/v1/bundle\x00"

#: Given the sender's device id, its public key if it is a member this device knows.
SenderKeyLookup = Callable[[str], Ed25519PublicKey | None]


def _damaged(why: str) -> BundleError:
    return BundleError(f"the bundle is damaged: {why}; copy the file again or export a new one")


@dataclass(frozen=True, slots=True)
class BundleHeader:
    """Who made a bundle, for which group and device, and what it covers.

    A receiver may merge ``sender_vector`` into its own only after
    :class:`BundleEnd`, only if it stored every version of the bundle, and
    only if :meth:`completes` was true of its vector when the import began.
    """

    group_id: bytes
    sender: str
    sender_vector: VersionVector
    base_vector: VersionVector
    created_ms: int
    recipient: str | None = None
    partial: bool = False
    format: int = BUNDLE_FORMAT

    def __post_init__(self) -> None:
        if self.format != BUNDLE_FORMAT:
            raise BundleError(
                f"this bundle uses format {self.format}, and this peer reads format {BUNDLE_FORMAT}; upgrade peer"
            )
        if len(self.group_id) != 16:
            raise _damaged("a group id is 16 bytes")
        if not is_device_id(self.sender):
            raise _damaged(f"{self.sender!r} is not a device id")
        if self.recipient is not None and not is_device_id(self.recipient):
            raise _damaged(f"{self.recipient!r} is not a device id")
        if not isinstance(self.sender_vector, VersionVector) or not isinstance(self.base_vector, VersionVector):
            raise _damaged("vectors must be VersionVectors")
        if not 0 <= self.created_ms < 1 << 62:
            raise _damaged("creation time out of range")

    @property
    def is_full(self) -> bool:
        """Made for any device: it holds everything the sender had."""
        return not self.base_vector and not self.partial

    def completes(self, local_vector: VersionVector) -> bool:
        """Whether a device holding ``local_vector`` has everything up to ``sender_vector`` once it applied this bundle."""
        return not self.partial and local_vector.dominates(self.base_vector)

    def encode(self) -> bytes:
        w = Writer().raw(self.group_id).str(self.sender)
        self.sender_vector.encode_into(w)
        self.base_vector.encode_into(w)
        w.uvarint(self.created_ms).str(self.recipient or "").bool(self.partial)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes, format_version: int = BUNDLE_FORMAT) -> BundleHeader:
        return decode_whole(lambda r: cls._decode_from(r, format_version), data, "bundle header")

    @classmethod
    def _decode_from(cls, r: Reader, format_version: int) -> BundleHeader:
        group_id = r.raw(16)
        sender = r.str(limit=64)
        sender_vector = VersionVector.decode_from(r)
        base_vector = VersionVector.decode_from(r)
        created_ms = r.uvarint(limit=(1 << 62) - 1)
        recipient = r.str(limit=64)
        partial = r.bool()
        return cls(group_id, sender, sender_vector, base_vector, created_ms, recipient or None, partial, format_version)


@dataclass(frozen=True, slots=True)
class BundleMemberRecord:
    """One membership record (opaque here), not yet known to be genuine."""

    record: bytes


@dataclass(frozen=True, slots=True)
class BundleVersion:
    """One sealed version, not yet known to be part of a genuine bundle."""

    version: SealedVersion


@dataclass(frozen=True, slots=True)
class BundleEnd:
    """The whole bundle verified: count, digest, the sender's signature, nothing after it.

    Only now may the entries that came before be applied.
    """

    header: BundleHeader
    members: int
    versions: int


BundleEvent = BundleHeader | BundleMemberRecord | BundleVersion | BundleEnd


def _signed(digest: bytes) -> bytes:
    return _SIGN_LABEL + digest


@enum.unique
class _Stage(enum.Enum):
    """The part of the file a writer writes, or a reader reads, next (one enum for both).

    The writer goes HEADER (magic, format and header in one go) -> MEMBERS
    -> VERSIONS -> END; the reader also passes MAGIC, FORMAT, TRAILER and
    AFTER_TRAILER, and may end in ERROR.
    """

    MAGIC = "the magic"
    FORMAT = "the format number"
    HEADER = "the header"
    MEMBERS = "the member records"
    VERSIONS = "the versions"
    TRAILER = "the trailer"
    AFTER_TRAILER = "the end of the file"
    END = "the end"
    ERROR = "an error"


class BundleWriter:
    """Produces a bundle as chunks of bytes, to be written in order.

    ``header()`` first, then every ``add_member_record`` and every
    ``add_version`` (members first), then ``finish()``. Each returns the
    bytes to append to the file.
    """

    __slots__ = ("_key", "header_info", "_hash", "_stage", "_entries")

    def __init__(
        self,
        *,
        signing_key: Ed25519PrivateKey,
        group_id: bytes,
        sender_vector: VersionVector,
        created_ms: int,
        base_vector: VersionVector | None = None,
        recipient: str | None = None,
        partial: bool = False,
    ) -> None:
        sender = device_id_of(signing_key)
        self._key = signing_key
        self.header_info = BundleHeader(
            group_id=group_id,
            sender=sender,
            sender_vector=sender_vector,
            base_vector=base_vector if base_vector is not None else VersionVector(),
            created_ms=created_ms,
            recipient=recipient,
            partial=partial,
        )
        self._hash = hashlib.sha256()
        self._stage = _Stage.HEADER
        self._entries = 0

    @property
    def entries(self) -> int:
        return self._entries

    def _emit(self, data: bytes) -> bytes:
        self._hash.update(data)
        return data

    def _expect(self, allowed: tuple[_Stage, ...], what: str) -> None:
        if self._stage not in allowed:
            where = {_Stage.HEADER: "before the header", _Stage.END: "after finish()"}.get(
                self._stage, f"after {self._stage.value}"
            )
            raise LocalProtocolError(f"cannot write {what} {where}")

    def header(self) -> bytes:
        self._expect((_Stage.HEADER,), "the header")
        self._stage = _Stage.MEMBERS
        return self._emit(
            Writer().raw(BUNDLE_MAGIC).uvarint(BUNDLE_FORMAT).bytes(self.header_info.encode()).getvalue()
        )

    def add_member_record(self, record: bytes) -> bytes:
        self._expect((_Stage.MEMBERS,), "a member record")
        if not 0 < len(record) <= MAX_MEMBER_RECORD_BYTES:
            raise LocalProtocolError(f"a membership record is 1 to {MAX_MEMBER_RECORD_BYTES} bytes")
        self._entries += 1
        return self._emit(Writer().raw(bytes((_ENTRY_MEMBER,))).bytes(record).getvalue())

    def add_version(self, version: SealedVersion) -> bytes:
        self._expect((_Stage.MEMBERS, _Stage.VERSIONS), "a version")
        if version.header.group_id != self.header_info.group_id:
            raise LocalProtocolError(f"version {version.header.dot} belongs to another group than this bundle")
        self._stage = _Stage.VERSIONS
        self._entries += 1
        return self._emit(Writer().raw(bytes((_ENTRY_VERSION,))).bytes(version.encode()).getvalue())

    def finish(self) -> bytes:
        """The trailer: entry count, digest, signature."""
        self._expect((_Stage.MEMBERS, _Stage.VERSIONS), "the trailer")
        self._stage = _Stage.END
        counted = self._emit(bytes((_ENTRY_END,)) + encode_uvarint(self._entries))
        digest = self._hash.digest()
        return counted + digest + self._key.sign(_signed(digest))


class BundleReader:
    """Reads a bundle fed in any chunking; ``receive_data(b"")`` marks the end of the file.

    ``next_event()`` returns :class:`BundleHeader`, then each
    :class:`BundleMemberRecord` and :class:`BundleVersion`, then
    :class:`BundleEnd` once the end of the file confirmed nothing follows
    the verified trailer; :data:`NEED_DATA` while bytes are missing;
    :data:`END_OF_STREAM` after :class:`BundleEnd`. See the module
    docstring for the errors. Nothing read is genuine before
    :class:`BundleEnd`.

    ``sender_key`` is called once, at the trailer, so it may consult the
    membership records this very bundle carried (after checking them).
    ``device_id``, when given, refuses bundles made for another device.
    """

    __slots__ = (
        "_group_id",
        "_sender_key",
        "_device_id",
        "_buf",
        "_eof",
        "_hash",
        "_stage",
        "_header",
        "_format",
        "_members",
        "_versions",
        "_error",
    )

    def __init__(
        self,
        *,
        group_id: bytes,
        sender_key: SenderKeyLookup,
        device_id: str | None = None,
    ) -> None:
        self._group_id = group_id
        self._sender_key = sender_key
        self._device_id = device_id
        self._buf = ReceiveBuffer()
        self._eof = False
        self._hash = hashlib.sha256()
        self._stage = _Stage.MAGIC
        self._header: BundleHeader | None = None
        self._format = 0
        self._members = 0
        self._versions = 0
        self._error: PeerError | None = None

    @property
    def header(self) -> BundleHeader | None:
        return self._header

    def receive_data(self, data: bytes) -> None:
        if self._eof:
            if data:
                raise LocalProtocolError("received data after the end of the file")
            return
        if data:
            self._buf.append(data)
        else:
            self._eof = True

    def next_event(self) -> BundleEvent | NeedData | EndOfStream:
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except PeerError as e:
            self._stage = _Stage.ERROR
            self._error = e
            raise

    # Parsing helpers: each returns None when the buffer is too short ---
    def _truncated(self, what: str) -> BundleError:
        return BundleError(f"the bundle is truncated: it ends inside {what}; copy the whole file again")

    def _number(self, pos: int, what: str) -> tuple[int, int] | None:
        """The varint at ``pos`` and the offset after it, in the bundle's own errors."""
        try:
            parsed = self._buf.maybe_uvarint(pos)
        except DecodeError as e:
            raise _damaged(f"{e.message} in {what}") from None
        if parsed is None and self._eof:
            raise self._truncated(what)
        return parsed

    def _have(self, n: int, what: str) -> bool:
        if len(self._buf) >= n:
            return True
        if self._eof:
            raise self._truncated(what)
        return False

    def _consume(self, n: int, *, hashed: bool = True) -> bytes:
        data = self._buf.consume(n)
        if hashed:
            self._hash.update(data)
        return data

    def _next_event(self) -> BundleEvent | NeedData | EndOfStream:
        while True:
            stage = self._stage
            if stage is _Stage.MAGIC:
                prefix = self._buf.peek(len(BUNDLE_MAGIC))
                if self._eof and not prefix:
                    raise BundleError("this file is empty: it is not a peer bundle")
                if not BUNDLE_MAGIC.startswith(prefix):
                    raise BundleError("this file is not a peer bundle (it does not start with the bundle marker)")
                if not self._have(len(BUNDLE_MAGIC), "its first bytes"):
                    return NEED_DATA
                self._consume(len(BUNDLE_MAGIC))
                self._stage = _Stage.FORMAT
            elif stage is _Stage.FORMAT:
                parsed = self._number(0, "the format number")
                if parsed is None:
                    return NEED_DATA
                self._format, end = parsed
                if self._format != BUNDLE_FORMAT:
                    raise BundleError(
                        f"this bundle uses format {self._format}, and this peer reads format {BUNDLE_FORMAT};"
                        " upgrade peer"
                    )
                self._consume(end)
                self._stage = _Stage.HEADER
            elif stage is _Stage.HEADER:
                payload = self._length_prefixed(0, _MAX_HEADER_BYTES, "the header")
                if payload is None:
                    return NEED_DATA
                return self._read_header(payload)
            elif stage is _Stage.MEMBERS or stage is _Stage.VERSIONS:
                return self._read_entry()
            elif stage is _Stage.TRAILER:
                return self._read_trailer()
            elif stage is _Stage.AFTER_TRAILER:
                if self._buf:
                    raise BundleError(
                        f"the bundle has {len(self._buf)} unexpected bytes after its end: it was altered;"
                        " copy it again or export a new one"
                    )
                if not self._eof:
                    return NEED_DATA
                self._stage = _Stage.END
                assert self._header is not None
                return BundleEnd(self._header, self._members, self._versions)
            else:
                return END_OF_STREAM

    def _length_prefixed(self, pos: int, limit: int, what: str) -> bytes | None:
        """Consume ``bytes`` at ``pos`` (after ``pos`` bytes of prefix) once it is complete."""
        parsed = self._number(pos, what)
        if parsed is None:
            return None
        length, start = parsed
        if length > limit:
            raise _damaged(f"{what} claims {length} bytes, above the limit of {limit}")
        if not self._have(start + length, what):
            return None
        return self._consume(start + length)[start:]

    def _read_header(self, payload: bytes) -> BundleHeader:
        try:
            header = BundleHeader.decode(payload, self._format)
        except PeerError as e:
            if isinstance(e, BundleError):
                raise
            raise _damaged(f"unreadable header ({e})") from None
        if header.group_id != self._group_id:
            raise WrongGroup(
                f"this bundle was made for group {header.group_id.hex()}, and this device belongs to group"
                f" {self._group_id.hex()}; import it on a member of that group"
            )
        if header.recipient is not None and self._device_id is not None and header.recipient != self._device_id:
            raise BundleError(
                f"this bundle was made for device {format_device_id(header.recipient)}, not this one"
                f" ({format_device_id(self._device_id)}); import it there, or export one for this device (--for) or for any (--all)"
            )
        self._header = header
        self._stage = _Stage.MEMBERS
        return header

    def _read_entry(self) -> BundleEvent | NeedData | EndOfStream:
        if not self._have(1, "an entry"):
            return NEED_DATA
        kind = self._buf.byte_at(0)
        if kind == _ENTRY_END:
            self._consume(1)
            self._stage = _Stage.TRAILER
            return self._read_trailer()
        if kind == _ENTRY_MEMBER:
            if self._stage is _Stage.VERSIONS:
                raise _damaged("a membership record comes after versions (entries are out of order)")
            record = self._length_prefixed(1, MAX_MEMBER_RECORD_BYTES, "a membership record")
            if record is None:
                return NEED_DATA
            if not record:
                raise _damaged("an empty membership record")
            self._members += 1
            return BundleMemberRecord(record)
        if kind == _ENTRY_VERSION:
            data = self._length_prefixed(1, _MAX_VERSION_ENTRY, "a version")
            if data is None:
                return NEED_DATA
            try:
                version = SealedVersion.decode(data)
            except PeerError as e:
                raise _damaged(f"unreadable version ({e})") from None
            if version.header.group_id != self._group_id:
                raise WrongGroup(
                    f"this bundle holds version {version.header.dot} of group {version.header.group_id.hex()},"
                    f" and this device belongs to group {self._group_id.hex()}"
                )
            self._stage = _Stage.VERSIONS
            self._versions += 1
            return BundleVersion(version)
        raise _damaged(f"unknown entry type 0x{kind:02x}")

    def _read_trailer(self) -> NeedData | EndOfStream | BundleEvent:
        parsed = self._number(0, "the trailer")
        if parsed is None:
            return NEED_DATA
        count, end = parsed
        if not self._have(end + _DIGEST_BYTES + _SIGNATURE_BYTES, "the trailer"):
            return NEED_DATA
        if count > _MAX_ENTRIES or count != self._members + self._versions:
            raise _damaged(f"its trailer counts {count} entries but {self._members + self._versions} were read")
        self._consume(end)
        digest = self._consume(_DIGEST_BYTES, hashed=False)
        signature = self._consume(_SIGNATURE_BYTES, hashed=False)
        if not hmac.compare_digest(digest, self._hash.digest()):
            raise _damaged("its checksum does not match its contents (it was altered or corrupted)")
        assert self._header is not None
        sender = self._header.sender
        public_key = self._sender_key(sender)
        if public_key is None:
            raise NotAMember(
                f"this bundle was made by device {format_device_id(sender)}, which is not a member this device"
                " knows; sync with a member that knows it first"
            )
        try:
            public_key.verify(signature, _signed(digest))
        except InvalidSignature:
            raise BadSignature(
                f"the bundle's signature is not that of device {format_device_id(sender)}: it was tampered with"
            ) from None
        self._stage = _Stage.AFTER_TRAILER
        return self._next_event()

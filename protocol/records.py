"""The memory model as data: a version's header and its (secret) body.

A version travels as a sealed unit (see :mod:`protocol.sealing`): the
:class:`VersionHeader` stays readable, because sync needs it, and the
:class:`MemoryBody` is encrypted. Both have one canonical binary encoding.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field, fields
from typing import Any, Final

from .clock import MAX_COUNTER, Dot
from .codec import Reader, Writer, decode_whole
from .errors import DecodeError, LocalProtocolError, UnsupportedFormat
from .ids import device_of
from .kinds import DEFAULT_KIND, valid_kind

__all__ = [
    "FORMAT_VERSION",
    "MemoryBody",
    "VersionHeader",
    "canonical_json",
    "valid_kind",
    "check_body_size",
]

#: Version of the header/body encodings; a reader refuses anything newer.
FORMAT_VERSION = 1


MAX_CONTENT_BYTES = 1 << 20
MAX_FIELD_BYTES = 1 << 16
MAX_CONTEXT = 4096
MAX_EMBEDDING_BYTES = 4 * 4096
MAX_TAGS = 4096
MAX_METADATA_BYTES = MAX_CONTENT_BYTES
MAX_EMBEDDER_BYTES = 256
_MAX_KIND_BYTES = 64
_NEGATIVE_ZERO = struct.pack("<d", -0.0)
#: created_at, updated_at, the importance flag and value, deleted: between the metadata and the embedder.
_FIXED_BYTES = 8 + 8 + 1 + 8 + 1
#: The largest encoded body that still fits a sealed box (sealing.MAX_SEALED_BYTES,
#: less the nonce and the AEAD tag). Kept here because sealing imports this module.
MAX_BODY_BYTES = (4 << 20) - 12 - 16
#: What a check made before embedding keeps free for the vector still to come.
EMBEDDING_ROOM = MAX_EMBEDDING_BYTES + MAX_EMBEDDER_BYTES + 16


def canonical_json(value: Any) -> str:
    """The one JSON text of a value: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True, slots=True)
class MemoryBody:
    """What a version says about its memory; encrypted on the wire.

    ``metadata`` is canonical JSON text of an object. ``embedding`` is the
    raw little-endian float32 vector made by ``embedder`` (both empty when
    the author did not embed, e.g. for a tombstone).
    """

    content: str
    kind: str = DEFAULT_KIND
    project: str | None = None
    tags: tuple[str, ...] = ()
    metadata: str = "{}"
    created_at: float = 0.0
    updated_at: float = 0.0
    importance: float | None = None
    deleted: bool = False
    embedder: str = ""
    embedding: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        _check_meaning(self)
        # Every limit a reader enforces (decode_from below, and the sealed box)
        # is enforced here too: a body this side can build, every member can read.
        _check_lengths(self)
        check_body_size(self)

    @property
    def metadata_dict(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.metadata)
        return value

    def encode(self) -> bytes:
        w = Writer()
        w.str(self.content).str(self.kind).str(self.project or "")
        w.uvarint(len(self.tags))
        for tag in self.tags:
            w.str(tag)
        w.str(self.metadata).f64(self.created_at).f64(self.updated_at)
        w.bool(self.importance is not None).f64(self.importance or 0.0)
        w.bool(self.deleted).str(self.embedder).bytes(self.embedding)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> MemoryBody:
        # The encoding is canonical (decode_from reads minimal numbers, strict
        # UTF-8 and every byte), so a decoded body's encoded size is len(data):
        # the limit on the whole, which decode_from's field limits leave open.
        if len(data) > MAX_BODY_BYTES:
            raise DecodeError(f"malformed memory body: {len(data):,} bytes, more than a body may have")
        return decode_whole(cls.decode_from, data, "memory body")

    @staticmethod
    def embedding_in(plaintext: bytes) -> bytes:
        """The ``embedding`` field of an encoded body, the other fields skipped undecoded.

        For bodies this device decoded in full when it stored them (building
        the search index decrypts each one again for its vector): it checks
        the layout and the length limits, not the text or the invariants
        :meth:`decode` checks. Raises :class:`DecodeError`.
        """
        r = Reader(plaintext, "memory body")
        r.bytes(MAX_CONTENT_BYTES)
        r.bytes(_MAX_KIND_BYTES)
        r.bytes(MAX_FIELD_BYTES)
        for _ in range(r.uvarint(limit=MAX_TAGS)):
            r.bytes(MAX_FIELD_BYTES)
        r.bytes(MAX_METADATA_BYTES)
        r.raw(_FIXED_BYTES)
        r.bytes(MAX_EMBEDDER_BYTES)
        embedding = r.bytes(MAX_EMBEDDING_BYTES)
        r.end()
        return embedding

    @classmethod
    def decode_from(cls, r: Reader) -> MemoryBody:
        content = r.str(MAX_CONTENT_BYTES)
        kind = r.str(_MAX_KIND_BYTES)
        project = r.str(MAX_FIELD_BYTES) or None
        tags = tuple(r.str(MAX_FIELD_BYTES) for _ in range(r.uvarint(limit=MAX_TAGS)))
        metadata = r.str(MAX_METADATA_BYTES)
        created_at = r.f64()
        updated_at = r.f64()
        has_importance = r.bool()
        importance = r.f64()
        deleted = r.bool()
        embedder = r.str(MAX_EMBEDDER_BYTES)
        embedding = r.bytes(MAX_EMBEDDING_BYTES)
        # Compare the bits: -0.0 == 0.0, and only +0.0 is the canonical "no importance",
        # and the one encoding of an importance of zero (encode writes -0.0 as +0.0).
        if struct.pack("<d", importance) == _NEGATIVE_ZERO:
            raise DecodeError("malformed memory body: importance -0.0 (zero is written +0.0)")
        if not has_importance and struct.pack("<d", importance) != bytes(8):
            raise DecodeError("malformed memory body: importance set without its flag")
        # Not through __init__: the reader enforced every length limit already
        # (and decode the limit on the whole), so only the other checks are left.
        body = object.__new__(cls)
        values = (
            *(content, kind, project, tags, metadata, created_at, updated_at),
            *(importance if has_importance else None, deleted, embedder, embedding),
        )
        for name, value in zip(_BODY_FIELDS, values, strict=True):
            object.__setattr__(body, name, value)
        _check_meaning(body)
        return body


#: MemoryBody's fields in order (decode_from sets them without __init__).
_BODY_FIELDS: Final = tuple(f.name for f in fields(MemoryBody))


def _check_meaning(body: MemoryBody) -> None:
    """A body's checks that no length limit makes (decoding enforces the limits as it reads)."""
    if not valid_kind(body.kind):
        raise LocalProtocolError(f"invalid kind {body.kind!r}")
    if body.project == "":
        raise LocalProtocolError("a project name cannot be empty")
    if tuple(sorted(set(body.tags))) != body.tags:
        raise LocalProtocolError("tags must be sorted and unique")
    if any(not t for t in body.tags):
        raise LocalProtocolError("a tag cannot be empty")
    if body.importance is not None and not (0.0 <= body.importance <= 1.0):
        raise LocalProtocolError("importance must be between 0 and 1")
    for t in (body.created_at, body.updated_at):
        if not math.isfinite(t):
            raise LocalProtocolError("timestamps must be finite")
    if len(body.embedding) % 4:
        raise LocalProtocolError("an embedding is a whole number of float32 values")
    if bool(body.embedding) != bool(body.embedder):
        raise LocalProtocolError("an embedding needs its embedder id and vice versa")
    if body.metadata == "{}":  # most bodies: nothing to parse
        return
    try:
        parsed = json.loads(body.metadata)
    except (ValueError, RecursionError) as e:
        # RecursionError: deeply nested arrays, which a hostile sender can make.
        raise LocalProtocolError("metadata is not valid JSON") from e
    if not isinstance(parsed, dict):
        raise LocalProtocolError("metadata must be a JSON object")


def _utf8_len(text: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as e:
        # A lone surrogate cannot be encoded, so no device could ever read it back.
        raise LocalProtocolError("text holds characters that are not valid Unicode (a lone surrogate)") from e


def _check_lengths(body: MemoryBody) -> None:
    def over(what: str, size: int, limit: int) -> LocalProtocolError:
        return LocalProtocolError(f"{what} is limited to {limit:,} bytes (this one has {size:,})")

    if (n := _utf8_len(body.content)) > MAX_CONTENT_BYTES:
        raise over("a memory's content", n, MAX_CONTENT_BYTES)
    if _utf8_len(body.kind) > _MAX_KIND_BYTES:
        raise LocalProtocolError(f"invalid kind {body.kind!r}")
    if body.project is not None and (n := _utf8_len(body.project)) > MAX_FIELD_BYTES:
        raise over("a project name", n, MAX_FIELD_BYTES)
    if len(body.tags) > MAX_TAGS:
        raise LocalProtocolError(f"a memory can have at most {MAX_TAGS:,} tags (this one has {len(body.tags):,})")
    for tag in body.tags:
        if (n := _utf8_len(tag)) > MAX_FIELD_BYTES:
            raise over("a tag", n, MAX_FIELD_BYTES)
    if (n := _utf8_len(body.metadata)) > MAX_METADATA_BYTES:
        raise over("the metadata (as JSON)", n, MAX_METADATA_BYTES)
    if (n := _utf8_len(body.embedder)) > MAX_EMBEDDER_BYTES:
        raise over("an embedder id", n, MAX_EMBEDDER_BYTES)
    if len(body.embedding) > MAX_EMBEDDING_BYTES:
        raise over("an embedding", len(body.embedding), MAX_EMBEDDING_BYTES)


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def _field(n: int) -> int:
    """Bytes a length-prefixed field of ``n`` bytes takes (see :class:`Writer`)."""
    return _varint_len(n) + n


def encoded_size(body: MemoryBody) -> int:
    """``len(body.encode())``, counted from the fields' lengths without encoding them (receiving checks every body)."""
    tags = sum(_field(_utf8_len(tag)) for tag in body.tags)
    return (
        _field(_utf8_len(body.content))
        + _field(_utf8_len(body.kind))
        + _field(_utf8_len(body.project or ""))
        + _varint_len(len(body.tags))
        + tags
        + _field(_utf8_len(body.metadata))
        + _FIXED_BYTES
        + _field(_utf8_len(body.embedder))
        + _field(len(body.embedding))
    )


def check_body_size(body: MemoryBody, *, reserve: int = 0) -> None:
    """Refuse a body whose encoding (plus ``reserve`` bytes still to come) would not fit a sealed box.

    Each field may be within its own limit and the whole still too big (4,096
    tags of 1 KiB and 1 MiB of content): readers refuse the box, so writers must.
    ``reserve`` is :data:`EMBEDDING_ROOM` for a check made before the vector exists.
    """
    size = encoded_size(body) + reserve
    if size > MAX_BODY_BYTES:
        raise LocalProtocolError(
            f"a memory is limited to {MAX_BODY_BYTES:,} bytes in all (content, tags, project, metadata"
            f" and vector; this one needs {size:,})"
        )


#: What ``str(uuid.UUID(...))`` gives, and nothing else: the one text of a memory id.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def uuid_text(raw: bytes) -> str:
    """``str(uuid.UUID(bytes=raw))``, without building the UUID (every received version has one)."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class VersionHeader:
    """The readable, authenticated part of a sealed version.

    ``context`` holds the dots of the versions this one supersedes, sorted.
    The author is the device of ``dot.origin``: a device can only write
    dots of its own replicas.
    """

    group_id: bytes
    epoch: int
    memory_id: str
    dot: Dot
    context: tuple[Dot, ...]
    hlc: int
    format: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.format != FORMAT_VERSION:
            raise UnsupportedFormat(
                f"version format {self.format} is not supported (this peer reads {FORMAT_VERSION}); upgrade peer"
            )
        if len(self.group_id) != 16:
            raise LocalProtocolError("a group id is 16 bytes")
        if not 0 <= self.epoch < 1 << 32:
            raise LocalProtocolError("key epoch out of range")
        if not _CANONICAL_UUID.fullmatch(self.memory_id):
            raise LocalProtocolError(f"invalid memory id {self.memory_id!r}")
        if tuple(sorted(set(self.context))) != self.context:
            raise LocalProtocolError("a version's context must be sorted and unique")
        if self.dot in self.context:
            raise LocalProtocolError("a version cannot supersede itself")
        if not 0 <= self.hlc <= MAX_COUNTER << 16:
            raise LocalProtocolError("clock time out of range")

    @property
    def author(self) -> str:
        return device_of(self.dot.origin)

    def encode_into(self, w: Writer) -> None:
        w.uvarint(self.format).raw(self.group_id).uvarint(self.epoch)
        w.raw(bytes.fromhex(self.memory_id.replace("-", "")))
        self.dot.encode_into(w)
        w.uvarint(len(self.context))
        for dot in self.context:
            dot.encode_into(w)
        w.uvarint(self.hlc)

    def encode(self) -> bytes:
        w = Writer()
        self.encode_into(w)
        return w.getvalue()

    @classmethod
    def decode_from(cls, r: Reader) -> VersionHeader:
        fmt = r.uvarint(limit=1 << 16)
        if fmt != FORMAT_VERSION:
            raise UnsupportedFormat(
                f"version format {fmt} is not supported (this peer reads {FORMAT_VERSION}); upgrade peer"
            )
        group_id = r.raw(16)
        epoch = r.uvarint(limit=(1 << 32) - 1)
        memory_id = uuid_text(r.raw(16))
        dot = Dot.decode_from(r)
        context = tuple(Dot.decode_from(r) for _ in range(r.uvarint(limit=MAX_CONTEXT)))
        hlc = r.uvarint(limit=MAX_COUNTER << 16)
        return cls(group_id=group_id, epoch=epoch, memory_id=memory_id, dot=dot, context=context, hlc=hlc, format=fmt)

    @classmethod
    def decode(cls, data: bytes) -> VersionHeader:
        return decode_whole(cls.decode_from, data, "version header")

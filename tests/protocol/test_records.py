"""Canonical encodings: round trips, non-minimal numbers, truncations, trailing bytes."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    KINDS,
    MAX_COUNTER,
    DecodeError,
    Dot,
    LocalProtocolError,
    Membership,
    MemoryBody,
    SealedVersion,
    UnsupportedFormat,
    VersionHeader,
    VersionVector,
    canonical_json,
    decode_membership_record,
    device_id_of,
    found_group,
    raw_public_key,
    seal,
)
from protocol.codec import MAX_VARINT_BYTES, Reader, Writer, encode_uvarint
from protocol.membership import KeyEpochRecord, MemberRecord, RevocationRecord
from protocol.records import MAX_BODY_BYTES, MAX_CONTENT_BYTES, encoded_size

B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
device_ids = st.text(alphabet=B32, min_size=26, max_size=26)
replica_ids = st.one_of(device_ids, st.tuples(device_ids, st.integers(1, 999_999_999)).map(lambda t: f"{t[0]}.{t[1]}"))
dots = st.builds(Dot, replica_ids, st.integers(1, MAX_COUNTER))


@st.composite
def headers(draw: st.DrawFn) -> VersionHeader:
    dot = draw(dots)
    context = draw(st.sets(dots, max_size=5))
    context.discard(dot)
    return VersionHeader(
        group_id=draw(st.binary(min_size=16, max_size=16)),
        epoch=draw(st.integers(0, (1 << 32) - 1)),
        memory_id=str(draw(st.uuids())),
        dot=dot,
        context=tuple(sorted(context)),
        hlc=draw(st.integers(0, MAX_COUNTER << 16)),
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
finite = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def bodies(draw: st.DrawFn) -> MemoryBody:
    embedder = draw(st.sampled_from(["", "minilm-l6-v2-int8"]))
    embedding = draw(st.binary(min_size=4, max_size=64).map(lambda b: b[: len(b) // 4 * 4])) if embedder else b""
    if not embedding:
        embedder = ""
    return MemoryBody(
        content=draw(st.text(max_size=200)),
        kind=draw(st.sampled_from(KINDS) | st.from_regex(r"\A[a-z][a-z0-9_\-]{0,10}\Z")),
        project=draw(st.none() | st.text(min_size=1, max_size=20)),
        tags=tuple(sorted(draw(st.sets(st.text(min_size=1, max_size=10), max_size=4)))),
        metadata=canonical_json(draw(st.dictionaries(st.text(max_size=5), json_values, max_size=3))),
        created_at=draw(finite),
        updated_at=draw(finite),
        importance=draw(st.none() | st.floats(0.0, 1.0)),
        deleted=draw(st.booleans()),
        embedder=embedder,
        embedding=embedding,
    )


vectors = st.dictionaries(replica_ids, st.integers(0, MAX_COUNTER), max_size=6).map(VersionVector)


@settings(max_examples=200)
@given(headers())
def test_header_round_trip(h: VersionHeader) -> None:
    data = h.encode()
    assert VersionHeader.decode(data) == h
    assert VersionHeader.decode(data).encode() == data


@settings(max_examples=200)
@given(bodies())
def test_body_round_trip(b: MemoryBody) -> None:
    data = b.encode()
    again = MemoryBody.decode(data)
    assert again == b and again.encode() == data
    assert encoded_size(b) == len(data)


@settings(max_examples=50)
@given(st.integers(0, 70_000), st.integers(0, 300), st.integers(0, 20_000), st.sampled_from(["é", "x", "😀"]))
def test_body_size_is_counted_right_across_varint_widths(content: int, tags: int, metadata: int, char: str) -> None:
    """The size check counts field lengths instead of encoding: it must agree at every varint width."""
    b = MemoryBody(
        content=char * content,
        tags=tuple(sorted(f"t{i:04d}{char}" for i in range(tags))),
        metadata=canonical_json({"k": "v" * metadata}),
        embedder="e",
        embedding=bytes(4 * (content % 500 + 1)),
    )
    assert encoded_size(b) == len(b.encode())


@settings(max_examples=200)
@given(vectors)
def test_vector_round_trip(v: VersionVector) -> None:
    assert VersionVector.decode(v.encode()) == v


@given(st.integers(0, 2**90))
def test_uvarint_round_trip(n: int) -> None:
    data = encode_uvarint(n)
    if len(data) <= MAX_VARINT_BYTES:
        r = Reader(data)
        assert r.uvarint() == n
        r.end()


@pytest.mark.parametrize("data", [b"\x80\x00", b"\x81\x00", b"\xff\x80\x00", b"\x80\x80\x80\x00"])
def test_non_minimal_numbers_are_refused(data: bytes) -> None:
    with pytest.raises(DecodeError, match="non-minimal"):
        Reader(data).uvarint()


def test_overlong_numbers_are_refused() -> None:
    with pytest.raises(DecodeError, match="too long"):
        Reader(b"\xff" * MAX_VARINT_BYTES + b"\x01").uvarint()


def test_the_largest_clock_time_fits() -> None:
    h = VersionHeader(bytes(16), 0, str(uuid.UUID(int=1)), Dot("A" * 26, 1), (), MAX_COUNTER << 16)
    assert VersionHeader.decode(h.encode()) == h


def test_a_non_minimal_length_inside_a_header_is_refused() -> None:
    h = VersionHeader(bytes(16), 0, str(uuid.UUID(int=1)), Dot("A" * 26, 1), (), 0)
    data = h.encode()
    # format(1) | group id(16) | epoch(1) | memory id(16) | origin length(1)...
    assert data[34] == 26
    padded = data[:34] + b"\x9a\x00" + data[35:]
    with pytest.raises(DecodeError, match="non-minimal"):
        VersionHeader.decode(padded)


def test_vector_entries_must_be_sorted_unique_and_non_zero() -> None:
    a, b = "A" * 26, "B" * 26
    for entries in ([(b, 1), (a, 1)], [(a, 1), (a, 2)], [(a, 0)]):
        w = Writer().uvarint(len(entries))
        for origin, counter in entries:
            w.str(origin).uvarint(counter)
        with pytest.raises(DecodeError):
            VersionVector.decode(w.getvalue())


def test_absent_importance_must_be_positive_zero() -> None:
    data = MemoryBody("x").encode()
    # ... | has_importance(1) | importance(8) | deleted(1) | embedder(1) | embedding(1)
    tail = data[-12:]
    assert tail[:1] == b"\x00" and tail[1:9] == bytes(8)
    with pytest.raises(DecodeError, match="importance"):
        MemoryBody.decode(data[:-12] + b"\x00" + struct.pack("<d", -0.0) + tail[9:])


def test_an_importance_of_zero_has_one_encoding() -> None:
    """A fuzz find: -0.0 decoded, then re-encoded as +0.0 (two encodings of one body)."""
    zero = MemoryBody("x", importance=0.0).encode()
    assert MemoryBody("x", importance=-0.0).encode() == zero  # a local -0.0 is written +0.0
    assert MemoryBody.decode(zero).encode() == zero
    tail = zero[-12:]
    assert tail[:1] == b"\x01" and tail[1:9] == bytes(8)
    with pytest.raises(DecodeError, match="importance"):
        MemoryBody.decode(zero[:-12] + b"\x01" + struct.pack("<d", -0.0) + tail[9:])
    found = bytes.fromhex("00046e6f74650000027b7d00000000000000000000000000000000010000000000000080010000")
    with pytest.raises(DecodeError, match="importance"):
        MemoryBody.decode(found)


def test_a_body_too_big_as_a_whole_is_refused_built_or_received() -> None:
    """Every field within its own limit, the whole over what a sealed box holds: decode skips no check."""
    content, metadata = "c" * MAX_CONTENT_BYTES, canonical_json({"m": "x" * (MAX_CONTENT_BYTES - 16)})
    tags = tuple(f"{i:04d}" + "t" * 1020 for i in range(2100))
    with pytest.raises(LocalProtocolError, match="in all"):
        MemoryBody(content, tags=tags, metadata=metadata)
    w = Writer().str(content).str("note").str("").uvarint(len(tags))
    for tag in tags:
        w.str(tag)
    w.str(metadata).f64(0.0).f64(0.0).bool(False).f64(0.0).bool(False).str("").bytes(b"")
    data = w.getvalue()
    assert len(data) > MAX_BODY_BYTES
    with pytest.raises(DecodeError, match="malformed memory body"):
        MemoryBody.decode(data)
    fits = MemoryBody(content, tags=tags[:1000], metadata=metadata)
    assert MemoryBody.decode(fits.encode()) == fits


def test_hostile_metadata_is_refused_built_or_received() -> None:
    with pytest.raises(LocalProtocolError):
        MemoryBody("x", metadata="[" * 100_000 + "]" * 100_000)
    with pytest.raises(LocalProtocolError):
        MemoryBody("x", metadata="[1]")
    with pytest.raises(LocalProtocolError):
        MemoryBody("x", metadata="{")
    # The same metadata in bytes from elsewhere is the sender's fault: a DecodeError.
    data = MemoryBody("x", metadata='{"a":1}').encode().replace(b'{"a":1}', b"[1,2,3]")
    with pytest.raises(DecodeError, match="malformed memory body: metadata must be a JSON object"):
        MemoryBody.decode(data)


def test_header_of_a_newer_format_asks_for_an_upgrade() -> None:
    h = VersionHeader(bytes(16), 0, str(uuid.UUID(int=1)), Dot("A" * 26, 1), (), 0)
    with pytest.raises(UnsupportedFormat, match="upgrade"):
        VersionHeader.decode(b"\x02" + h.encode()[1:])


def test_replica_ids_are_matched_whole() -> None:
    with pytest.raises(LocalProtocolError):
        Dot("A" * 26 + "\n", 1)
    with pytest.raises(DecodeError):
        Dot.parse("A" * 26 + "\n:1")


# Decoders tested whole, one byte at a time, and with trailing data ------------


def _samples() -> list[tuple[str, Callable[[bytes], object], bytes]]:
    signing = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    kex = X25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
    public = raw_public_key(signing)
    from protocol import device_id_for

    author = device_id_for(public)
    header = VersionHeader(
        bytes(range(16)), 1, str(uuid.UUID(int=99)), Dot(author, 10), (Dot("B" * 26 + ".2", 3),), 10 << 16
    )
    body = MemoryBody(
        "hello", tags=("a", "b"), metadata='{"k":[1,2]}', importance=0.5, embedder="e", embedding=b"\0" * 8
    )
    sealed = seal(header, body, signing_key=signing, group_key=bytes(32), nonce=bytes(12)).encode()
    group_id, records, key0 = found_group(signing, kex, name="laptop", now_ms=5, nonce=bytes(16))
    m = Membership(group_id)
    m.add_all(records)
    other = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    other_kex = X25519PrivateKey.from_private_bytes(bytes(range(2, 34)))
    m.add_member(
        signing,
        kex,
        device_public_key=raw_public_key(other),
        kex_public_key=raw_public_key(other_kex),
        name="desktop",
        now_ms=6,
        epoch_keys={0: key0},
    )
    other_id = device_id_of(other)
    revocation, _ = m.revoke(
        signing,
        kex,
        device_id=other_id,
        now_ms=7,
        epoch_keys={0: key0},
        cutoff={other_id: 40, other_id + ".3": 9},
    )
    by_type = {type(decode_membership_record(r)): r for r in m.records()}
    return [
        ("sealed version", SealedVersion.decode, sealed),
        ("version header", VersionHeader.decode, header.encode()),
        ("memory body", MemoryBody.decode, body.encode()),
        ("version vector", VersionVector.decode, VersionVector({author: 5, "C" * 26: 9}).encode()),
        ("member record", MemberRecord.decode, by_type[MemberRecord]),
        ("revocation record", RevocationRecord.decode, by_type[RevocationRecord]),
        ("key epoch record", KeyEpochRecord.decode, by_type[KeyEpochRecord]),
        ("any membership record", decode_membership_record, by_type[KeyEpochRecord]),
    ]


SAMPLES = _samples()


@pytest.mark.parametrize(("name", "decode", "data"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_decoder_whole_prefixes_and_trailing(name: str, decode: Callable[[bytes], Any], data: bytes) -> None:
    value = decode(data)
    encode = value.encode
    assert encode() == data, f"{name} does not re-encode to the same bytes"
    for n in range(len(data)):
        with pytest.raises(DecodeError):
            decode(data[:n])
    for extra in (b"\x00", b"\x01\x02", data):
        with pytest.raises(DecodeError, match="trailing"):
            decode(data + extra)


def test_membership_records_refuse_other_record_types() -> None:
    by_name = {name: data for name, _, data in SAMPLES}
    with pytest.raises(DecodeError):
        MemberRecord.decode(by_name["revocation record"])
    with pytest.raises(DecodeError):
        RevocationRecord.decode(by_name["key epoch record"])
    with pytest.raises(DecodeError, match="unknown record type"):
        decode_membership_record(b"\x09\x01")


@settings(max_examples=50)
@given(st.data())
def test_membership_records_round_trip(data: st.DataObject) -> None:
    group_id = data.draw(st.binary(min_size=16, max_size=16))
    signature = data.draw(st.binary(min_size=64, max_size=64))
    key = data.draw(st.binary(min_size=32, max_size=32))
    nonce = data.draw(st.none() | st.binary(min_size=16, max_size=16))
    from protocol import device_id_for

    added_by = device_id_for(key) if nonce is not None else data.draw(device_ids)
    member = MemberRecord(
        group_id,
        key,
        key[::-1],
        data.draw(st.text(max_size=40)),
        added_by,
        data.draw(st.integers(0, MAX_COUNTER)),
        nonce,
        signature,
    )
    revoked = data.draw(device_ids)
    incarnations = data.draw(st.sets(st.integers(0, 999_999_999), max_size=4))
    cutoff = tuple(sorted((revoked if n == 0 else f"{revoked}.{n}", c) for n, c in zip(incarnations, range(1, 9))))
    revocation = RevocationRecord(group_id, revoked, data.draw(device_ids), 5, signature, cutoff)
    key_epoch = KeyEpochRecord(
        group_id,
        data.draw(st.integers(0, (1 << 32) - 1)),
        data.draw(device_ids),
        data.draw(device_ids),
        key[:16],
        key,
        data.draw(st.binary(min_size=48, max_size=48)),
        signature,
    )
    for record in (member, revocation, key_epoch):
        assert decode_membership_record(record.encode()) == record

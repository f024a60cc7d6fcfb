"""Fuzzing the decoders: random and mutated bytes raise only peer's own errors.

Example counts (``max_examples``), 10,500 in all:

* random bytes, fed to every decoder:          2,000
* mutated sealed versions:                      2,000
* mutated version headers:                      1,000
* mutated memory bodies:                        1,500
* mutated version vectors:                      1,000
* mutated membership records (decode and add):  2,000
* random bytes shaped like each membership record (valid prefix, random tail): 1,000

A decoder that accepts mutated bytes must also be canonical: re-encoding
what it decoded gives back exactly those bytes, so no two encodings mean
the same thing (which would let a tampered copy pass as a different one).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    Dot,
    Membership,
    MemoryBody,
    PeerError,
    SealedVersion,
    VersionHeader,
    VersionVector,
    decode_membership_record,
    device_id_for,
    found_group,
    open_version,
    raw_public_key,
    seal,
)
from protocol.membership import KeyEpochRecord, MemberRecord, RevocationRecord

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _public(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return raw_public_key(key)


AUTHOR = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
AUTHOR_KEX = X25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
AUTHOR_ID = device_id_for(_public(AUTHOR))
SECOND = Ed25519PrivateKey.from_private_bytes(bytes(range(64, 96)))
SECOND_KEX = X25519PrivateKey.from_private_bytes(bytes(range(96, 128)))
GROUP_ID, _FOUNDING, GROUP_KEY = found_group(AUTHOR, AUTHOR_KEX, name="fuzz", now_ms=1, nonce=bytes(16))


def _membership() -> tuple[Membership, list[bytes]]:
    m = Membership(GROUP_ID)
    m.add_all(_FOUNDING)
    m.add_member(
        AUTHOR,
        AUTHOR_KEX,
        device_public_key=_public(SECOND),
        kex_public_key=_public(SECOND_KEX),
        name="second",
        now_ms=2,
        epoch_keys={0: GROUP_KEY},
    )
    m.revoke(AUTHOR, AUTHOR_KEX, device_id=device_id_for(_public(SECOND)), now_ms=3, epoch_keys={0: GROUP_KEY})
    return m, m.records()


MEMBERSHIP, MEMBER_RECORDS = _membership()

HEADERS = [
    VersionHeader(GROUP_ID, 0, str(uuid.UUID(int=1)), Dot(AUTHOR_ID, 5), (), 5 << 16),
    VersionHeader(
        GROUP_ID,
        1,
        str(uuid.UUID(int=2**100)),
        Dot(AUTHOR_ID + ".2", 1_700_000_000_000),
        (Dot("B" * 26, 3), Dot("C" * 26 + ".1", 9)),
        1_700_000_000_000 << 16 | 7,
    ),
]
BODIES = [
    MemoryBody("x"),
    MemoryBody(
        "Prefer trio nurseries.",
        kind="decision",
        project="peer",
        tags=("a", "b"),
        metadata='{"k":[1,{"n":null}]}',
        created_at=1.5,
        updated_at=2.5,
        importance=0.25,
        embedder="minilm",
        embedding=bytes(range(16)),
    ),
    MemoryBody("", deleted=True),
]
SEALED = [
    seal(h, b, signing_key=AUTHOR, group_key=GROUP_KEY, nonce=bytes(12)).encode()
    for h in HEADERS
    for b in BODIES[:2]
]
VECTORS = [VersionVector().encode(), VersionVector({AUTHOR_ID: 5, "B" * 26 + ".3": 2**40}).encode()]


def _reencode_sealed(data: bytes) -> bytes:
    sealed = SealedVersion.decode(data)
    # Decoding succeeded: opening must still fail cleanly or give a body.
    try:
        open_version(sealed, group_id=GROUP_ID, group_keys={0: GROUP_KEY, 1: GROUP_KEY}, member_key=MEMBERSHIP.member_key)
    except PeerError:
        pass
    return sealed.encode()


def _reencode_record(data: bytes) -> bytes:
    record = decode_membership_record(data)
    try:
        Membership(GROUP_ID).add_all(MEMBER_RECORDS[:1] + [data], strict=True)
    except PeerError:
        pass
    return record.encode()


DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "sealed version": _reencode_sealed,
    "version header": lambda d: VersionHeader.decode(d).encode(),
    "memory body": lambda d: MemoryBody.decode(d).encode(),
    "version vector": lambda d: VersionVector.decode(d).encode(),
    "membership record": _reencode_record,
    "member record": lambda d: MemberRecord.decode(d).encode(),
    "revocation record": lambda d: RevocationRecord.decode(d).encode(),
    "key epoch record": lambda d: KeyEpochRecord.decode(d).encode(),
}


def check(name: str, data: bytes) -> None:
    try:
        again = DECODERS[name](data)
    except PeerError:
        return
    assert again == data, f"{name}: {data.hex()} decoded but re-encodes differently"


def mutate(data: bytes, rnd: random.Random) -> bytes:
    """1-4 bit flips, truncations, insertions, duplications, deletions or byte overwrites."""
    out = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.choice(("flip", "truncate", "insert", "duplicate", "delete", "set"))
        n = len(out)
        if op == "flip" and n:
            i = rnd.randrange(n * 8)
            out[i // 8] ^= 1 << (i % 8)
        elif op == "truncate":
            del out[rnd.randint(0, n) :]
        elif op == "insert":
            i = rnd.randint(0, n)
            out[i:i] = rnd.randbytes(rnd.randint(1, 8))
        elif op == "duplicate" and n:
            i = rnd.randrange(n)
            j = rnd.randint(i + 1, min(n, i + 64))
            out[j:j] = out[i:j]
        elif op == "delete" and n:
            i = rnd.randrange(n)
            del out[i : rnd.randint(i + 1, min(n, i + 8))]
        elif op == "set" and n:
            out[rnd.randrange(n)] = rnd.choice((0x00, 0x01, 0x7F, 0x80, 0xFF))
    return bytes(out)


def mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    # One draw per example (a seeded Random) keeps Hypothesis's per-example
    # overhead low enough for ten thousand cases in a few seconds.
    return st.builds(lambda seed, n: mutate(seed, random.Random(n)), st.sampled_from(seeds), st.integers(0, 2**64))


@settings(FAST, max_examples=2000)
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    for name in DECODERS:
        check(name, data)


@settings(FAST, max_examples=2000)
@given(mutated(SEALED))
def test_mutated_sealed_versions(data: bytes) -> None:
    check("sealed version", data)


@settings(FAST, max_examples=1000)
@given(mutated([h.encode() for h in HEADERS]))
def test_mutated_headers(data: bytes) -> None:
    check("version header", data)


@settings(FAST, max_examples=1500)
@given(mutated([b.encode() for b in BODIES]))
def test_mutated_bodies(data: bytes) -> None:
    check("memory body", data)


@settings(FAST, max_examples=1000)
@given(mutated(VECTORS))
def test_mutated_vectors(data: bytes) -> None:
    check("version vector", data)


@settings(FAST, max_examples=2000)
@given(mutated(MEMBER_RECORDS))
def test_mutated_membership_records(data: bytes) -> None:
    for name in ("membership record", "member record", "revocation record", "key epoch record"):
        check(name, data)


@settings(FAST, max_examples=1000)
@given(st.sampled_from(MEMBER_RECORDS), st.integers(0, 2**64))
def test_valid_prefix_random_tail(seed: bytes, n: int) -> None:
    rnd = random.Random(n)
    check("membership record", seed[: rnd.randint(0, 80)] + rnd.randbytes(rnd.randint(0, 200)))


def test_the_seeds_are_valid() -> None:
    """The mutations start from encodings that do decode, or the fuzzing proves little."""
    for data in SEALED:
        assert _reencode_sealed(data) == data
    for data in MEMBER_RECORDS:
        assert decode_membership_record(data).encode() == data
    assert {type(decode_membership_record(d)) for d in MEMBER_RECORDS} == {
        MemberRecord,
        RevocationRecord,
        KeyEpochRecord,
    }

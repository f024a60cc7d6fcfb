"""Fuzzing the relay decoders: random and mutated state records and names raise only peer's own errors.

Example counts: random bytes 1,000; mutated state records 2,000; random names 1,000.
A state record that still opens after a mutation must be canonical: sealing
what it decoded gives back exactly those bytes (Ed25519 signatures are
deterministic), so no two encodings mean the same thing.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    RELAY_STATE_MAGIC,
    PeerError,
    RelayState,
    SegmentRef,
    VersionVector,
    device_id_for,
    open_state,
    parse_relay_name,
    seal_state,
    segment_name,
)

GROUP = bytes(range(16))
KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
DEVICE = device_id_for(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
OTHER = device_id_for(b"\x08" * 32)


def lookup(device: str) -> Ed25519PublicKey | None:
    return KEY.public_key() if device == DEVICE else None


STATE = RelayState(
    GROUP,
    DEVICE,
    12345,
    999,
    VersionVector({DEVICE: 77, OTHER: 3}),
    (
        SegmentRef(1, 500, b"\x01" * 32, VersionVector(), VersionVector({DEVICE: 10})),
        SegmentRef(2, 900, b"\x02" * 32, VersionVector({DEVICE: 10}), VersionVector({DEVICE: 77, OTHER: 3})),
    ),
    (segment_name(OTHER, 4),),
)
SEALED = seal_state(STATE, KEY)


def check(data: bytes) -> None:
    try:
        state = open_state(data, group_id=GROUP, member_key=lookup)
    except PeerError:
        return
    assert seal_state(state, KEY) == data


@settings(max_examples=1000)
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    check(data)
    check(RELAY_STATE_MAGIC + data)


@settings(max_examples=2000)
@given(st.lists(st.tuples(st.integers(0, len(SEALED) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, len(SEALED)))
def test_mutated_state_records(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(SEALED)
    for at, value in edits:
        data[at] = value
    check(bytes(data))
    check(bytes(data[:cut]))
    body_only = RELAY_STATE_MAGIC + bytes(data[len(RELAY_STATE_MAGIC):cut])
    check(body_only)


@settings(max_examples=1000)
@given(st.text(max_size=80))
def test_random_names(name: str) -> None:
    parsed = parse_relay_name(name)
    if parsed is not None:
        assert name in (f"{parsed.device_id}.state", segment_name(parsed.device_id, parsed.number or 0))

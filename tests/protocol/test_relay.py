"""The relay format: names, signed state records, segment matching, coverage and pruning."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol import (
    BadSignature,
    BundleHeader,
    NotAMember,
    RelayError,
    RelayState,
    SegmentRef,
    VersionVector,
    WrongGroup,
    check_segment,
    device_id_for,
    next_sequence,
    open_state,
    parse_relay_name,
    prunable,
    relay_coverage,
    seal_state,
    segment_name,
    state_name,
    temporary_name,
    vector_meet,
)

GROUP = bytes(range(16))


def key_and_id(seed: int) -> tuple[Ed25519PrivateKey, str]:
    key = Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
    return key, device_id_for(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


KEY, DEVICE = key_and_id(1)
OTHER_KEY, OTHER = key_and_id(2)


def vv(**entries: int) -> VersionVector:
    return VersionVector({k.upper() if len(k) == 1 else k: v for k, v in entries.items()})


def ref(number: int, base: VersionVector, top: VersionVector) -> SegmentRef:
    return SegmentRef(number, 100 + number, bytes([number % 256]) * 32, base, top)


def sample_state() -> RelayState:
    return RelayState(
        group_id=GROUP,
        device_id=DEVICE,
        sequence=1_700_000_000_123,
        written_ms=1_700_000_000_000,
        vector=VersionVector({DEVICE: 5, OTHER: 3}),
        segments=(ref(1, VersionVector(), VersionVector({DEVICE: 3})), ref(7, VersionVector({DEVICE: 3}), VersionVector({DEVICE: 5}))),
        damaged=(segment_name(OTHER, 2),),
    )


def members(*keys: Ed25519PrivateKey) -> dict[str, Ed25519PublicKey]:
    out = {}
    for k in keys:
        pub = k.public_key()
        out[device_id_for(pub.public_bytes(Encoding.Raw, PublicFormat.Raw))] = pub
    return out


def test_a_state_record_round_trips_and_verifies() -> None:
    state = sample_state()
    data = seal_state(state, KEY)
    assert open_state(data, group_id=GROUP, member_key=members(KEY).get, device_id=DEVICE) == state


def test_every_changed_byte_of_a_state_record_is_refused() -> None:
    data = seal_state(sample_state(), KEY)
    lookup = members(KEY).get
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises((RelayError, BadSignature, WrongGroup, NotAMember)):
            open_state(bytes(bad), group_id=GROUP, member_key=lookup)
    for cut in range(len(data)):
        with pytest.raises(RelayError):
            open_state(data[:cut], group_id=GROUP, member_key=lookup)
    with pytest.raises((RelayError, BadSignature)):
        open_state(data + b"\x00", group_id=GROUP, member_key=lookup)


def test_a_state_record_of_a_non_member_another_group_or_another_file_is_refused() -> None:
    data = seal_state(sample_state(), KEY)
    with pytest.raises(NotAMember):
        open_state(data, group_id=GROUP, member_key=members(OTHER_KEY).get)
    with pytest.raises(WrongGroup):
        open_state(data, group_id=bytes(16), member_key=members(KEY).get)
    with pytest.raises(RelayError, match="holds the record of"):
        open_state(data, group_id=GROUP, member_key=members(KEY).get, device_id=OTHER)
    with pytest.raises(ValueError):
        seal_state(sample_state(), OTHER_KEY)


def test_names_a_device_owns_and_foreign_names() -> None:
    seg = segment_name(DEVICE, 0x1234)
    assert seg == f"{DEVICE}-0000000000001234.seg"
    assert parse_relay_name(seg) is not None and parse_relay_name(seg).number == 0x1234  # type: ignore[union-attr]
    st = parse_relay_name(state_name(DEVICE))
    assert st is not None and st.is_state and st.device_id == DEVICE
    for foreign in (
        f"{DEVICE}-0000000000001234.sync-conflict-20260101-101010-ABCDEFG.seg",
        f"{DEVICE}.sync-conflict-20260101-101010-ABCDEFG.state",
        f"{DEVICE} (conflicted copy 2026-01-01).state",
        f"{DEVICE}-0000000000001234 (1).seg",
        f"~${DEVICE}.state",
        temporary_name(seg, "abc"),
        f"{DEVICE}-0000000000001234.seg.tmp",
        f"{DEVICE.lower()}.state",
        ".stfolder",
        "desktop.ini",
    ):
        assert parse_relay_name(foreign) is None, foreign


def test_a_segment_must_match_its_listing() -> None:
    r = ref(3, VersionVector(), VersionVector({DEVICE: 4}))
    header = BundleHeader(GROUP, DEVICE, r.top, r.base, 1)
    check_segment(DEVICE, r, header, r.size, r.digest)
    with pytest.raises(RelayError, match="older or altered"):
        check_segment(DEVICE, r, header, r.size, bytes(32))
    with pytest.raises(RelayError, match="made by"):
        check_segment(DEVICE, r, BundleHeader(GROUP, OTHER, r.top, r.base, 1), r.size, r.digest)
    with pytest.raises(RelayError, match="vectors"):
        check_segment(DEVICE, r, BundleHeader(GROUP, DEVICE, VersionVector({DEVICE: 9}), r.base, 1), r.size, r.digest)
    with pytest.raises(RelayError, match="every device"):
        check_segment(DEVICE, r, BundleHeader(GROUP, DEVICE, r.top, r.base, 1, recipient=OTHER), r.size, r.digest)


def test_coverage_follows_chains_in_any_order_and_stops_at_a_gap() -> None:
    a, b = DEVICE, OTHER
    s1 = ref(1, VersionVector(), VersionVector({a: 3}))
    s2 = ref(2, VersionVector({a: 3}), VersionVector({a: 3, b: 2}))
    s3 = ref(3, VersionVector({a: 3, b: 2}), VersionVector({a: 9, b: 2}))
    assert relay_coverage(VersionVector(), [s3, s2, s1]) == VersionVector({a: 9, b: 2})
    # s2 lost: a device that holds nothing reaches only s1; one that holds s2's top reaches everything.
    assert relay_coverage(VersionVector(), [s3, s1]) == VersionVector({a: 3})
    assert relay_coverage(VersionVector({a: 3, b: 2}), [s3]) == VersionVector({a: 9, b: 2})


def test_meet_and_pruning() -> None:
    a, b = DEVICE, OTHER
    assert vector_meet([]) == VersionVector()
    assert vector_meet([VersionVector({a: 5, b: 1}), VersionVector({a: 3})]) == VersionVector({a: 3})
    s1 = ref(1, VersionVector(), VersionVector({a: 3}))
    s2 = ref(2, VersionVector({a: 3}), VersionVector({a: 6}))
    assert prunable([s1, s2], {b: VersionVector({a: 4})}) == [s1]
    # A member that never wrote a state record holds everything back.
    assert prunable([s1, s2], {b: VersionVector({a: 9}), "new": VersionVector()}) == []


def test_sequence_numbers_never_repeat() -> None:
    assert next_sequence(0, 1000) == 1000
    assert next_sequence(5000, 1000) == 5001


def test_a_state_record_validates_its_lists() -> None:
    with pytest.raises(RelayError, match="strictly increase"):
        RelayState(GROUP, DEVICE, 1, 1, VersionVector(), (ref(2, VersionVector(), vv()), ref(2, VersionVector(), vv())))
    with pytest.raises(RelayError, match="sorted"):
        RelayState(GROUP, DEVICE, 1, 1, VersionVector(), (), (segment_name(OTHER, 2), segment_name(OTHER, 1)))
    with pytest.raises(RelayError, match="not a segment name"):
        RelayState(GROUP, DEVICE, 1, 1, VersionVector(), (), (state_name(OTHER),))

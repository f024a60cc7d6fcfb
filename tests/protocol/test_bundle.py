from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocol import (
    BadSignature,
    BundleError,
    LocalProtocolError,
    NotAMember,
    PeerError,
    TrustError,
    VersionVector,
    WrongGroup,
)
from protocol.bundle import (
    BUNDLE_MAGIC,
    BundleEnd,
    BundleEvent,
    BundleHeader,
    BundleMemberRecord,
    BundleReader,
    BundleVersion,
    BundleWriter,
)
from protocol.frames import END_OF_STREAM, NEED_DATA
from tests.support.protocol_bundles import KEY_A, KEY_B, KEYS, RECORDS, A, B, make_bundle
from tests.support.protocol_frames import GROUP, make_version

OTHER_GROUP = bytes(range(100, 116))
VERSIONS = tuple(make_version(KEY_A, 5000 + i, f"memory {i}") for i in range(3))




def read(
    data: bytes,
    *,
    chunk: int = 1 << 16,
    group: bytes = GROUP,
    keys: Callable[[str], Ed25519PublicKey | None] = KEYS.get,
    device: str | None = None,
) -> list[BundleEvent]:
    reader = BundleReader(group_id=group, sender_key=keys, device_id=device)
    events: list[BundleEvent] = []
    for i in range(0, len(data), chunk):
        reader.receive_data(data[i : i + chunk])
        while (event := reader.next_event()) is not NEED_DATA:
            assert event is not END_OF_STREAM
            events.append(event)
    reader.receive_data(b"")
    while (event := reader.next_event()) is not END_OF_STREAM:
        assert event is not NEED_DATA
        events.append(event)
    return events


SMALL = make_bundle(versions=1)


def test_round_trip() -> None:
    events = read(make_bundle(base=VersionVector({A: 4000}), recipient=B))
    header = events[0]
    assert isinstance(header, BundleHeader)
    assert (header.group_id, header.sender, header.recipient) == (GROUP, A, B)
    assert header.sender_vector == VersionVector({A: 5002}) and header.base_vector == VersionVector({A: 4000})
    assert header.created_ms == 1_763_000_000_000
    assert [e.record for e in events if isinstance(e, BundleMemberRecord)] == list(RECORDS)
    assert tuple(e.version for e in events if isinstance(e, BundleVersion)) == VERSIONS
    assert events[-1] == BundleEnd(header, members=2, versions=3)


def test_round_trip_one_byte_at_a_time() -> None:
    assert read(SMALL, chunk=1) == read(SMALL)


def test_merge_rule_follows_the_base_vector() -> None:
    full = read(make_bundle())[0]
    assert isinstance(full, BundleHeader) and full.is_full and full.completes(VersionVector())
    delta = read(make_bundle(base=VersionVector({A: 4000})))[0]
    assert isinstance(delta, BundleHeader) and not delta.is_full
    assert delta.completes(VersionVector({A: 4000, B: 1})) and not delta.completes(VersionVector({A: 3999}))


def fails(data: bytes, **kw: object) -> PeerError:
    with pytest.raises(PeerError) as info:
        read(data, **kw)  # type: ignore[arg-type]
    assert isinstance(info.value, (BundleError, TrustError)), repr(info.value)
    return info.value


def test_every_single_byte_change_is_detected() -> None:
    for pos in range(len(SMALL)):
        for flip in (0x01, 0x80, 0xFF):
            damaged = bytearray(SMALL)
            damaged[pos] ^= flip
            fails(bytes(damaged))


def test_every_truncation_is_detected() -> None:
    for cut in range(len(SMALL)):
        error = fails(SMALL[:cut])
        assert isinstance(error, BundleError)
    assert "truncated" in str(fails(SMALL[: len(SMALL) // 2]))


def test_appended_garbage_is_detected_and_end_is_withheld() -> None:
    for garbage in (b"\x00", b"more data", SMALL):
        assert "after its end" in str(fails(SMALL + garbage))
    # The reader does not report the end before the stream has really ended.
    reader = BundleReader(group_id=GROUP, sender_key=KEYS.get)
    reader.receive_data(SMALL)
    events = []
    while (event := reader.next_event()) is not NEED_DATA:
        events.append(event)
    assert not any(isinstance(e, BundleEnd) for e in events)
    reader.receive_data(b"")
    assert isinstance(reader.next_event(), BundleEnd)


def entries_of(data: bytes) -> tuple[bytes, list[bytes], bytes]:
    """Split a bundle into its header part, its raw entries and its trailer."""
    writer_header_len = len(
        BundleWriter(signing_key=KEY_A, group_id=GROUP, sender_vector=VersionVector({A: 5002}), created_ms=1_763_000_000_000).header()
    )
    pos = writer_header_len
    entries = []
    while data[pos] != 0:
        length, n = data[pos + 1], 1  # payloads here are < 128 or < 16384 bytes
        if length & 0x80:
            length = (length & 0x7F) | (data[pos + 2] << 7)
            n = 2
        end = pos + 1 + n + length
        entries.append(data[pos:end])
        pos = end
    return data[:writer_header_len], entries, data[pos:]


def test_reordering_entries_is_detected() -> None:
    data = make_bundle()
    head, entries, trailer = entries_of(data)
    assert head + b"".join(entries) + trailer == data and len(entries) == 5
    swapped_versions = entries[:2] + [entries[3], entries[2], entries[4]]
    assert "checksum" in str(fails(head + b"".join(swapped_versions) + trailer))
    swapped_members = [entries[1], entries[0]] + entries[2:]
    assert "checksum" in str(fails(head + b"".join(swapped_members) + trailer))
    member_after_version = [entries[0], entries[2], entries[1]] + entries[3:]
    assert "out of order" in str(fails(head + b"".join(member_after_version) + trailer))
    dropped = entries[:4]
    assert "counts 5 entries but 4" in str(fails(head + b"".join(dropped) + trailer))


def test_bundle_of_another_group_is_refused_clearly() -> None:
    error = fails(make_bundle(group=OTHER_GROUP))
    assert isinstance(error, WrongGroup)
    assert f"made for group {OTHER_GROUP.hex()}" in str(error) and "import it on a member of that group" in str(error)


def test_bundle_for_another_device_is_refused() -> None:
    data = make_bundle(recipient=B)
    assert "made for device" in str(fails(data, device=A))
    assert isinstance(read(data, device=B)[-1], BundleEnd)


def test_unknown_sender_and_forged_signature() -> None:
    assert isinstance(fails(SMALL, keys=lambda _: None), NotAMember)
    assert isinstance(fails(SMALL, keys=lambda _: KEY_B.public_key()), BadSignature)


def test_not_a_bundle_and_empty_file() -> None:
    assert "not a peer bundle" in str(fails(b"SQLite format 3\x00"))
    assert "empty" in str(fails(b""))
    assert "truncated" in str(fails(BUNDLE_MAGIC[:5]))


def test_writer_enforces_its_order() -> None:
    writer = BundleWriter(signing_key=KEY_A, group_id=GROUP, sender_vector=VersionVector(), created_ms=0)
    with pytest.raises(LocalProtocolError):
        writer.add_version(VERSIONS[0])
    writer.header()
    writer.add_version(VERSIONS[0])
    with pytest.raises(LocalProtocolError, match="after the versions"):
        writer.add_member_record(b"late member")
    with pytest.raises(LocalProtocolError, match="another group"):
        writer.add_version(make_version(KEY_A, 7000, group=OTHER_GROUP))
    writer.finish()
    with pytest.raises(LocalProtocolError):
        writer.finish()

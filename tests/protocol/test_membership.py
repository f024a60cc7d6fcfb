"""Membership as signed data: founding, admitting, revoking, key epochs, order independence."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import uuid
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    BadSignature,
    DecodeError,
    Dot,
    LocalProtocolError,
    MemberRecord,
    Membership,
    MemoryBody,
    NotAMember,
    UnknownSigner,
    UnsupportedFormat,
    VersionHeader,
    WrongGroup,
    decode_membership_record,
    device_id_for,
    found_group,
    group_id_for,
    open_version,
    raw_public_key,
    seal,
)
from protocol.membership import KeyEpochRecord, RevocationRecord
from protocol.sealing import SealedVersion


@dataclass
class Device:
    name: str
    key: Ed25519PrivateKey
    kex: X25519PrivateKey

    @classmethod
    def make(cls, name: str, seed: int) -> Device:
        return cls(
            name,
            Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32),
            X25519PrivateKey.from_private_bytes(bytes([seed + 100]) * 32),
        )

    @property
    def public(self) -> bytes:
        return raw_public_key(self.key)

    @property
    def kex_public(self) -> bytes:
        return raw_public_key(self.kex)

    @property
    def id(self) -> str:
        return device_id_for(self.public)


A, B, C, D = (Device.make(n, i) for i, n in enumerate("abcd", start=1))


def admit(m: Membership, by: Device, new: Device, now_ms: int = 10) -> list[bytes]:
    return m.add_member(
        by.key,
        by.kex,
        device_public_key=new.public,
        kex_public_key=new.kex_public,
        name=new.name,
        now_ms=now_ms,
        epoch_keys=m.epoch_keys(by.id, by.kex),
    )


def group_abc() -> tuple[Membership, bytes]:
    """A founds; A admits B; B admits C."""
    group_id, records, key0 = found_group(A.key, A.kex, name="a", now_ms=1)
    m = Membership(group_id)
    assert m.add_all(records) == records
    admit(m, A, B, 2)
    admit(m, B, C, 3)
    return m, key0


def test_found_group_binds_the_founder_to_the_group_id() -> None:
    nonce = bytes(range(16))
    group_id, records, key0 = found_group(A.key, A.kex, name="a", now_ms=1, nonce=nonce, group_key=b"k" * 32)
    assert group_id == group_id_for(A.public, nonce)
    # Anybody can check the founder from the id alone: it is this hash, nothing else.
    assert group_id == hashlib.sha256(b"peer/v1/group-id\x00" + A.public + nonce).digest()[:16]
    assert key0 == b"k" * 32
    founder = decode_membership_record(records[0])
    assert isinstance(founder, MemberRecord) and founder.founder and founder.device_id == A.id
    m = Membership(group_id)
    m.add_all(records)
    assert m.is_member(A.id) and m.member_key(A.id) is not None
    assert m.current_epoch == 0
    assert m.epoch_keys(A.id, A.kex) == {0: b"k" * 32}
    [info] = m.members()
    assert (info.device_id, info.name, info.founder, info.revoked) == (A.id, "a", True, False)


def test_another_device_cannot_claim_to_found_a_group() -> None:
    group_id, _, _ = found_group(A.key, A.kex, name="a", now_ms=1)
    _, forged, _ = found_group(B.key, B.kex, name="b", now_ms=1)
    # B's founder record, re-signed for A's group id, does not hash to it.
    record = decode_membership_record(forged[0])
    assert isinstance(record, MemberRecord)
    draft = dataclasses.replace(record, group_id=group_id)
    resigned = dataclasses.replace(draft, signature=B.key.sign(b"peer/v1/membership-record\x00" + draft.unsigned()))
    m = Membership(group_id)
    with pytest.raises(NotAMember):
        m.add(resigned.encode())
    with pytest.raises(WrongGroup):
        m.add(forged[0])
    assert len(m) == 0 and not m.is_member(B.id)


def test_admitted_devices_get_every_epoch_key_and_a_member_key() -> None:
    m, key0 = group_abc()
    assert [i.name for i in m.members()] == ["a", "b", "c"]
    for d in (A, B, C):
        assert m.is_member(d.id)
        assert m.member_key(d.id) is not None
        assert m.epoch_keys(d.id, d.kex) == {0: key0}
    assert m.member_key(D.id) is None and not m.is_member(D.id)
    # Someone else's X25519 key opens nothing.
    assert m.epoch_keys(C.id, D.kex) == {}
    info = {i.name: i for i in m.members()}
    assert info["c"].added_by == B.id and info["b"].added_by == A.id


def test_a_non_member_cannot_admit() -> None:
    m, _ = group_abc()
    with pytest.raises(NotAMember):
        admit(m, D, Device.make("e", 9))


def test_revoke_moves_to_a_new_epoch_the_revoked_device_cannot_read() -> None:
    m, key0 = group_abc()
    records, key1 = m.revoke(A.key, A.kex, device_id=B.id, now_ms=20, epoch_keys=m.epoch_keys(A.id, A.kex))
    assert not m.is_member(B.id) and m.member_key(B.id) is None
    # C was admitted by B only: it was re-admitted by A and stays a member.
    assert m.is_member(C.id) and m.member_key(C.id) is not None
    assert {i.name: i.revoked for i in m.members()} == {"a": False, "b": True, "c": False}
    assert m.current_epoch == 1 and not m.rotation_needed
    assert m.epoch_keys(A.id, A.kex) == {0: key0, 1: key1}
    # C held epoch 0 only from B's grant, which no longer counts: A granted it again.
    assert m.epoch_keys(C.id, C.kex) == {0: key0, 1: key1}
    assert 1 not in m.epoch_keys(B.id, B.kex)
    assert key1 != key0
    # A fresh device receiving the same records agrees.
    other = Membership(m.group_id)
    other.add_all(m.records())
    assert other.digest() == m.digest() and not other.is_member(B.id) and other.is_member(C.id)
    assert any(isinstance(decode_membership_record(r), RevocationRecord) for r in records)


def test_a_revoked_device_signs_nothing_that_opens() -> None:
    m, key0 = group_abc()
    _, key1 = m.revoke(A.key, A.kex, device_id=B.id, now_ms=20, epoch_keys=m.epoch_keys(A.id, A.kex))
    header = VersionHeader(m.group_id, 1, str(uuid.UUID(int=7)), Dot(B.id, 5), (), 5 << 16)
    sealed = seal(header, MemoryBody("from the stolen laptop"), signing_key=B.key, group_key=key1)
    with pytest.raises(NotAMember):
        open_version(sealed, group_id=m.group_id, group_keys={0: key0, 1: key1}, member_key=m.member_key)
    # And C, still a member, is accepted.
    header = dataclasses.replace(header, dot=Dot(C.id, 5))
    sealed = seal(header, MemoryBody("fine"), signing_key=C.key, group_key=key1)
    body = open_version(sealed, group_id=m.group_id, group_keys=m.epoch_keys(C.id, C.kex), member_key=m.member_key)
    assert body.content == "fine"


def test_versions_up_to_the_revocation_cutoff_stay_valid_and_later_ones_do_not() -> None:
    m, key0 = group_abc()
    admit(m, A, D, 4)
    before = Membership(m.group_id)
    before.add_all(m.records())
    _, key1 = m.revoke(
        A.key, A.kex, device_id=B.id, now_ms=20, epoch_keys=m.epoch_keys(A.id, A.kex),
        cutoff={B.id: 10, B.id + ".2": 4},
    )
    assert m.cutoff(B.id) == {B.id: 10, B.id + ".2": 4} and m.cutoff(C.id) is None and m.is_revoked(B.id)

    def sealed_by_b(dot: Dot) -> SealedVersion:
        header = VersionHeader(m.group_id, 0, str(uuid.UUID(int=7)), dot, (), dot.counter << 16)
        return seal(header, MemoryBody("written on b"), signing_key=B.key, group_key=key0)

    keys = {0: key0, 1: key1}
    for dot in (Dot(B.id, 10), Dot(B.id, 1), Dot(B.id + ".2", 4)):
        assert open_version(sealed_by_b(dot), group_id=m.group_id, group_keys=keys, author_key=m.author_key).content
    for dot in (Dot(B.id, 11), Dot(B.id + ".2", 5), Dot(B.id + ".1", 1)):
        with pytest.raises(NotAMember, match="revoked"):
            open_version(sealed_by_b(dot), group_id=m.group_id, group_keys=keys, author_key=m.author_key)
    # The per-device lookup still refuses every version of a revoked device.
    with pytest.raises(NotAMember):
        open_version(sealed_by_b(Dot(B.id, 1)), group_id=m.group_id, group_keys=keys, member_key=m.member_key)
    # A second, concurrent revocation with a lower cutoff wins for the replicas it lists,
    # and replicas it leaves out drop to 0, in whichever order the records arrive.
    before.revoke(D.key, D.kex, device_id=B.id, now_ms=21, epoch_keys=before.epoch_keys(D.id, D.kex),
                  cutoff={B.id: 7, B.id + ".3": 9})
    assert before.cutoff(B.id) == {B.id: 7, B.id + ".3": 9}
    merged = Membership(m.group_id)
    merged.add_all(before.records() + m.records())
    assert merged.cutoff(B.id) == {B.id: 7}
    assert merged.author_key(Dot(B.id, 7)) is not None and merged.author_key(Dot(B.id, 8)) is None
    assert merged.author_key(Dot(B.id + ".2", 1)) is None and merged.author_key(Dot(B.id + ".3", 1)) is None
    # Members that were never revoked keep every version.
    assert merged.author_key(Dot(C.id, 10**9)) is not None


def test_a_revocation_cutoff_lists_only_the_revoked_device_in_order() -> None:
    m, _ = group_abc()
    with pytest.raises(ValueError):
        m.revoke(A.key, A.kex, device_id=B.id, now_ms=20, epoch_keys={}, cutoff={C.id: 3})
    ok = RevocationRecord(m.group_id, B.id, A.id, 5, bytes(64), ((B.id, 3), (B.id + ".1", 2)))
    assert RevocationRecord.decode(ok.encode()) == ok
    for cutoff in (((B.id + ".1", 2), (B.id, 3)), ((B.id, 3), (B.id, 4)), ((C.id, 1),), ((B.id, 0),)):
        with pytest.raises(LocalProtocolError):
            RevocationRecord(m.group_id, B.id, A.id, 5, bytes(64), cutoff)


def test_a_revoked_device_cannot_push_a_new_epoch_or_admit() -> None:
    m, key0 = group_abc()
    before = m.records()
    m.revoke(A.key, A.kex, device_id=B.id, now_ms=20, epoch_keys=m.epoch_keys(A.id, A.kex))
    # B, offline and not yet aware, admits D and rotates to a key it knows.
    stale = Membership(m.group_id)
    stale.add_all(before)
    admitted = admit(stale, B, D, 30)
    pushed, _ = stale.rotate(B.key, epoch_keys={0: key0}, new_group_key=b"x" * 32)
    pushed2, _ = stale.rotate(B.key, epoch_keys={0: key0}, new_group_key=b"y" * 32)
    m.add_all(admitted + pushed + pushed2)
    assert not m.is_member(D.id)
    assert m.current_epoch == 1
    assert b"y" * 32 not in m.epoch_keys(A.id, A.kex).values()
    assert b"x" * 32 not in m.epoch_keys(A.id, A.kex).values()


def test_revoking_rules() -> None:
    m, _ = group_abc()
    with pytest.raises(LocalProtocolError):
        m.revoke(A.key, A.kex, device_id=A.id, now_ms=20, epoch_keys={})
    with pytest.raises(NotAMember):
        m.revoke(A.key, A.kex, device_id=D.id, now_ms=20, epoch_keys={})
    with pytest.raises(NotAMember):
        m.revoke(D.key, D.kex, device_id=B.id, now_ms=20, epoch_keys={})
    # C came in through B: its revocation of B would cut C itself off.
    digest = m.digest()
    with pytest.raises(LocalProtocolError):
        m.revoke(C.key, C.kex, device_id=B.id, now_ms=20, epoch_keys={})
    assert m.digest() == digest


def test_the_founder_can_be_revoked_and_the_group_goes_on() -> None:
    m, key0 = group_abc()
    _, key1 = m.revoke(B.key, B.kex, device_id=A.id, now_ms=20, epoch_keys=m.epoch_keys(B.id, B.kex))
    assert not m.is_member(A.id) and m.is_member(B.id) and m.is_member(C.id)
    assert m.epoch_keys(C.id, C.kex) == {0: key0, 1: key1}
    assert 1 not in m.epoch_keys(A.id, A.kex)
    admit(m, C, D, 30)
    assert m.is_member(D.id) and m.epoch_keys(D.id, D.kex) == {0: key0, 1: key1}


def test_add_is_idempotent_and_unknown_signers_wait() -> None:
    m, _ = group_abc()
    records = m.records()
    fresh = Membership(m.group_id)
    # C's admission (signed by B) arrives before B is known.
    c_record = next(r for r in records if isinstance((p := decode_membership_record(r)), MemberRecord) and p.device_id == C.id)
    with pytest.raises(UnknownSigner):
        fresh.add(c_record)
    assert fresh.add_all(records)
    assert fresh.add(records[0]) is False
    assert fresh.add_all(records) == []


@settings(max_examples=25)
@given(st.randoms(use_true_random=False))
def test_add_all_is_order_independent(rnd: random.Random) -> None:
    m, key0 = group_abc()
    m.revoke(A.key, A.kex, device_id=B.id, now_ms=20, epoch_keys=m.epoch_keys(A.id, A.kex))
    admit(m, C, D, 30)
    records = m.records()
    shuffled = records[:]
    rnd.shuffle(shuffled)
    other = Membership(m.group_id)
    accepted = other.add_all(shuffled, strict=True)
    assert sorted(accepted) == sorted(records)
    assert other.digest() == m.digest()
    assert other.members() == m.members()
    assert other.current_epoch == m.current_epoch
    assert other.epoch_keys(D.id, D.kex) == m.epoch_keys(D.id, D.kex)
    # records() is itself an order that a fresh membership accepts one by one.
    third = Membership(m.group_id)
    for r in other.records():
        assert third.add(r)


def test_digest_is_of_the_set() -> None:
    m, _ = group_abc()
    records = m.records()
    x, y = Membership(m.group_id), Membership(m.group_id)
    x.add_all(records)
    y.add_all(list(reversed(records)))
    assert x.digest() == y.digest() and len(x.digest()) == 32
    z = Membership(m.group_id)
    z.add_all(records[:-1])
    assert z.digest() != x.digest()
    assert Membership(m.group_id).digest() != z.digest()


def test_tampered_records_are_refused() -> None:
    m, _ = group_abc()
    records = m.records()
    fresh = Membership(m.group_id)
    fresh.add(records[0])
    for record in records[1:]:
        for i in range(len(record)):
            for bit in (0x01, 0x80):
                bad = bytearray(record)
                bad[i] ^= bit
                try:
                    added = fresh.add(bytes(bad))
                except (DecodeError, UnsupportedFormat, WrongGroup, NotAMember, BadSignature):
                    continue
                raise AssertionError(f"a flipped bit at byte {i} was accepted (added={added})")
    assert fresh.records() == records[:1]


def test_forged_admission_is_refused() -> None:
    m, _ = group_abc()
    records = m.records()
    b_record = next(
        p for r in records if isinstance((p := decode_membership_record(r)), MemberRecord) and p.device_id == B.id
    )
    # D writes an admission of itself claiming A admitted it, signed with D's key.
    draft = dataclasses.replace(b_record, public_key=D.public, kex_public_key=D.kex_public, name="d")
    forged = dataclasses.replace(draft, signature=D.key.sign(b"peer/v1/membership-record\x00" + draft.unsigned()))
    with pytest.raises(BadSignature):
        m.add(forged.encode())
    # Nor can a device admit itself.
    selfie = dataclasses.replace(draft, added_by=D.id)
    selfie = dataclasses.replace(selfie, signature=D.key.sign(b"peer/v1/membership-record\x00" + selfie.unsigned()))
    with pytest.raises(NotAMember):
        m.add(selfie.encode())
    assert not m.is_member(D.id)


def test_a_key_epoch_record_is_bound_to_its_recipient() -> None:
    m, key0 = group_abc()
    record = next(
        p
        for r in m.records()
        if isinstance((p := decode_membership_record(r)), KeyEpochRecord) and p.recipient == C.id
    )
    assert record.unwrap(C.kex) == key0
    assert record.unwrap(B.kex) is None
    # Readdressed to B it opens for nobody: the recipient is bound into the AEAD.
    draft = dataclasses.replace(record, recipient=B.id)
    assert draft.unwrap(B.kex) is None and draft.unwrap(C.kex) is None


def test_records_of_another_format_are_refused_with_upgrade_advice() -> None:
    m, _ = group_abc()
    record = bytearray(m.records()[0])
    assert record[1] == 1  # tag, then format
    record[1] = 2
    with pytest.raises(UnsupportedFormat, match="upgrade"):
        decode_membership_record(bytes(record))


def test_concurrent_rotations_converge_and_ask_for_another() -> None:
    m, key0 = group_abc()
    left, right = Membership(m.group_id), Membership(m.group_id)
    left.add_all(m.records())
    right.add_all(m.records())
    l_recs, _ = left.rotate(A.key, epoch_keys={0: key0}, new_group_key=b"l" * 32)
    r_recs, _ = right.rotate(B.key, epoch_keys={0: key0}, new_group_key=b"r" * 32)
    left.add_all(r_recs)
    right.add_all(l_recs)
    assert left.digest() == right.digest()
    assert left.rotation_needed and right.rotation_needed
    assert left.epoch_keys(C.id, C.kex) == right.epoch_keys(C.id, C.kex)
    assert len(left.epoch_keys(C.id, C.kex)) == 2
    _, key2 = left.rotate(C.key, epoch_keys=left.epoch_keys(C.id, C.kex))
    assert not left.rotation_needed and left.current_epoch == 2
    assert all(left.epoch_keys(d.id, d.kex)[2] == key2 for d in (A, B, C))


def test_add_all_strict_reports_what_cannot_verify() -> None:
    m, _ = group_abc()
    records = m.records()
    with pytest.raises(UnknownSigner):
        Membership(m.group_id).add_all(records[1:], strict=True)
    assert Membership(m.group_id).add_all(records[1:] + [b"junk"]) == []
    with pytest.raises(DecodeError):
        Membership(m.group_id).add_all([b"junk"], strict=True)


def test_history_under_a_revoked_devices_epoch_stays_readable() -> None:
    m, key0 = group_abc()
    _, key1 = m.rotate(B.key, epoch_keys=m.epoch_keys(B.id, B.kex))
    header = VersionHeader(m.group_id, 1, str(uuid.UUID(int=8)), Dot(C.id, 9), (), 9 << 16)
    sealed = seal(header, MemoryBody("written under B's epoch"), signing_key=C.key, group_key=key1)
    _, key2 = m.revoke(A.key, A.kex, device_id=B.id, now_ms=20, epoch_keys=m.epoch_keys(A.id, A.kex))
    # The new epoch is numbered above B's, not reusing its number.
    assert m.current_epoch == 2
    for d in (A, C):
        keys = m.epoch_keys(d.id, d.kex)
        assert keys == {0: key0, 1: key1, 2: key2}
        body = open_version(sealed, group_id=m.group_id, group_keys=keys, member_key=m.member_key)
        assert body.content == "written under B's epoch"


def test_devices_admitted_by_a_revoked_device_are_reported() -> None:
    m, _ = group_abc()
    stale = Membership(m.group_id)
    stale.add_all(m.records())
    late = admit(stale, B, D, 15)  # B admits D while A, out of touch, revokes B
    m.revoke(A.key, A.kex, device_id=B.id, now_ms=20, epoch_keys=m.epoch_keys(A.id, A.kex))
    m.add_all(late)
    assert not m.is_member(D.id)
    assert m.orphaned() == [D.id]
    assert D.id not in {i.device_id for i in m.members()}
    admit(m, A, D, 30)
    assert m.is_member(D.id) and m.orphaned() == []


def test_pinned_founder_record() -> None:
    """The exact bytes of a founder record: changing the format must be deliberate (and bump its version)."""
    group_id, records, _ = found_group(
        A.key, A.kex, name="laptop", now_ms=1_700_000_000_000, nonce=bytes(range(16)), group_key=bytes(32)
    )
    assert group_id.hex() == "677e20c42fedcdddf163a14840d4cf83"
    founder = records[0]
    # tag 1 | format 1 | group id | public key ...
    assert founder[:18] == b"\x01\x01" + group_id and founder[18:50] == A.public
    assert len(founder) == 203
    assert hashlib.sha256(founder).hexdigest() == "f7099f5589aeefcb51dc27a828ec95a00a82ef381680db7bb9085f2d1f99d479"


def test_key_epoch_sealing_follows_the_documented_construction() -> None:
    """Open an epoch record with the primitives alone: X25519, HKDF-SHA256, ChaCha20-Poly1305."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from protocol.codec import Writer

    group_id, records, key0 = found_group(A.key, A.kex, name="a", now_ms=1, group_key=bytes(range(32)))
    record = decode_membership_record(records[1])
    assert isinstance(record, KeyEpochRecord)
    assert (record.epoch, record.recipient, record.created_by) == (0, A.id, A.id)
    shared = A.kex.exchange(X25519PublicKey.from_public_bytes(record.ephemeral_public_key))
    info = b"peer/v1/group-key-wrap\x00" + A.kex_public + record.ephemeral_public_key
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=group_id, info=info).derive(shared)
    associated = records[1][: -(48 + 64)]
    assert ChaCha20Poly1305(key).decrypt(bytes(12), record.sealed_key, associated) == key0
    key_id_info = Writer().raw(b"peer/v1/group-key-id\x00").uvarint(0).getvalue()
    assert record.key_id == HKDF(algorithm=hashes.SHA256(), length=16, salt=group_id, info=key_id_info).derive(key0)
    # The signature covers a domain label and everything before it.
    A.key.public_key().verify(record.signature, b"peer/v1/membership-record\x00" + records[1][:-64])

"""Group membership and group-key epochs, as signed, replicated records.

Theory of operation. A group is the set of its membership records; every
device holds some subset of them, sync ships the missing ones, and every
device computes the same members and keys from the same set, whatever the
order the records arrived in. There are three kinds of record, each signed
with Ed25519 by the device that wrote it:

* **Member** (``MemberRecord``): "device D (its signing key, its X25519 key
  for receiving group keys, its name) is admitted, by device S". The
  founder's record is self-signed and carries a 16-byte nonce; the group
  id is ``SHA-256(label | founder public key | nonce)[:16]``, so the id
  alone names its founder and nobody can found a group with someone
  else's id.
* **Revocation** (``RevocationRecord``): "device D is revoked, by S; of
  D's replicas, S accepts versions up to these counters (the *cutoff*)".
* **KeyEpoch** (``KeyEpochRecord``): "the group key of epoch N, sealed to
  device R, by S". The key is sealed with an ephemeral X25519 exchange,
  HKDF-SHA256 and ChaCha20-Poly1305 (group id, epoch and recipient are
  in the associated data). The record also shows a *key id*, a one-way
  fingerprint of the key, so that devices can tell, without the key,
  whether two records of one epoch carry the same key.

A record is stored only when its signature verifies, which needs the
signer's public key, i.e. a stored Member record of the signer; so the
stored set always chains back to the founder. ``add_all`` therefore takes
records in any order and retries those whose signer is not known yet,
until nothing more can be added (a fixpoint).

Validity is then computed from the whole set, as least fixpoints:

1. *Ever-members* E: the founder, plus every device with a Member record
   signed by an ever-member (revocations ignored).
2. A Revocation is valid iff its signer is in E ("has or had" a valid
   Member record): a device that was revoked can therefore still revoke
   others, which is a denial of service but never a read or a write.
3. *Roots*: the founder, unless revoked; a revoked founder is replaced by
   the (unrevoked) devices that revoked it.
4. *Current members* C: the roots, plus every unrevoked device with a
   Member record signed by a current member. Endorsements by a revoked
   device do not count, which is why ``revoke()`` re-endorses the devices
   that were admitted through the revoked one.
5. A version is accepted from a current member, and from a revoked device
   only up to the effective cutoff of its replica: the minimum over the
   device's valid revocations (0 for a replica one of them does not list).
   Versions a device wrote before it was revoked and the revoker held
   therefore stay valid everywhere; later ones are dropped everywhere.
6. A KeyEpoch record *counts* iff its creator is a current member (a
   revoked device cannot push a key it knows as the new epoch).
   ``current_epoch`` is the highest counting epoch; the key of an epoch is
   the one with the smallest key id among its counting records.

``revoke()`` therefore writes, besides the Revocation: re-admissions of the
members that were admitted only through the revoked device; a new epoch,
numbered above every epoch ever seen (the revoked device's own last epoch
still numbers versions sealed under it), sealed to each remaining member;
and fresh grants of older keys that a member held only from the revoked
device, so history stays readable. Devices admitted by the revoked device
that the revoker did not know of are listed by ``orphaned()`` until a
member admits them again.

Two members that revoke concurrently while out of touch both create epoch
N+1 with different keys. Everyone converges on the smaller key id for that
epoch and ``rotation_needed`` turns true so an agent can ``rotate()``;
versions already sealed under the other key open only on devices that kept
it (a known limitation of integer epochs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .clock import MAX_COUNTER, Dot
from .codec import Reader, Writer, decode_whole
from .errors import (
    BadSignature,
    DecodeError,
    LocalProtocolError,
    NotAMember,
    PeerError,
    UnsupportedFormat,
    WrongGroup,
)
from .ids import device_id_for, device_id_of, device_of, is_device_id, is_replica_id, raw_public_key

__all__ = [
    "MEMBERSHIP_FORMAT",
    "TAG_MEMBER",
    "TAG_REVOCATION",
    "TAG_KEY_EPOCH",
    "MemberRecord",
    "RevocationRecord",
    "KeyEpochRecord",
    "MembershipRecord",
    "MemberInfo",
    "Membership",
    "UnknownSigner",
    "decode_membership_record",
    "found_group",
    "group_id_for",
    "group_key_id",
]

#: Version of the membership record encodings; a reader refuses anything newer.
MEMBERSHIP_FORMAT = 1

TAG_MEMBER = 1
TAG_REVOCATION = 2
TAG_KEY_EPOCH = 3

GROUP_ID_BYTES = 16
GROUP_KEY_BYTES = 32
NONCE_BYTES = 16
KEY_ID_BYTES = 16
MAX_NAME_BYTES = 256
MAX_EPOCH = (1 << 32) - 1
MAX_RECORD_BYTES = 4096
#: A revoked device rarely has more than a few incarnations; the bound keeps a record under MAX_RECORD_BYTES.
MAX_CUTOFF_ENTRIES = 64

_SIGNATURE_BYTES = 64
_SEALED_KEY_BYTES = GROUP_KEY_BYTES + 16
_GROUP_ID_LABEL = b"peer/v1/group-id\x00"
_SIGN_LABEL = b"peer/v1/membership-record\x00"
_KEY_ID_LABEL = b"peer/v1/group-key-id\x00"
_WRAP_LABEL = b"peer/v1/group-key-wrap\x00"
_ZERO_NONCE = bytes(12)


class UnknownSigner(NotAMember):
    """A membership record is signed by a device this device does not know yet; sync the member list first."""


def group_id_for(founder_public_key: bytes, nonce: bytes) -> bytes:
    """The id of the group founded by this key with this nonce."""
    return hashlib.sha256(_GROUP_ID_LABEL + founder_public_key + nonce).digest()[:GROUP_ID_BYTES]


def group_key_id(group_id: bytes, epoch: int, group_key: bytes) -> bytes:
    """A public fingerprint of a group key: tells keys apart without revealing them."""
    info = Writer().raw(_KEY_ID_LABEL).uvarint(epoch).getvalue()
    return HKDF(algorithm=hashes.SHA256(), length=KEY_ID_BYTES, salt=group_id, info=info).derive(group_key)


def _check_group_id(group_id: bytes) -> None:
    if len(group_id) != GROUP_ID_BYTES:
        raise LocalProtocolError("a group id is 16 bytes")


def _check_device(device_id: str, what: str) -> None:
    if not is_device_id(device_id):
        raise LocalProtocolError(f"invalid membership record: {what} {device_id!r} is not a device id")


def _check_time(ms: int) -> None:
    if not 0 <= ms <= MAX_COUNTER:
        raise LocalProtocolError("invalid membership record: time out of range")


def _read_header(r: Reader, tag: int) -> bytes:
    found = r.uvarint(limit=1 << 16)
    if found != tag:
        raise DecodeError(f"malformed membership record: record type {found}, expected {tag}")
    fmt = r.uvarint(limit=1 << 16)
    if fmt != MEMBERSHIP_FORMAT:
        raise UnsupportedFormat(
            f"membership record format {fmt} is not supported (this peer reads {MEMBERSHIP_FORMAT}); upgrade peer"
        )
    return r.raw(GROUP_ID_BYTES)


def _signed_message(unsigned: bytes) -> bytes:
    return _SIGN_LABEL + unsigned


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """Device ``device_id`` is admitted to the group by ``added_by``.

    The founder's record has ``nonce`` set and ``added_by == device_id``.
    The device id is not stored: it is derived from ``public_key``.
    """

    group_id: bytes
    public_key: bytes
    kex_public_key: bytes
    name: str
    added_by: str
    added_at_ms: int
    nonce: bytes | None
    signature: bytes

    TAG = TAG_MEMBER

    def __post_init__(self) -> None:
        _check_group_id(self.group_id)
        if len(self.public_key) != 32 or len(self.kex_public_key) != 32:
            raise LocalProtocolError("invalid member record: public keys are 32 bytes")
        try:
            name_bytes = len(self.name.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise LocalProtocolError("a device name must be valid text") from e
        if name_bytes > MAX_NAME_BYTES:
            raise LocalProtocolError(f"a device name is at most {MAX_NAME_BYTES} bytes")
        _check_device(self.added_by, "admitting device")
        _check_time(self.added_at_ms)
        if self.nonce is not None:
            if len(self.nonce) != NONCE_BYTES:
                raise LocalProtocolError("invalid member record: a group nonce is 16 bytes")
            if self.added_by != self.device_id:
                raise LocalProtocolError("invalid member record: a founder record must be self-signed")
        if len(self.signature) != _SIGNATURE_BYTES:
            raise LocalProtocolError("a signature is 64 bytes")

    @property
    def device_id(self) -> str:
        return device_id_for(self.public_key)

    @property
    def signer(self) -> str:
        return self.added_by

    @property
    def founder(self) -> bool:
        return self.nonce is not None

    def unsigned(self) -> bytes:
        w = Writer().uvarint(TAG_MEMBER).uvarint(MEMBERSHIP_FORMAT).raw(self.group_id)
        w.raw(self.public_key).raw(self.kex_public_key).str(self.name).str(self.added_by).uvarint(self.added_at_ms)
        w.bool(self.nonce is not None)
        if self.nonce is not None:
            w.raw(self.nonce)
        return w.getvalue()

    def encode(self) -> bytes:
        return self.unsigned() + self.signature

    @classmethod
    def decode_from(cls, r: Reader) -> MemberRecord:
        group_id = _read_header(r, TAG_MEMBER)
        public_key = r.raw(32)
        kex_public_key = r.raw(32)
        name = r.str(limit=MAX_NAME_BYTES)
        added_by = r.str(limit=64)
        added_at_ms = r.uvarint(limit=MAX_COUNTER)
        nonce = r.raw(NONCE_BYTES) if r.bool() else None
        signature = r.raw(_SIGNATURE_BYTES)
        return cls(group_id, public_key, kex_public_key, name, added_by, added_at_ms, nonce, signature)

    @classmethod
    def decode(cls, data: bytes) -> MemberRecord:
        return decode_whole(cls.decode_from, data, "member record")


@dataclass(frozen=True, slots=True)
class RevocationRecord:
    """Device ``device_id`` is no longer a member, says ``revoked_by``.

    ``cutoff`` lists, for replicas of the revoked device (``DEVICEID`` and
    ``DEVICEID.N``), the highest counter the revoker accepts from it:
    normally the revoker's own version-vector entries for those replicas
    when it revoked. A replica that is not listed has cutoff 0 (nothing of
    it is accepted). Entries are sorted by replica id, each counter is at
    least 1 and each replica belongs to the revoked device, so one record
    has exactly one encoding.
    """

    group_id: bytes
    device_id: str
    revoked_by: str
    at_ms: int
    signature: bytes
    cutoff: tuple[tuple[str, int], ...] = ()

    TAG = TAG_REVOCATION

    def __post_init__(self) -> None:
        _check_group_id(self.group_id)
        _check_device(self.device_id, "revoked device")
        _check_device(self.revoked_by, "revoking device")
        _check_time(self.at_ms)
        if len(self.signature) != _SIGNATURE_BYTES:
            raise LocalProtocolError("a signature is 64 bytes")
        if len(self.cutoff) > MAX_CUTOFF_ENTRIES:
            raise LocalProtocolError(f"invalid revocation record: more than {MAX_CUTOFF_ENTRIES} cutoff entries")
        previous = ""
        for replica, counter in self.cutoff:
            if not is_replica_id(replica) or device_of(replica) != self.device_id:
                raise LocalProtocolError(f"invalid revocation record: {replica!r} is not a replica of the revoked device")
            if replica <= previous:
                raise LocalProtocolError("invalid revocation record: cutoff entries must be sorted and distinct")
            if not 1 <= counter <= MAX_COUNTER:
                raise LocalProtocolError("invalid revocation record: cutoff counter out of range")
            previous = replica

    @property
    def signer(self) -> str:
        return self.revoked_by

    def cutoff_of(self, replica: str) -> int:
        """The highest counter of ``replica`` this revocation accepts (0 when not listed)."""
        for listed, counter in self.cutoff:
            if listed == replica:
                return counter
        return 0

    def unsigned(self) -> bytes:
        w = Writer().uvarint(TAG_REVOCATION).uvarint(MEMBERSHIP_FORMAT).raw(self.group_id)
        w.str(self.device_id).str(self.revoked_by).uvarint(self.at_ms).uvarint(len(self.cutoff))
        for replica, counter in self.cutoff:
            w.str(replica).uvarint(counter)
        return w.getvalue()

    def encode(self) -> bytes:
        return self.unsigned() + self.signature

    @classmethod
    def decode_from(cls, r: Reader) -> RevocationRecord:
        group_id = _read_header(r, TAG_REVOCATION)
        device_id = r.str(limit=64)
        revoked_by = r.str(limit=64)
        at_ms = r.uvarint(limit=MAX_COUNTER)
        entries = r.uvarint(limit=MAX_CUTOFF_ENTRIES)
        cutoff = tuple((r.str(limit=64), r.uvarint(limit=MAX_COUNTER)) for _ in range(entries))
        signature = r.raw(_SIGNATURE_BYTES)
        return cls(group_id, device_id, revoked_by, at_ms, signature, cutoff)

    @classmethod
    def decode(cls, data: bytes) -> RevocationRecord:
        return decode_whole(cls.decode_from, data, "revocation record")


@dataclass(frozen=True, slots=True)
class KeyEpochRecord:
    """The group key of ``epoch``, sealed to ``recipient`` by ``created_by``.

    ``sealed_key`` is the ChaCha20-Poly1305 encryption of the 32-byte key
    under a key agreed between ``ephemeral_public_key`` and the recipient's
    X25519 key; the unsigned encoding up to the ephemeral key is the AEAD's
    associated data.
    """

    group_id: bytes
    epoch: int
    recipient: str
    created_by: str
    key_id: bytes
    ephemeral_public_key: bytes
    sealed_key: bytes
    signature: bytes

    TAG = TAG_KEY_EPOCH

    def __post_init__(self) -> None:
        _check_group_id(self.group_id)
        if not 0 <= self.epoch <= MAX_EPOCH:
            raise LocalProtocolError("key epoch out of range")
        _check_device(self.recipient, "recipient")
        _check_device(self.created_by, "creator")
        if len(self.key_id) != KEY_ID_BYTES:
            raise LocalProtocolError("invalid key epoch record: a key id is 16 bytes")
        if len(self.ephemeral_public_key) != 32:
            raise LocalProtocolError("invalid key epoch record: an X25519 key is 32 bytes")
        if len(self.sealed_key) != _SEALED_KEY_BYTES:
            raise LocalProtocolError("invalid key epoch record: a sealed key is 48 bytes")
        if len(self.signature) != _SIGNATURE_BYTES:
            raise LocalProtocolError("a signature is 64 bytes")

    @property
    def signer(self) -> str:
        return self.created_by

    def associated_data(self) -> bytes:
        w = Writer().uvarint(TAG_KEY_EPOCH).uvarint(MEMBERSHIP_FORMAT).raw(self.group_id).uvarint(self.epoch)
        w.str(self.recipient).str(self.created_by).raw(self.key_id).raw(self.ephemeral_public_key)
        return w.getvalue()

    def unsigned(self) -> bytes:
        return self.associated_data() + self.sealed_key

    def encode(self) -> bytes:
        return self.unsigned() + self.signature

    @classmethod
    def decode_from(cls, r: Reader) -> KeyEpochRecord:
        group_id = _read_header(r, TAG_KEY_EPOCH)
        epoch = r.uvarint(limit=MAX_EPOCH)
        recipient = r.str(limit=64)
        created_by = r.str(limit=64)
        key_id = r.raw(KEY_ID_BYTES)
        ephemeral = r.raw(32)
        sealed_key = r.raw(_SEALED_KEY_BYTES)
        signature = r.raw(_SIGNATURE_BYTES)
        return cls(group_id, epoch, recipient, created_by, key_id, ephemeral, sealed_key, signature)

    @classmethod
    def decode(cls, data: bytes) -> KeyEpochRecord:
        return decode_whole(cls.decode_from, data, "key epoch record")

    def unwrap(self, kex_key: X25519PrivateKey) -> bytes | None:
        """The group key, or None if it was not sealed to this X25519 key (or was tampered with)."""
        try:
            shared = kex_key.exchange(X25519PublicKey.from_public_bytes(self.ephemeral_public_key))
        except ValueError:
            return None
        key = _wrap_key(shared, self.group_id, raw_public_key(kex_key), self.ephemeral_public_key)
        try:
            group_key = ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, self.sealed_key, self.associated_data())
        except InvalidTag:
            return None
        if group_key_id(self.group_id, self.epoch, group_key) != self.key_id:
            return None
        return group_key


MembershipRecord: TypeAlias = MemberRecord | RevocationRecord | KeyEpochRecord

_DECODERS: dict[int, type[MemberRecord] | type[RevocationRecord] | type[KeyEpochRecord]] = {
    TAG_MEMBER: MemberRecord,
    TAG_REVOCATION: RevocationRecord,
    TAG_KEY_EPOCH: KeyEpochRecord,
}


def decode_membership_record(data: bytes) -> MembershipRecord:
    """Parse any membership record, without checking its signature."""
    if len(data) > MAX_RECORD_BYTES:
        raise DecodeError("membership record too large")
    r = Reader(data, "membership record")
    tag = r.uvarint(limit=1 << 16)
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise DecodeError(f"malformed membership record: unknown record type {tag}")
    return decoder.decode(data)


def _wrap_key(shared: bytes, group_id: bytes, recipient_kex: bytes, ephemeral: bytes) -> bytes:
    info = _WRAP_LABEL + recipient_kex + ephemeral
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=group_id, info=info).derive(shared)


def _sign_member(
    signer: Ed25519PrivateKey,
    *,
    group_id: bytes,
    public_key: bytes,
    kex_public_key: bytes,
    name: str,
    added_by: str,
    added_at_ms: int,
    nonce: bytes | None,
) -> MemberRecord:
    draft = MemberRecord(
        group_id, public_key, kex_public_key, name, added_by, added_at_ms, nonce, bytes(_SIGNATURE_BYTES)
    )
    return dataclasses.replace(draft, signature=signer.sign(_signed_message(draft.unsigned())))


def _sign_revocation(
    signer: Ed25519PrivateKey, group_id: bytes, device_id: str, now_ms: int, cutoff: Mapping[str, int]
) -> RevocationRecord:
    entries = tuple(sorted((replica, counter) for replica, counter in cutoff.items() if counter > 0))
    draft = RevocationRecord(
        group_id, device_id, device_id_of(signer), now_ms, bytes(_SIGNATURE_BYTES), entries
    )
    return dataclasses.replace(draft, signature=signer.sign(_signed_message(draft.unsigned())))


def _seal_key_epoch(
    signer: Ed25519PrivateKey,
    *,
    group_id: bytes,
    epoch: int,
    group_key: bytes,
    recipient: str,
    recipient_kex: bytes,
) -> KeyEpochRecord | None:
    """The record, or None when the recipient's X25519 key is unusable (a low-order point).

    Such a recipient can never receive keys; skipping it keeps one broken
    Member record from blocking a revocation for everyone else.
    """
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = raw_public_key(ephemeral)
    try:
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_kex))
    except ValueError:
        return None
    draft = KeyEpochRecord(
        group_id=group_id,
        epoch=epoch,
        recipient=recipient,
        created_by=device_id_of(signer),
        key_id=group_key_id(group_id, epoch, group_key),
        ephemeral_public_key=ephemeral_public,
        sealed_key=bytes(_SEALED_KEY_BYTES),
        signature=bytes(_SIGNATURE_BYTES),
    )
    key = _wrap_key(shared, group_id, recipient_kex, ephemeral_public)
    sealed_key = ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, group_key, draft.associated_data())
    draft = dataclasses.replace(draft, sealed_key=sealed_key)
    return dataclasses.replace(draft, signature=signer.sign(_signed_message(draft.unsigned())))


def found_group(
    signing_key: Ed25519PrivateKey,
    kex_key: X25519PrivateKey,
    *,
    name: str,
    now_ms: int,
    nonce: bytes | None = None,
    group_key: bytes | None = None,
) -> tuple[bytes, list[bytes], bytes]:
    """Create a new group: (group id, [founder Member record, epoch-0 KeyEpoch record], epoch-0 group key)."""
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES)
    if group_key is None:
        group_key = os.urandom(GROUP_KEY_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError("a group nonce is 16 bytes")
    if len(group_key) != GROUP_KEY_BYTES:
        raise ValueError("a group key is 32 bytes")
    public_key = raw_public_key(signing_key)
    device_id = device_id_for(public_key)
    group_id = group_id_for(public_key, nonce)
    member = _sign_member(
        signing_key,
        group_id=group_id,
        public_key=public_key,
        kex_public_key=raw_public_key(kex_key),
        name=name,
        added_by=device_id,
        added_at_ms=now_ms,
        nonce=nonce,
    )
    epoch0 = _seal_key_epoch(
        signing_key,
        group_id=group_id,
        epoch=0,
        group_key=group_key,
        recipient=device_id,
        recipient_kex=member.kex_public_key,
    )
    if epoch0 is None:
        raise ValueError("the key-exchange key is unusable")
    return group_id, [member.encode(), epoch0.encode()], group_key


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One device of the group, as people see it in ``peer devices``."""

    device_id: str
    name: str
    public_key: bytes
    kex_public_key: bytes
    added_by: str
    added_at_ms: int
    revoked: bool
    founder: bool


def _primary(records: Iterable[MemberRecord]) -> MemberRecord:
    """The record whose details (name, keys) stand for a device: deterministic over the set."""
    return min(records, key=lambda m: (not m.founder, m.added_at_ms, hashlib.sha256(m.encode()).digest()))


@dataclass(frozen=True, slots=True)
class _View:
    """What a set of records means (see the theory of operation)."""

    ever: frozenset[str]
    revoked: frozenset[str]
    current: frozenset[str]
    current_epoch: int
    epoch_key_ids: Mapping[int, bytes]
    used_key_ids: Mapping[int, frozenset[bytes]]
    highest_epoch_seen: int
    rotation_needed: bool
    #: Per revoked device, per replica: the lowest cutoff over its valid revocations.
    cutoffs: Mapping[str, Mapping[str, int]]


class Membership:
    """The membership records of one group, and the members and keys they define."""

    def __init__(self, group_id: bytes) -> None:
        _check_group_id(group_id)
        self.group_id = group_id
        self._encoded: dict[bytes, MembershipRecord] = {}
        self._members: dict[str, list[MemberRecord]] = {}
        self._revocations: list[RevocationRecord] = []
        self._key_epochs: list[KeyEpochRecord] = []
        self._view: _View | None = None
        # member_key() runs once per received version: keep the parsed keys.
        self._public_keys: dict[str, Ed25519PublicKey] = {}

    # Adding records ---------------------------------------------------
    def _public_key(self, device_id: str) -> Ed25519PublicKey | None:
        key = self._public_keys.get(device_id)
        if key is None:
            records = self._members.get(device_id)
            if not records:
                return None
            # Every record of a device carries the same key: the device id is its hash.
            key = self._public_keys[device_id] = Ed25519PublicKey.from_public_bytes(records[0].public_key)
        return key

    def add(self, record: bytes) -> bool:
        """Verify and store one record; False if it was already known.

        Raises :class:`DecodeError` or :class:`UnsupportedFormat` for bytes
        that are not a record, :class:`WrongGroup` for another group's
        record, :class:`UnknownSigner` when the signer's Member record is
        not known yet (try again after more records), and
        :class:`BadSignature` or :class:`NotAMember` for forgeries.
        """
        record = bytes(record)
        if record in self._encoded:
            return False
        parsed = decode_membership_record(record)
        if parsed.group_id != self.group_id:
            raise WrongGroup(
                f"a membership record of group {parsed.group_id.hex()} was offered to group {self.group_id.hex()}"
            )
        if isinstance(parsed, MemberRecord) and parsed.founder:
            if group_id_for(parsed.public_key, parsed.nonce or b"") != self.group_id:
                raise NotAMember(f"device {parsed.device_id} claims to have founded this group, but did not")
            try:
                signer_key = Ed25519PublicKey.from_public_bytes(parsed.public_key)
            except ValueError as e:
                raise BadSignature("the founder's public key is not a valid Ed25519 key") from e
        else:
            if isinstance(parsed, MemberRecord) and parsed.added_by == parsed.device_id:
                raise NotAMember(f"device {parsed.device_id} tried to admit itself")
            known = self._public_key(parsed.signer)
            if known is None:
                raise UnknownSigner(
                    f"a membership record is signed by {parsed.signer}, a device not known yet; sync the member list"
                )
            signer_key = known
        try:
            signer_key.verify(parsed.signature, _signed_message(parsed.unsigned()))
        except InvalidSignature as e:
            raise BadSignature(f"a membership record signed by {parsed.signer} has a bad signature") from e
        self._encoded[record] = parsed
        if isinstance(parsed, MemberRecord):
            self._members.setdefault(parsed.device_id, []).append(parsed)
        elif isinstance(parsed, RevocationRecord):
            self._revocations.append(parsed)
        else:
            self._key_epochs.append(parsed)
        self._view = None
        return True

    def add_all(self, records: Iterable[bytes], *, strict: bool = False) -> list[bytes]:
        """Add records in any order; returns those newly accepted, in an order that add_all accepts.

        Records whose signer is unknown are retried until a pass adds
        nothing. What is left then can never verify with what is known:
        with ``strict=True`` the first such problem is raised, otherwise it
        is skipped (a sync session receives records of other devices, and
        one bad record must not stop the rest). Malformed and forged
        records are handled the same way.
        """
        pending = list(dict.fromkeys(bytes(r) for r in records))
        accepted: list[bytes] = []
        while pending:
            retry: list[bytes] = []
            problem: Exception | None = None
            for data in pending:
                try:
                    if self.add(data):
                        accepted.append(data)
                except UnknownSigner as e:
                    retry.append(data)
                    problem = problem or e
                except PeerError:
                    if strict:
                        raise
            if len(retry) == len(pending):
                if strict and problem is not None:
                    raise problem
                break
            pending = retry
        return accepted

    # Reading ------------------------------------------------------------
    def records(self) -> list[bytes]:
        """Every stored record: Member records in endorsement order, then the others; add_all accepts it as is."""
        order: list[bytes] = []
        known: set[str] = set()
        members = [m for ms in self._members.values() for m in ms]
        remaining = sorted(members, key=lambda m: (not m.founder, m.added_at_ms, m.encode()))
        while remaining:
            later: list[MemberRecord] = []
            for m in remaining:
                if m.founder or m.added_by in known:
                    order.append(m.encode())
                    known.add(m.device_id)
                else:
                    later.append(m)
            if len(later) == len(remaining):
                break  # cannot happen: every stored record's signer was known when stored
            remaining = later
        others: list[MembershipRecord] = [*self._revocations, *self._key_epochs]
        order.extend(sorted(r.encode() for r in others))
        return order

    def digest(self) -> bytes:
        """A 32-byte hash of the set of records: equal sets, equal digests, whatever the order."""
        h = hashlib.sha256(b"peer/v1/membership-digest\x00")
        for record_hash in sorted(hashlib.sha256(r).digest() for r in self._encoded):
            h.update(record_hash)
        return h.digest()

    def __len__(self) -> int:
        return len(self._encoded)

    def _compute(self) -> _View:
        if self._view is not None:
            return self._view
        members = [m for ms in self._members.values() for m in ms]
        ever = {m.device_id for m in members if m.founder}
        founder = next(iter(ever), None)
        changed = True
        while changed:
            changed = False
            for m in members:
                if m.device_id not in ever and m.added_by in ever:
                    ever.add(m.device_id)
                    changed = True
        valid_revocations = [r for r in self._revocations if r.revoked_by in ever]
        revoked = {r.device_id for r in valid_revocations}
        cutoffs: dict[str, dict[str, int]] = {}
        for device_id in revoked:
            of_device = [r for r in valid_revocations if r.device_id == device_id]
            # A replica missing from any one revocation has cutoff 0 there,
            # so only replicas listed by every revocation keep a positive one.
            replicas = set.intersection(*({replica for replica, _ in r.cutoff} for r in of_device))
            cutoffs[device_id] = {
                replica: min(r.cutoff_of(replica) for r in of_device) for replica in sorted(replicas)
            }
        if founder is None:
            roots: set[str] = set()
        elif founder not in revoked:
            roots = {founder}
        else:
            roots = {r.revoked_by for r in valid_revocations if r.device_id == founder} - revoked
        current = set(roots)
        changed = True
        while changed:
            changed = False
            for m in members:
                if m.device_id not in current and m.device_id not in revoked and m.added_by in current:
                    current.add(m.device_id)
                    changed = True
        counting = [k for k in self._key_epochs if k.created_by in current]
        key_ids: dict[int, set[bytes]] = {}
        for k in counting:
            key_ids.setdefault(k.epoch, set()).add(k.key_id)
        epoch_key_ids = {epoch: min(ids) for epoch, ids in key_ids.items()}
        current_epoch = max(key_ids, default=0)
        current_key_id = epoch_key_ids.get(current_epoch)
        rotation_needed = len(key_ids.get(current_epoch, ())) > 1 or any(
            k.epoch == current_epoch and k.key_id == current_key_id and k.recipient not in current
            for k in self._key_epochs
        )
        used: dict[int, set[bytes]] = {}
        for k in self._key_epochs:
            used.setdefault(k.epoch, set()).add(k.key_id)
        self._view = _View(
            ever=frozenset(ever),
            revoked=frozenset(revoked),
            current=frozenset(current),
            current_epoch=current_epoch,
            epoch_key_ids=epoch_key_ids,
            used_key_ids={epoch: frozenset(ids) for epoch, ids in used.items()},
            highest_epoch_seen=max(used, default=0),
            rotation_needed=rotation_needed,
            cutoffs=cutoffs,
        )
        return self._view

    def member_key(self, device_id: str) -> Ed25519PublicKey | None:
        """The signing key of a current member, None for anyone else (the lookup sealing uses)."""
        if device_id not in self._compute().current:
            return None
        return self._public_key(device_id)

    def author_key(self, dot: Dot) -> Ed25519PublicKey | None:
        """The key that must have signed the version ``dot``, None if no version of it is accepted.

        A current member's versions are all accepted. A revoked device's
        versions are accepted up to its effective cutoff (see
        :meth:`cutoff`), which every device computes alike from the same
        records, so they all keep or drop the same versions.
        """
        device_id = device_of(dot.origin)
        view = self._compute()
        if device_id in view.current:
            return self._public_key(device_id)
        if device_id in view.revoked and dot.counter <= view.cutoffs[device_id].get(dot.origin, 0):
            return self._public_key(device_id)
        return None

    def is_revoked(self, device_id: str) -> bool:
        """True when a valid revocation of this device is known."""
        return device_id in self._compute().revoked

    def cutoff(self, device_id: str) -> dict[str, int] | None:
        """The effective cutoff of a revoked device (replica -> highest accepted counter), None if not revoked.

        With several valid revocations of one device, each replica's cutoff
        is the lowest of theirs: learning another revocation can only lower
        it, so devices that know the same records apply the same rule.
        A replica that is not listed has cutoff 0.
        """
        cutoffs = self._compute().cutoffs.get(device_id)
        return None if cutoffs is None else dict(cutoffs)

    def is_member(self, device_id: str) -> bool:
        return device_id in self._compute().current

    @property
    def founder_id(self) -> str | None:
        for device_id, records in self._members.items():
            if any(m.founder for m in records):
                return device_id
        return None

    def members(self) -> list[MemberInfo]:
        """Current members and revoked devices, by name then device id.

        Devices admitted only by revoked devices (and not re-admitted) are
        neither, and are left out.
        """
        view = self._compute()
        out: list[MemberInfo] = []
        for device_id, records in self._members.items():
            if device_id in view.current:
                endorsing = [m for m in records if m.founder or m.added_by in view.current] or records
            elif device_id in view.revoked:
                endorsing = [m for m in records if m.founder or m.added_by in view.ever] or records
            else:
                continue
            primary = _primary(endorsing)
            out.append(
                MemberInfo(
                    device_id=device_id,
                    name=primary.name,
                    public_key=primary.public_key,
                    kex_public_key=primary.kex_public_key,
                    added_by=primary.added_by,
                    added_at_ms=primary.added_at_ms,
                    revoked=device_id in view.revoked,
                    founder=any(m.founder for m in records),
                )
            )
        out.sort(key=lambda i: (i.name, i.device_id))
        return out

    def revocation_of(self, device_id: str) -> tuple[str, int] | None:
        """(revoking device, time in ms) of the earliest valid revocation of ``device_id``; None if not revoked."""
        view = self._compute()
        if device_id not in view.revoked:
            return None
        valid = [r for r in self._revocations if r.device_id == device_id and r.revoked_by in view.ever]
        if not valid:
            return None
        first = min(valid, key=lambda r: (r.at_ms, r.revoked_by))
        return first.revoked_by, first.at_ms

    def orphaned(self) -> list[str]:
        """Devices admitted only by now-revoked devices: not members until a member admits them again."""
        view = self._compute()
        return sorted(view.ever - view.current - view.revoked)

    def member_info(self, device_id: str) -> MemberInfo | None:
        for info in self.members():
            if info.device_id == device_id:
                return info
        return None

    @property
    def current_epoch(self) -> int:
        """The highest key epoch created by a current member (0 for a new group)."""
        return self._compute().current_epoch

    @property
    def rotation_needed(self) -> bool:
        """True when the current epoch's key reached a non-member or competes with another key: call rotate()."""
        return self._compute().rotation_needed

    def epoch_keys(self, device_id: str, kex_key: X25519PrivateKey) -> dict[int, bytes]:
        """Every group key sealed to this device by a current member, by epoch.

        A record that does not open with ``kex_key`` (sealed to another key,
        or by a faulty member) is skipped rather than raised: one bad record
        must not lock a device out of every other epoch.
        """
        view = self._compute()
        keys: dict[int, bytes] = {}
        for k in self._key_epochs:
            if k.recipient != device_id or k.created_by not in view.current or k.epoch in keys:
                continue
            if view.epoch_key_ids.get(k.epoch) != k.key_id:
                continue
            group_key = k.unwrap(kex_key)
            if group_key is not None:
                keys[k.epoch] = group_key
        return dict(sorted(keys.items()))

    # Writing --------------------------------------------------------------
    def _require_current(self, signer: Ed25519PrivateKey) -> str:
        device_id = device_id_of(signer)
        if not self.is_member(device_id):
            raise NotAMember(f"this device ({device_id}) is not a current member of the group")
        return device_id

    def _grants(
        self,
        signer: Ed25519PrivateKey,
        recipient: MemberInfo,
        epoch_keys: Mapping[int, bytes],
        *,
        only_missing: bool,
    ) -> list[KeyEpochRecord]:
        """KeyEpoch records giving ``recipient`` the signer's keys that are the group's keys of their epochs."""
        view = self._compute()
        held: set[int] = set()
        if only_missing:
            held = {
                k.epoch
                for k in self._key_epochs
                if k.recipient == recipient.device_id
                and k.created_by in view.current
                and view.epoch_key_ids.get(k.epoch) == k.key_id
            }
        out: list[KeyEpochRecord] = []
        for epoch, group_key in sorted(epoch_keys.items()):
            if epoch in held:
                continue
            key_id = group_key_id(self.group_id, epoch, group_key)
            canonical = view.epoch_key_ids.get(epoch)
            # An epoch whose every record came from now-revoked creators has
            # no counting key; a key that really was handed out for it (its
            # id is on a stored record) is granted again so history stays
            # readable. Otherwise only the group's key of the epoch is.
            if key_id != canonical and (canonical is not None or key_id not in view.used_key_ids.get(epoch, ())):
                continue
            record = _seal_key_epoch(
                signer,
                group_id=self.group_id,
                epoch=epoch,
                group_key=group_key,
                recipient=recipient.device_id,
                recipient_kex=recipient.kex_public_key,
            )
            if record is not None:
                out.append(record)
        return out

    def _commit(self, records: Sequence[MembershipRecord]) -> list[bytes]:
        encoded = [r.encode() for r in records]
        for data in encoded:
            self.add(data)
        return encoded

    def add_member(
        self,
        signer: Ed25519PrivateKey,
        signer_kex: X25519PrivateKey,
        *,
        device_public_key: bytes,
        kex_public_key: bytes,
        name: str,
        now_ms: int,
        epoch_keys: Mapping[int, bytes],
    ) -> list[bytes]:
        """Admit a device: its Member record plus every epoch key the signer holds, sealed to it.

        The new records are added to this membership and returned, to be
        sent to the new device and synced to everyone.
        """
        del signer_kex  # part of the signature for symmetry with revoke(); sealing only needs the recipient's key
        signer_id = self._require_current(signer)
        if len(device_public_key) != 32 or len(kex_public_key) != 32:
            raise ValueError("public keys are 32 bytes")
        device_id = device_id_for(device_public_key)
        if device_id in self._compute().revoked:
            raise LocalProtocolError(f"device {device_id} was revoked and cannot rejoin this group")
        if device_id == signer_id:
            raise LocalProtocolError("a device cannot admit itself")
        member = _sign_member(
            signer,
            group_id=self.group_id,
            public_key=device_public_key,
            kex_public_key=kex_public_key,
            name=name,
            added_by=signer_id,
            added_at_ms=now_ms,
            nonce=None,
        )
        out = self._commit([member])
        info = self.member_info(device_id)
        assert info is not None
        # The new device gets keys sealed to the X25519 key it asked for.
        info = dataclasses.replace(info, kex_public_key=kex_public_key)
        out += self._commit(self._grants(signer, info, epoch_keys, only_missing=False))
        return out

    def rotate(
        self,
        signer: Ed25519PrivateKey,
        *,
        epoch_keys: Mapping[int, bytes],
        new_group_key: bytes | None = None,
    ) -> tuple[list[bytes], bytes]:
        """Start a new epoch with a fresh key sealed to every current member; also re-grant missing keys.

        The new epoch is one above the highest epoch of any stored record.
        """
        self._require_current(signer)
        if new_group_key is None:
            new_group_key = os.urandom(GROUP_KEY_BYTES)
        if len(new_group_key) != GROUP_KEY_BYTES:
            raise ValueError("a group key is 32 bytes")
        # Above every epoch ever seen, not just the counting ones: a revoked
        # device's last epoch still numbers versions sealed under its key.
        epoch = self._compute().highest_epoch_seen + 1
        if epoch > MAX_EPOCH:
            raise LocalProtocolError("this group has used all its key epochs; found a new group")
        current = [m for m in self.members() if not m.revoked]
        sealed = [
            _seal_key_epoch(
                signer,
                group_id=self.group_id,
                epoch=epoch,
                group_key=new_group_key,
                recipient=m.device_id,
                recipient_kex=m.kex_public_key,
            )
            for m in current
        ]
        out = self._commit([k for k in sealed if k is not None])
        for m in current:
            out += self._commit(self._grants(signer, m, epoch_keys, only_missing=True))
        return out, new_group_key

    def revoke(
        self,
        signer: Ed25519PrivateKey,
        signer_kex: X25519PrivateKey,
        *,
        device_id: str,
        now_ms: int,
        epoch_keys: Mapping[int, bytes],
        new_group_key: bytes | None = None,
        cutoff: Mapping[str, int] | None = None,
    ) -> tuple[list[bytes], bytes]:
        """Revoke a device and move the group to a new key it does not know.

        ``cutoff`` maps replicas of the revoked device to the highest
        counter of theirs this device accepts: pass this device's version
        vector entries for them, so the versions it holds stay valid
        everywhere. None means no cutoff information, which is read as an
        empty mapping: every version the device wrote is then refused once
        the revocation is known (also versions already held).

        Returns the records (the revocation, re-admissions of the devices
        that had been admitted only through the revoked one, the new epoch
        sealed to every remaining member, and older keys re-granted where a
        member held them only from the revoked device) and the new key.
        """
        del signer_kex
        signer_id = self._require_current(signer)
        if device_id == signer_id:
            raise LocalProtocolError("a device cannot revoke itself; ask another member to revoke it")
        if not self.is_member(device_id):
            raise NotAMember(f"device {device_id} is not a current member of this group")
        before = {m.device_id: m for m in self.members() if not m.revoked}
        cutoff = {} if cutoff is None else dict(cutoff)
        for replica in cutoff:
            if not is_replica_id(replica) or device_of(replica) != device_id:
                raise ValueError(f"cutoff entry {replica!r} is not a replica of {device_id}")
        revocation = _sign_revocation(signer, self.group_id, device_id, now_ms, cutoff)
        # Check on a copy first: if the signer's own admission went through
        # the revoked device, its re-admissions and keys would not count.
        trial = Membership(self.group_id)
        trial.add_all(self.records() + [revocation.encode()], strict=True)
        if not trial.is_member(signer_id):
            raise LocalProtocolError(
                f"this device was admitted through {device_id}; ask the device that admitted it to revoke {device_id}"
            )
        out = self._commit([revocation])
        readmit = [
            _sign_member(
                signer,
                group_id=self.group_id,
                public_key=info.public_key,
                kex_public_key=info.kex_public_key,
                name=info.name,
                added_by=signer_id,
                added_at_ms=now_ms,
                nonce=None,
            )
            for other, info in sorted(before.items())
            if other != device_id and not trial.is_member(other)
        ]
        out += self._commit(readmit)
        rotated, new_group_key = self.rotate(signer, epoch_keys=epoch_keys, new_group_key=new_group_key)
        return out + rotated, new_group_key

"""Sealing and opening one version.

A sealed version is written once by its author and forwarded byte for byte
by every device. Layout (all integers are minimal LEB128 varints)::

    uvarint len(header) | header          (VersionHeader, readable)
    uvarint len(box)    | box             (nonce 12 bytes | ChaCha20-Poly1305 ciphertext of MemoryBody)
    signature                             (64 bytes, Ed25519 of the author)

The body key is derived for each version with HKDF-SHA256 from the group
key of the header's epoch (salt: group id; info: a label, the memory id
and the dot), so no two versions share a key. The header is the AEAD's
associated data, and the signature covers a domain label, the header and
the box: changing any single bit of a sealed version is detected.
"""

from __future__ import annotations

import functools
import hmac
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .clock import MAX_COUNTER, Dot
from .codec import Reader, Writer, decode_whole, encode_uvarint
from .errors import (
    BadSignature,
    DecodeError,
    DecryptionFailed,
    LocalProtocolError,
    NotAMember,
    UnknownEpochKey,
    WrongGroup,
)
from .ids import device_id_of, raw_public_key
from .records import FORMAT_VERSION, MAX_BODY_BYTES, MemoryBody, VersionHeader, uuid_text

__all__ = [
    "SealedVersion",
    "seal",
    "open_version",
    "verify_version",
    "SignatureJob",
    "signature_job",
    "signature_valid",
    "bad_signature",
    "unseal_version",
    "stored_embedding",
    "MAX_SEALED_BYTES",
    "MemberKeyLookup",
    "AuthorKeyLookup",
]

MAX_SEALED_BYTES = 4 << 20
_NONCE_BYTES = 12
_SIGNATURE_BYTES = 64
# records.py refuses any body that would not fit a box (it cannot import this module).
assert MAX_BODY_BYTES == MAX_SEALED_BYTES - _NONCE_BYTES - 16
_SIGN_LABEL = b"peer/v1/sealed-version\x00"
_KDF_LABEL = b"peer/v1/version-key\x00"

#: Given a device id, the public key of that device if it is a current member.
MemberKeyLookup = Callable[[str], Ed25519PublicKey | None]
#: Given a version's dot, the public key that must have signed it, or None
#: when no version of that dot is accepted (``Membership.author_key``: a
#: revoked device's versions count only up to its revocation cutoff).
AuthorKeyLookup = Callable[[Dot], Ed25519PublicKey | None]


def _author_public_key(
    header: VersionHeader, member_key: MemberKeyLookup | None, author_key: AuthorKeyLookup | None
) -> Ed25519PublicKey | None:
    if author_key is not None:
        return author_key(header.dot)
    if member_key is not None:
        return member_key(header.author)
    raise TypeError("pass author_key (or member_key) to check who wrote a version")


@dataclass(frozen=True, slots=True)
class SealedVersion:
    """A version as it travels: readable header, sealed box, author's signature."""

    header: VersionHeader
    header_bytes: bytes
    box: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.signature) != _SIGNATURE_BYTES:
            raise LocalProtocolError("a signature is 64 bytes")
        if len(self.box) < _NONCE_BYTES + 16:
            raise LocalProtocolError("sealed box too short")

    def encode(self) -> bytes:
        h, box = self.header_bytes, self.box
        return b"".join((encode_uvarint(len(h)), h, encode_uvarint(len(box)), box, self.signature))

    @property
    def data(self) -> bytes:
        return self.encode()

    @classmethod
    def decode_from(cls, r: Reader) -> SealedVersion:
        header_bytes = r.bytes(limit=1 << 20)
        header = VersionHeader.decode(header_bytes)
        box = r.bytes(limit=MAX_SEALED_BYTES)
        signature = r.raw(_SIGNATURE_BYTES)
        return cls(header=header, header_bytes=header_bytes, box=box, signature=signature)

    @classmethod
    def decode(cls, data: bytes) -> SealedVersion:
        """Parse without any cryptographic check (see :func:`open_version`)."""
        if len(data) > MAX_SEALED_BYTES + (1 << 20):
            raise DecodeError("sealed version too large")
        return decode_whole(cls.decode_from, data, "sealed version")


def _version_key(group_key: bytes, header: VersionHeader) -> bytes:
    """HKDF-SHA256 (RFC 5869) of the group key: salt the group id, info the label, memory id and dot; 32 bytes.

    One output block, so expand is a single HMAC over ``info || 0x01``; the
    extract step depends only on the group and its key, so it is kept
    (every version of a group under one epoch shares it). The same bytes as
    ``cryptography``'s ``HKDF`` (a test compares them), in a fifth of the time.
    """
    w = Writer()
    header.dot.encode_into(w)
    return _derived_key(group_key, header.group_id, header.memory_id, w.getvalue())


def _derived_key(group_key: bytes, group_id: bytes, memory_id: str, dot_bytes: bytes) -> bytes:
    """:func:`_version_key` from the header's parts: ``dot_bytes`` is the dot's encoding."""
    info = Writer().raw(_KDF_LABEL).str(memory_id).raw(dot_bytes).raw(b"\x01").getvalue()
    return hmac.digest(_extracted(group_id, group_key), info, "sha256")


@functools.lru_cache(maxsize=64)
def _extracted(salt: bytes, group_key: bytes) -> bytes:
    """HKDF's extract step: the pseudorandom key of one group key."""
    return hmac.digest(salt, group_key, "sha256")


def _signed_bytes(header_bytes: bytes, box: bytes) -> bytes:
    return Writer().raw(_SIGN_LABEL).bytes(header_bytes).bytes(box).getvalue()


def seal(
    header: VersionHeader,
    body: MemoryBody,
    *,
    signing_key: Ed25519PrivateKey,
    group_key: bytes,
    nonce: bytes | None = None,
) -> SealedVersion:
    """Seal ``body`` under ``header``; the signing key must be the author's (the dot's device)."""
    if len(group_key) != 32:
        raise ValueError("a group key is 32 bytes")
    author = device_id_of(signing_key)
    if author != header.author:
        raise ValueError(f"device {author} cannot author a dot of replica {header.dot.origin}")
    if nonce is None:
        nonce = os.urandom(_NONCE_BYTES)
    if len(nonce) != _NONCE_BYTES:
        raise ValueError("a nonce is 12 bytes")
    header_bytes = header.encode()
    box = nonce + ChaCha20Poly1305(_version_key(group_key, header)).encrypt(nonce, body.encode(), header_bytes)
    signature = signing_key.sign(_signed_bytes(header_bytes, box))
    return SealedVersion(header=header, header_bytes=header_bytes, box=box, signature=signature)


def verify_version(
    sealed: SealedVersion,
    *,
    group_id: bytes,
    member_key: MemberKeyLookup | None = None,
    author_key: AuthorKeyLookup | None = None,
) -> None:
    """Check group, authorship and signature (what a forwarder can check without the key).

    ``author_key`` (per version) takes precedence over ``member_key`` (per
    device, current members only); one of them is required.
    """
    job = signature_job(sealed, group_id=group_id, member_key=member_key, author_key=author_key)
    if not signature_valid(*job):
        raise bad_signature(sealed)


#: What checking one signature takes: the signer's raw public key, the signature, the signed bytes.
SignatureJob = tuple[bytes, bytes, bytes]


def signature_job(
    sealed: SealedVersion,
    *,
    group_id: bytes,
    member_key: MemberKeyLookup | None = None,
    author_key: AuthorKeyLookup | None = None,
) -> SignatureJob:
    """:func:`verify_version` up to the signature itself, which :func:`signature_valid` checks.

    Raises :class:`WrongGroup` or :class:`NotAMember`. Receiving many
    versions checks their jobs in bulk, elsewhere (a helper process), then
    raises :func:`bad_signature` for each that fails.
    """
    header = sealed.header
    if header.group_id != group_id:
        raise WrongGroup(
            f"version {header.dot} belongs to group {header.group_id.hex()}, not this group {group_id.hex()}"
        )
    public_key = _author_public_key(header, member_key, author_key)
    if public_key is None:
        raise NotAMember(
            f"version {header.dot} was written by {header.author}, which is not a member of this group"
            " (or was revoked before this version reached the device that revoked it)"
        )
    return _raw_key(public_key), sealed.signature, _signed_bytes(sealed.header_bytes, sealed.box)


def bad_signature(sealed: SealedVersion) -> BadSignature:
    return BadSignature(f"version {sealed.header.dot} has a bad signature: it was tampered with")


def signature_valid(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Ed25519: libsodium first (about twice OpenSSL's speed here), OpenSSL's answer when libsodium refuses.

    libsodium refuses everything OpenSSL refuses and a few encodings more
    (small-order keys and points, which no honest signer produces), so a
    signature it accepts is valid, and one it refuses is asked of OpenSSL:
    what is accepted is exactly what ``cryptography`` accepts, as before.
    Both release the GIL.
    """
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
        return True
    except (nacl.exceptions.BadSignatureError, ValueError):
        pass
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _raw_key(public_key: Ed25519PublicKey) -> bytes:
    # Membership keeps one key object per device, so this is a dictionary hit per version.
    found = _RAW_KEYS.get(id(public_key))
    if found is None or found[0] is not public_key:
        if len(_RAW_KEYS) >= 1024:
            _RAW_KEYS.clear()
        found = _RAW_KEYS[id(public_key)] = (public_key, raw_public_key(public_key))
    return found[1]


#: id(key) -> (the key, held so that its id is not reused, its 32 raw bytes).
_RAW_KEYS: dict[int, tuple[Ed25519PublicKey, bytes]] = {}


def open_version(
    sealed: SealedVersion,
    *,
    group_id: bytes,
    group_keys: Mapping[int, bytes],
    member_key: MemberKeyLookup | None = None,
    author_key: AuthorKeyLookup | None = None,
) -> MemoryBody:
    """Verify and decrypt; raises a :class:`TrustError` subclass or :class:`DecodeError`."""
    verify_version(sealed, group_id=group_id, member_key=member_key, author_key=author_key)
    return unseal_version(sealed, group_keys)


def unseal_version(sealed: SealedVersion, group_keys: Mapping[int, bytes]) -> MemoryBody:
    """Decrypt and decode without checking the signature: for versions this device checked when it stored them.

    Raises :class:`UnknownEpochKey`, :class:`DecryptionFailed` or :class:`DecodeError`.
    """
    header = sealed.header
    group_key = group_keys.get(header.epoch)
    if group_key is None:
        raise UnknownEpochKey(
            f"version {header.dot} is sealed under key epoch {header.epoch}, which this device does not hold;"
            " sync with a member that has it"
        )
    nonce, ciphertext = sealed.box[:_NONCE_BYTES], sealed.box[_NONCE_BYTES:]
    try:
        plaintext = ChaCha20Poly1305(_version_key(group_key, header)).decrypt(nonce, ciphertext, sealed.header_bytes)
    except InvalidTag as e:
        raise DecryptionFailed(f"version {header.dot} could not be decrypted with the group key of epoch {header.epoch}") from e
    return MemoryBody.decode(plaintext)


def stored_embedding(data: bytes, group_keys: Mapping[int, bytes]) -> bytes:
    """The vector inside an encoded sealed version this device checked and stored: ``unseal_version(...).embedding``, faster.

    Building the search index needs only the vectors, which the store keeps
    nowhere else. This parses the header only as far as the key derivation
    needs, decrypts, and skips the body's other fields undecoded
    (:meth:`MemoryBody.embedding_in`): a quarter of the time of decoding it
    all. No signature check, and no check of what the store checked already.
    Raises :class:`UnknownEpochKey`, :class:`DecryptionFailed` or :class:`DecodeError`.
    """
    r = Reader(data, "sealed version")
    header_bytes = r.bytes(limit=1 << 20)
    box = r.bytes(limit=MAX_SEALED_BYTES)
    r.raw(_SIGNATURE_BYTES)
    r.end()
    h = Reader(header_bytes, "version header")
    fmt = h.uvarint(limit=1 << 16)
    group_id = h.raw(16)
    epoch = h.uvarint(limit=(1 << 32) - 1)
    memory_id = uuid_text(h.raw(16))
    dot_start = h.position
    h.bytes(limit=64)  # the dot: its origin, then its counter
    h.uvarint(limit=MAX_COUNTER)
    dot_bytes = header_bytes[dot_start : h.position]
    group_key = group_keys.get(epoch)
    if fmt != FORMAT_VERSION or group_key is None or len(box) < _NONCE_BYTES + 16:
        # The rare path: the full parse names the version (or says what is malformed).
        return unseal_version(SealedVersion.decode(data), group_keys).embedding
    key = _derived_key(group_key, group_id, memory_id, dot_bytes)
    try:
        plaintext = ChaCha20Poly1305(key).decrypt(box[:_NONCE_BYTES], box[_NONCE_BYTES:], header_bytes)
    except InvalidTag:
        return unseal_version(SealedVersion.decode(data), group_keys).embedding
    return MemoryBody.embedding_in(plaintext)

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

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .clock import Dot
from .codec import Reader, Writer, decode_whole
from .errors import (
    BadSignature,
    DecodeError,
    DecryptionFailed,
    LocalProtocolError,
    NotAMember,
    UnknownEpochKey,
    WrongGroup,
)
from .ids import device_id_of
from .records import MAX_BODY_BYTES, MemoryBody, VersionHeader

__all__ = [
    "SealedVersion",
    "seal",
    "open_version",
    "verify_version",
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
        return Writer().bytes(self.header_bytes).bytes(self.box).raw(self.signature).getvalue()

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
    w = Writer().raw(_KDF_LABEL).str(header.memory_id)
    header.dot.encode_into(w)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=header.group_id, info=w.getvalue())
    return hkdf.derive(group_key)


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
    try:
        public_key.verify(sealed.signature, _signed_bytes(sealed.header_bytes, sealed.box))
    except InvalidSignature as e:
        raise BadSignature(f"version {header.dot} has a bad signature: it was tampered with") from e


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

"""Identifiers: device ids, replica ids (the origin of a dot), memory ids.

A *device id* is derived from the device's Ed25519 public key: the first 16
bytes of its SHA-256, in RFC 4648 base32 without padding (26 characters).
People see it grouped (``ABCDE-FGHIJ-...``) and may type any unambiguous
prefix, in any case, with or without the dashes.

A *replica id* names one incarnation of a device's store and is what dots
count in. It is the device id itself for the store ``peer init`` made, and
``DEVICEID.N`` after a restore from a backup, with N drawn at random: a
restored store starts a new incarnation, so it can never reuse a dot of the
versions it wrote after the backup was taken and then lost, even when the
same backup is restored twice (see docs/protocol.md).
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import DecodeError

__all__ = [
    "DEVICE_ID_LENGTH",
    "MAX_INCARNATION",
    "device_id_for",
    "device_id_of",
    "raw_public_key",
    "is_device_id",
    "format_device_id",
    "normalize_device_id",
    "replica_id",
    "device_of",
    "is_replica_id",
    "memory_id_bytes",
    "memory_id_str",
]

DEVICE_ID_LENGTH = 26
#: Incarnation numbers are 1..MAX_INCARNATION (at most nine digits).
MAX_INCARNATION = 999_999_999
# fullmatch, not match: "$" also matches before a trailing newline.
_DEVICE_RE = re.compile(r"^[A-Z2-7]{26}$")
_REPLICA_RE = re.compile(r"^([A-Z2-7]{26})(?:\.([1-9][0-9]{0,8}))?$")


def device_id_for(public_key_raw: bytes) -> str:
    """The device id of a raw 32-byte Ed25519 public key."""
    if len(public_key_raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    digest = hashlib.sha256(public_key_raw).digest()[:16]
    return base64.b32encode(digest).decode("ascii").rstrip("=")


#: Any key whose public half travels raw (32 bytes): Ed25519 identities, X25519 exchange keys.
AnyKey = Ed25519PrivateKey | Ed25519PublicKey | X25519PrivateKey | X25519PublicKey


def raw_public_key(key: AnyKey) -> bytes:
    """The raw 32 bytes of a key's public half (of the key itself, if it is public)."""
    public = key.public_key() if isinstance(key, (Ed25519PrivateKey, X25519PrivateKey)) else key
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def device_id_of(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The device id of an Ed25519 key (private or public)."""
    return device_id_for(raw_public_key(key))


def is_device_id(text: str) -> bool:
    return bool(_DEVICE_RE.fullmatch(text))


def format_device_id(device_id: str) -> str:
    """Grouped for people: ``ABCDE-FGHIJ-KLMNO-PQRST-UVWXY-Z``."""
    return "-".join(device_id[i : i + 5] for i in range(0, len(device_id), 5))


def normalize_device_id(text: str) -> str:
    """What a person typed, as a (possibly partial) device id."""
    return text.replace("-", "").replace(" ", "").upper()


def replica_id(device_id: str, incarnation: int = 0) -> str:
    if not is_device_id(device_id):
        raise ValueError(f"not a device id: {device_id!r}")
    if not 0 <= incarnation <= MAX_INCARNATION:
        raise ValueError(f"incarnation must be between 0 and {MAX_INCARNATION}")
    return device_id if incarnation == 0 else f"{device_id}.{incarnation}"


def is_replica_id(text: str) -> bool:
    return bool(_REPLICA_RE.fullmatch(text))


def device_of(replica: str) -> str:
    """The device a replica id belongs to (raises DecodeError if malformed)."""
    match = _REPLICA_RE.fullmatch(replica)
    if not match:
        raise DecodeError(f"malformed replica id {replica!r}")
    return match.group(1)


def memory_id_bytes(memory_id: str) -> bytes:
    try:
        return uuid.UUID(memory_id).bytes
    except ValueError as e:
        raise DecodeError(f"malformed memory id {memory_id!r}") from e


def memory_id_str(raw: bytes) -> str:
    if len(raw) != 16:
        raise DecodeError("a memory id is 16 bytes")
    return str(uuid.UUID(bytes=raw))

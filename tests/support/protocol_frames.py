"""Sample keys, sealed versions and one of every frame, shared by the protocol tests."""

from __future__ import annotations

import uuid

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import Dot, MemoryBody, VersionHeader, VersionVector, seal
from protocol.frames import (
    PROTOCOL_VERSION,
    Done,
    ErrorCode,
    ErrorFrame,
    Frame,
    Hello,
    JoinAccept,
    JoinReject,
    JoinRequest,
    Members,
    VersionsBatch,
)
from protocol.ids import device_id_of
from protocol.sealing import SealedVersion

GROUP = bytes(range(16))
GROUP_KEY = bytes(32)


def device_key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed.to_bytes(32, "big"))


def device_id(key: Ed25519PrivateKey) -> str:
    return device_id_of(key)


def make_version(key: Ed25519PrivateKey, counter: int, content: str = "a fact", group: bytes = GROUP) -> SealedVersion:
    """A real sealed version of a new memory, with a deterministic nonce."""
    header = VersionHeader(
        group_id=group,
        epoch=0,
        memory_id=str(uuid.UUID(int=counter)),
        dot=Dot(device_id(key), counter),
        context=(),
        hlc=counter << 16,
    )
    return seal(header, MemoryBody(content), signing_key=key, group_key=GROUP_KEY, nonce=counter.to_bytes(12, "big"))


KEY_A = device_key(1)
A = device_id(KEY_A)
B = device_id(device_key(2))


def sample_frames() -> list[Frame]:
    v1 = make_version(KEY_A, 1000, "first")
    v2 = make_version(KEY_A, 1001, "second, a little longer ✓")
    return [
        Hello(PROTOCOL_VERSION, A, GROUP, VersionVector({A: 1001, B: 7}), b"\x01" * 32, 0),
        Hello(PROTOCOL_VERSION, B, GROUP, VersionVector(), bytes(32)),
        Members((b"record one", b"\x00" * 300)),
        Members(()),
        VersionsBatch((v1, v2)),
        Done(0),
        Done(123456),
        ErrorFrame(ErrorCode.WRONG_GROUP, "device X belongs to another group"),
        JoinRequest.create(secret=b"s" * 32, invite_id=b"inv1", device_key=b"k" * 32, exchange_key=b"x" * 32, name="laptop"),
        JoinAccept(GROUP, (b"member record", b"epoch record"), "home"),
        JoinAccept(GROUP, (), None),
        JoinReject(ErrorCode.INVITE_REFUSED, "this invite code is not valid"),
    ]

"""A signed bundle made from sample versions, shared by the bundle and wire-fuzz tests."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocol import VersionVector
from protocol.bundle import BundleWriter
from tests.support.protocol_frames import GROUP, device_id, device_key, make_version

KEY_A, KEY_B = device_key(21), device_key(22)
A, B = device_id(KEY_A), device_id(KEY_B)
KEYS: dict[str, Ed25519PublicKey] = {A: KEY_A.public_key(), B: KEY_B.public_key()}
RECORDS = (b"member record of A", b"key epoch 0")


def make_bundle(
    *, group: bytes = GROUP, recipient: str | None = None, base: VersionVector | None = None, versions: int = 3
) -> bytes:
    writer = BundleWriter(
        signing_key=KEY_A,
        group_id=group,
        sender_vector=VersionVector({A: 5002}),
        base_vector=base,
        created_ms=1_763_000_000_000,
        recipient=recipient,
    )
    chunks = [writer.header()]
    chunks += [writer.add_member_record(r) for r in RECORDS]
    chunks += [writer.add_version(make_version(KEY_A, 5000 + i, f"memory {i}", group=group)) for i in range(versions)]
    chunks.append(writer.finish())
    return b"".join(chunks)

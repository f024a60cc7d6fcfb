"""Two sources of sealed versions for sync-session tests: each holds what the other partly lacks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from protocol import VersionVector
from protocol.sealing import SealedVersion
from tests.support.protocol_frames import device_id, device_key, make_version

KEY_A, KEY_B = device_key(11), device_key(12)
A, B = device_id(KEY_A), device_id(KEY_B)
DIGEST = b"\x11" * 32


class MemorySource:
    """A store reduced to what sync needs: its sealed versions and its vector."""

    def __init__(self, versions: Iterable[SealedVersion] = (), vector: VersionVector | None = None) -> None:
        self.versions = {v.header.dot: v for v in versions}
        self.vector = vector if vector is not None else VersionVector(
            {d.origin: max(x.counter for x in self.versions if x.origin == d.origin) for d in self.versions}
        )

    def missing(self, vector: VersionVector) -> Iterator[SealedVersion]:
        return (v for dot, v in sorted(self.versions.items()) if not vector.covers(dot))


def stores() -> tuple[MemorySource, MemorySource, list[SealedVersion], list[SealedVersion]]:
    a_versions = [make_version(KEY_A, 1000 + i, f"a{i}") for i in range(6)]
    b_versions = [make_version(KEY_B, 2000 + i, f"b{i}") for i in range(4)]
    # B already holds A's first two versions, and its vector says so.
    source_a = MemorySource(a_versions)
    source_b = MemorySource(b_versions + a_versions[:2])
    return source_a, source_b, a_versions, b_versions

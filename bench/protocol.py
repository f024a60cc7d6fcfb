"""Protocol benchmarks: sealing, what a peer lacks, HELLO size.

Prints:

* seal and open throughput (versions/s, MB/s of sealed bytes) for typical
  memories (about 500 bytes of text plus a 384-d float32 embedding) and for
  small ones (a short line, no embedding);
* the time to work out what a peer lacks from a 100,000-version store: the
  per-replica ranges (``VersionVector.missing_from``) and the versions with
  counters above the peer's vector, on an in-memory index shaped like the
  store's (per replica, sorted counters; ``bisect`` finds the cut);
* the size of HELLO for 2, 5 and 20 devices, and the bytes of a whole
  no-change session.

Run: ``.venv/bin/python bench/protocol.py`` (``--quick`` for a smoke run).
Only ``protocol`` and the standard library are used; nothing touches the disk.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import os
import platform
import random
import struct
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

# Run as a script, this file would shadow the package it measures (it has the
# same name): keep its own folder off the import path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import cryptography  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: E402
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from protocol import (
    Dot,
    Hello,
    MemoryBody,
    SealedVersion,
    SessionComplete,
    SyncSession,
    VersionHeader,
    VersionVector,
    device_id_of,
    encode_frame,
    open_version,
    outgoing,
    replica_id,
    seal,
)
from protocol.frames import NEED_DATA, PROTOCOL_VERSION
from protocol.session import PAUSED, HelloReceived

GROUP_ID = bytes(range(16))
GROUP_KEY = hashlib.sha256(b"bench group key").digest()
START_MS = 1_760_000_000_000


def paragraphs() -> list[str]:
    """Real text: the paragraphs of the Python documentation shipped with the interpreter."""
    import pydoc_data.topics

    out = [p.strip() for text in pydoc_data.topics.topics.values() for p in text.split("\n\n")]
    return [p for p in out if 80 <= len(p) <= 1500]


def device(seed: int) -> tuple[Ed25519PrivateKey, str]:
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"bench device %d" % seed).digest())
    return key, device_id_of(key)


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """The fastest of several timings of fn(), in seconds."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# -- sealing -----------------------------------------------------------------------------


@dataclass
class SealFigures:
    label: str
    count: int
    body_bytes: float
    sealed_bytes: float
    seal_per_s: float
    open_per_s: float

    def line(self) -> str:
        seal_mb = self.seal_per_s * self.sealed_bytes / 1e6
        open_mb = self.open_per_s * self.sealed_bytes / 1e6
        return (
            f"{self.label:<34} body {self.body_bytes:6.0f} B  sealed {self.sealed_bytes:6.0f} B  "
            f"seal {self.seal_per_s:8.0f} versions/s ({seal_mb:5.1f} MB/s)  "
            f"open {self.open_per_s:8.0f} versions/s ({open_mb:5.1f} MB/s)"
        )


def bench_sealing(label: str, bodies: list[MemoryBody], repeats: int) -> SealFigures:
    key, dev = device(1)
    public = key.public_key()
    headers = [
        VersionHeader(
            group_id=GROUP_ID,
            epoch=0,
            memory_id=str(uuid.UUID(int=i + 1)),
            dot=Dot(dev, START_MS + i),
            context=(Dot(dev, START_MS + i - 1),) if i else (),
            hlc=(START_MS + i) << 16,
        )
        for i in range(len(bodies))
    ]
    sealed: list[SealedVersion] = []

    def do_seal() -> None:
        sealed.clear()
        for header, body in zip(headers, bodies):
            sealed.append(seal(header, body, signing_key=key, group_key=GROUP_KEY))

    def member_key(device_id: str) -> Ed25519PublicKey | None:
        return public if device_id == dev else None

    def do_open() -> None:
        for s in sealed:
            open_version(s, group_id=GROUP_ID, group_keys={0: GROUP_KEY}, member_key=member_key)

    seal_s = best_of(repeats, do_seal)
    open_s = best_of(repeats, do_open)
    n = len(bodies)
    return SealFigures(
        label=label,
        count=n,
        body_bytes=sum(len(b.encode()) for b in bodies) / n,
        sealed_bytes=sum(len(s.encode()) for s in sealed) / n,
        seal_per_s=n / seal_s,
        open_per_s=n / open_s,
    )


def typical_bodies(texts: list[str], n: int, rng: random.Random) -> list[MemoryBody]:
    out = []
    for i in range(n):
        text = texts[i % len(texts)]
        while len(text) < 500:
            text += " " + texts[rng.randrange(len(texts))]
        text = text[:500]
        embedding = struct.pack("<384f", *(rng.uniform(-1, 1) for _ in range(384)))
        out.append(
            MemoryBody(
                content=text,
                kind="fact",
                project="peer",
                tags=("docs", "python"),
                metadata='{"source":"pydoc"}',
                created_at=1.76e9 + i,
                updated_at=1.76e9 + i,
                embedder="all-MiniLM-L6-v2-int8",
                embedding=embedding,
            )
        )
    return out


def small_bodies(texts: list[str], n: int) -> list[MemoryBody]:
    return [MemoryBody(content=texts[i % len(texts)][:60], created_at=1.76e9, updated_at=1.76e9) for i in range(n)]


# -- what a peer lacks --------------------------------------------------------------------


class CounterIndex:
    """What the store keeps to answer "what does this vector lack": per replica, sorted counters."""

    def __init__(self, counters: dict[str, list[int]]) -> None:
        self.by_replica = {r: sorted(c) for r, c in counters.items()}
        self.vector = VersionVector({r: c[-1] for r, c in self.by_replica.items() if c})

    def missing(self, peer: VersionVector) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for replica, (low, high) in self.vector.missing_from(peer).items():
            counters = self.by_replica[replica]
            start = bisect.bisect_right(counters, low)
            end = bisect.bisect_right(counters, high)
            out.extend((replica, c) for c in counters[start:end])
        return out


def build_index(total: int, replicas: int, rng: random.Random) -> CounterIndex:
    counters: dict[str, list[int]] = {}
    for r in range(replicas):
        _, dev = device(100 + r)
        t = START_MS
        mine = []
        for _ in range(total // replicas):
            t += rng.randint(1, 60_000)  # counters are milliseconds: sparse, increasing
            mine.append(t)
        counters[replica_id(dev, 0)] = mine
    return CounterIndex(counters)


def peer_lacking(index: CounterIndex, fraction: float) -> VersionVector:
    """A peer that holds all but the newest ``fraction`` of each replica's versions."""
    entries = {}
    for replica, counters in index.by_replica.items():
        keep = int(len(counters) * (1 - fraction))
        if keep:
            entries[replica] = counters[keep - 1]
    return VersionVector(entries)


# -- HELLO and the no-change session -----------------------------------------------------------


def vector_of(devices: int, incarnations: int = 0) -> VersionVector:
    entries = {}
    for i in range(devices):
        _, dev = device(200 + i)
        entries[replica_id(dev, 0)] = START_MS + 1234567 * (i + 1)
        for n in range(1, incarnations + 1):
            entries[replica_id(dev, n)] = START_MS + 7654321 * (i + n)
    return VersionVector(entries)


def hello_size(devices: int) -> int:
    _, me = device(200)
    return len(encode_frame(Hello(PROTOCOL_VERSION, me, GROUP_ID, vector_of(devices), bytes(32), 0)))


class EmptySource:
    def missing(self, vector: VersionVector) -> list[SealedVersion]:
        return []


def no_change_session_bytes(devices: int) -> tuple[int, int]:
    """Bytes each way of a complete session between two stores that hold the same versions."""
    vector = vector_of(devices)
    digest = hashlib.sha256(b"same member list").digest()
    (_, a), (_, b) = device(200), device(201)
    sa = SyncSession(a, GROUP_ID, vector, digest)
    sb = SyncSession(b, GROUP_ID, vector, digest)
    to_b, to_a = sa.start(), sb.start()
    sent = [0, 0]
    complete = 0
    while to_a or to_b:
        sent[0] += len(to_b)
        sent[1] += len(to_a)
        sb.receive_data(to_b)
        sa.receive_data(to_a)
        outs = []
        for s in (sa, sb):
            out = bytearray()
            while True:
                event = s.next_event()
                if event is NEED_DATA or event is PAUSED:
                    break
                if isinstance(event, HelloReceived):
                    out += b"".join(outgoing(s, EmptySource()))
                if isinstance(event, SessionComplete):
                    complete += 1
            outs.append(bytes(out))
        to_b, to_a = outs
    assert complete == 2
    return sent[0], sent[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    args = parser.parse_args()
    rng = random.Random(7)
    texts = paragraphs()
    n = 300 if args.quick else 3000
    repeats = 1 if args.quick else 3

    print(f"peer protocol benchmark — Python {platform.python_version()}, cryptography {cryptography.__version__},"
          f" {platform.machine()}, {platform.system()}")
    print(f"text corpus: {len(texts)} paragraphs from pydoc_data.topics\n")

    print(f"Seal and open ({n} versions, best of {repeats}; open = verify signature + decrypt + decode):")
    print(bench_sealing("typical (500 B text + 384-d f32)", typical_bodies(texts, n, rng), repeats).line())
    print(bench_sealing("small (60 B text, no embedding)", small_bodies(texts, n), repeats).line())

    print("\nWhat a peer lacks, from a 100,000-version store (5 replicas x 20,000 versions):")
    index = build_index(100_000, 5, rng)
    loops = 20 if args.quick else 200
    for label, fraction in (("peer up to date", 0.0), ("peer lacks 1%", 0.01), ("peer lacks 10%", 0.10),
                            ("peer has nothing", 1.0)):
        peer = peer_lacking(index, fraction)
        ranges_s = best_of(loops, lambda peer=peer: index.vector.missing_from(peer))
        select_s = best_of(max(loops // 10, 3), lambda peer=peer: index.missing(peer))
        count = len(index.missing(peer))
        print(f"  {label:<18} missing_from {ranges_s * 1e6:8.1f} µs   select {count:6d} versions"
              f" {select_s * 1e3:8.3f} ms")

    print("\nHELLO frame (4-byte length, tag, payload) with one replica per device:")
    for devices in (2, 5, 20):
        print(f"  {devices:2d} devices: {hello_size(devices):5d} bytes")
    for devices in (2, 5, 20):
        ab, ba = no_change_session_bytes(devices)
        print(f"  no-change session, {devices:2d} devices: {ab} + {ba} = {ab + ba} bytes in all"
              " (HELLO, empty MEMBERS, DONE each way)")


if __name__ == "__main__":
    main()

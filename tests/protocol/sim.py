"""A simulated device: peer's store reduced to its sync-relevant state, in memory.

Theory of operation. A :class:`SimDevice` does what ``peer/``'s store does,
with nothing but ``protocol/``: it writes versions (add, edit, forget) with
dots from the counter rule and an HLC on an injected clock, seals them for
real, and keeps every sealed version it ever accepted, by dot. Its version
vector covers exactly what it holds contiguously: its own replica up to its
last counter, and whatever a complete session or a bundle whose base it
dominates proved it holds. Received versions are verified and opened (real
signatures, real AEAD), deduplicated by dot, and never dropped; a memory's
state is :func:`protocol.merge.resolve` over all of its versions.

A device restored from a snapshot keeps the snapshot's versions and vector
but writes as a new incarnation (``DEVICEID.N``), so the dots it wrote
after the snapshot, which peers may hold, are never reused; peers resend
those lost versions because the restored vector does not cover them.

Nothing here does I/O or reads a wall clock, so a Hypothesis state machine
can drive any number of devices deterministically.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol import (
    Dot,
    HybridLogicalClock,
    MemoryBody,
    MemoryState,
    SealedVersion,
    VersionHeader,
    VersionMeta,
    VersionState,
    VersionVector,
    context_for_new_version,
    device_id_for,
    next_counter,
    open_version,
    replica_id,
    resolve,
    seal,
)

__all__ = [
    "SimClock",
    "SimGroup",
    "SimDevice",
    "DeviceSnapshot",
    "MemoryView",
    "DotCollision",
    "device_key",
    "memory_uuid",
]

EMBEDDER = "sim/hash-8"

class DotCollision(AssertionError):
    """Two different versions were seen with the same dot: a dot was reused."""

class SimClock:
    """Shared simulated wall time in milliseconds; devices read it with a skew."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = start_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms

def device_key(seed: str) -> Ed25519PrivateKey:
    """A deterministic signing key, so examples replay identically."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"sim-device-key/" + seed.encode()).digest())

def public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

def memory_uuid(n: int) -> str:
    return str(uuid.UUID(int=n))

class SimGroup:
    """The group: id, key epochs and member keys that every device shares."""

    def __init__(self, name: str = "sim-group") -> None:
        self.group_id = hashlib.sha256(b"sim-group-id/" + name.encode()).digest()[:16]
        self.group_keys: dict[int, bytes] = {0: hashlib.sha256(b"sim-group-key/" + name.encode()).digest()}
        self.epoch = 0
        self._members: dict[str, Ed25519PublicKey] = {}

    def admit(self, key: Ed25519PrivateKey) -> str:
        device = device_id_for(public_raw(key))
        self._members[device] = key.public_key()
        return device

    def member_key(self, device: str) -> Ed25519PublicKey | None:
        return self._members.get(device)

    @property
    def members(self) -> Mapping[str, Ed25519PublicKey]:
        return self._members

@dataclass(frozen=True, slots=True)
class MemoryView:
    """What a user compares between devices for one memory."""

    winner: Dot | None
    live: tuple[Dot, ...]
    deleted: bool
    superseded: frozenset[Dot]
    winner_content: str

@dataclass(frozen=True, slots=True)
class DeviceSnapshot:
    """A backup of a device's store, taken at one moment."""

    device_id: str
    incarnation: int
    last_counter: int
    hlc_last: int
    versions: Mapping[Dot, SealedVersion]
    bodies: Mapping[Dot, MemoryBody]
    vector: VersionVector

@dataclass
class SimDevice:
    """One device's store, as sync sees it."""

    name: str
    group: SimGroup
    clock: SimClock
    signing_key: Ed25519PrivateKey
    incarnation: int = 0
    skew_ms: int = 0
    last_counter: int = 0
    versions: dict[Dot, SealedVersion] = field(default_factory=dict)
    bodies: dict[Dot, MemoryBody] = field(default_factory=dict)
    vector: VersionVector = field(default_factory=VersionVector)
    hlc_last: int = 0
    _by_memory: dict[str, set[Dot]] = field(default_factory=dict)
    _hlc: HybridLogicalClock | None = None

    def __post_init__(self) -> None:
        self.device_id = device_id_for(public_raw(self.signing_key))
        self._hlc = HybridLogicalClock(self.now_ms, self.hlc_last)
        for dot, sealed in self.versions.items():
            self._by_memory.setdefault(sealed.header.memory_id, set()).add(dot)

    # -- identity and clocks ---------------------------------------------------
    @classmethod
    def create(cls, name: str, group: SimGroup, clock: SimClock) -> SimDevice:
        key = device_key(name)
        group.admit(key)
        return cls(name=name, group=group, clock=clock, signing_key=key)

    @property
    def replica(self) -> str:
        return replica_id(self.device_id, self.incarnation)

    def now_ms(self) -> int:
        return max(1, self.clock.now_ms + self.skew_ms)

    @property
    def hlc(self) -> HybridLogicalClock:
        assert self._hlc is not None
        return self._hlc

    # -- local writes ------------------------------------------------------------
    def _write(self, memory_id: str, body: MemoryBody) -> SealedVersion:
        counter = next_counter(self.last_counter, self.now_ms())
        dot = Dot(self.replica, counter)
        header = VersionHeader(
            group_id=self.group.group_id,
            epoch=self.group.epoch,
            memory_id=memory_id,
            dot=dot,
            context=context_for_new_version(self.state(memory_id)),
            hlc=self.hlc.tick(),
        )
        # A nonce from the dot keeps examples reproducible; each version has its own key anyway.
        nonce = hashlib.sha256(str(dot).encode()).digest()[:12]
        sealed = seal(
            header,
            body,
            signing_key=self.signing_key,
            group_key=self.group.group_keys[self.group.epoch],
            nonce=nonce,
        )
        if dot in self.versions:
            raise DotCollision(f"{self.name} reused its own dot {dot}")
        self.last_counter = counter
        self._keep(sealed, body)
        # Every earlier version of our own replica is held, so the vector may rise.
        self.vector = self.vector.merge(VersionVector({dot.origin: counter}))
        return sealed

    def _body(self, memory_id: str, content: str, deleted: bool = False) -> MemoryBody:
        t = self.now_ms() / 1000
        previous = self.winner_body(memory_id)
        embedding = b"" if deleted else hashlib.sha256(content.encode()).digest()
        return MemoryBody(
            content="" if deleted else content,
            kind="fact" if previous is None else previous.kind,
            project="sim",
            tags=("sim",),
            created_at=t if previous is None else previous.created_at,
            updated_at=t,
            deleted=deleted,
            embedder="" if deleted else EMBEDDER,
            embedding=embedding,
        )

    def add(self, memory_id: str, content: str) -> SealedVersion:
        if memory_id in self._by_memory:
            raise ValueError(f"{memory_id} already exists on {self.name}")
        return self._write(memory_id, self._body(memory_id, content))

    def edit(self, memory_id: str, content: str) -> SealedVersion:
        if memory_id not in self._by_memory:
            raise KeyError(memory_id)
        return self._write(memory_id, self._body(memory_id, content))

    def forget(self, memory_id: str) -> SealedVersion:
        if memory_id not in self._by_memory:
            raise KeyError(memory_id)
        return self._write(memory_id, self._body(memory_id, "", deleted=True))

    # -- receiving -------------------------------------------------------------------
    def _keep(self, sealed: SealedVersion, body: MemoryBody) -> None:
        dot = sealed.header.dot
        self.versions[dot] = sealed
        self.bodies[dot] = body
        self._by_memory.setdefault(sealed.header.memory_id, set()).add(dot)

    def apply(self, sealed_versions: Iterable[SealedVersion]) -> int:
        """Verify, open and keep; returns how many were new. Never touches the vector."""
        new = 0
        for sealed in sealed_versions:
            dot = sealed.header.dot
            held = self.versions.get(dot)
            if held is not None:
                if held.encode() != sealed.encode():
                    raise DotCollision(f"{self.name} received a second, different version {dot}")
                continue
            body = open_version(
                sealed,
                group_id=self.group.group_id,
                group_keys=self.group.group_keys,
                member_key=self.group.member_key,
            )
            self.hlc.observe(sealed.header.hlc)
            self._keep(sealed, body)
            new += 1
        return new

    def merge_vector(self, sender_vector: VersionVector) -> None:
        """After a complete session: we now hold everything the sender's vector covers."""
        self.vector = self.vector.merge(sender_vector)

    # -- what sync sends -------------------------------------------------------------
    def missing_for(self, peer_vector: VersionVector) -> list[SealedVersion]:
        """Every held version the peer's vector does not cover, per replica in counter order."""
        return [self.versions[d] for d in sorted(self.versions) if not peer_vector.covers(d)]

    def iter_versions(self) -> Iterator[SealedVersion]:
        for d in sorted(self.versions):
            yield self.versions[d]

    # -- reading -------------------------------------------------------------------
    def memory_ids(self) -> list[str]:
        return sorted(self._by_memory)

    def metas(self, memory_id: str) -> list[VersionMeta]:
        out = []
        for dot in self._by_memory.get(memory_id, ()):
            h = self.versions[dot].header
            out.append(VersionMeta(dot=dot, context=h.context, hlc=h.hlc, deleted=self.bodies[dot].deleted))
        return out

    def state(self, memory_id: str) -> MemoryState | None:
        metas = self.metas(memory_id)
        return resolve(metas) if metas else None

    def winner_body(self, memory_id: str) -> MemoryBody | None:
        state = self.state(memory_id)
        if state is None or state.winner is None:
            return None
        return self.bodies[state.winner]

    def view(self, memory_id: str) -> MemoryView | None:
        state = self.state(memory_id)
        if state is None:
            return None
        assert state.winner is not None
        return MemoryView(
            winner=state.winner,
            live=state.live,
            deleted=state.deleted,
            superseded=frozenset(d for d, s in state.states.items() if s is VersionState.SUPERSEDED),
            winner_content=self.bodies[state.winner].content,
        )

    def views(self) -> dict[str, MemoryView]:
        out = {}
        for mid in self.memory_ids():
            v = self.view(mid)
            assert v is not None
            out[mid] = v
        return out

    def live_memories(self) -> list[str]:
        """Memories a user can still edit or forget here (not deleted)."""
        return [mid for mid in self.memory_ids() if not (self.view(mid) or _DELETED).deleted]

    # -- backup and restore -------------------------------------------------------
    def snapshot(self) -> DeviceSnapshot:
        return DeviceSnapshot(
            device_id=self.device_id,
            incarnation=self.incarnation,
            last_counter=self.last_counter,
            hlc_last=self.hlc.last,
            versions=dict(self.versions),
            bodies=dict(self.bodies),
            vector=self.vector,
        )

    def restore(self, snap: DeviceSnapshot, incarnation: int) -> None:
        """Replace this device's store by an old backup, as a new incarnation.

        ``incarnation`` must be one this device never used: the caller (like
        peer's restore command) is responsible for that. The counter starts
        afresh for the new replica; the snapshot's vector keeps its entry for
        the old replica, so peers resend what was written after the backup.
        """
        if snap.device_id != self.device_id:
            raise ValueError("a snapshot of another device")
        if incarnation <= snap.incarnation:
            raise ValueError("a restored store must start a new incarnation")
        self.incarnation = incarnation
        self.last_counter = 0
        self.versions = dict(snap.versions)
        self.bodies = dict(snap.bodies)
        self.vector = snap.vector
        self._by_memory = {}
        for dot, sealed in self.versions.items():
            self._by_memory.setdefault(sealed.header.memory_id, set()).add(dot)
        self._hlc = HybridLogicalClock(self.now_ms, snap.hlc_last)

_DELETED = MemoryView(winner=None, live=(), deleted=True, superseded=frozenset(), winner_content="")

def vector_only_covers_held(device: SimDevice, all_dots: Iterable[Dot]) -> list[Dot]:
    """Dots the device's vector claims but the device does not hold (should be empty)."""
    return [d for d in all_dots if device.vector.covers(d) and d not in device.versions]


# -- moving versions between devices ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """How the network behaves during one session."""

    chunk_seed: int
    cut_at: int | None  # drop everything after this many bytes each way; None: the session completes


@dataclass
class SessionResult:
    cut: bool
    batches: list[list[SealedVersion]]
    versions_delivered: int
    versions_new: int


def run_session(a: SimDevice, b: SimDevice, plan: SessionPlan) -> SessionResult:
    """PROVISIONAL: a version-level session until protocol.session lands."""
    hello_a, hello_b = a.vector, b.vector
    to_b = a.missing_for(hello_b)
    to_a = b.missing_for(hello_a)
    batches: list[list[SealedVersion]] = []
    delivered = new = 0
    cut = plan.cut_at is not None
    for sender, receiver, versions, hello in ((a, b, to_b, hello_a), (b, a, to_a, hello_b)):
        limit = len(versions) if plan.cut_at is None else min(len(versions), plan.cut_at // 600)
        for k in range(0, limit, 8):
            batch = versions[k : min(k + 8, limit)]
            new += receiver.apply(batch)
            delivered += len(batch)
            batches.append(batch)
        if not cut:
            receiver.merge_vector(hello)
    return SessionResult(cut=cut, batches=batches, versions_delivered=delivered, versions_new=new)


@dataclass(frozen=True, slots=True)
class Bundle:
    """PROVISIONAL until protocol.bundle lands."""

    sender_vector: VersionVector
    base_vector: VersionVector
    versions: tuple[SealedVersion, ...]


def export_bundle(sender: SimDevice, base: VersionVector) -> Bundle:
    return Bundle(sender.vector, base, tuple(sender.missing_for(base)))


def import_bundle(receiver: SimDevice, bundle: Bundle) -> bool:
    """Apply a bundle; merge the sender's vector only if nothing between base and us can be missing."""
    receiver.apply(bundle.versions)
    if receiver.vector.dominates(bundle.base_vector):
        receiver.merge_vector(bundle.sender_vector)
        return True
    return False

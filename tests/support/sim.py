"""A simulated device: peer's store reduced to its sync-relevant state, in memory.

Theory of operation. A :class:`SimDevice` does what ``peer/``'s store does,
with nothing but ``protocol/``: it writes versions (add, edit, forget) with
dots from the counter rule and an HLC on an injected clock, seals them for
real, and keeps every sealed version it ever accepted, by dot. Its version
vector covers exactly what it holds contiguously: its own replica up to its
last counter, and whatever a complete session or a bundle whose base it
dominates proved it holds. Received versions are verified and opened (real
signatures, real AEAD), deduplicated by dot, and never dropped, except
what a revocation refuses: like the store, a device accepts a revoked
device's versions only up to the revocation's cutoff (``author_key``),
and when it learns of a revocation it drops the versions above it. A
memory's state is :func:`protocol.merge.state_of` over all of its versions.

A device restored from a snapshot keeps the snapshot's versions and vector
but writes as a new incarnation (``DEVICEID.N``), so the dots it wrote
after the snapshot, which peers may hold, are never reused; peers resend
those lost versions because the restored vector does not cover them.

Nothing here does I/O or reads a wall clock, so a Hypothesis state machine
can drive any number of devices deterministically.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from protocol import (
    FLAG_ORDERED,
    NEED_DATA,
    PAUSED,
    BundleEnd,
    BundleHeader,
    BundleMemberRecord,
    BundleReader,
    BundleVersion,
    BundleWriter,
    ConnectionClosed,
    Dot,
    HelloReceived,
    HybridLogicalClock,
    Membership,
    MembersReceived,
    MemoryBody,
    MemoryState,
    PeerDone,
    PeerError,
    SealedVersion,
    SessionComplete,
    SyncSession,
    VersionHeader,
    VersionMeta,
    VersionsReceived,
    VersionState,
    VersionVector,
    context_for_new_version,
    device_id_of,
    device_of,
    found_group,
    next_counter,
    open_version,
    outgoing,
    raw_public_key,
    replica_id,
    seal,
    state_of,
)
from protocol.ids import MAX_INCARNATION

__all__ = [
    "SimClock",
    "SimDevice",
    "DeviceSnapshot",
    "MemoryView",
    "DotCollision",
    "SessionPlan",
    "SessionResult",
    "DeliveredBatch",
    "run_session",
    "export_bundle",
    "import_bundle",
    "memory_uuid",
]

EMBEDDER = "sim/sha256-8"


class DotCollision(AssertionError):
    """Two different versions were seen with the same dot: a dot was reused."""


class SimClock:
    """Shared simulated wall time in milliseconds; devices read it with a skew."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = start_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


def _seed(label: str, name: str) -> bytes:
    return hashlib.sha256(f"sim/{label}/{name}".encode()).digest()


def memory_uuid(n: int) -> str:
    return str(uuid.UUID(int=n))


@dataclass(frozen=True, slots=True)
class MemoryView:
    """What a user compares between devices for one memory."""

    winner: Dot
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
    membership_records: tuple[bytes, ...]


@dataclass
class SimDevice:
    """One device's store, as sync sees it."""

    name: str
    clock: SimClock
    signing_key: Ed25519PrivateKey
    kex_key: X25519PrivateKey
    membership: Membership
    incarnation: int = 0
    skew_ms: int = 0
    last_counter: int = 0
    versions: dict[Dot, SealedVersion] = field(default_factory=dict)
    bodies: dict[Dot, MemoryBody] = field(default_factory=dict)
    vector: VersionVector = field(default_factory=VersionVector)
    _by_memory: dict[str, set[Dot]] = field(default_factory=dict)
    _keys: tuple[bytes, dict[int, bytes]] | None = None

    def __post_init__(self) -> None:
        self.device_id = device_id_of(self.signing_key)
        self.hlc = HybridLogicalClock(self.now_ms)

    # -- identity, group and clocks ---------------------------------------------
    @staticmethod
    def _keys_for(name: str) -> tuple[Ed25519PrivateKey, X25519PrivateKey]:
        # Deterministic keys, so that Hypothesis replays an example exactly.
        return (
            Ed25519PrivateKey.from_private_bytes(_seed("signing-key", name)),
            X25519PrivateKey.from_private_bytes(_seed("kex-key", name)),
        )

    @classmethod
    def found(cls, name: str, clock: SimClock) -> SimDevice:
        """The first device: it founds the group (``peer init``)."""
        signing, kex = cls._keys_for(name)
        group_id, records, _ = found_group(
            signing,
            kex,
            name=name,
            now_ms=clock.now_ms,
            nonce=_seed("group-nonce", name)[:16],
            group_key=_seed("group-key", name),
        )
        membership = Membership(group_id)
        membership.add_all(records, strict=True)
        return cls(name=name, clock=clock, signing_key=signing, kex_key=kex, membership=membership)

    def invite(self, name: str) -> SimDevice:
        """A new device paired through this one (``peer invite`` here, ``peer join`` there)."""
        signing, kex = self._keys_for(name)
        self.membership.add_member(
            self.signing_key,
            self.kex_key,
            device_public_key=raw_public_key(signing),
            kex_public_key=raw_public_key(kex),
            name=name,
            now_ms=self.now_ms(),
            epoch_keys=self.group_keys,
        )
        # JOIN_ACCEPT carries the inviter's whole record set.
        membership = Membership(self.group_id)
        membership.add_all(self.membership.records(), strict=True)
        return SimDevice(name=name, clock=self.clock, signing_key=signing, kex_key=kex, membership=membership)

    @property
    def group_id(self) -> bytes:
        return self.membership.group_id

    @property
    def group_keys(self) -> dict[int, bytes]:
        digest = self.membership.digest()
        if self._keys is None or self._keys[0] != digest:
            self._keys = (digest, self.membership.epoch_keys(self.device_id, self.kex_key))
        return self._keys[1]

    def receive_members(self, records: Iterable[bytes]) -> None:
        if self.membership.add_all(records):
            self._drop_refused()

    def _refused(self, dot: Dot) -> bool:
        """A version of a revoked device above its cutoff: no member accepts it."""
        return self.membership.author_key(dot) is None and self.membership.is_revoked(device_of(dot.origin))

    def _drop_refused(self) -> None:
        """Forget held versions a revocation refuses, as the store does; states follow (computed on demand)."""
        for dot in [d for d in self.versions if self._refused(d)]:
            memory_id = self.versions.pop(dot).header.memory_id
            del self.bodies[dot]
            dots = self._by_memory[memory_id]
            dots.discard(dot)
            if not dots:
                del self._by_memory[memory_id]

    def revoke(self, device_id: str) -> list[bytes]:
        """``peer revoke``: the cutoff is what this device holds or its vector covers of that device."""
        cutoff: dict[str, int] = {}
        for replica, counter in [*self.vector.items(), *((d.origin, d.counter) for d in self.versions)]:
            if device_of(replica) == device_id:
                cutoff[replica] = max(cutoff.get(replica, 0), counter)
        records, _ = self.membership.revoke(
            self.signing_key,
            self.kex_key,
            device_id=device_id,
            now_ms=self.now_ms(),
            epoch_keys=self.group_keys,
            cutoff=cutoff,
        )
        self._drop_refused()
        return records

    @property
    def replica(self) -> str:
        return replica_id(self.device_id, self.incarnation)

    def now_ms(self) -> int:
        return max(1, self.clock.now_ms + self.skew_ms)

    # -- local writes ------------------------------------------------------------
    def _write(self, memory_id: str, body: MemoryBody) -> SealedVersion:
        counter = next_counter(self.last_counter, self.now_ms())
        dot = Dot(self.replica, counter)
        epoch = self.membership.current_epoch
        header = VersionHeader(
            group_id=self.group_id,
            epoch=epoch,
            memory_id=memory_id,
            dot=dot,
            context=context_for_new_version(self.state(memory_id)),
            hlc=self.hlc.tick(),
        )
        # A nonce from the dot keeps examples reproducible; each version has its own key anyway.
        nonce = hashlib.sha256(str(dot).encode()).digest()[:12]
        sealed = seal(header, body, signing_key=self.signing_key, group_key=self.group_keys[epoch], nonce=nonce)
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
        return MemoryBody(
            content=content,
            kind="fact" if previous is None else previous.kind,
            project="sim",
            tags=("sim",),
            created_at=t if previous is None else previous.created_at,
            updated_at=t,
            deleted=deleted,
            embedder="" if deleted else EMBEDDER,
            embedding=b"" if deleted else hashlib.sha256(content.encode()).digest(),
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
        """Verify, open and keep one batch, all or nothing; returns how many were new.

        Versions a revocation refuses are skipped, not failed, like the store does.

        Never touches the vector: only a complete session, the progress of
        an ordered session's batch, or a bundle that completes may (see
        :meth:`merge_vector`).
        """
        opened: list[tuple[SealedVersion, MemoryBody]] = []
        seen: set[Dot] = set()
        for sealed in sealed_versions:
            dot = sealed.header.dot
            held = self.versions.get(dot)
            if held is not None or dot in seen:
                if held is not None and held.encode() != sealed.encode():
                    raise DotCollision(f"{self.name} received a second, different version {dot}")
                continue
            if self._refused(dot):
                continue  # dropped without failing the batch: honest members may still forward it
            body = open_version(
                sealed, group_id=self.group_id, group_keys=self.group_keys, author_key=self.membership.author_key
            )
            opened.append((sealed, body))
            seen.add(dot)
        for sealed, body in opened:
            self.hlc.observe(sealed.header.hlc)
            self._keep(sealed, body)
        return len(opened)

    def merge_vector(self, sender_vector: VersionVector) -> None:
        """We now hold everything the sender's vector covers."""
        self.vector = self.vector.merge(sender_vector)

    # -- what sync sends (a VersionSource) -------------------------------------------
    def missing(self, vector: VersionVector) -> Iterator[SealedVersion]:
        """Every held version ``vector`` does not cover, per replica in counter order."""
        for dot in sorted(self.versions):
            if not vector.covers(dot):
                yield self.versions[dot]

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
        return state_of(metas) if metas else None

    def winner_body(self, memory_id: str) -> MemoryBody | None:
        state = self.state(memory_id)
        if state is None or state.winner is None:
            return None
        return self.bodies[state.winner]

    def view(self, memory_id: str) -> MemoryView | None:
        state = self.state(memory_id)
        if state is None or state.winner is None:
            return None
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
        out = []
        for mid in self.memory_ids():
            v = self.view(mid)
            if v is not None and not v.deleted:
                out.append(mid)
        return out

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
            membership_records=tuple(self.membership.records()),
        )

    def restore(self, snap: DeviceSnapshot, incarnation: int | None = None) -> None:
        """Replace this device's store by an old backup, as a new incarnation.

        ``incarnation`` must be one this device never used; ``None`` draws
        one at random, which is what peer's store does (so restoring one
        backup twice gives two different replicas). The counter
        starts afresh for the new replica; the snapshot's vector keeps its
        entry for the old replica as it was, so peers resend what was
        written after the backup.
        """
        if snap.device_id != self.device_id:
            raise ValueError("a snapshot of another device")
        if incarnation is None:
            incarnation = snap.incarnation
            while incarnation == snap.incarnation:
                incarnation = secrets.randbelow(MAX_INCARNATION) + 1
        if incarnation == snap.incarnation:
            raise ValueError("a restored store must start a new incarnation")
        self.incarnation = incarnation
        self.last_counter = 0
        self.versions = dict(snap.versions)
        self.bodies = dict(snap.bodies)
        self.vector = snap.vector
        self._by_memory = {}
        for dot, sealed in self.versions.items():
            self._by_memory.setdefault(sealed.header.memory_id, set()).add(dot)
        self.hlc = HybridLogicalClock(self.now_ms, snap.hlc_last)
        self.membership = Membership(self.group_id)
        self.membership.add_all(snap.membership_records, strict=True)
        self._keys = None


# -- moving versions between devices ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """How the network behaves during one session."""

    chunk_seed: int
    #: The connection breaks after this many bytes in total (both ways); None: it does not.
    cut_at: int | None = None
    #: Both sides send in per-origin order (FLAG_ORDERED), as peer does; False: as before it did.
    ordered: bool = True


@dataclass(frozen=True, slots=True)
class DeliveredBatch:
    """A VERSIONS batch as it was received, with its sender's member records (to deliver it anywhere again)."""

    members: tuple[bytes, ...]
    versions: tuple[SealedVersion, ...]
    #: The name of the device that received (and kept) it.
    receiver: str = ""


@dataclass
class SessionResult:
    cut: bool = False
    completed: dict[str, bool] = field(default_factory=dict)
    batches: list[DeliveredBatch] = field(default_factory=list)
    versions_delivered: int = 0
    versions_new: int = 0
    bytes: int = 0


_CHUNK_SIZES = (1, 2, 7, 64, 333, 4096, 1 << 20)


class _Side:
    """One device's end of a session: the real SyncSession, driven synchronously."""

    def __init__(self, device: SimDevice, peer: SimDevice, result: SessionResult, *, ordered: bool = True) -> None:
        self.device = device
        self.peer = peer
        self.result = result
        self.session = SyncSession(
            device.device_id,
            device.group_id,
            device.vector,
            device.membership.digest(),
            peer_device_id=peer.device_id,
            flags=FLAG_ORDERED if ordered else 0,
        )
        self.outbox = bytearray(self.session.start())
        self.done = False

    def pump(self) -> None:
        while not self.done:
            event = self.session.next_event()
            if event is NEED_DATA or event is PAUSED:
                return
            if isinstance(event, HelloReceived):
                self.outbox += b"".join(
                    outgoing(self.session, self.device, members=self.device.membership.records(), batch_size=8)
                )
            elif isinstance(event, MembersReceived):
                self.device.receive_members(event.records)
            elif isinstance(event, VersionsReceived):
                self.result.versions_new += self.device.apply(event.versions)
                self.result.versions_delivered += len(event.versions)
                members = tuple(self.peer.membership.records())
                self.result.batches.append(DeliveredBatch(members, event.versions, self.device.name))
                if event.progress is not None:
                    # The batch is kept: what the ordered stream proved so far is durable now.
                    self.device.merge_vector(event.progress)
            elif isinstance(event, SessionComplete):
                self.device.merge_vector(event.peer_vector)
                self.result.completed[self.device.name] = True
            elif isinstance(event, ConnectionClosed):
                self.done = True
            else:
                assert isinstance(event, PeerDone)


def run_session(a: SimDevice, b: SimDevice, plan: SessionPlan) -> SessionResult:
    """One sync between ``a`` and ``b`` through two real SyncSessions, bytes cut in random chunks.

    When the connection breaks (``plan.cut_at``), each side still gets the
    bytes that made it through, and the end of the stream: it applies every
    complete batch it received, and merges the other's vector only if its
    own session reported SessionComplete.
    """
    rng = random.Random(plan.chunk_seed)
    result = SessionResult()
    sides = {"a": _Side(a, b, result, ordered=plan.ordered), "b": _Side(b, a, result, ordered=plan.ordered)}
    other = {"a": "b", "b": "a"}
    budget = plan.cut_at
    closed = False
    while not closed:
        ready = [k for k, s in sides.items() if s.outbox]
        if not ready:
            # Both sides said all they had to say: the driver closes the connection.
            for s in sides.values():
                s.session.receive_data(b"")
                s.pump()
            break
        k = rng.choice(ready)
        sender, receiver = sides[k], sides[other[k]]
        n = min(rng.choice(_CHUNK_SIZES), len(sender.outbox))
        if budget is not None and n >= budget:
            n = budget
            closed = result.cut = True
        chunk = bytes(sender.outbox[:n])
        del sender.outbox[:n]
        result.bytes += n
        if budget is not None:
            budget -= n
        if chunk:
            receiver.session.receive_data(chunk)
            receiver.pump()
    if result.cut:
        for s in sides.values():
            try:
                s.session.receive_data(b"")
                s.pump()
            except PeerError:
                pass  # "closed before it finished sending": expected after a cut
    return result


# -- bundles -------------------------------------------------------------------------


def export_bundle(sender: SimDevice, base: VersionVector) -> bytes:
    """``peer bundle export`` for a device last known to hold ``base``."""
    writer = BundleWriter(
        signing_key=sender.signing_key,
        group_id=sender.group_id,
        sender_vector=sender.vector,
        created_ms=sender.now_ms(),
        base_vector=base,
    )
    out = bytearray(writer.header())
    for record in sender.membership.records():
        out += writer.add_member_record(record)
    for version in sender.missing(base):
        out += writer.add_version(version)
    out += writer.finish()
    return bytes(out)


def import_bundle(receiver: SimDevice, data: bytes, chunk_seed: int = 0) -> bool:
    """``peer bundle import``: read it all, verify, then apply; True if the sender's vector was merged."""
    rng = random.Random(chunk_seed)
    start_vector = receiver.vector
    records: list[bytes] = []
    versions: list[SealedVersion] = []
    trial = Membership(receiver.group_id)
    trial.add_all(receiver.membership.records())
    reader = BundleReader(group_id=receiver.group_id, sender_key=trial.member_key, device_id=receiver.device_id)
    pos = 0
    header: BundleHeader | None = None
    while True:
        event = reader.next_event()
        if event is NEED_DATA:
            n = rng.choice(_CHUNK_SIZES)
            reader.receive_data(data[pos : pos + n] if pos < len(data) else b"")
            pos += n
            continue
        if isinstance(event, BundleHeader):
            header = event
        elif isinstance(event, BundleMemberRecord):
            records.append(event.record)
            trial.add_all([event.record])
        elif isinstance(event, BundleVersion):
            versions.append(event.version)
        elif isinstance(event, BundleEnd):
            break
        else:
            raise AssertionError(f"unexpected bundle event {event!r}")
    assert header is not None
    receiver.receive_members(records)
    receiver.apply(versions)
    if header.completes(start_vector):
        receiver.merge_vector(header.sender_vector)
        return True
    return False

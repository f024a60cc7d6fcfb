"""One exchange with a relay: read what this device lacks, write what the relay lacks.

Theory of operation (the rules are docs/protocol.md section 15; the pure
parts are :mod:`protocol.relay`). The relay is untrusted and may be slow,
full, read-only, or edited behind our back by a file-sync engine, so:

* what to read and what to write is decided from the state records alone
  (a no-change exchange lists the folder and reads those small files);
* a segment is a bundle, fetched into a scratch file in the home and
  imported with :func:`peer.bundles.scan_bundle` and
  :func:`peer.bundles.apply_bundle`: verified whole (every version
  too) before anything of it is written;
* a segment that fails is named in this device's state record as damaged,
  so every device stops counting it and the next writer writes what it
  held again (the author drops it from its chain);
* this device's own chain is what the last state record *it wrote* lists
  (kept in the home), so a deleted, truncated or reverted copy on the relay
  is noticed by comparing, and repaired by writing again;
* files are written whole under a temporary name and renamed; a segment is
  listed only once renamed and removed only once no longer listed. A
  failure (no space, read-only, unreachable) aborts the exchange after what
  was already applied committed; nothing is lost and the next one resumes.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import (
    BundleError,
    NotAMember,
    PeerError,
    ProtocolError,
    RelayError,
    RelayState,
    SegmentRef,
    TrustError,
    VersionVector,
    check_segment,
    format_device_id,
    group_folder,
    next_sequence,
    open_state,
    parse_relay_name,
    prunable,
    relay_coverage,
    seal_state,
    state_name,
    vector_meet,
)

from ..bundles import BundleSource, Trust, apply_bundle, scan_bundle, write_bundle
from ..store import NowMs, Store, wall_clock_ms
from ..units import human_size, plural
from .config import DeviceSeen, RelayMemory
from .store import RelayFileGone, RelayStore

__all__ = ["ExchangeResult", "exchange", "COMPACT_AFTER", "group_folder"]

log = logging.getLogger(__name__)

#: A device rewrites its segments as one when it has more than this many live.
COMPACT_AFTER: Final = 8
_DIGEST_AT: Final = slice(-96, -64)  # a bundle's trailer digest: the 32 bytes before its signature


@dataclass(frozen=True, slots=True)
class ExchangeResult:
    """What one exchange did."""

    relay: str
    location: str
    segments_read: int
    versions_added: int
    new_members: int
    segment_written: int  # versions in the segment written (0: none written)
    bytes_written: int
    state_written: bool
    compacted: bool
    removed: int  # own segments removed
    damaged: tuple[str, ...]  # other devices' segments that failed verification
    problems: tuple[str, ...]
    bytes_held: int
    devices: dict[str, DeviceSeen]
    seconds: float
    files_read: int = 0
    bytes_read: int = 0
    added_memories: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "relay": self.relay,
            "location": self.location,
            "segments_read": self.segments_read,
            "versions_added": self.versions_added,
            "new_members": self.new_members,
            "versions_written": self.segment_written,
            "bytes_written": self.bytes_written,
            "state_written": self.state_written,
            "compacted": self.compacted,
            "segments_removed": self.removed,
            "damaged": list(self.damaged),
            "problems": list(self.problems),
            "bytes_held": self.bytes_held,
            "files_read": self.files_read,
            "bytes_read": self.bytes_read,
            "devices": {d: {"lacks": s.lacks, "written_ms": s.written_ms} for d, s in self.devices.items()},
            "seconds": round(self.seconds, 3),
        }

    def describe(self) -> str:
        parts = []
        if self.versions_added or self.new_members:
            parts.append(f"read {plural(self.versions_added, 'new version')} from {plural(self.segments_read, 'segment')}")
        if self.segment_written:
            parts.append(f"wrote {plural(self.segment_written, 'version')} ({human_size(self.bytes_written)})")
        if self.compacted:
            parts.append("compacted this device's segments")
        if self.removed:
            parts.append(f"removed {plural(self.removed, 'segment')} every device holds")
        text = f"relay {self.relay} ({self.location}): " + ("; ".join(parts) if parts else "nothing new either way")
        text += f"; the relay holds {human_size(self.bytes_held)}"
        for device, seen in sorted(self.devices.items()):
            if seen.lacks:
                text += f"\n  device {format_device_id(device)} lacks {plural(seen.lacks, 'version')} this device holds"
        for problem in self.problems:
            text += f"\nwarning: {problem}"
        return text


async def _read_states(
    relay: RelayStore,
    store: Store,
    names: dict[str, int],
    memory: RelayMemory,
    problems: list[str],
    strangers: dict[str, str],
) -> tuple[dict[str, RelayState], set[str], RelayState | None, int]:
    """Every valid state record of another device (reverted ones kept, flagged), and this device's own.

    Records signed by devices this one does not know as members go to
    ``strangers`` (file name: why): a segment read next may introduce them.
    """
    states: dict[str, RelayState] = {}
    reverted: set[str] = set()
    own: RelayState | None = None
    read = 0
    for name in sorted(names):
        parsed = parse_relay_name(name)
        if parsed is None or not parsed.is_state:
            continue
        try:
            data = await relay.read(name)
            read += len(data)
            state = open_state(
                data, group_id=store.group_id, member_key=store.membership.member_key, device_id=parsed.device_id
            )
        except RelayFileGone:
            continue
        except NotAMember as e:
            strangers[name] = f"{name}: {e.message}"
            continue
        except (RelayError, TrustError) as e:
            if parsed.device_id != store.device_id:
                problems.append(f"{name}: {e.message}")
            continue
        if state.device_id == store.device_id:
            own = state
            continue
        seen = memory.seen.get(state.device_id)
        if seen is not None and state.sequence < seen.sequence:
            reverted.add(state.device_id)
            problems.append(
                f"the state record of device {format_device_id(state.device_id)} is an older copy (sequence"
                f" {state.sequence} after {seen.sequence}): the relay reverted it; that device rewrites it at its"
                " next exchange"
            )
        states[state.device_id] = state
    return states, reverted, own, read


def _present(owner: str, refs: Sequence[SegmentRef], names: dict[str, int], damaged: set[str]) -> list[SegmentRef]:
    return [r for r in refs if names.get(r.name(owner)) == r.size and r.name(owner) not in damaged]


async def _import_segment(
    relay: RelayStore, store: Store, owner: str, ref: SegmentRef, scratch: Path
) -> tuple[int, int, int, int]:
    """Fetch, verify and apply one segment: (versions added, new members, memories, bytes read)."""
    name = ref.name(owner)
    data = await relay.read(name)
    scratch.parent.mkdir(parents=True, exist_ok=True)
    scratch.write_bytes(data)
    try:
        source = BundleSource(scratch)
        scan = await scan_bundle(source, Trust.of(store), allow_own=True)
        check_segment(owner, ref, scan.header, len(data), data[_DIGEST_AT])
        result, new_members, _ = await apply_bundle(store, source, scan, allow_own=True)
    finally:
        scratch.unlink(missing_ok=True)
    return result.added, new_members, result.memories, len(data)


async def exchange(
    store: Store,
    signing_key: Ed25519PrivateKey,
    relay: RelayStore,
    memory: RelayMemory,
    *,
    name: str,
    scratch_dir: Path,
    now_ms: NowMs = wall_clock_ms,
) -> tuple[ExchangeResult, RelayMemory]:
    """One exchange (docs/protocol.md 15.3). Returns what it did and the memory to save.

    Raises :class:`~peer.relay.store.RelayUnavailable` when the relay fails
    (what was applied before stays applied; the caller records the error).
    """
    started = time.monotonic()
    me = store.device_id
    await store.refresh()
    problems: list[str] = []
    listing = await relay.list()
    names = {e.name: e.size for e in listing}
    bytes_held = sum(e.size for e in listing if parse_relay_name(e.name) is not None)
    strangers: dict[str, str] = {}
    states, reverted, relay_own, files_bytes = await _read_states(relay, store, names, memory, problems, strangers)
    files_read = sum(1 for n in names if (p := parse_relay_name(n)) is not None and p.is_state)

    # This device's chain: what the newest record it wrote lists (the relay's copy may be newer,
    # written by another process of this device, or older: reverted).
    own_state: RelayState | None = None
    if memory.own_state:
        try:
            own_state = open_state(memory.own_state, group_id=store.group_id, member_key=store.membership.member_key)
        except PeerError:
            own_state = None
    if relay_own is not None and (own_state is None or relay_own.sequence > own_state.sequence):
        own_state = relay_own
    own_chain = list(own_state.segments) if own_state is not None else []
    last_sequence = max(memory.own_sequence, own_state.sequence if own_state else 0,
                        relay_own.sequence if relay_own else 0)
    if own_state is not None and (relay_own is None or relay_own.sequence < own_state.sequence):
        problems.append(
            "this device's state record on the relay was missing, damaged or an older copy; it was written again"
        )

    members = {m.device_id for m in store.membership.members() if not m.revoked}
    states = {d: s for d, s in states.items() if d in members}
    damaged_by_others = {n for d, s in states.items() for n in s.damaged}
    previously_damaged = set(own_state.damaged) if own_state is not None else set()
    found_damaged: set[str] = set()

    # Read ------------------------------------------------------------------------------
    local = await store.vector()
    chains: dict[str, list[SegmentRef]] = {d: list(s.segments) for d, s in states.items()}
    chains[me] = own_chain
    skip = damaged_by_others | previously_damaged
    read_segments = added = new_members = memories = 0
    for round_ in range(2):
        pending = [
            (owner, ref)
            for owner, refs in chains.items()
            for ref in _present(owner, refs, names, skip if owner != me else damaged_by_others)
            if not local.dominates(ref.top)
        ]
        learned = new_members
        while pending:
            ready = [p for p in pending if local.dominates(p[1].base)] or pending[:1]
            owner, ref = min(ready, key=lambda p: (p[1].number, p[0]))
            pending.remove((owner, ref))
            seg_name = ref.name(owner)
            try:
                a, n, m, size = await _import_segment(
                    relay, store, owner, ref, scratch_dir / f".{seg_name}.{secrets.token_hex(4)}.part"
                )
            except RelayFileGone:
                continue
            except (BundleError, RelayError, TrustError, ProtocolError) as e:
                # The segment's fault: damaged, altered, not matching its listing, not from a member.
                # (A failing relay or store raises on: that is no reason to distrust the file.)
                log.warning("relay %s: segment %s refused: %s", name, seg_name, e)
                problems.append(
                    f"{seg_name} did not verify and was skipped ({e.message}); its content is written again"
                )
                found_damaged.add(seg_name)
                continue
            read_segments += 1
            files_read += 1
            files_bytes += size
            added, new_members, memories = added + a, new_members + n, memories + m
            local = await store.vector()
            pending = [p for p in pending if not local.dominates(p[1].top)]
        if round_ or not strangers or new_members == learned:
            break
        # The segments just read introduced members: their records, refused a moment ago, may now verify.
        await store.refresh()
        retry = {n: names[n] for n in strangers}
        strangers.clear()
        more, more_reverted, _, more_bytes = await _read_states(relay, store, retry, memory, problems, strangers)
        files_bytes += more_bytes
        files_read += len(retry)
        members = {m.device_id for m in store.membership.members() if not m.revoked}
        more = {d: st for d, st in more.items() if d in members}
        states.update(more)
        reverted |= more_reverted
        damaged_by_others |= {n for st in more.values() for n in st.damaged}
        skip |= damaged_by_others
        chains = {d: list(st.segments) for d, st in more.items()}
    problems += strangers.values()

    # Other devices' vectors, as their (non-reverted) records say; members without a record count as empty.
    await store.refresh()
    members = {m.device_id for m in store.membership.members() if not m.revoked}
    vectors = {d: (states[d].vector if d in states else VersionVector()) for d in members if d != me}
    async with store.transaction():
        for d, s in states.items():
            if d not in reverted:
                await store.remember_peer(d, s.vector, via="relay", replace=True)

    # Write -----------------------------------------------------------------------------
    skip = damaged_by_others | found_damaged
    own_live = _present(me, own_chain, names, skip)
    dropped_own = [r for r in own_chain if r not in own_live]
    if dropped_own:
        problems.append(
            f"{len(dropped_own)} of this device's segments were missing, truncated or damaged on the relay;"
            " what they held was written again"
        )
    present = [r for d, refs in chains.items() if d != me for r in _present(d, refs, names, skip | previously_damaged)]
    present += own_live
    meet = vector_meet([local, *vectors.values()])
    coverage = relay_coverage(meet, present)
    sequence = next_sequence(last_sequence, now_ms())
    segment_versions = bytes_written = 0
    compacted = False
    new_chain = list(own_live)
    if vectors:
        compacted = len(own_live) >= COMPACT_AFTER
        base = meet if compacted else coverage
        if compacted or not base.dominates(local):
            scratch_dir.mkdir(parents=True, exist_ok=True)
            path = scratch_dir / f".segment.{secrets.token_hex(4)}.part"
            try:
                with path.open("w+b") as out:
                    written = await write_bundle(out, store, signing_key, base=base, now_ms=now_ms)
                data = path.read_bytes()
            finally:
                path.unlink(missing_ok=True)
            if written.versions or compacted:
                ref = SegmentRef(sequence, len(data), written.digest, written.header.base_vector,
                                 written.header.sender_vector)
                await relay.write(ref.name(me), data)
                segment_versions, bytes_written = written.versions, len(data)
                new_chain = [ref] if compacted else [*own_live, ref]
                local = written.header.sender_vector.merge(local)
    removable = prunable([r for r in new_chain if r.number != sequence], vectors) if vectors else list(new_chain)
    new_chain = [r for r in new_chain if r not in removable]

    # State -----------------------------------------------------------------------------
    listed = {r.name(d) for d, s in states.items() for r in s.segments}
    damaged = tuple(sorted((previously_damaged | found_damaged) & listed))
    state = RelayState(store.group_id, me, sequence, now_ms(), await store.vector(), tuple(new_chain), damaged)
    state_written = False
    unchanged = (
        relay_own is not None
        and own_state is not None
        and relay_own.sequence == own_state.sequence
        and (relay_own.vector, relay_own.segments, relay_own.damaged) == (state.vector, state.segments, state.damaged)
    )
    sealed = memory.own_state
    if not unchanged:
        sealed = seal_state(state, signing_key)
        await relay.write(state_name(me), sealed)
        state_written = True
        last_sequence = sequence
    removed = 0
    keep = {r.name(me) for r in (state.segments if state_written else (relay_own.segments if relay_own else ()))}
    for file_name in sorted(names):
        parsed = parse_relay_name(file_name)
        if parsed is None or parsed.device_id != me or parsed.is_state or file_name in keep:
            continue
        assert parsed.number is not None
        if parsed.number <= last_sequence:
            await relay.remove(file_name)
            removed += 1
            bytes_held -= names[file_name]
    bytes_held += bytes_written + (len(sealed) - names.get(state_name(me), 0) if state_written else 0)

    devices: dict[str, DeviceSeen] = {}
    for d in sorted(members - {me}):
        record = states.get(d)
        vector = record.vector if record is not None else VersionVector()
        devices[d] = DeviceSeen(
            record.sequence if record else 0,
            record.written_ms if record else 0,
            vector.as_dict(),
            await store.count_missing_for(vector),
        )
    seen = dict(memory.seen)
    for d, s in states.items():
        if d not in reverted:
            seen[d] = devices.get(d, DeviceSeen(s.sequence, s.written_ms, s.vector.as_dict(), 0))
    now = time.time()
    memory = memory.with_(
        own_sequence=last_sequence,
        own_state=sealed,
        seen=seen,
        last_exchange=now,
        last_read=now if read_segments else memory.last_read,
        last_write=now if (state_written or bytes_written) else memory.last_write,
        last_error=None,
        bytes_held=bytes_held,
        problems=tuple(problems),
    )
    result = ExchangeResult(
        relay=name,
        location=relay.location,
        segments_read=read_segments,
        versions_added=added,
        new_members=new_members,
        segment_written=segment_versions,
        bytes_written=bytes_written,
        state_written=state_written,
        compacted=compacted and bool(bytes_written),
        removed=removed,
        damaged=tuple(sorted(found_damaged)),
        problems=tuple(problems),
        bytes_held=bytes_held,
        devices=devices,
        seconds=time.monotonic() - started,
        files_read=files_read,
        bytes_read=files_bytes,
        added_memories=memories,
    )
    return result, memory

"""Duplicates: finding them, merging them without losing anything, and undoing a merge.

Theory of operation. *Finding* reads every live memory's text and vector
once. Exact duplicates share their normalized text (case, spacing and
Unicode forms folded). Near duplicates are found among one representative
per distinct text: a throw-away hnswlib graph of those vectors is asked for
each vector's few nearest neighbours in one batch call, and pairs at or
above the threshold are joined with union-find. That is O(n log n), not a
comparison of every pair, and needs no model (the vectors are the ones the
store holds; only memories stored without one are embedded). A group's
similarity is its weakest link: the lowest similarity among the pairs that
joined it, so "0.97" means every join was at least that close.

*Merging* a group keeps one memory, the *survivor* (the longest text, then
the oldest), and writes, in one store transaction:

* a new version of the survivor with the union of the group's tags, the
  group's metadata (the survivor's own values win), the earliest creation
  time, and under the reserved key ``peer.merged`` a record of each memory
  merged into it (its id, the version it had, the tags and metadata keys it
  brought);
* for every other member, a tombstone whose metadata says
  ``{"peer.merged_into": SURVIVOR}``. It is an ordinary version: it syncs
  by every path (SSH, bundles, backups) with no protocol change, search and
  ``list`` skip it like any tombstone, and the merged-away text stays in the
  superseded version before it (``peer show OLD --versions``).

A device that edits a merged-away memory before it sees the merge wrote a
version concurrent with the tombstone: the merge rule keeps both as
siblings and prefers the edit, so the memory comes back with a conflict to
settle, on every device, and nothing is lost.

*Unmerging* writes a version of the merged-away memory copied from the one
its tombstone superseded (text, tags, metadata, vector and creation time
exactly as they were), and a version of the survivor without that merge's
record and without the tags only it brought.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from peer.device import Device
from peer.memory import Draft, Memory, SimilarMemory
from protocol import StoreError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

log = logging.getLogger(__name__)

__all__ = [
    "AUTO_MERGE_SIMILARITY",
    "DEFAULT_THRESHOLD",
    "MERGED",
    "MERGED_INTO",
    "DuplicateGroup",
    "Duplicates",
    "GroupMember",
    "MergeResult",
    "SimilarMemory",
    "find_duplicates",
    "merge",
    "merged_into",
    "normalized",
    "similar_to",
    "unmerge",
]

#: Near duplicates: cosine similarity at or above this joins two memories.
DEFAULT_THRESHOLD = 0.9
#: ``--auto-merge`` merges exact groups and near groups whose weakest link is above this.
AUTO_MERGE_SIMILARITY = 0.95
#: Reserved metadata key on a merged-away memory's tombstone: the survivor's id.
MERGED_INTO = "peer.merged_into"
#: Reserved metadata key on a survivor: one record per memory merged into it.
MERGED = "peer.merged"
#: Neighbours asked of hnswlib per memory; a group bigger than this still
#: forms through its members' own neighbours (union-find is transitive).
NEIGHBOURS = 8


def normalized(text: str) -> str:
    """The text as exact-duplicate detection compares it: NFKC, case-folded, spacing collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def merged_into(memory: Memory) -> str | None:
    """Where a merged-away memory went (None for any other memory)."""
    if not memory.deleted:
        return None
    target = memory.metadata.get(MERGED_INTO)
    return target if isinstance(target, str) else None


# Finding ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupMember:
    id: str
    version: str
    kind: str
    project: str | None
    tags: tuple[str, ...]
    created_at: float
    updated_at: float
    content: str

    @classmethod
    def of(cls, memory: Memory) -> GroupMember:
        return cls(memory.id, memory.version, memory.kind, memory.project, memory.tags,
                   memory.created_at, memory.updated_at, memory.content)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "version": self.version, "kind": self.kind, "project": self.project,
            "tags": list(self.tags), "created_at": self.created_at, "updated_at": self.updated_at,
            "content": self.content,
        }

    def describe(self) -> str:
        return f"{self.id[:8]} {self.kind}{'/' + self.project if self.project else ''}: {' '.join(self.content.split())[:70]}"


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    """Memories that say the same thing. ``members[0]`` is the one a merge keeps."""

    exact: bool
    similarity: float  # the weakest link; 1.0 for exact groups
    members: tuple[GroupMember, ...]

    @property
    def auto_mergeable(self) -> bool:
        """What ``--auto-merge`` may merge without a person: exact, or every link above 0.95."""
        return self.exact or self.similarity > AUTO_MERGE_SIMILARITY

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "exact" if self.exact else "near",
            "similarity": round(self.similarity, 4),
            "auto_merge": self.auto_mergeable,
            "keep": self.members[0].id,
            "members": [m.to_json() for m in self.members],
        }

    def describe(self) -> str:
        what = "exact" if self.exact else f"near, similarity {self.similarity:.3f}"
        return f"{len(self.members)} memories ({what})"


@dataclass(frozen=True, slots=True)
class Duplicates:
    """What ``peer consolidate`` found (and, with ``--auto-merge``, merged)."""

    scanned: int
    threshold: float
    groups: tuple[DuplicateGroup, ...]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "threshold": self.threshold,
            "seconds": round(self.seconds, 3),
            "groups": [g.to_json() for g in self.groups],
        }

    def describe(self) -> str:
        exact = sum(g.exact for g in self.groups)
        return (f"{len(self.groups)} duplicate groups ({exact} exact, {len(self.groups) - exact} near)"
                f" among {self.scanned:,} memories")


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _near_pairs(vectors: NDArray[np.float32], threshold: float) -> list[tuple[int, int, float]]:
    """Pairs (i, j, similarity), i < j, at or above ``threshold``, through an hnswlib graph (blocking)."""
    import hnswlib
    import numpy as np

    n = len(vectors)
    if n < 2:
        return []
    graph = hnswlib.Index(space="cosine", dim=vectors.shape[1])
    # Cheaper build parameters than the search index's: duplicates are each
    # other's nearest neighbours, the easiest thing a graph finds.
    graph.init_index(max_elements=n, M=8, ef_construction=48)
    graph.add_items(vectors, np.arange(n))
    k = min(NEIGHBOURS + 1, n)
    graph.set_ef(max(32, k))
    try:
        labels, distances = graph.knn_query(vectors, k=k)
    except RuntimeError:
        # hnswlib could not fill k neighbours for some vector from where it
        # entered the graph (tiny or odd graphs): search the whole graph.
        graph.set_ef(n)
        labels, distances = graph.knn_query(vectors, k=k)
    # Vectorised: at 100,000 memories this is 900,000 candidate pairs.
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols = labels.ravel().astype(np.int64)
    similarity = 1.0 - distances.ravel().astype(np.float64)
    keep = (cols != rows) & (similarity >= threshold)
    rows, cols, similarity = rows[keep], cols[keep], similarity[keep]
    return list(zip(np.minimum(rows, cols).tolist(), np.maximum(rows, cols).tolist(), similarity.tolist(), strict=True))


def _survivor_order(memory: Memory) -> tuple[int, float, str]:
    # The longest text says the most; then the oldest, then the id (deterministic).
    # Exact duplicates have the same normalized length, so the oldest is kept.
    return (-len(" ".join(memory.content.split())), memory.created_at, memory.id)


async def find_duplicates(
    device: Device,
    *,
    project: str | None = None,
    kind: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> Duplicates:
    """Groups of exact and near duplicates among live memories (filtered by project and kind)."""
    import numpy as np

    if not 0.0 < threshold <= 1.0:
        raise StoreError(f"the similarity threshold must be above 0 and at most 1, not {threshold}")
    started = time.monotonic()
    allowed: set[str] | None = None
    if project is not None or kind is not None:
        allowed = {m.id for m in await device.store.list(project=project, kind=kind)}
    embedder_id = device.embedder.id
    ids: list[str] = []
    by_text: dict[str, list[int]] = {}
    vectors: list[bytes] = []
    unembedded: list[tuple[int, str]] = []
    async for batch in device.store.all_live_embeddings(batch_size=5000):
        for change in batch:
            if allowed is not None and change.memory_id not in allowed:
                continue
            key = normalized(change.content)
            at = len(ids)
            ids.append(change.memory_id)
            if key in by_text:
                by_text[key].append(at)
                continue
            by_text[key] = [at]
            if change.embedder == embedder_id and change.embedding:
                vectors.append(change.embedding)
            else:
                vectors.append(b"")
                unembedded.append((len(vectors) - 1, change.content))
    if unembedded:
        # Versions that came without a vector (or with another model's): embed them here.
        fresh = await device.embed([text for _, text in unembedded])
        for (slot, _), vector in zip(unembedded, fresh, strict=True):
            vectors[slot] = vector
    representatives = [members[0] for members in by_text.values()]
    matrix = (
        np.frombuffer(b"".join(vectors), dtype="<f4").reshape(len(vectors), -1).astype(np.float32)
        if vectors else np.zeros((0, 1), dtype=np.float32)
    )
    pairs = await trio.to_thread.run_sync(_near_pairs, matrix, threshold)

    union = _UnionFind(len(representatives))
    weakest: dict[tuple[int, int], float] = {}
    for i, j, similarity in pairs:
        union.union(i, j)
        weakest[(i, j)] = similarity
    near: dict[int, list[int]] = {}
    for slot in range(len(representatives)):
        near.setdefault(union.find(slot), []).append(slot)
    link: dict[int, float] = {}
    for (i, _), similarity in weakest.items():
        root = union.find(i)
        link[root] = min(link.get(root, 1.0), similarity)

    texts = list(by_text.values())
    near_groups = [slots for slots in near.values() if len(slots) > 1]
    wanted = {ids[at] for members in texts if len(members) > 1 for at in members}
    wanted |= {ids[at] for slots in near_groups for s in slots for at in texts[s]}
    memories = await device.store.get_many(wanted)

    def survivor_of(slot: int) -> str:
        # An exact group stands in a near group by the memory its merge keeps,
        # so merging the exact group first leaves the near group intact.
        present = [memories[ids[at]] for at in texts[slot] if ids[at] in memories]
        return min(present, key=_survivor_order).id if present else ids[texts[slot][0]]

    def group(exact: bool, similarity: float, member_ids: Iterable[str]) -> DuplicateGroup | None:
        found = sorted((memories[m] for m in member_ids if m in memories), key=_survivor_order)
        if len(found) < 2:
            return None  # changed by another process meanwhile
        return DuplicateGroup(exact, similarity, tuple(GroupMember.of(m) for m in found))

    groups: list[DuplicateGroup] = []
    for members in by_text.values():
        if len(members) > 1 and (g := group(True, 1.0, (ids[at] for at in members))):
            groups.append(g)
    for slots in near_groups:
        root = union.find(slots[0])
        if g := group(False, link[root], (survivor_of(s) for s in slots)):
            groups.append(g)
    groups.sort(key=lambda g: (not g.exact, -g.similarity, g.members[0].id))
    return Duplicates(len(ids), threshold, tuple(groups), time.monotonic() - started)


# Merging ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MergeResult:
    survivor: str
    merged: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.survivor, "merged": list(self.merged)}

    def describe(self) -> str:
        return f"merged {', '.join(m[:8] for m in self.merged)} into {self.survivor}"


async def merge(device: Device, memory_ids: Sequence[str], *, keep: str | None = None) -> MergeResult:
    """Merge memories into one (``keep``, or the longest then oldest); see the module's theory."""
    store = device.store
    resolved = [(await store.get(m)) for m in dict.fromkeys(memory_ids)]
    for memory in resolved:
        if memory.deleted:
            where = merged_into(memory)
            raise StoreError(
                f"memory {memory.id} was already merged into {where}" if where else f"memory {memory.id} is forgotten"
            )
    if len({m.id for m in resolved}) < 2:
        raise StoreError("a merge needs at least two different memories")
    if keep is not None:
        keep_id = (await store.get(keep)).id
        if keep_id not in {m.id for m in resolved}:
            raise StoreError(f"memory {keep_id} is not one of the memories being merged")
    else:
        keep_id = min(resolved, key=_survivor_order).id
    survivor = next(m for m in resolved if m.id == keep_id)
    others = [m for m in resolved if m.id != keep_id]

    tags = set(survivor.tags)
    metadata: dict[str, Any] = {}
    records: list[dict[str, Any]] = list(survivor.metadata.get(MERGED) or [])
    for other in sorted(others, key=lambda m: m.updated_at):
        own = {k: v for k, v in other.metadata.items() if k not in (MERGED, MERGED_INTO)}
        records.append({
            "id": other.id,
            "version": other.version,
            "tags": sorted(set(other.tags) - tags),
            "metadata": sorted(k for k in own if k not in survivor.metadata and k not in metadata),
            "at": round(time.time(), 3),
        })
        tags |= set(other.tags)
        metadata.update(own)
    metadata.update(survivor.metadata)
    metadata[MERGED] = records
    await store.write_merge(
        survivor.id,
        {m.id: m.version for m in resolved},
        tags=sorted(tags),
        metadata=metadata,
        created_at=min(m.created_at for m in resolved),
        retired_metadata={m.id: {MERGED_INTO: survivor.id} for m in others},
    )
    return MergeResult(survivor.id, tuple(m.id for m in others))


async def unmerge(device: Device, memory_id: str) -> MergeResult:
    """Bring a merged-away memory back exactly as it was, and take its record off the survivor."""
    store = device.store
    memory = await store.get(memory_id)
    target = merged_into(memory)
    if target is None:
        raise StoreError(f"memory {memory.id} was not merged into another; nothing to undo")
    held = (await store.memory_versions([memory.id]))[memory.id]
    # Versions come winner first, then by clock time, newest first: the first
    # live-looking superseded one is what the tombstone replaced.
    before = next((m for state, m in held if state == "superseded" and not m.deleted), None)
    if before is None:
        raise StoreError(f"memory {memory.id} has no version from before its merge")
    await store.resolve(memory.id, before.version)
    try:
        survivor = await store.get(target)
    except StoreError:
        return MergeResult(target, (memory.id,))
    if not survivor.deleted:
        records = list(survivor.metadata.get(MERGED) or [])
        mine = [r for r in records if isinstance(r, dict) and r.get("id") == memory.id]
        if mine:
            brought = {t for r in mine for t in r.get("tags", [])}
            keys = {k for r in mine for k in r.get("metadata", [])}
            others = {t for r in records if r not in mine for t in r.get("tags", [])}
            metadata = {k: v for k, v in survivor.metadata.items() if k not in keys}
            rest = [r for r in records if r not in mine]
            if rest:
                metadata[MERGED] = rest
            else:
                metadata.pop(MERGED, None)
            await store.edit(
                survivor.id, tags=[t for t in survivor.tags if t not in brought or t in others], metadata=metadata
            )
    return MergeResult(target, (memory.id,))


# At the door ----------------------------------------------------------------------------


async def exact_duplicate(device: Device, draft: Draft) -> Memory | None:
    """A live memory with the same normalized text in the same project, if there is one.

    Found through the keyword index (an identical text matches all its own
    words), so it costs one FTS query and needs no search index.
    """
    key = normalized(draft.content)
    hits = await device.store.fts_search(draft.content, limit=20, project=draft.project)
    found = await device.store.get_many([memory_id for memory_id, _ in hits])
    for memory_id, _ in hits:
        memory = found.get(memory_id)
        if memory is not None and memory.project == draft.project and normalized(memory.content) == key:
            return memory
    return None


async def similar_to(
    device: Device, memory_ids: Sequence[str], *, threshold: float = DEFAULT_THRESHOLD, limit: int = 5
) -> dict[str, list[SimilarMemory]]:
    """For each memory, the other live memories at least ``threshold`` similar to it.

    Uses the search index when this device has one (brought up to date
    first); a device that never searched has none, and an add should not
    pay for building it, so then nothing is reported.
    """
    from peer.search.sidecar import index_state

    if not memory_ids or not index_state(device.home.index_dir, 0).exists:
        return {}
    index = await device.ready_index()
    memories = await device.store.get_many(memory_ids)
    vectors = await device.embed([memories[m].content for m in memory_ids if m in memories])
    import numpy as np

    out: dict[str, list[SimilarMemory]] = {}
    for memory_id, vector in zip([m for m in memory_ids if m in memories], vectors, strict=True):
        hits = await index.query(np.frombuffer(vector, dtype="<f4"), limit + len(memory_ids))
        close = [(label, s) for label, s in hits if s >= threshold]
        by_label = await device.store.memories_for_labels([label for label, _ in close])
        found = [
            SimilarMemory(by_label[label], s)
            for label, s in close
            if label in by_label and by_label[label].id not in memory_ids
        ]
        if found:
            out[memory_id] = found[:limit]
    return out

"""Duplicates: finding them, merging them without losing anything, and undoing a merge.

Theory of operation. *Finding* reads every live memory's text and vector
once. Exact duplicates share their normalized text (case, spacing and
Unicode forms folded). Near duplicates are found among one representative
per distinct text: a throw-away hnswlib graph of those vectors is asked for
each vector's few nearest neighbours in one batch call on every core.
Pairs at or above the threshold whose texts also pass the lexical checks
(same marks, no swapped subject word, no added clause, closer the more
reworded: "Telling subjects apart" below) are joined with union-find. That
is O(n log n), not a comparison of every pair, and needs no model (the
vectors are the ones the store holds; only memories stored without one are
embedded). A group's similarity is its weakest link: the lowest similarity
among the pairs that joined it, so "0.97" means every join was at least
that close. ``--auto-merge`` takes near groups only above 0.95 and worded
alike (:func:`same_wording`).

*At the door* (``peer add``, ``add --file``, ``import``): exact re-adds are
found by reading each project's texts once (:func:`exact_duplicates`), and
look-alikes by one batch query of the search index with the vectors the
store holds (:func:`similar_to`).

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
import os
import re
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
    "different_subjects",
    "exact_duplicates",
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


# Telling subjects apart ---------------------------------------------------------------
#
# An embedding says what a text is about, not which thing it names: the
# IncrementalEncoder and IncrementalDecoder docstrings are 0.987 similar,
# "levels up" and "levels down" 0.994. Among 2,000 documentation paragraphs
# 74 pairs reach 0.9 and almost all are such templates: the same sentence
# about a different subject. A person who says a fact again keeps its
# names, numbers and code and rewords the rest; a template keeps the words
# and swaps the subject. So a near pair is kept only when its texts pass
# four lexical checks (calibrated on those 74 pairs and on 30 paraphrases
# written by hand, tests/peer/test_consolidate.py; docs/design-notes.md):
#
# 1. the same *marks*: identifiers, numbers, symbols, quoted or emphasised
#    terms and capitalised names (see _marks), in the same order;
# 2. not a *swap*: when both texts have words the other lacks, together
#    more than two (one word exchanged for another is a different subject);
# 3. not *saying more*: two or more words only in one text, none only in
#    the other;
# 4. the more words they do not share, the closer they must be: similarity
#    at least the threshold + 0.15 x the share of words not shared.

#: Words that carry no subject (compared after _stem): their changes are rewording.
_FUNCTION_WORDS = frozenset("""
a an the of to in on at by for with from as is are was were be been being it its it's this that these those
and or but not no if then than so such there here which who whom whose what when where while also only just
can could may might must should shall will would do does did done doing has have had having like following
follows well we you he she they i me my our your their them us one any all some each every other another more
most into onto over under about after before between through during without within again further once
won't don't doesn't isn't aren't can't cannot there's that's
""".split())
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "`": '"', "\u2014": "-"})
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
#: Marks that are tokens (one C-level scan; a plain word matches no branch): signed names, code-shaped
#: words (dotted, called, with a digit or underscore, camelCase, ALLCAPS), numbers, operators, symbol runs.
_MARK = re.compile(
    r"(?<![\w-])[-+](?=[A-Za-z])[A-Za-z]\w*"
    r"|(?<![\w.])(?:[A-Za-z_]\w*(?:\.\w+)+|[A-Za-z_]\w*(?=\()|_\w*|[A-Za-z]\w*?[\d_]\w*"
    r"|[A-Za-z]*[a-z][A-Z]\w*|[A-Z][A-Z0-9]+|\d+(?:[.,]\d+)*)(?!\w)"
    r"|<=|>=|==|!=|(?<![<>=-])[<>](?![<>=])|(?!-+(?:\s|$))[-+*@#=~^]{2,}"
)
#: Digit runs: the first, cheapest look at the marks (two texts with other numbers have other marks).
_DIGITS = re.compile(r"\d+")
#: Quoted or emphasised terms: "x", 'x', *x* (backticks are folded into double quotes).
_QUOTED = re.compile(r'"([^"\n]{1,40})"|\*([^*\s][^*]{0,38})\*|\'([^\'\s][^\']{0,38})\'')
#: A capitalised word inside a sentence (after a lowercase word or a comma): a name.
_NAME = re.compile(r"(?<=[a-z,] )[A-Z][a-z]+\b")
_ABBREVIATIONS = frozenset({"e.g", "i.e", "etc", "cf", "vs", "aka"})
#: Rule 4: similarity needed per share of words not shared.
_REWORDING_COST = 0.15


def _folded(text: str) -> str:
    return unicodedata.normalize("NFKC", text).translate(_QUOTES)


def _numbers(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_DIGITS.findall(_folded(text))))


def _marks(text: str) -> list[str]:
    """The text's marks (see the section's comment), each once, in order of first appearance.

    Every digit run is a mark, so texts whose :func:`_numbers` differ have different marks.
    """
    folded = _folded(text)
    found: list[tuple[int, str]] = [
        (m.start(), m.group()) for m in _MARK.finditer(folded) if m.group().casefold() not in _ABBREVIATIONS
    ]
    found += [(m.start(), next(g for g in m.groups() if g).strip().casefold()) for m in _QUOTED.finditer(folded)]
    found += [(m.start(), m.group()) for m in _NAME.finditer(folded)]
    found += [(m.start(), "#" + m.group()) for m in _DIGITS.finditer(folded)]
    return list(dict.fromkeys(token for _, token in sorted(found)))


def _stem(word: str) -> str:
    # Crude on purpose: "raises"/"raise", "creates"/"create" meet; six letters are plenty to compare.
    for suffix in ("ing", "ed", "es", "s", "e", "d", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:6]


def _words(text: str) -> tuple[str, ...]:
    """The subject words, stemmed, each once, in order of first appearance."""
    folded = _folded(text).replace("e.g.", "for example").replace("i.e.", "that is")
    return tuple(dict.fromkeys(
        _stem(w) for w in (x.casefold() for x in _WORD.findall(folded)) if len(w) > 1 and w not in _FUNCTION_WORDS
    ))


def _unshared(a: set[str], b: set[str]) -> tuple[set[str], set[str]]:
    """Words only in ``a``, only in ``b``; an abbreviation and its word (arg, argument) are one word."""
    only_a, only_b = a - b, b - a

    def alone(word: str, others: set[str]) -> bool:
        return not any(min(len(o), len(word)) >= 3 and (o.startswith(word) or word.startswith(o)) for o in others)

    return {w for w in only_a if alone(w, only_b)}, {w for w in only_b if alone(w, only_a)}


#: What the checks compare of one text: its marks and its subject words, each in order of appearance.
Lexical = tuple[tuple[str, ...], tuple[str, ...]]


def lexical(text: str) -> Lexical:
    return tuple(_marks(text)), _words(text)


def same_wording(a: Lexical, b: Lexical) -> bool:
    """The same marks and the same subject words in the same order: only function words or word forms differ."""
    return a == b


def subjects_differ(a: Lexical, b: Lexical, similarity: float, threshold: float = 0.9) -> str | None:
    """Why two near texts are about different subjects (``marks``, ``swap``, ``more``, ``reworded``), or None."""
    if a[0] != b[0]:
        return "marks"
    words_a, words_b = set(a[1]), set(b[1])
    only_a, only_b = _unshared(words_a, words_b)
    if only_a and only_b and len(only_a) + len(only_b) <= 2:
        return "swap"
    if len(only_a) + len(only_b) >= 2 and not (only_a and only_b):
        return "more"
    share = len(only_a | only_b) / max(1, len(words_a | words_b))
    if similarity < threshold + _REWORDING_COST * share:
        return "reworded"
    return None


def different_subjects(a: str, b: str, similarity: float, threshold: float = 0.9) -> str | None:
    """:func:`subjects_differ` of two texts."""
    return subjects_differ(lexical(a), lexical(b), similarity, threshold)


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
    #: Every link has the same marks and subject words in the same order (see same_wording).
    same_wording: bool = True

    @property
    def auto_mergeable(self) -> bool:
        """What ``--auto-merge`` may merge without a person: exact, or every link above 0.95 and worded alike."""
        return self.exact or (self.similarity > AUTO_MERGE_SIMILARITY and self.same_wording)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "exact" if self.exact else "near",
            "similarity": round(self.similarity, 4),
            "same_wording": self.same_wording,
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
    """Pairs (i, j, similarity), i < j, at or above ``threshold``, through an hnswlib graph (blocking).

    The graph is built and queried in two batch calls on every core
    (``num_threads``); each pair is listed once, from its lower index.
    """
    import hnswlib
    import numpy as np

    n = len(vectors)
    if n < 2:
        return []
    threads = max(1, os.cpu_count() or 1)
    graph = hnswlib.Index(space="cosine", dim=vectors.shape[1])
    # Cheaper build parameters than the search index's: duplicates are each
    # other's nearest neighbours, the easiest thing a graph finds.
    graph.init_index(max_elements=n, M=8, ef_construction=48)
    graph.add_items(vectors, np.arange(n), num_threads=threads)
    k = min(NEIGHBOURS + 1, n)
    graph.set_ef(max(32, k))
    try:
        labels, distances = graph.knn_query(vectors, k=k, num_threads=threads)
    except RuntimeError:
        # hnswlib could not fill k neighbours for some vector from where it
        # entered the graph (tiny or odd graphs): search the whole graph.
        graph.set_ef(n)
        labels, distances = graph.knn_query(vectors, k=k, num_threads=threads)
    # Vectorised: at 100,000 memories this is 900,000 candidate pairs.
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols = labels.ravel().astype(np.int64)
    similarity = 1.0 - distances.ravel().astype(np.float64)
    keep = (cols != rows) & (similarity >= threshold)
    low, high = np.minimum(rows[keep], cols[keep]), np.maximum(rows[keep], cols[keep])
    # Both ends usually find each other: one pair each, the closer figure.
    order = np.lexsort((-similarity[keep], high, low))
    low, high, similarity = low[order], high[order], similarity[keep][order]
    first = np.ones(len(low), dtype=bool)
    first[1:] = (low[1:] != low[:-1]) | (high[1:] != high[:-1])
    return list(zip(low[first].tolist(), high[first].tolist(), similarity[first].tolist(), strict=True))


def _same_subject(
    pairs: list[tuple[int, int, float]], texts: Sequence[str], threshold: float
) -> list[tuple[int, int, float, bool]]:
    """The near pairs whose texts pass the lexical checks, each with whether their wording is the same.

    Each text is read at most once for its marks and once for its words,
    and only when a pair needs them: most template pairs differ in their
    marks, so their words are never read.
    """
    marks: dict[int, tuple[str, ...]] = {}
    words: dict[int, tuple[str, ...]] = {}

    def marks_of(slot: int) -> tuple[str, ...]:
        found = marks.get(slot)
        if found is None:
            found = marks[slot] = tuple(_marks(texts[slot]))
        return found

    def words_of(slot: int) -> tuple[str, ...]:
        found = words.get(slot)
        if found is None:
            found = words[slot] = _words(texts[slot])
        return found

    numbers: dict[int, tuple[str, ...]] = {}

    def numbers_of(slot: int) -> tuple[str, ...]:
        found = numbers.get(slot)
        if found is None:
            found = numbers[slot] = _numbers(texts[slot])
        return found

    kept: list[tuple[int, int, float, bool]] = []
    for i, j, similarity in pairs:
        if numbers_of(i) != numbers_of(j) or marks_of(i) != marks_of(j):
            continue
        a, b = (marks_of(i), words_of(i)), (marks_of(j), words_of(j))
        if subjects_differ(a, b, similarity, threshold) is None:
            kept.append((i, j, similarity, same_wording(a, b)))
    return kept


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
    # One slot per distinct normalized text: its memories (indexes into ids), its text, its vector.
    by_text: dict[str, list[int]] = {}
    texts: list[str] = []
    vectors: list[bytes] = []
    unembedded: list[tuple[int, str]] = []
    async for batch in device.store.all_live_embeddings(batch_size=5000):
        for change in batch:
            if allowed is not None and change.memory_id not in allowed:
                continue
            key = normalized(change.content)
            at = len(ids)
            ids.append(change.memory_id)
            members = by_text.get(key)
            if members is not None:
                members.append(at)
                continue
            by_text[key] = [at]
            texts.append(change.content)
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
    slots = list(by_text.values())
    matrix = (
        np.frombuffer(b"".join(vectors), dtype="<f4").reshape(len(vectors), -1).astype(np.float32, copy=False)
        if vectors else np.zeros((0, 1), dtype=np.float32)
    )
    del vectors
    pairs = await trio.to_thread.run_sync(_near_pairs, matrix, threshold)
    linked = await trio.to_thread.run_sync(_same_subject, pairs, texts, threshold)

    union = _UnionFind(len(slots))
    for i, j, _, _ in linked:
        union.union(i, j)
    weakest: dict[int, float] = {}
    worded: dict[int, bool] = {}
    for i, _, similarity, same in linked:
        root = union.find(i)
        weakest[root] = min(weakest.get(root, 1.0), similarity)
        worded[root] = worded.get(root, True) and same
    near: dict[int, list[int]] = {}
    for root in weakest:
        near[root] = []
    for slot in range(len(slots)):
        if (root := union.find(slot)) in near:
            near[root].append(slot)

    wanted = {ids[at] for members in slots if len(members) > 1 for at in members}
    wanted |= {ids[at] for group in near.values() for slot in group for at in slots[slot]}
    memories = await device.store.get_many(wanted)

    def survivor_of(slot: int) -> str:
        # An exact group stands in a near group by the memory its merge keeps,
        # so merging the exact group first leaves the near group intact.
        present = [memories[ids[at]] for at in slots[slot] if ids[at] in memories]
        return min(present, key=_survivor_order).id if present else ids[slots[slot][0]]

    def group(exact: bool, similarity: float, same: bool, member_ids: Iterable[str]) -> DuplicateGroup | None:
        found = sorted((memories[m] for m in member_ids if m in memories), key=_survivor_order)
        if len(found) < 2:
            return None  # changed by another process meanwhile
        return DuplicateGroup(exact, similarity, tuple(GroupMember.of(m) for m in found), same)

    groups: list[DuplicateGroup] = []
    for members in slots:
        if len(members) > 1 and (g := group(True, 1.0, True, (ids[at] for at in members))):
            groups.append(g)
    for root, group_slots in near.items():
        if g := group(False, weakest[root], worded[root], (survivor_of(s) for s in group_slots)):
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


async def exact_duplicates(device: Device, drafts: Sequence[Draft]) -> dict[int, str | int]:
    """Which drafts repeat a live memory of their project, or an earlier draft, exactly.

    For each such draft (by index): the id of the memory it repeats, or the
    index of the earlier draft with the same text and project. One read of
    each project's texts, not one query per draft; drafts that carry an id
    (imports) are matched too.
    """
    wanted: dict[tuple[str | None, str], int] = {}
    out: dict[int, str | int] = {}
    for at, draft in enumerate(drafts):
        key = (draft.project, normalized(draft.content))
        if key in wanted:
            out[at] = wanted[key]
        else:
            wanted[key] = at
    for project in {p for p, _ in wanted}:
        for memory_id, content in await device.store.live_texts(project):
            first = wanted.get((project, normalized(content)))
            if first is not None and drafts[first].id != memory_id and first not in out:
                out[first] = memory_id
    # A repeat of a draft that repeats a memory repeats that memory.
    return {at: (out.get(to, to) if isinstance(to, int) else to) for at, to in out.items()}


async def similar_to(
    device: Device, memory_ids: Sequence[str], *, threshold: float = DEFAULT_THRESHOLD, limit: int = 5
) -> dict[str, list[SimilarMemory]]:
    """For each memory, the other live memories at least ``threshold`` similar to it (not among ``memory_ids``).

    Uses the search index when this device has one (brought up to date
    first), with the vectors the store holds and one batch query for all of
    them; a device that never searched has none, and an add should not pay
    for building it, so then nothing is reported.
    """
    from peer.search.sidecar import index_state

    if not memory_ids or not index_state(device.home.index_dir, 0).exists:
        return {}
    import numpy as np

    index = await device.ready_index()
    held = [c for c in await device.store.live_embeddings_of(memory_ids) if c.embedding]
    if not held:
        return {}
    matrix = np.frombuffer(b"".join(c.embedding for c in held), dtype="<f4").reshape(len(held), -1)
    fresh = set(memory_ids)
    rows = await index.query_many(matrix, limit + 1 + min(len(fresh), 20))
    close = {label for row in rows for label, s in row if s >= threshold}
    by_label = await device.store.memories_for_labels(close)
    out: dict[str, list[SimilarMemory]] = {}
    for change, row in zip(held, rows, strict=True):
        found = [
            SimilarMemory(by_label[label], s)
            for label, s in row
            if s >= threshold and label in by_label and by_label[label].id not in fresh
        ]
        if found:
            out[change.memory_id] = found[:limit]
    return out

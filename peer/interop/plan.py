"""Planning and applying an import: :func:`plan_import` compares, :func:`apply_import` writes.

Theory of operation
-------------------
*Plan.* Each record is compared with every version the store holds of
its id (:meth:`Store.memory_versions`), giving one :class:`Action`. Only
what a person would call the memory is compared (content, kind,
project, tags, metadata, importance), never timestamps, so importing the
same file twice writes nothing the second time. ``--dry-run`` stops
here and reports the counts.

*Apply.* Vectors that come with the file are used when this device's
embedder made them (the same embedder id, or an all-MiniLM-L6-v2 name
with the embedder's dimensions); the other memories are embedded. Then
every version is written in one transaction (:meth:`Store.write_imports`),
which re-checks that no memory changed since the plan.

Strategies, for an id the store holds with other content. ``skip`` keeps
the local memory. ``overwrite`` writes the imported one as a version that
supersedes every live local version (a forgotten memory comes back).
``merge`` (the default) reasons with versions, like a sync:

- the file holds a state this store has already moved past (a superseded
  version with the same fields): the local memory is newer, nothing is
  written (skipped);
- the file names the version it was exported at and that version is still
  the local winner: only the file changed, so the import supersedes it;
- likewise for a tool whose records keep one fixed time across its own
  edits (ai-mem's ``created_at``): a local winner with exactly that time is
  still what an earlier import wrote (a local edit stamps the edit's time),
  so the tool's edit supersedes it, with no conflict; and for a tool whose
  records carry their own ``updated_at`` (Claude Memory), a newer record
  supersedes a memory held in one version only that carries the tool's
  fields: that version is what an earlier import wrote, never changed
  since (any change, here or synced, leaves a superseded version);
- otherwise both sides changed: the import is written *concurrent* with
  the local winner (its context names only the version it was exported
  from, when this store holds it), so both stay, as siblings that
  ``peer conflicts`` lists. The newer by ``updated_at`` wins: a newer
  import gets the clock's next time; an older one a time just under the
  local winner's, so the local memory stays the winner;
- a forgotten memory comes back only if the import is newer than the forget.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from peer.memory import Memory
from peer.store import ImportedVersion, Store

from .records import ImportFile, Record

if TYPE_CHECKING:
    from peer.device import Device
    from peer.search.embedder import Embedder

__all__ = [
    "STRATEGIES",
    "EMBED_BATCH",
    "Action",
    "Step",
    "ImportPlan",
    "ImportReport",
    "plan_import",
    "apply_import",
    "vector_is_reusable",
]

STRATEGIES = ("skip", "overwrite", "merge")

#: Memories embedded per model call batch (and per progress step).
EMBED_BATCH = 256
#: Ids looked up in the store per query while planning.
_LOOKUP_BATCH = 2000

#: Names under which other tools store all-MiniLM-L6-v2 vectors (compared lowercased).
_MINILM_NAMES = ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
_MINILM_DIM = 384


# Planning ---------------------------------------------------------------------------------------


class Action(enum.Enum):
    NEW = "new"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    CONFLICT = "conflicts"  # written as a sibling of the local version
    #: A new record whose text a live memory of its project (or an earlier record) already holds: not written.
    REPEATED = "repeated"


@dataclass(frozen=True, slots=True)
class Step:
    """What the import does with one record; the last three fields say how a written version is placed."""

    record: Record
    action: Action
    expected: str | None = None  # the local winner it was planned against
    supersedes: tuple[str, ...] | None = None
    loses: bool = False

    @property
    def writes(self) -> bool:
        return self.action in (Action.NEW, Action.UPDATED, Action.CONFLICT)


@dataclass(frozen=True, slots=True)
class ImportPlan:
    file: ImportFile
    strategy: str
    steps: tuple[Step, ...]

    def counts(self) -> dict[str, int]:
        out = {a.value: 0 for a in Action}
        for step in self.steps:
            out[step.action.value] += 1
        return out

    def with_repeats(self, indexes: set[int]) -> ImportPlan:
        """The plan with these new records (indexes into steps) not written: they repeat a memory's text."""
        steps = tuple(
            Step(step.record, Action.REPEATED) if at in indexes and step.action is Action.NEW else step
            for at, step in enumerate(self.steps)
        )
        return ImportPlan(self.file, self.strategy, steps)


def _plan_one(record: Record, versions: Sequence[tuple[str, Memory]], strategy: str) -> Step:
    if not versions:
        return Step(record, Action.NEW)
    winner = next(m for state, m in versions if state == "winner")
    live = [m for state, m in versions if state != "superseded"]
    if record.same_memory(winner):
        return Step(record, Action.UNCHANGED)
    if strategy == "skip":
        return Step(record, Action.SKIPPED)
    if strategy == "overwrite":
        return Step(record, Action.UPDATED, expected=winner.version)
    # merge
    if any(record.same_memory(m) for m in live):
        return Step(record, Action.UNCHANGED)  # already held, as a sibling
    if any(state == "superseded" and record.same_memory(m) for state, m in versions):
        return Step(record, Action.SKIPPED)  # a state this store has moved past
    newer = record.updated_at > winner.updated_at
    if winner.deleted:
        if newer:
            return Step(record, Action.UPDATED, expected=winner.version)
        return Step(record, Action.SKIPPED)
    held = {m.version for _, m in versions}
    base = record.version if record.version in held else None
    if record.fixed_time and winner.updated_at == record.updated_at:
        # The local winner is still what an earlier import of this record
        # wrote (a local edit would carry the edit's time): only the tool's
        # side changed, so its edit supersedes the stale copy.
        base = winner.version
    elif (
        record.tool is not None
        and len(versions) == 1
        and isinstance(winner.metadata.get(record.tool), dict)
        and record.updated_at > winner.updated_at
    ):
        # The only version ever held, with the tool's fields: what an earlier
        # import wrote, untouched here and everywhere (an edit or a sync of
        # one would leave a superseded version). The tool's newer edit wins.
        base = winner.version
    if base == winner.version:
        return Step(record, Action.UPDATED, expected=winner.version, supersedes=(base,))
    return Step(
        record,
        Action.CONFLICT,
        expected=winner.version,
        supersedes=(base,) if base is not None else (),
        loses=not newer,
    )


async def plan_import(store: Store, file: ImportFile, strategy: str = "merge") -> ImportPlan:
    """Compare every record of ``file`` with the store; writes nothing (this is ``--dry-run``)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}")
    steps: list[Step] = []
    records = file.records
    for at in range(0, len(records), _LOOKUP_BATCH):
        chunk = records[at : at + _LOOKUP_BATCH]
        held = await store.memory_versions(r.id for r in chunk)
        steps.extend(_plan_one(r, held.get(r.id, []), strategy) for r in chunk)
    return ImportPlan(file, strategy, tuple(steps))


# Applying ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What ``peer import`` prints."""

    plan: ImportPlan
    dry_run: bool
    vectors_reused: int = 0
    embedded: int = 0
    seconds: float = 0.0
    #: For the person: what went wrong after the import itself (the index catch-up).
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.plan.file.name,
            "format": self.plan.file.format,
            "strategy": self.plan.strategy,
            "dry_run": self.dry_run,
            "records": len(self.plan.steps),
            "duplicates": self.plan.file.duplicates,
            **self.plan.counts(),
            "vectors_reused": self.vectors_reused,
            "embedded": self.embedded,
            "seconds": round(self.seconds, 3),
            "notes": list(self.plan.file.notes),
        }

    def describe(self) -> str:
        counts = self.plan.counts()
        what = ", ".join(f"{counts[a.value]:,} {a.value}" for a in Action if a is not Action.REPEATED)
        file = self.plan.file
        head = f"{'would import' if self.dry_run else 'imported'} {file.name} ({file.format}): {what}"
        lines = [head if self.dry_run else f"{head} in {self.seconds:.1f} s"]
        if file.duplicates:
            lines.append(f"{file.duplicates:,} earlier occurrence(s) of repeated ids were dropped (the last one counts)")
        lines.extend(file.notes)
        if counts[Action.REPEATED.value]:
            lines.append(f"{counts[Action.REPEATED.value]:,} new record(s) repeat the text of a memory of their project"
                         " (or an earlier record): not imported (--allow-duplicate imports them)")
        if counts[Action.CONFLICT.value]:
            lines.append("memories changed on both sides are kept as siblings: see `peer conflicts`")
        return "\n".join(lines)


def vector_is_reusable(model: str | None, embedder: Embedder) -> bool:
    """Whether vectors a file says ``model`` made can stand for ``embedder``'s."""
    if not model:
        return False
    if model == embedder.id:
        return True
    from peer.search.embedder import MINILM_ID

    return (
        model.strip().lower() in _MINILM_NAMES and embedder.id == MINILM_ID and embedder.dim == _MINILM_DIM
    )


async def apply_import(
    device: Device, plan: ImportPlan, progress: Callable[[int, int], None] | None = None
) -> ImportReport:
    """Embed what needs it, then write the plan in one transaction; then bring an existing index up to date."""
    started = time.monotonic()
    steps = [s for s in plan.steps if s.writes]
    if not steps:
        return ImportReport(plan, dry_run=False, seconds=time.monotonic() - started)
    embedder = device.embedder
    vectors: list[bytes | None] = []
    reused = 0
    for step in steps:
        r = step.record
        usable = (
            r.vector is not None
            and len(r.vector) == 4 * embedder.dim
            and vector_is_reusable(r.embedding_model, embedder)
        )
        vectors.append(r.vector if usable else None)
        reused += usable
    missing = [i for i, v in enumerate(vectors) if v is None]
    for at in range(0, len(missing), EMBED_BATCH):
        chunk = missing[at : at + EMBED_BATCH]
        for i, vector in zip(chunk, await device.embed([steps[i].record.content for i in chunk]), strict=True):
            vectors[i] = vector
        if progress is not None:
            progress(at + len(chunk), len(missing))
    await device.store.write_imports(
        [
            ImportedVersion(
                draft=step.record.draft(),
                updated_at=step.record.updated_at,
                embedding=vector,
                embedder=embedder.id,
                expected=step.expected,
                supersedes=step.supersedes,
                loses=step.loses,
            )
            for step, vector in zip(steps, vectors, strict=True)
        ]
    )
    # As after a sync: an index that exists is caught up now (reusing the
    # vectors just written); one never built is left to the first search.
    warning = await device.catch_up_index()
    return ImportReport(
        plan,
        dry_run=False,
        vectors_reused=reused,
        embedded=len(missing),
        seconds=time.monotonic() - started,
        warnings=(warning,) if warning else (),
    )

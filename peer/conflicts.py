"""Concurrent edits: the memories that hold siblings, and settling one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from peer.store import Store
from peer.units import local_minute

log = logging.getLogger(__name__)



# Conflicts ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConflictVersion:
    """One live version of a memory in conflict."""

    version: str
    winner: bool
    deleted: bool
    updated_at: float  # Unix seconds
    kind: str
    project: str | None
    content: str  # the first ``preview`` characters

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "winner": self.winner,
            "deleted": self.deleted,
            "updated_at": self.updated_at,
            "kind": self.kind,
            "project": self.project,
            "content": self.content,
        }


@dataclass(frozen=True, slots=True)
class Conflict:
    """A memory with siblings: every live version, the winner first."""

    id: str
    versions: tuple[ConflictVersion, ...]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "versions": [v.to_json() for v in self.versions]}


@dataclass(frozen=True, slots=True)
class ConflictList:
    """``peer conflicts``: every memory in conflict."""

    conflicts: tuple[Conflict, ...]

    def __iter__(self) -> Iterator[Conflict]:
        return iter(self.conflicts)

    def __len__(self) -> int:
        return len(self.conflicts)

    def to_json(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.conflicts]

    def describe(self) -> str:
        if not self.conflicts:
            return "no conflicts"
        lines: list[str] = []
        for memory in self.conflicts:
            lines.append(f"{memory.id}  ({len(memory.versions)} live versions)")
            for v in memory.versions:
                what = "(forgotten)" if v.deleted else " ".join(v.content.split())[:70]
                role = "winner " if v.winner else "sibling"
                lines.append(f"  {role}  {v.version}  {local_minute(v.updated_at)}  {what}")
            lines.append(f"  keep one with: peer resolve {memory.id} --keep VERSION")
        return "\n".join(lines)


async def conflicts(store: Store, preview: int = 200) -> ConflictList:
    """``peer conflicts``: each memory with siblings and all its live versions, the winner first."""
    return ConflictList(
        tuple(
            Conflict(
                versions[0].memory_id,
                tuple(
                    ConflictVersion(
                        version=v.version,
                        winner=v.state == "winner",
                        deleted=v.deleted,
                        updated_at=v.updated_at,
                        kind=v.kind,
                        project=v.project,
                        content=v.content[:preview],
                    )
                    for v in versions
                ),
            )
            for versions in await store.conflicts()
        )
    )


@dataclass(frozen=True, slots=True)
class ResolveResult:
    """``peer resolve``: the memory, its new version, and the version kept."""

    id: str
    version: str
    kept: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "kept": self.kept}

    def describe(self) -> str:
        return f"resolved {self.id}: kept {self.kept}, now version {self.version}"


async def version_named(store: Store, memory_id: str, keep: str) -> str:
    """The version ``keep`` names: its position in `peer conflicts` (1, 2, ...), or a unique prefix, any case.

    ``7`` is the seventh live version as `peer conflicts` lists the memory
    (the winner first); ``h2awwevu:1796`` or ``H2AWW`` a prefix of the
    replica, with or without the counter after the colon. What matches
    nothing is handed on unchanged, for the store's own message.
    """
    from peer.errors import PeerError

    text = keep.strip()
    memory = await store.get(memory_id)
    if text.isdigit():
        listed = next((c for c in await conflicts(store) if c.id == memory.id), None)
        live = [v.version for v in listed.versions] if listed is not None else [memory.version]
        position = int(text)
        if not 1 <= position <= len(live):
            raise PeerError(
                f"there is no position {position} among the {len(live)} live version(s) of {memory.id};"
                " `peer conflicts` lists them in order (1 is the winner)"
            )
        return live[position - 1]
    origin, _, counter = text.upper().partition(":")
    held = [v.version for v in await store.versions(memory.id)]
    matches = [
        v for v in held
        if v.upper().partition(":")[0].startswith(origin) and v.partition(":")[2].startswith(counter)
    ]
    if len(matches) > 1 and text.upper() not in (m.upper() for m in matches):
        shown = ", ".join(matches[:3]) + (", ..." if len(matches) > 3 else "")
        raise PeerError(f"the version prefix {keep!r} matches {len(matches)} versions ({shown}); type more of it")
    if len(matches) == 1:
        return matches[0]
    exact = [m for m in matches if m.upper() == text.upper()]
    return exact[0] if exact else keep


async def resolve(store: Store, memory_id: str, keep: str) -> ResolveResult:
    """``peer resolve``: keep one version; the new version supersedes every sibling."""
    named = await version_named(store, memory_id, keep)
    resolved = await store.resolve(memory_id, named)
    memory = await store.get(resolved)
    return ResolveResult(resolved, memory.version, named)

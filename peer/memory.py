"""The memory as the rest of peer sees it: plain, typed records.

These are what the store returns and what the CLI prints; the versions
that travel between devices are in :mod:`protocol`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Memory", "Draft", "IndexChange", "VersionInfo", "SimilarMemory"]


@dataclass(frozen=True, slots=True)
class Memory:
    """The current (winning) state of one memory."""

    id: str
    content: str
    kind: str
    project: str | None
    tags: tuple[str, ...]
    metadata: dict[str, Any]
    created_at: float
    updated_at: float
    importance: float | None
    version: str  # the winner's dot, "REPLICA:COUNTER"
    siblings: int = 0  # other live versions (a conflict when > 0)
    deleted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "content": self.content,
            "kind": self.kind,
            "project": self.project,
            "tags": list(self.tags),
            "metadata": self.metadata,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "importance": self.importance,
            "version": self.version,
            "siblings": self.siblings,
        }


@dataclass(frozen=True, slots=True)
class SimilarMemory:
    """Another memory that looks like the one at hand (what `peer add` warns about)."""

    memory: Memory
    similarity: float

    def to_json(self) -> dict[str, Any]:
        return {"id": self.memory.id, "similarity": round(self.similarity, 4), "project": self.memory.project,
                "content": self.memory.content}

    def describe(self) -> str:
        return f"looks like {self.memory.id[:8]} (similarity {self.similarity:.2f})"


@dataclass(frozen=True, slots=True)
class Draft:
    """A memory to be added (by `peer add`, bulk add or an import)."""

    content: str
    kind: str = "note"
    project: str | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    importance: float | None = None
    id: str | None = None  # kept when importing from another tool
    created_at: float | None = None


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One stored version of a memory, as `peer conflicts` and `peer show --versions` list it."""

    memory_id: str
    version: str
    state: str  # "winner", "sibling" or "superseded"
    deleted: bool
    hlc: int
    content: str
    kind: str
    project: str | None
    tags: tuple[str, ...]
    updated_at: float


@dataclass(frozen=True, slots=True)
class IndexChange:
    """A change the search index must reflect, in store order.

    ``label`` is the version's row id (the hnswlib label). ``live`` says
    whether that version must be in the index now (it is the winner of its
    memory and not a tombstone) or must not be (superseded, sibling,
    deleted). ``embedding`` is little-endian float32 bytes made by
    ``embedder`` ("" and b"" when the version carries none).
    """

    seq: int
    label: int
    memory_id: str
    live: bool
    content: str
    embedder: str
    embedding: bytes

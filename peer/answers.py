"""What the everyday commands compute, as results that can travel as JSON and come back the same.

``peer add``, ``show``, ``list``, ``edit``, ``forget``, ``search``, ``status``
and ``context`` are answered either in process or by the running agent
(:mod:`peer.warm`). Either way the command line gets one of these frozen
results and prints it with the same code, so the text and the ``--json``
bytes cannot differ: the agent sends ``result.to_wire()`` and the client
rebuilds the result with ``from_wire``. Floats, strings and the order of
metadata keys survive a JSON round trip exactly.

``status`` and ``context`` render nothing that depends on the client (no
terminal width, no time zone), so their results travel already rendered
(:class:`Rendered`): both the JSON and the text come from the same
``to_json()`` and ``describe()`` that print them in process.

This module imports only the memory types and the fusion's hit, so the
command line can rebuild an answer without loading the store or the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from peer.memory import Memory, SimilarMemory, VersionInfo
from peer.search.fusion import SearchHit, SearchResult

__all__ = [
    "memory_to_wire",
    "memory_from_wire",
    "Added",
    "Shown",
    "Listed",
    "Changed",
    "Found",
    "Rendered",
]


def memory_to_wire(memory: Memory) -> dict[str, Any]:
    return {**memory.to_json(), "deleted": memory.deleted}


def memory_from_wire(data: Mapping[str, Any]) -> Memory:
    return Memory(
        id=data["id"],
        content=data["content"],
        kind=data["kind"],
        project=data["project"],
        tags=tuple(data["tags"]),
        metadata=dict(data["metadata"]),
        created_at=data["created_at"],
        updated_at=data["updated_at"],
        importance=data["importance"],
        version=data["version"],
        siblings=data["siblings"],
        deleted=data["deleted"],
    )


def _version_to_wire(info: VersionInfo) -> dict[str, Any]:
    return {
        "memory_id": info.memory_id, "version": info.version, "state": info.state, "deleted": info.deleted,
        "hlc": info.hlc, "content": info.content, "kind": info.kind, "project": info.project,
        "tags": list(info.tags), "updated_at": info.updated_at,
    }


def _version_from_wire(data: Mapping[str, Any]) -> VersionInfo:
    return VersionInfo(
        memory_id=data["memory_id"], version=data["version"], state=data["state"], deleted=data["deleted"],
        hlc=data["hlc"], content=data["content"], kind=data["kind"], project=data["project"],
        tags=tuple(data["tags"]), updated_at=data["updated_at"],
    )


@dataclass(frozen=True, slots=True)
class Added:
    """``peer add`` of one memory: its id, whether the same text was there already, look-alikes."""

    id: str
    duplicate: bool
    similar: tuple[SimilarMemory, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "duplicate": self.duplicate,
                "similar": [{"memory": memory_to_wire(s.memory), "similarity": s.similarity} for s in self.similar]}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Added:
        return cls(data["id"], bool(data["duplicate"]), tuple(
            SimilarMemory(memory_from_wire(s["memory"]), s["similarity"]) for s in data["similar"]))


@dataclass(frozen=True, slots=True)
class Shown:
    """``peer show``: the memory, where it was merged into (if it was), and its versions when asked."""

    memory: Memory
    merged_into: str | None
    versions: tuple[VersionInfo, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"memory": memory_to_wire(self.memory), "merged_into": self.merged_into,
                "versions": [_version_to_wire(v) for v in self.versions]}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Shown:
        return cls(memory_from_wire(data["memory"]), data["merged_into"],
                   tuple(_version_from_wire(v) for v in data["versions"]))


@dataclass(frozen=True, slots=True)
class Listed:
    """``peer list``: the memories asked for, and how many match in all when the list was cut."""

    memories: tuple[Memory, ...]
    total: int | None

    def to_wire(self) -> dict[str, Any]:
        return {"memories": [memory_to_wire(m) for m in self.memories], "total": self.total}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Listed:
        return cls(tuple(memory_from_wire(m) for m in data["memories"]), data["total"])


@dataclass(frozen=True, slots=True)
class Changed:
    """``peer edit`` and ``peer forget``: the memory that got a new version."""

    id: str

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Changed:
        return cls(data["id"])


def _hit_to_wire(hit: SearchHit) -> dict[str, Any]:
    return {"memory_id": hit.memory_id, "score": hit.score, "vector_rank": hit.vector_rank,
            "similarity": hit.similarity, "keyword_rank": hit.keyword_rank, "keyword_score": hit.keyword_score}


@dataclass(frozen=True, slots=True)
class Found:
    """``peer search``: the results, and the warnings the index gave while it caught up."""

    results: tuple[SearchResult, ...]
    warnings: tuple[str, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"results": [{"hit": _hit_to_wire(r.hit), "memory": memory_to_wire(r.memory)} for r in self.results],
                "warnings": list(self.warnings)}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Found:
        return cls(
            tuple(SearchResult(SearchHit(**r["hit"]), memory_from_wire(r["memory"])) for r in data["results"]),
            tuple(data["warnings"]),
        )


@dataclass(frozen=True, slots=True)
class Rendered:
    """A result already rendered by its own ``to_json()`` and ``describe()`` (``status``, ``context``)."""

    json: Any
    text: str

    def to_json(self) -> Any:
        return self.json

    def describe(self) -> str:
        return self.text

    def to_wire(self) -> dict[str, Any]:
        return {"json": self.json, "text": self.text}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Rendered:
        return cls(data["json"], data["text"])

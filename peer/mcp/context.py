"""``peer context``: what an assistant should know when a session starts in this project.

A compact block for a session-start hook (Claude Code's ``SessionStart``
adds a hook's stdout to the conversation): the project's important
memories, then its most recent ones, then a line about open conflicts,
within a token budget (estimated as characters / 4). It reads the store
only: no model, so a hook costs well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..memory import Memory
from ..store import Store
from .service import CHARS_PER_TOKEN, list_entry, snippet

__all__ = ["ContextBlock", "context_block", "DEFAULT_CONTEXT_TOKENS"]

DEFAULT_CONTEXT_TOKENS = 2000
_IMPORTANT = 8
_LINE_CHARS = 240


@dataclass(frozen=True, slots=True)
class ContextBlock:
    project: str | None
    important: tuple[Memory, ...]
    recent: tuple[Memory, ...]
    total: int  # live memories in the project (counted up to 500)
    conflicts: int

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "total": self.total,
            "conflicts": self.conflicts,
            "memories": [{**list_entry(m), "importance": m.importance, "section": "important"} for m in self.important]
            + [{**list_entry(m), "importance": m.importance, "section": "recent"} for m in self.recent],
        }

    def text(self) -> str:
        where = f"project {self.project}" if self.project else "all projects"
        count = f"{self.total}+" if self.total >= 500 else str(self.total)
        lines = [f"# Memories from peer ({where}: {count} memories)"]
        if not self.important and not self.recent:
            lines.append("None yet. Use the peer MCP tools (`remember`) to keep what matters across sessions.")
        for title, memories in (("Important", self.important), ("Recent", self.recent)):
            if memories:
                lines.append(f"## {title}")
                lines.extend(_line(m) for m in memories)
        if self.conflicts:
            lines.append(f"{self.conflicts} memories have concurrent edits from two devices: see `conflicts` (MCP) or `peer conflicts`.")
        lines.append("More: the peer MCP tools `search` and `get` (or `peer search`, `peer show ID`).")
        return "\n".join(lines)


def _line(memory: Memory) -> str:
    tags = " " + " ".join("#" + t for t in memory.tags) if memory.tags else ""
    return f"- [{memory.kind}] {snippet(memory.content, _LINE_CHARS)}{tags} (id {memory.id[:8]})"


async def context_block(store: Store, project: str | None, *, tokens: int = DEFAULT_CONTEXT_TOKENS) -> ContextBlock:
    """The block for ``project`` (None: every project), within ``tokens``."""
    memories = await store.list(project=project, limit=500)
    total = len(memories)
    ranked = sorted((m for m in memories if m.importance is not None), key=lambda m: (-(m.importance or 0), -m.updated_at))
    budget = tokens * CHARS_PER_TOKEN - 400  # the header and the closing lines
    important: list[Memory] = []
    recent: list[Memory] = []
    for memory in ranked[:_IMPORTANT]:
        cost = len(_line(memory)) + 1
        if cost > budget:
            break
        important.append(memory)
        budget -= cost
    taken = {m.id for m in important}
    for memory in memories:
        if memory.id in taken:
            continue
        cost = len(_line(memory)) + 1
        if cost > budget:
            break
        recent.append(memory)
        budget -= cost
    conflicts = len(await store.conflicts())
    return ContextBlock(project, tuple(important), tuple(recent), total, conflicts)

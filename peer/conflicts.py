"""Concurrent edits: the memories that hold siblings, and settling one.
"""

from __future__ import annotations

import logging
from typing import Any

from peer.store import Store

log = logging.getLogger(__name__)



# Conflicts ----------------------------------------------------------------------------


async def conflicts(store: Store, preview: int = 200) -> list[dict[str, Any]]:
    """``peer conflicts``: each memory with siblings and all its live versions, the winner first."""
    out: list[dict[str, Any]] = []
    for versions in await store.conflicts():
        out.append(
            {
                "id": versions[0].memory_id,
                "versions": [
                    {
                        "version": v.version,
                        "winner": v.state == "winner",
                        "deleted": v.deleted,
                        "updated_at": v.updated_at,
                        "kind": v.kind,
                        "project": v.project,
                        "content": v.content[:preview],
                    }
                    for v in versions
                ],
            }
        )
    return out


async def resolve(store: Store, memory_id: str, keep: str) -> dict[str, Any]:
    """``peer resolve``: keep one version; the new version supersedes every sibling."""
    resolved = await store.resolve(memory_id, keep)
    memory = await store.get(resolved)
    return {"id": resolved, "version": memory.version, "kept": keep}

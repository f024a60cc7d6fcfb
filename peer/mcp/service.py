"""What the MCP tools do, on one warm device: each method takes checked arguments and returns JSON.

Theory of operation. One :class:`MemoryService` lives as long as the
``peer mcp`` process. It holds the device (store, model, index) open, so a
search costs an embedding and an hnswlib query, not a model load.

Freshness. Other processes write to the same home (the agent applying a
sync, ``peer add``, other MCP servers). Before every read the service asks
its :class:`~peer.watch.StoreWatch` whether anyone else committed; if so, or
if this process wrote since, the index catches up with the store (reading
only the changes after its watermark) under one lock, so a memory added
anywhere on this device is searchable by the next call.

The index files on disk are only a start-up cache: the server saves its
index every :data:`INDEX_SAVE_EVERY` changes and when it exits, not after
every catch-up (a save writes the whole graph, about a second at 100,000
memories, and would land on the next search after every write).

Budget. No result may exceed :data:`TOKEN_BUDGET` tokens (estimated as
JSON characters / 4): lists carry snippets and a ``next_cursor``; ``get``
returns whole memories until the budget is spent and names the ids it left
out; a single memory longer than the budget is cut, and says so.

Errors are :class:`PeerError` with the CLI's wording; the tool layer turns
them into error results. Every check happens before anything is written.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from collections.abc import Sequence
from typing import Any, Final

import trio

from protocol import MAX_CONTENT_BYTES, PeerError, valid_kind

from .. import localapi
from ..device import Device, SearchResult
from ..memory import Draft, Memory
from ..units import parse_since
from ..watch import StoreWatch

__all__ = ["MemoryService", "TOKEN_BUDGET", "CHARS_PER_TOKEN", "estimate_tokens", "BadArgument", "list_entry", "snippet"]

log = logging.getLogger(__name__)

#: The most a result may hold; Claude Code warns at 10,000 and refuses 25,000.
TOKEN_BUDGET: Final = 8000
#: A rough, conservative estimate for English prose and JSON punctuation.
CHARS_PER_TOKEN: Final = 4
SNIPPET_CHARS: Final = 280
MAX_PAGE: Final = 100
#: Search looks at most this deep (offset + limit), as `peer search -k` does.
MAX_DEPTH: Final = 1000
#: Changes the server's index applies before it writes its files again (it also writes them on exit).
INDEX_SAVE_EVERY: Final = 5000
#: How much of a new memory is compared with the others (see remember).
NEAR_QUERY_CHARS: Final = 1000
#: Two memories whose cosine similarity reaches this look like the same thing.
SIMILAR_AT: Final = 0.80


class BadArgument(PeerError):
    """An argument of a tool call is missing or malformed (the message names it)."""


def estimate_tokens(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"))) // CHARS_PER_TOKEN + 1


def _iso(timestamp: float) -> str:
    return _dt.datetime.fromtimestamp(timestamp, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def snippet(text: str, width: int = SNIPPET_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "\u2026"


def list_entry(memory: Memory) -> dict[str, Any]:
    """A memory in a list: enough to decide whether to `get` it."""
    return {
        "id": memory.id,
        "kind": memory.kind,
        "project": memory.project,
        "tags": list(memory.tags),
        "snippet": snippet(memory.content),
        "chars": len(memory.content),
        "updated": _iso(memory.updated_at),
        "has_conflict": memory.siblings > 0,
    }


def _full(memory: Memory) -> dict[str, Any]:
    return {
        "id": memory.id,
        "content": memory.content,
        "kind": memory.kind,
        "project": memory.project,
        "tags": list(memory.tags),
        "metadata": memory.metadata,
        "importance": memory.importance,
        "created": _iso(memory.created_at),
        "updated": _iso(memory.updated_at),
        "version": memory.version,
        "has_conflict": memory.siblings > 0,
        "truncated": False,
    }


def _offset(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 0
    try:
        value = int(cursor)
    except ValueError:
        value = -1
    if value < 0 or value > MAX_DEPTH * 100:
        raise BadArgument(f"cursor {cursor!r} is not one this server gave; pass the next_cursor of the previous page")
    return value


def _page_size(limit: int | None, default: int) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= MAX_PAGE:
        raise BadArgument(f"limit must be between 1 and {MAX_PAGE} (got {limit})")
    return limit


def _kind(kind: str | None) -> str | None:
    if kind is None or kind == "":
        return None
    kind = kind.lower()
    if not valid_kind(kind):
        raise BadArgument(f"{kind!r} is not a kind: use a short lowercase word such as fact, procedure, note")
    return kind


def _fit(items: list[dict[str, Any]], base: dict[str, Any]) -> int:
    """How many of ``items`` fit in the budget beside ``base`` (at least one, when there is one)."""
    used = estimate_tokens(base)
    for count, item in enumerate(items):
        used += estimate_tokens(item)
        if used > TOKEN_BUDGET and count > 0:
            return count
    return len(items)


class MemoryService:
    """The device behind the tools; create with :meth:`open`, close with :meth:`close`."""

    def __init__(self, device: Device, watch: StoreWatch, *, project: str | None) -> None:
        self.device = device
        self.store = device.store
        self.default_project = project
        self._watch = watch
        self._wrote = True  # the first read brings the index up to date
        self._index_lock = trio.Lock()

    @classmethod
    async def open(cls, device: Device, *, project: str | None = None) -> MemoryService:
        # A save writes the whole graph (about a second at 100,000 memories): not after every
        # write seen, but every INDEX_SAVE_EVERY changes and when the server exits.
        device.index_save_threshold = INDEX_SAVE_EVERY
        return cls(device, await StoreWatch.start(device.store), project=project)

    # Keeping up with the home --------------------------------------------------------
    async def warm(self) -> None:
        """Load the model and bring the index up to date (at start, so the first call is quick)."""
        started = time.monotonic()
        await self.fresh()
        await trio.to_thread.run_sync(self.device.embedder.embed, ["warm up"])
        log.info("model and index ready in %.1f s", time.monotonic() - started)

    async def fresh(self) -> None:
        """See every commit made to this home so far: by this process or any other."""
        async with self._index_lock:
            if await self._watch.changed():
                await self.store.refresh()
            elif not self._wrote:
                return
            self._wrote = False
            for warning in await self.device.prepare_index():
                log.warning("%s", warning)

    def _written(self) -> None:
        self._wrote = True

    def scope(self, project: str | None, explicit_default: str | None = None) -> str | None:
        """The project a call is about: the one it names, else the session's default."""
        if project is not None:
            return project or None  # "" means "no project"
        return explicit_default if explicit_default is not None else self.default_project

    # Tools -----------------------------------------------------------------------------
    async def remember(
        self,
        content: str,
        *,
        kind: str | None,
        project: str | None,
        tags: Sequence[str],
        metadata: dict[str, Any],
        importance: float | None,
        default_project: str | None,
    ) -> dict[str, Any]:
        if not content.strip():
            raise BadArgument("the memory is empty; give its text as content")
        if len(content.encode("utf-8")) > MAX_CONTENT_BYTES:
            raise BadArgument(f"a memory's content is limited to {MAX_CONTENT_BYTES} bytes")
        if importance is not None and not 0.0 <= importance <= 1.0:
            raise BadArgument(f"importance must be between 0 and 1 (got {importance})")
        draft = Draft(
            content=content,
            kind=_kind(kind) or "note",
            project=self.scope(project, default_project),
            tags=tuple(tags),
            metadata=dict(metadata),
            importance=importance,
        )
        await self.fresh()
        # Its beginning is enough to find look-alikes, and keeps a long memory from costing two full embeddings.
        near = await self.device.search(content[:NEAR_QUERY_CHARS], k=5)
        (memory_id,) = await self.device.add([draft])
        self._written()
        similar = [
            {**list_entry(r.memory), "similarity": round(r.hit.similarity, 3)}
            for r in near
            if r.hit.similarity is not None and r.hit.similarity >= SIMILAR_AT
        ]
        out: dict[str, Any] = {"id": memory_id, "project": draft.project, "kind": draft.kind, "similar": similar}
        if similar:
            out["note"] = (
                "Existing memories look like the same thing; if this one repeats one of them,"
                " `update` that one and `forget` this one."
            )
        return out

    async def search(
        self,
        query: str,
        *,
        limit: int | None,
        cursor: str | None,
        project: str | None,
        kind: str | None,
        tags: Sequence[str],
        since: str | None,
        min_score: float | None,
        all_projects: bool,
        default_project: str | None,
    ) -> dict[str, Any]:
        if not query.strip():
            raise BadArgument("the query is empty; say what to look for")
        size = _page_size(limit, 10)
        offset = _offset(cursor)
        depth = offset + size + 1
        if depth > MAX_DEPTH:
            raise BadArgument(f"search reaches at most {MAX_DEPTH} results deep")
        kind = _kind(kind)
        after = None if since is None else parse_since(since)
        scoped = None if all_projects else self.scope(project, default_project)
        explicit = project is not None
        filtered = bool(tags) or after is not None or min_score is not None

        def keep(result: SearchResult) -> bool:
            memory = result.memory
            if tags and not set(tags) <= set(memory.tags):
                return False
            if after is not None and memory.updated_at < after:
                return False
            return min_score is None or result.hit.score >= min_score

        async def ranked(in_project: str | None) -> list[SearchResult]:
            fetch = min(MAX_DEPTH, depth * (4 if filtered else 1))
            return [r for r in await self.device.search(query, k=fetch, project=in_project, kind=kind) if keep(r)]

        await self.fresh()
        results = await ranked(scoped)
        widened = False
        if scoped is not None and not explicit and len(results) < depth:
            # The current project first; then the others, for what it lacks.
            seen = {r.memory.id for r in results}
            extra = [r for r in await ranked(None) if r.memory.id not in seen]
            widened = bool(extra)
            results.extend(extra)
        page = results[offset : offset + size]
        # id first, then score: the order a model reads them in.
        items = [{"id": r.memory.id, "score": round(r.hit.score, 4), **list_entry(r.memory)} for r in page]
        out: dict[str, Any] = {
            "results": items,
            "project": scoped,
            "widened": widened,
            "next_cursor": None,
        }
        shown = _fit(items, out)
        out["results"] = items[:shown]
        if shown < len(items) or len(results) > offset + size:
            out["next_cursor"] = str(offset + shown)
        if widened:
            out["note"] = f"Few matches in project {scoped!r}: results from other projects follow its own."
        if len(items) < 1 and offset == 0:
            out["note"] = "Nothing matched" + (f" in project {scoped!r} or elsewhere" if scoped else "") + "."
        out["hint"] = "Snippets only: call `get` with ids for full content."
        return out

    async def get(self, ids: Sequence[str]) -> dict[str, Any]:
        if not ids:
            raise BadArgument("give one or more ids (or unique prefixes of them)")
        if len(ids) > MAX_PAGE:
            raise BadArgument(f"get takes at most {MAX_PAGE} ids at once")
        await self.fresh()
        memories: list[Memory] = []
        for memory_id in ids:
            memory = await self.store.get(memory_id)
            if memory.deleted:
                from ..consolidate import merged_into

                if (target := merged_into(memory)) is not None:
                    raise BadArgument(f"memory {memory.id} was merged into {target}: `get` that one,"
                                      " or `unmerge` this one to bring it back")
                raise BadArgument(f"memory {memory.id} was forgotten; `peer show {memory.id} --versions` shows its past")
            if memory.id not in {m.id for m in memories}:
                memories.append(memory)
        out: dict[str, Any] = {"memories": [], "omitted_ids": []}
        used = estimate_tokens(out) + 40
        for memory in memories:
            item = _full(memory)
            cost = estimate_tokens(item)
            if used + cost > TOKEN_BUDGET:
                if out["memories"]:
                    out["omitted_ids"].append(memory.id)
                    continue
                # One memory longer than the whole budget: its beginning, and say so.
                room = max(1000, (TOKEN_BUDGET - used - estimate_tokens({**item, "content": ""})) * CHARS_PER_TOKEN)
                item["content"] = memory.content[:room]
                item["truncated"] = True
                item["content_chars"] = len(memory.content)
                cost = estimate_tokens(item)
            out["memories"].append(item)
            used += cost
        if out["omitted_ids"]:
            out["note"] = "Result size limit reached: call `get` again with omitted_ids."
        return out

    async def update(
        self,
        memory_id: str,
        *,
        content: str | None,
        kind: str | None,
        project: str | None,
        tags: Sequence[str] | None,
        metadata: dict[str, Any] | None,
        importance: float | None,
    ) -> dict[str, Any]:
        if content is None and kind is None and project is None and tags is None and metadata is None and importance is None:
            raise BadArgument("nothing to change: give content, kind, project, tags, metadata or importance")
        if content is not None:
            if not content.strip():
                raise BadArgument("the new content is empty; to delete the memory, use `forget`")
            if len(content.encode("utf-8")) > MAX_CONTENT_BYTES:
                raise BadArgument(f"a memory's content is limited to {MAX_CONTENT_BYTES} bytes")
        if importance is not None and not 0.0 <= importance <= 1.0:
            raise BadArgument(f"importance must be between 0 and 1 (got {importance})")
        kind = _kind(kind)
        await self.fresh()
        updated = await self.device.edit(
            memory_id,
            content=content,
            kind=kind,
            project=project,
            tags=None if tags is None else tuple(tags),
            metadata=metadata,
            importance=importance,
        )
        self._written()
        memory = await self.store.get(updated)
        return {"id": memory.id, "version": memory.version, "updated": _iso(memory.updated_at)}

    async def forget(self, memory_id: str) -> dict[str, Any]:
        await self.fresh()
        forgotten = await self.device.forget(memory_id)
        self._written()
        return {"id": forgotten, "forgotten": True}

    async def list(
        self,
        *,
        project: str | None,
        kind: str | None,
        tags: Sequence[str],
        since: str | None,
        limit: int | None,
        cursor: str | None,
        all_projects: bool,
        default_project: str | None,
    ) -> dict[str, Any]:
        size = _page_size(limit, 20)
        offset = _offset(cursor)
        kind = _kind(kind)
        after = None if since is None else parse_since(since)
        scoped = None if all_projects else self.scope(project, default_project)
        await self.fresh()
        wanted = offset + size + 1
        tag = tags[0] if tags else None
        while True:
            memories = await self.store.list(project=scoped, kind=kind, tag=tag, since=after, limit=wanted)
            matching = [m for m in memories if set(tags) <= set(m.tags)]
            if len(matching) >= offset + size + 1 or len(memories) < wanted:
                break
            wanted *= 4
        page = [list_entry(m) for m in matching[offset : offset + size]]
        out: dict[str, Any] = {"memories": page, "project": scoped, "next_cursor": None}
        shown = _fit(page, out)
        out["memories"] = page[:shown]
        if shown < len(page) or len(matching) > offset + size:
            out["next_cursor"] = str(offset + shown)
        if not page and offset == 0 and scoped is not None:
            out["note"] = f"No memories in project {scoped!r} match; pass all_projects=true to list every project."
        return out

    async def conflicts(self, *, limit: int | None, cursor: str | None) -> dict[str, Any]:
        from ..conflicts import conflicts

        size = _page_size(limit, 20)
        offset = _offset(cursor)
        await self.fresh()
        found = (await conflicts(self.store, preview=SNIPPET_CHARS)).conflicts
        items: list[dict[str, Any]] = []
        for entry in found[offset : offset + size]:
            items.append({
                "id": entry.id,
                "versions": [
                    {
                        "version": v.version,
                        "winner": v.winner,
                        "deleted": v.deleted,
                        "updated": _iso(v.updated_at),
                        "kind": v.kind,
                        "project": v.project,
                        "snippet": snippet(v.content),
                    }
                    for v in entry.versions
                ],
            })
        out: dict[str, Any] = {"conflicts": items, "total": len(found), "next_cursor": None}
        shown = _fit(items, out)
        out["conflicts"] = items[:shown]
        if shown < len(items) or len(found) > offset + size:
            out["next_cursor"] = str(offset + shown)
        if found:
            out["hint"] = "Keep one version with `resolve` (id, keep=version), or `update` the memory to merge them."
        return out

    async def resolve(self, memory_id: str, keep: str) -> dict[str, Any]:
        from ..conflicts import resolve

        if not keep.strip():
            raise BadArgument("give the version to keep, as `conflicts` lists it")
        await self.fresh()
        result = await resolve(self.store, memory_id, keep.strip())
        self._written()
        return result.to_json()

    async def consolidate(
        self,
        *,
        project: str | None,
        kind: str | None,
        threshold: float | None,
        limit: int | None,
        cursor: str | None,
        all_projects: bool,
        default_project: str | None,
    ) -> dict[str, Any]:
        """Suggested groups of duplicates (what `peer consolidate --dry-run` shows); writes nothing."""
        from ..consolidate import DEFAULT_THRESHOLD, find_duplicates

        size = _page_size(limit, 10)
        offset = _offset(cursor)
        kind = _kind(kind)
        if threshold is not None and not 0.5 <= threshold <= 1.0:
            raise BadArgument(f"threshold must be between 0.5 and 1 (got {threshold})")
        scoped = None if all_projects else self.scope(project, default_project)
        await self.fresh()
        found = await find_duplicates(
            self.device, project=scoped, kind=kind, threshold=DEFAULT_THRESHOLD if threshold is None else threshold
        )
        items: list[dict[str, Any]] = []
        for group in found.groups[offset : offset + size]:
            items.append({
                "kind": "exact" if group.exact else "near",
                "similarity": round(group.similarity, 4),
                "auto_merge": group.auto_mergeable,
                "keep": group.members[0].id,
                "members": [
                    {
                        "id": m.id,
                        "kind": m.kind,
                        "project": m.project,
                        "tags": list(m.tags),
                        "snippet": snippet(m.content),
                        "chars": len(m.content),
                        "updated": _iso(m.updated_at),
                        "created": _iso(m.created_at),
                    }
                    for m in group.members
                ],
            })
        out: dict[str, Any] = {
            "groups": items,
            "total": len(found.groups),
            "scanned": found.scanned,
            "project": scoped,
            "next_cursor": None,
        }
        shown = _fit(items, out)
        out["groups"] = items[:shown]
        if shown < len(items) or len(found.groups) > offset + size:
            out["next_cursor"] = str(offset + shown)
        if found.groups:
            out["hint"] = (
                "Suggestions only: read the members (`get`), and `merge` a group only if its memories say the same"
                " thing; `keep` is the one a merge keeps. `unmerge` undoes a merge."
            )
        return out

    async def merge(self, ids: Sequence[str], keep: str | None) -> dict[str, Any]:
        from ..consolidate import merge

        if len(ids) < 2:
            raise BadArgument("give at least two ids to merge (the memories that say the same thing)")
        if len(ids) > MAX_PAGE:
            raise BadArgument(f"merge takes at most {MAX_PAGE} ids at once")
        await self.fresh()
        result = await merge(self.device, ids, keep=keep or None)
        self._written()
        return {
            "id": result.survivor,
            "merged": list(result.merged),
            "hint": "Each merged memory keeps its text in its history; `unmerge` with its id brings it back.",
        }

    async def unmerge(self, memory_id: str) -> dict[str, Any]:
        from ..consolidate import unmerge

        await self.fresh()
        result = await unmerge(self.device, memory_id)
        self._written()
        return {"id": result.merged[0], "was_merged_into": result.survivor}

    async def status(self) -> dict[str, Any]:
        from ..sync.report import status_report

        report = (await status_report(self.device.home)).to_json()
        try:
            await localapi.call(self.device.home.path, "ping", timeout=2.0)
            reachable = True
        except PeerError:
            reachable = False
        stats = await self.store.stats()
        return {
            "device_id": report["device_id"],
            "home": str(self.device.home.path),
            "memories": stats.memories,
            "conflicts": stats.conflicts,
            "agent_running": report["agent"] is not None or reachable,
            "agent_reachable": reachable,
            "agent": report["agent"],
            "peers": report["peers"],
            "default_project": self.default_project,
        }

    async def sync(self, wait: float) -> dict[str, Any]:
        if not 0 <= wait <= 60:
            raise BadArgument(f"wait must be between 0 and 60 seconds (got {wait})")
        answer = await localapi.call(self.device.home.path, "sync_now", timeout=wait + 10, wait=wait)
        peers = [
            {
                "device_id": p.get("device_id"),
                "addresses": p.get("addresses", []),
                "last_sync": None if p.get("last_sync") is None else _iso(p["last_sync"]),
                "last_result": p.get("last_result"),
            }
            for p in answer.get("peers", [])
        ]
        await self.fresh()
        out: dict[str, Any] = {"asked": answer.get("asked", 0), "peers": peers}
        if not peers:
            out["note"] = "The agent knows no other device yet (pair one with `peer invite` / `peer join`)."
        return out

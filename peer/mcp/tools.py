"""The tools ``peer mcp`` offers, their schemas and annotations, and how arguments are read.

Every tool returns a ``CallToolResult`` built here: on success its
``structured_content`` is the service's JSON (validated by the SDK against
the tool's output schema) and its text is the same JSON, compact; on a
:class:`PeerError` it is an error result whose text is the one line the
CLI would print (``error: ...``). Nothing is written unless every check
passed.

Arguments go through :class:`ArgumentReader`, a server middleware that runs
before the SDK validates them: it maps the spellings models guess (``q``,
``k``, ``top_k``, ``text``, ``memory_id``...) to the declared names,
refuses unknown names (a misread parameter must not write a wrong memory),
and validates with the tool's own argument model so that a wrong type gets
one line naming the parameter, not a pydantic report.
"""

import json
import logging
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Annotated, Any, Final

import trio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from protocol import PeerError

from .scope import project_of_uri
from .service import MemoryService

__all__ = ["build_server", "ALIASES", "INSTRUCTIONS"]

log = logging.getLogger(__name__)

#: How long a client may take to list its workspace roots (asked once, at the first call that needs them).
ROOTS_TIMEOUT_S: Final = 5.0

INSTRUCTIONS: Final = """\
peer is this user's long-term memory, shared by their assistants on all their devices.
Search it (`search`) before answering questions about the user's projects, preferences,
procedures or past decisions; `remember` what is worth keeping across sessions (one
self-contained fact, decision or procedure per memory, with its project and tags);
`update` a memory instead of adding a near-duplicate (`remember` shows similar ones);
`consolidate` suggests duplicates already stored, and `merge` joins those that repeat one fact.
Results list snippets: `get` the ids you need in full. Memories are scoped to the current
project by default; pass all_projects=true to look everywhere."""

#: Spellings models tend to guess, per declared parameter name (any tool).
ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "query": ("q", "search", "search_query", "query_text", "text"),
    "limit": ("k", "top_k", "n", "max_results", "page_size", "count"),
    "content": ("text", "memory", "note", "body"),
    "tags": ("tag", "labels"),
    "kind": ("type", "category", "memory_type"),
    "ids": ("id", "memory_id", "memory_ids", "uuid"),
    "id": ("memory_id", "uuid"),
    "since": ("after", "after_date", "from_date", "start_date"),
    "min_score": ("threshold", "min_similarity", "similarity_threshold", "min_relevance"),
    "all_projects": ("search_all_projects", "global", "everywhere"),
    "metadata": ("meta", "extra"),
    "cursor": ("page_token", "next_cursor", "offset_cursor"),
    "keep": ("version", "winner", "keep_version", "survivor", "into"),
    "project": ("project_name", "workspace", "repo"),
}


# Output shapes (published as outputSchema) ------------------------------------------------


class Entry(BaseModel):
    id: str
    kind: str
    project: str | None
    tags: list[str]
    snippet: str = Field(description="The start of the content, on one line; `get` returns all of it.")
    chars: int = Field(description="Length of the whole content.")
    updated: str = Field(description="Last change, ISO 8601 UTC.")
    has_conflict: bool = Field(description="Concurrent edits on two devices left sibling versions: see `conflicts`.")


class Hit(Entry):
    score: float = Field(description="Fused rank score: 1.0 = first for both semantic and keyword search.")


class Similar(Entry):
    similarity: float = Field(description="Cosine similarity to the new memory (1.0 = same meaning).")


class RememberOut(BaseModel):
    id: str
    project: str | None
    kind: str
    similar: list[Similar] = Field(description="Existing memories that look like the same thing.")
    note: str | None = None


class SearchOut(BaseModel):
    results: list[Hit]
    project: str | None = Field(description="The project searched first (null: all projects).")
    widened: bool = Field(description="True when results from other projects were added.")
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null at the end.")
    note: str | None = None
    hint: str | None = None


class FullMemory(BaseModel):
    id: str
    content: str
    kind: str
    project: str | None
    tags: list[str]
    metadata: dict[str, Any]
    importance: float | None
    created: str
    updated: str
    version: str
    has_conflict: bool
    truncated: bool = Field(description="True when content was cut to fit the result size limit.")
    content_chars: int | None = None


class GetOut(BaseModel):
    memories: list[FullMemory]
    omitted_ids: list[str] = Field(description="Ids left out to stay within the size limit: get them next.")
    note: str | None = None


class UpdateOut(BaseModel):
    id: str
    version: str
    updated: str


class ForgetOut(BaseModel):
    id: str
    forgotten: bool


class ListOut(BaseModel):
    memories: list[Entry]
    project: str | None
    next_cursor: str | None
    note: str | None = None


class SiblingVersion(BaseModel):
    version: str
    winner: bool
    deleted: bool
    updated: str
    kind: str
    project: str | None
    snippet: str


class Conflict(BaseModel):
    id: str
    versions: list[SiblingVersion]


class ConflictsOut(BaseModel):
    conflicts: list[Conflict]
    total: int
    next_cursor: str | None
    hint: str | None = None


class ResolveOut(BaseModel):
    id: str
    version: str
    kept: str


class GroupMember(BaseModel):
    id: str
    kind: str
    project: str | None
    tags: list[str]
    snippet: str
    chars: int
    created: str
    updated: str


class DuplicateGroup(BaseModel):
    kind: str = Field(description="exact (same text once case and spacing are folded) or near (same meaning).")
    similarity: float = Field(description="The weakest link between members (1.0 for exact).")
    auto_merge: bool = Field(description="Safe to merge without asking: exact, or above 0.95 and worded alike.")
    keep: str = Field(description="The member a merge keeps (the longest, then the oldest).")
    members: list[GroupMember]


class ConsolidateOut(BaseModel):
    groups: list[DuplicateGroup]
    total: int
    scanned: int
    project: str | None
    next_cursor: str | None
    hint: str | None = None


class MergeOut(BaseModel):
    id: str = Field(description="The surviving memory: it now has every member's tags and metadata.")
    merged: list[str] = Field(description="The memories merged into it (each can come back with `unmerge`).")
    hint: str | None = None


class UnmergeOut(BaseModel):
    id: str
    was_merged_into: str


class StatusOut(BaseModel):
    device_id: str
    home: str
    memories: int
    conflicts: int
    agent_running: bool
    agent_reachable: bool = Field(description="The agent answers on its local socket (sync can be asked).")
    agent: dict[str, Any] | None
    peers: list[dict[str, Any]] = Field(description="The group's other devices: last sync, versions they lack.")
    default_project: str | None


class SyncPeer(BaseModel):
    device_id: str | None
    addresses: list[str]
    last_sync: str | None
    last_result: str | None


class SyncOut(BaseModel):
    asked: int
    peers: list[SyncPeer]
    note: str | None = None


# Parameter types (their descriptions are what the model reads) ---------------------------

Tags = Annotated[
    list[str] | str | None,
    Field(description="Tags: a list, or one comma-separated string."),
]
ProjectArg = Annotated[
    str | None,
    Field(description="Project name. Default: the current workspace's project. \"\" means no project."),
]
KindArg = Annotated[
    str | None,
    Field(description="fact, decision, procedure, error, preference, observation, session_summary, note, ..."),
]
LimitArg = Annotated[int | None, Field(description="How many per page (1-100).")]
CursorArg = Annotated[str | None, Field(description="next_cursor from the previous page.")]
SinceArg = Annotated[str | None, Field(description="Changed since: a duration (90m, 12h, 7d, 2w) or a date (2026-01-31).")]


def _tags(value: list[str] | str | None) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    return [t.strip() for t in items if t.strip()]


def _ok(data: dict[str, Any]) -> CallToolResult:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


def error_result(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=f"error: {message}")], is_error=True)


async def _call(work: Awaitable[dict[str, Any]]) -> CallToolResult:
    try:
        return _ok(await work)
    except PeerError as e:
        return error_result(e.message)


class Session:
    """The one stdio client's default project: ``--project``, else its workspace root's (asked once), else the cwd's."""

    def __init__(self, explicit: str | None, fallback: str | None) -> None:
        self.explicit = explicit
        self.fallback = fallback
        self._asked = False
        self._roots_project: str | None = None

    async def default_project(self, ctx: Context) -> str | None:
        if self.explicit is not None:
            return self.explicit
        if not self._asked:
            self._asked = True
            self._roots_project = await _roots_project(ctx)
        return self._roots_project or self.fallback


async def _roots_project(ctx: Context) -> str | None:
    try:
        session = ctx.session
        capabilities = session.client_capabilities
        if capabilities is None or capabilities.roots is None:
            return None
        with warnings.catch_warnings(), trio.move_on_after(ROOTS_TIMEOUT_S) as waited:
            warnings.simplefilter("ignore")  # roots are deprecated by the newest protocol, still used by hosts
            result = await session.list_roots()
        if waited.cancelled_caught:
            log.info("the client did not list its roots within %g s; using the working directory's project",
                     ROOTS_TIMEOUT_S)
            return None
    except Exception as e:  # a client that declared roots but fails to list them: not fatal
        log.info("the client's roots could not be read (%s); using the working directory's project", e)
        return None
    for root in result.roots:
        project = project_of_uri(str(root.uri))
        if project:
            return project
    return None


def build_server(
    service: MemoryService, *, explicit_project: str | None, cwd_project: str | None
) -> tuple[MCPServer, dict[str, Tool]]:
    """The MCP server with every tool; also the tools by name (the argument reader validates with them)."""
    session = Session(explicit_project, cwd_project)

    async def remember(
        ctx: Context,
        content: Annotated[str, Field(description="The memory: one self-contained fact, decision, procedure...")],
        kind: KindArg = None,
        project: ProjectArg = None,
        tags: Tags = None,
        metadata: Annotated[dict[str, Any] | None, Field(description="Any JSON object (source, file, url...).")] = None,
        importance: Annotated[float | None, Field(description="0 to 1: how much it matters.")] = None,
    ) -> Annotated[CallToolResult, RememberOut]:
        """Store a memory for later sessions and other devices. Returns its id and any existing memories that look like the same thing: then prefer `update` on one of those."""
        default = await session.default_project(ctx)
        return await _call(service.remember(
            content, kind=kind, project=project, tags=_tags(tags), metadata=metadata or {},
            importance=importance, default_project=default,
        ))

    async def search(
        ctx: Context,
        query: Annotated[str, Field(description="What to look for, in words (semantic and keyword search).")],
        limit: LimitArg = None,
        cursor: CursorArg = None,
        project: ProjectArg = None,
        kind: KindArg = None,
        tags: Tags = None,
        since: SinceArg = None,
        min_score: Annotated[float | None, Field(description="Drop results scoring below this (0-1).")] = None,
        all_projects: Annotated[bool, Field(description="Search every project, not the current one first.")] = False,
    ) -> Annotated[CallToolResult, SearchOut]:
        """Search memories by meaning and keywords. Looks in the current project first and adds other projects' results when it finds few (widened=true). Returns ids and snippets: call `get` for full content."""
        default = await session.default_project(ctx)
        return await _call(service.search(
            query, limit=limit, cursor=cursor, project=project, kind=kind, tags=_tags(tags), since=since,
            min_score=min_score, all_projects=all_projects, default_project=default,
        ))

    async def get(
        ids: Annotated[list[str] | str, Field(description="One id, a list, or a comma-separated string; unique prefixes work.")],
    ) -> Annotated[CallToolResult, GetOut]:
        """Read memories in full (content, metadata, version) by id or unique id prefix."""
        wanted = _tags(ids)
        return await _call(service.get(wanted))

    async def update(
        id: Annotated[str, Field(description="The memory's id or a unique prefix.")],
        content: Annotated[str | None, Field(description="New text (replaces the old).")] = None,
        kind: KindArg = None,
        project: ProjectArg = None,
        tags: Annotated[list[str] | str | None, Field(description="New tags (replace the old): a list or comma-separated.")] = None,
        metadata: Annotated[dict[str, Any] | None, Field(description="Keys to set; other keys are kept.")] = None,
        importance: Annotated[float | None, Field(description="0 to 1.")] = None,
    ) -> Annotated[CallToolResult, UpdateOut]:
        """Change a memory: a new version replaces it on every device (and settles a conflict). Give only what changes."""
        return await _call(service.update(
            id, content=content, kind=kind, project=project, tags=None if tags is None else _tags(tags),
            metadata=metadata, importance=importance,
        ))

    async def forget(
        id: Annotated[str, Field(description="The memory's id or a unique prefix.")],
    ) -> Annotated[CallToolResult, ForgetOut]:
        """Delete a memory on every device (its past versions stay in the store, out of search and lists)."""
        return await _call(service.forget(id))

    async def list_(
        ctx: Context,
        project: ProjectArg = None,
        kind: KindArg = None,
        tags: Tags = None,
        since: SinceArg = None,
        limit: LimitArg = None,
        cursor: CursorArg = None,
        all_projects: Annotated[bool, Field(description="Every project, not only the current one.")] = False,
    ) -> Annotated[CallToolResult, ListOut]:
        """Browse memories, most recently changed first, filtered by project, kind, tags and time; paginated."""
        default = await session.default_project(ctx)
        return await _call(service.list(
            project=project, kind=kind, tags=_tags(tags), since=since, limit=limit, cursor=cursor,
            all_projects=all_projects, default_project=default,
        ))

    async def conflicts(limit: LimitArg = None, cursor: CursorArg = None) -> Annotated[CallToolResult, ConflictsOut]:
        """Memories edited concurrently on two devices: each with its sibling versions, the current winner first."""
        return await _call(service.conflicts(limit=limit, cursor=cursor))

    async def resolve(
        id: Annotated[str, Field(description="The memory's id or a unique prefix.")],
        keep: Annotated[str, Field(description="The version to keep, as `conflicts` lists it (e.g. \"ab12cd:1733\").")],
    ) -> Annotated[CallToolResult, ResolveOut]:
        """Settle a conflict by keeping one version; the others stop being live on every device."""
        return await _call(service.resolve(id, keep))

    async def consolidate(
        ctx: Context,
        project: ProjectArg = None,
        kind: KindArg = None,
        threshold: Annotated[float | None, Field(description="Similarity from which two memories are near duplicates (0.5-1, default 0.9).")] = None,
        limit: LimitArg = None,
        cursor: CursorArg = None,
        all_projects: Annotated[bool, Field(description="Every project, not only the current one.")] = False,
    ) -> Annotated[CallToolResult, ConsolidateOut]:
        """Find duplicate memories (exact copies and near ones that say the same thing) and suggest groups to merge. Changes nothing: read the members, then `merge` the groups that really repeat one fact."""
        default = await session.default_project(ctx)
        return await _call(service.consolidate(
            project=project, kind=kind, threshold=threshold, limit=limit, cursor=cursor,
            all_projects=all_projects, default_project=default,
        ))

    async def merge(
        ids: Annotated[list[str] | str, Field(description="Two or more ids (or unique prefixes): a list or a comma-separated string.")],
        keep: Annotated[str | None, Field(description="The id that survives (default: the longest text, then the oldest).")] = None,
    ) -> Annotated[CallToolResult, MergeOut]:
        """Merge memories that say the same thing into one, on every device: the survivor gets all their tags and metadata; the others leave search and lists but keep their text in their history. `unmerge` undoes it."""
        return await _call(service.merge(_tags(ids), keep))

    async def unmerge(
        id: Annotated[str, Field(description="The id of a memory that was merged into another.")],
    ) -> Annotated[CallToolResult, UnmergeOut]:
        """Undo a merge: bring a merged-away memory back exactly as it was, and take what it brought off the survivor."""
        return await _call(service.unmerge(id))

    async def status() -> Annotated[CallToolResult, StatusOut]:
        """This device, its agent, and the group's other devices: last sync and how many versions each lacks."""
        return await _call(service.status())

    async def sync(
        wait: Annotated[float, Field(description="Seconds to wait for the syncs to finish (0-60).")] = 10.0,
    ) -> Annotated[CallToolResult, SyncOut]:
        """Ask this device's agent to sync with the group's other devices now (it also syncs on its own after every change)."""
        return await _call(service.sync(wait))

    def annotations(title: str, *, read_only: bool, destructive: bool = False, idempotent: bool = False,
                    open_world: bool = False) -> ToolAnnotations:
        if read_only:
            return ToolAnnotations(title=title, read_only_hint=True, open_world_hint=open_world)
        return ToolAnnotations(title=title, read_only_hint=False, destructive_hint=destructive,
                               idempotent_hint=idempotent, open_world_hint=open_world)

    specs: Sequence[tuple[Callable[..., Any], str, ToolAnnotations]] = (
        (remember, "remember", annotations("Remember", read_only=False)),
        (search, "search", annotations("Search memories", read_only=True)),
        (get, "get", annotations("Get memories", read_only=True)),
        (update, "update", annotations("Update a memory", read_only=False, destructive=True)),
        (forget, "forget", annotations("Forget a memory", read_only=False, destructive=True, idempotent=True)),
        (list_, "list", annotations("List memories", read_only=True)),
        (conflicts, "conflicts", annotations("Conflicts", read_only=True)),
        (resolve, "resolve", annotations("Resolve a conflict", read_only=False, destructive=True)),
        (consolidate, "consolidate", annotations("Find duplicates", read_only=True)),
        (merge, "merge", annotations("Merge duplicates", read_only=False, destructive=True)),
        (unmerge, "unmerge", annotations("Undo a merge", read_only=False)),
        (status, "status", annotations("Sync status", read_only=True)),
        (sync, "sync", annotations("Sync now", read_only=False, idempotent=True, open_world=True)),
    )
    tools = {name: Tool.from_function(fn, name=name, annotations=notes) for fn, name, notes in specs}
    server: MCPServer = MCPServer(
        "peer",
        version=_version(),
        instructions=INSTRUCTIONS,
        tools=list(tools.values()),
        middleware=[ArgumentReader(tools)],
        log_level="WARNING",
    )
    return server, tools


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("peer-memory")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0"


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if not isinstance(p, int)) or "arguments"
    if first["type"] == "missing":
        return f"missing {where}"
    got = first.get("input")
    shown = json.dumps(got, ensure_ascii=False)[:60] if got is not None else "null"
    return f"{where}: {first['msg'].lower()} (got {shown})"


class ArgumentReader:
    """Server middleware: guessed spellings mapped, unknown names and wrong types refused in one line."""

    def __init__(self, tools: dict[str, Tool]) -> None:
        self.tools = tools

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call" or not isinstance(ctx.params, dict):
            return await call_next(ctx)
        tool = self.tools.get(str(ctx.params.get("name")))
        if tool is None:
            return await call_next(ctx)  # the SDK's own answer for an unknown tool
        raw = ctx.params.get("arguments") or {}
        if not isinstance(raw, dict):
            return error_result("the arguments must be a JSON object")
        try:
            arguments = self.read(tool, raw)
        except PeerError as e:
            return error_result(e.message)
        return await call_next(replace(ctx, params={**ctx.params, "arguments": arguments}))

    def read(self, tool: Tool, raw: dict[str, Any]) -> dict[str, Any]:
        declared = [name for name in tool.parameters.get("properties", {})]
        arguments: dict[str, Any] = {}
        for key, value in raw.items():
            name = key if key in declared else next(
                (d for d in declared if key in ALIASES.get(d, ())), None
            )
            if name is None:
                raise PeerError(f"{tool.name} has no parameter {key!r}; its parameters are {', '.join(declared)}")
            if name in arguments and arguments[name] != value:
                raise PeerError(f"{key!r} and {name!r} mean the same parameter of {tool.name}; give one")
            arguments[name] = value
        try:
            tool.fn_metadata.validate_arguments(arguments)
        except ValidationError as e:
            raise PeerError(_one_line(e)) from None
        return arguments

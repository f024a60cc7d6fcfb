"""The everyday commands as operations, run in process or by the agent's warm device.

Theory of operation. ``peer search`` as a fresh process spends about a
second loading the model, the index and the libraries for ten milliseconds
of search. ``peer agent`` already holds them, so it answers the everyday
commands (``add``, ``show``, ``list``, ``edit``, ``forget``, ``search``,
``status``, ``context``) on its local API (:mod:`peer.localapi`), and the
command line asks it first (:mod:`peer.agent_client`).

Each command is one operation here (:func:`add_memory`, :func:`search`,
...) returning a result of :mod:`peer.answers`. The command line calls the
same operation in process when no agent answers, and :class:`WarmCommands`
calls it for the agent; the result travels as JSON and is rebuilt on the
other side, and one piece of code prints it. So the output is the same
either way by construction, not by keeping two copies in step.

The agent's side checks every parameter with the checks the command line
applies before it would call the operation (a request is untrusted input,
even from the same user), and keeps its view fresh the way ``peer mcp``
does: before each command it asks its :class:`~peer.watch.StoreWatch`
whether another process committed, and the index catches up under the
agent's index lock (one task at a time touches hnswlib).

An add carries the id the client chose, so if the agent dies before
answering, the client's retry in process finds the memory already there
(:func:`add_memory` with ``retry=True``) instead of adding it twice.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

import trio

from protocol import PeerError, StoreError, valid_kind

from .answers import Added, Changed, Found, Listed, Rendered, Shown
from .device import Device, Progress
from .home import Home
from .memory import Draft
from .watch import StoreWatch

__all__ = [
    "add_memory",
    "show_memory",
    "list_memories",
    "edit_memory",
    "forget_memory",
    "search",
    "status",
    "context",
    "WarmCommands",
    "WARM_METHODS",
]

log = logging.getLogger(__name__)

#: The agent writes its index's files once no change has come for this long (seconds).
INDEX_IDLE_SAVE_S: Final = 1.0

#: The commands the agent answers, by local API method name.
#: (``status_report`` is ``peer status``; the agent's own ``status`` method is its status dict.)
WARM_METHODS: Final = ("add", "show", "list", "edit", "forget", "search", "status_report", "context")


# The operations -------------------------------------------------------------------------
async def add_memory(device: Device, draft: Draft, *, allow_duplicate: bool, retry: bool = False) -> Added:
    """``peer add TEXT``. With ``retry``, a memory that already has ``draft.id`` is this very add, done before."""
    from peer.consolidate import exact_duplicate, similar_to

    async def done_before() -> bool:
        return retry and draft.id is not None and bool(await device.store.memory_versions([draft.id]))

    async def added(memory_id: str) -> Added:
        return Added(memory_id, False, tuple((await similar_to(device, [memory_id])).get(memory_id, [])))

    if await done_before():
        assert draft.id is not None
        return await added(draft.id)
    if not allow_duplicate and draft.content.strip():
        existing = await exact_duplicate(device, draft)
        if existing is not None:
            return Added(existing.id, True, ())
    try:
        (memory_id,) = await device.add([draft])
    except StoreError:
        if await done_before():  # the agent committed it meanwhile
            assert draft.id is not None
            return await added(draft.id)
        raise
    return await added(memory_id)


async def show_memory(device: Device, memory_id: str, *, versions: bool) -> Shown:
    from peer.consolidate import merged_into

    memory = await device.store.get(memory_id)
    infos = await device.store.versions(memory.id) if versions else []
    return Shown(memory, merged_into(memory), tuple(infos))


async def list_memories(
    device: Device, *, project: str | None, kind: str | None, tag: str | None, since: float | None,
    limit: int | None, count_above: int | None = None,
) -> Listed:
    """``peer list``; when more than ``count_above`` match, ``total`` says how many in all."""
    memories = await device.store.list(project=project, kind=kind, tag=tag, since=since, limit=limit)
    total = None
    if count_above is not None and len(memories) > count_above:
        total = len(await device.store.list(project=project, kind=kind, tag=tag, since=since))
    return Listed(tuple(memories), total)


async def edit_memory(
    device: Device, memory_id: str, *, content: str | None, kind: str | None, project: str | None,
    tags: Sequence[str] | None, metadata: dict[str, Any] | None, importance: float | None,
) -> Changed:
    return Changed(await device.edit(
        memory_id, content=content, kind=kind, project=project, tags=tags, metadata=metadata, importance=importance,
    ))


async def forget_memory(device: Device, memory_id: str) -> Changed:
    return Changed(await device.store.forget(memory_id))


async def search(
    device: Device, query: str, *, k: int, project: str | None, kind: str | None, tag: str | None,
    since: float | None, min_similarity: float | None, calibrated: bool = True, progress: Progress | None = None,
    closed: Callable[[], None] | None = None,
) -> Found:
    """``peer search``: the index brought up to date (``closed()`` ends its progress), then the search."""
    try:
        warnings = await device.prepare_index(progress=progress)
    finally:
        if closed is not None:
            closed()
    results = await device.search(
        query, k=k, project=project, kind=kind, tag=tag, since=since, min_similarity=min_similarity,
        calibrated=calibrated,
    )
    return Found(tuple(results), tuple(warnings))


async def status(home: Home) -> Rendered:
    from peer.sync.report import status_report

    report = await status_report(home)
    return Rendered(report.to_json(), report.describe())


async def context(device_or_home: Device | Home, *, project: str | None, all_projects: bool, cwd: str,
                  tokens: int) -> Rendered:
    """``peer context``: the project named, else the one of ``cwd`` (its git repository), else all."""
    from peer.mcp.context import context_block
    from peer.mcp.scope import project_of

    if all_projects:
        project = None
    elif project is None:
        project = project_of(Path(cwd), git_only=True)
    if isinstance(device_or_home, Device):
        block = await context_block(device_or_home.store, project, tokens=tokens)
    else:
        async with await device_or_home.open_store() as store:
            block = await context_block(store, project, tokens=tokens)
    return Rendered(block.to_json(), block.text())


# The agent's side -------------------------------------------------------------------------
class BadParams(PeerError):
    """A local API request's parameters are not what the command line would send (the message names one)."""


def _get(params: dict[str, Any], name: str, kinds: tuple[type, ...], *, optional: bool = False) -> Any:
    value = params.get(name)
    if value is None and optional:
        return None
    # bool is an int in Python: a flag must not pass as a count, nor a count as a flag.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise BadParams(f"parameter {name!r} must be {'/'.join(k.__name__ for k in kinds)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadParams(f"parameter {name!r} must be a finite number")
    return value


def _number(params: dict[str, Any], name: str, low: float, high: float, *, optional: bool = True) -> float | None:
    value = _get(params, name, (int, float), optional=optional)
    if value is not None and not low <= value <= high:
        raise BadParams(f"parameter {name!r} must be between {low:g} and {high:g}")
    return None if value is None else float(value)


def _kind(params: dict[str, Any]) -> str | None:
    kind: str | None = _get(params, "kind", (str,), optional=True)
    if kind is not None and not valid_kind(kind):
        raise BadParams(f"{kind!r} is not a kind: use a short lowercase word such as fact, procedure, note")
    return kind


def _strings(params: dict[str, Any], name: str, *, optional: bool) -> tuple[str, ...] | None:
    value = _get(params, name, (list,), optional=optional)
    if value is None:
        return None
    if not all(isinstance(t, str) for t in value):
        raise BadParams(f"parameter {name!r} must be a list of strings")
    return tuple(value)


def _content(params: dict[str, Any], name: str, *, optional: bool) -> str | None:
    text: str | None = _get(params, name, (str,), optional=optional)
    if text is not None and not text.strip():
        raise BadParams("the memory is empty; give its text as an argument, or `-` to read it from stdin")
    return text


#: The warm methods that may write the store.
WRITE_METHODS: Final = frozenset({"add", "edit", "forget"})


class WarmCommands:
    """The agent's answers to the everyday commands, on its open device."""

    def __init__(self, home: Home, device: Device, watch: StoreWatch, index_lock: trio.Lock) -> None:
        self.home = home
        self.device = device
        self.watch = watch
        self.index_lock = index_lock
        #: Requests answered, by method: `ping` reports it (tests check the agent really answered).
        self.answered: Counter[str] = Counter()
        #: Called after a command that may have written the store. The agent's watch sees other
        #: processes' commits only (SQLite's data_version ignores the connection's own), so the
        #: agent learns of these writes here and syncs them like any other change.
        self.on_write: Callable[[], None] | None = None

    @classmethod
    async def start(cls, home: Home, device: Device, index_lock: trio.Lock) -> WarmCommands:
        from peer.mcp.service import INDEX_SAVE_EVERY

        # A save writes the whole graph (about a second at 100,000 memories): not inside a command
        # after each catch-up, but every INDEX_SAVE_EVERY changes (as `peer mcp`), when changes stop
        # for a moment (keep_index_saved) and when the agent stops.
        device.index_save_threshold = INDEX_SAVE_EVERY
        return cls(home, device, await StoreWatch.start(device.store), index_lock)

    async def warm(self) -> None:
        """Load the model and the index (a device that has searched before), so the first command is quick."""
        async with self.index_lock:
            await self.device.prepare_index()
        await trio.to_thread.run_sync(self.device.embedder.embed, ["warm up"])

    async def keep_index_saved(self) -> None:
        """Write the index's files once changes stop coming for a moment (not on every command, see start)."""
        seen = 0
        while True:
            await trio.sleep(INDEX_IDLE_SAVE_S)
            unsaved = self.device.unsaved_index_changes
            if unsaved and unsaved == seen:
                try:
                    await self.device.save_index()
                except PeerError as e:
                    log.warning("%s (retrying in %g s)", e, INDEX_IDLE_SAVE_S)
                unsaved = self.device.unsaved_index_changes
            seen = unsaved

    async def _fresh(self) -> None:
        if await self.watch.changed():
            await self.device.store.refresh()

    def methods(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]:
        table: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "add": self.add, "show": self.show, "list": self.list, "edit": self.edit, "forget": self.forget,
            "search": self.search, "status_report": self.status, "context": self.context,
        }
        assert set(table) == set(WARM_METHODS)

        def counted(name: str, method: Callable[[dict[str, Any]], Awaitable[Any]]) -> Callable[[dict[str, Any]], Awaitable[Any]]:
            async def answer(params: dict[str, Any]) -> Any:
                try:
                    await self._fresh()
                    return await method(params)
                finally:
                    self.answered[name] += 1
                    if name in WRITE_METHODS and self.on_write is not None:
                        self.on_write()

            return answer

        return {name: counted(name, method) for name, method in table.items()}

    async def add(self, params: dict[str, Any]) -> dict[str, Any]:
        content = _content(params, "content", optional=False)
        assert content is not None
        tags = _strings(params, "tags", optional=False) or ()
        metadata = _get(params, "metadata", (dict,))
        draft = Draft(
            content=content,
            kind=_kind(params) or "note",
            project=_get(params, "project", (str,), optional=True),
            tags=tags,
            metadata=metadata,
            importance=_number(params, "importance", 0.0, 1.0),
            id=_get(params, "id", (str,)),
        )
        allow_duplicate = _get(params, "allow_duplicate", (bool,))
        async with self.index_lock:
            return (await add_memory(self.device, draft, allow_duplicate=allow_duplicate)).to_wire()

    async def show(self, params: dict[str, Any]) -> dict[str, Any]:
        result = await show_memory(self.device, _get(params, "id", (str,)), versions=_get(params, "versions", (bool,)))
        return result.to_wire()

    async def list(self, params: dict[str, Any]) -> dict[str, Any]:
        limit = _get(params, "limit", (int,), optional=True)
        count_above = _get(params, "count_above", (int,), optional=True)
        if (limit is not None and limit < 0) or (count_above is not None and count_above < 0):
            raise BadParams("limit and count_above must not be negative")
        result = await list_memories(
            self.device,
            project=_get(params, "project", (str,), optional=True),
            kind=_kind(params),
            tag=_get(params, "tag", (str,), optional=True),
            since=_number(params, "since", -math.inf, math.inf),
            limit=limit,
            count_above=count_above,
        )
        return result.to_wire()

    async def edit(self, params: dict[str, Any]) -> dict[str, Any]:
        result = await edit_memory(
            self.device,
            _get(params, "id", (str,)),
            content=_content(params, "content", optional=True),
            kind=_kind(params),
            project=_get(params, "project", (str,), optional=True),
            tags=_strings(params, "tags", optional=True),
            metadata=_get(params, "metadata", (dict,), optional=True),
            importance=_number(params, "importance", 0.0, 1.0),
        )
        return result.to_wire()

    async def forget(self, params: dict[str, Any]) -> dict[str, Any]:
        return (await forget_memory(self.device, _get(params, "id", (str,)))).to_wire()

    async def search(self, params: dict[str, Any]) -> dict[str, Any]:
        query: str = _get(params, "query", (str,))
        if not query.strip():
            raise BadParams("the query is empty")
        k = _get(params, "k", (int,))
        if not 1 <= k <= 1000:
            raise BadParams("parameter 'k' must be between 1 and 1000")
        async with self.index_lock:
            result = await search(
                self.device,
                query,
                k=k,
                project=_get(params, "project", (str,), optional=True),
                kind=_kind(params),
                tag=_get(params, "tag", (str,), optional=True),
                since=_number(params, "since", -math.inf, math.inf),
                min_similarity=_number(params, "min_similarity", -1.0, 1.0),
                calibrated=_get(params, "calibrated", (bool,), optional=True) is not False,
            )
        return result.to_wire()

    async def status(self, params: dict[str, Any]) -> dict[str, Any]:
        return (await status(self.home)).to_wire()

    async def context(self, params: dict[str, Any]) -> dict[str, Any]:
        tokens = _get(params, "tokens", (int,))
        if not 200 <= tokens <= 20000:
            raise BadParams("parameter 'tokens' must be between 200 and 20000")
        result = await context(
            self.device,
            project=_get(params, "project", (str,), optional=True),
            all_projects=_get(params, "all_projects", (bool,)),
            cwd=_get(params, "cwd", (str,)),
            tokens=tokens,
        )
        return result.to_wire()

"""The ``peer`` command line.

Every command accepts ``--home DIR`` and ``--json`` both before the command
name (``peer --home H --json search Q``) and after it (``peer search Q
--home H --json``); a value given after the command wins.

Errors: :func:`main` is the one place that turns a :class:`PeerError` into a
single ``error: ...`` line on stderr and exit status 1; usage mistakes exit
with 2 and a one-line message. Anything else is a bug and keeps its
traceback.

Start-up time matters (assistants call ``peer`` once per tool call), so this
module imports only click and the standard library at the top; the store,
trio, the model and rich are imported by the commands that use them.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from protocol.errors import PeerError
from protocol.records import valid_kind

from .units import human_size

if TYPE_CHECKING:
    from .device import Device, DoctorReport, SearchResult
    from .memory import Draft, Memory, VersionInfo

__all__ = ["cli", "main", "parse_meta", "parse_since"]

T = TypeVar("T")

#: Memories embedded and committed per transaction by a bulk add: big enough
#: that the model runs efficiently, small enough that a killed add loses
#: little work and the progress bar moves.
BULK_BATCH = 256

_HOME_KEY = "peer.home"
_JSON_KEY = "peer.json"


# Options shared by every command -------------------------------------------------


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    # Values are kept in ctx.meta, which the group's context and the
    # command's share; the command's callback runs last, so it wins, but
    # only when the option was actually given there.
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value not in (None, False):
            ctx.meta[key] = value
        return value

    return callback


F = TypeVar("F", bound=Callable[..., Any])


def common_options(f: F) -> F:
    f = click.option(
        "--json",
        "json_output",
        is_flag=True,
        default=False,
        expose_value=False,
        callback=_remember(_JSON_KEY),
        help="Print machine-readable JSON on stdout.",
    )(f)
    f = click.option(
        "--home",
        metavar="DIR",
        default=None,
        expose_value=False,
        callback=_remember(_HOME_KEY),
        help="The device's home directory (default: $PEER_HOME, else the platform's user data dir).",
    )(f)
    return f


def _json_mode() -> bool:
    return bool(click.get_current_context().meta.get(_JSON_KEY, False))


def _home_arg() -> str | None:
    value = click.get_current_context().meta.get(_HOME_KEY)
    return None if value is None else str(value)


# Running async code ------------------------------------------------------------------


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run one command's async body under trio with the asyncio bridge the store needs."""
    import trio
    import trio_asyncio

    async def body() -> T:
        async with trio_asyncio.open_loop():
            return await fn()

    return trio.run(body)


def _with_device(fn: Callable[[Device], Awaitable[T]]) -> T:
    from .device import Device
    from .home import Home

    home = Home.locate(_home_arg())

    async def body() -> T:
        device = await Device.open(home)
        try:
            return await fn(device)
        finally:
            await device.close()

    return _run(body)


# Output ------------------------------------------------------------------------------


def _print_json(value: Any) -> None:
    # Indented for a person at a terminal, one line for a program reading a pipe.
    click.echo(json.dumps(value, ensure_ascii=False, indent=2 if sys.stdout.isatty() else None))


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def _when(timestamp: float) -> str:
    return _dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "\u2026"


def _terminal_width() -> int:
    try:
        return max(60, os.get_terminal_size(sys.stdout.fileno()).columns)
    except (OSError, ValueError):
        return 100


def _memory_line(memory: Memory, prefix: str = "") -> str:
    parts = [prefix + memory.id[:8], memory.kind]
    if memory.project:
        parts.append(memory.project)
    if memory.tags:
        parts.append(" ".join("#" + t for t in memory.tags))
    if memory.siblings:
        parts.append(f"[conflict: {memory.siblings + 1} versions]")
    head = "  ".join(parts)
    return f"{head}  {_one_line(memory.content, max(20, _terminal_width() - len(head) - 2))}"


def _fields(rows: Iterable[tuple[str, object]]) -> None:
    rows = list(rows)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")


# Parsing -----------------------------------------------------------------------------


def parse_meta(items: Sequence[str]) -> dict[str, Any]:
    """``K=V`` pairs as metadata; V is typed when it reads as a JSON number, boolean or null."""
    metadata: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="'--meta'")
        value: Any = raw
        if raw in ("true", "false", "null") or re.fullmatch(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?", raw):
            value = json.loads(raw)
        metadata[key] = value
    return metadata


def parse_since(text: str, *, now: float | None = None) -> float:
    """``--since``: a duration back from now (``90m``, ``12h``, ``7d``, ``2w``, ``1d12h``) or an ISO date/time."""
    from .when import parse_since as parse

    try:
        return parse(text, now=now)
    except PeerError as e:
        raise click.BadParameter(e.message, param_hint="'--since'") from None


def _check_kind(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not valid_kind(value):
        raise click.BadParameter(f"{value!r} is not a kind: use a short lowercase word such as fact, procedure, note")
    return value


def _meta_option(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, Any]:
    return parse_meta(value)


def _since_option(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    return None if value is None else parse_since(value)


kind_option = click.option("--kind", callback=_check_kind, help="fact, decision, procedure, error, preference, ...")
project_option = click.option("--project", help="Project the memory belongs to.")


# Commands ----------------------------------------------------------------------------


class _Group(click.Group):
    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_paragraph()
        formatter.write_text("Run `peer COMMAND --help` for a command's options. Docs: docs/cli.md")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@common_options
@click.version_option(package_name="peer-memory", prog_name="peer")
def cli() -> None:
    """peer: a local-first memory store for AI assistants, synced between your devices."""


@cli.command()
@click.option("--name", default=None, help="A name for this device (default: the host name).")
@common_options
def init(name: str | None) -> None:
    """Create this device: its keys, an empty store and a new group."""
    import socket

    from .home import Home

    home = Home.locate(_home_arg())
    result = _run(lambda: home.init(name or socket.gethostname()))
    if _json_mode():
        _print_json({**result.to_json(), "home": str(home.path)})
        return
    from protocol.ids import format_device_id

    _fields([("device", format_device_id(result.device_id)), ("group", result.group_id), ("home", home.path)])


def _read_text(text: str) -> str:
    if text == "-":
        text = sys.stdin.read()
        if text.endswith("\n"):
            text = text[:-1]
    if not text.strip():
        raise PeerError("the memory is empty; give its text as an argument, or `-` to read it from stdin")
    return text


@cli.command()
@click.argument("text", required=False)
@click.option("--file", "file", type=click.File("r", encoding="utf-8"), help="Bulk add: NDJSON or one memory per line (`-` is stdin).")
@kind_option
@project_option
@click.option("--tag", "tags", multiple=True, help="A tag (repeat for more).")
@click.option("--meta", "metadata", multiple=True, metavar="K=V", callback=_meta_option, help="Metadata (repeat for more).")
@click.option("--importance", type=click.FloatRange(0.0, 1.0), help="Between 0 and 1.")
@common_options
def add(
    text: str | None,
    file: IO[str] | None,
    kind: str | None,
    project: str | None,
    tags: tuple[str, ...],
    metadata: dict[str, Any],
    importance: float | None,
) -> None:
    """Add a memory (TEXT, or `-` to read it from stdin), or many with --file."""
    from .memory import Draft

    if file is not None:
        if text is not None:
            raise click.UsageError("give either TEXT or --file, not both")
        defaults = Draft(content="", kind=kind or "note", project=project, tags=tags, metadata=metadata, importance=importance)
        _bulk_add(file, defaults)
        return
    if text is None:
        raise click.UsageError("missing TEXT (or `-` to read it from stdin, or --file for many)")
    draft = Draft(
        content=_read_text(text), kind=kind or "note", project=project, tags=tags, metadata=metadata, importance=importance
    )

    async def body(device: Device) -> str:
        (memory_id,) = await device.add([draft])
        return memory_id

    memory_id = _with_device(body)
    if _json_mode():
        _print_json({"id": memory_id})
    else:
        click.echo(memory_id)


# Bulk add ------------------------------------------------------------------------------


def _draft_from_line(line: str, number: int, defaults: Draft) -> Draft:
    """One line of a bulk file: a JSON object, or plain text (the whole line is the memory)."""
    import dataclasses

    stripped = line.strip()
    if not stripped.startswith("{"):
        return dataclasses.replace(defaults, content=stripped)
    try:
        obj = json.loads(stripped)
    except json.JSONDecodeError as e:
        raise PeerError(f"line {number}: not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise PeerError(f"line {number}: expected a JSON object")
    unknown = set(obj) - {"content", "text", "kind", "project", "tags", "metadata", "importance", "id", "created_at"}
    if unknown:
        raise PeerError(f"line {number}: unknown field(s) {', '.join(sorted(unknown))}")
    content = obj.get("content", obj.get("text"))
    if not isinstance(content, str) or not content.strip():
        raise PeerError(f"line {number}: \"content\" must be a non-empty string")
    tags = obj.get("tags", defaults.tags)
    if not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags):
        raise PeerError(f"line {number}: \"tags\" must be a list of strings")
    metadata = obj.get("metadata", defaults.metadata)
    if not isinstance(metadata, dict):
        raise PeerError(f"line {number}: \"metadata\" must be an object")
    for name, types in (("kind", str), ("project", str), ("id", str), ("importance", (int, float)), ("created_at", (int, float))):
        if obj.get(name) is not None and not isinstance(obj[name], types):
            raise PeerError(f"line {number}: \"{name}\" has the wrong type")
    kind = obj.get("kind") or defaults.kind
    if not valid_kind(kind):
        raise PeerError(f"line {number}: {kind!r} is not a kind")
    return dataclasses.replace(
        defaults,
        content=content,
        kind=kind,
        project=obj.get("project", defaults.project),
        tags=tuple(tags),
        metadata=metadata,
        importance=obj.get("importance", defaults.importance),
        id=obj.get("id"),
        created_at=obj.get("created_at"),
    )


def _read_drafts(file: IO[str], defaults: Draft) -> list[Draft]:
    """Every memory of a bulk file, all checked before anything is added (bad input changes nothing)."""
    drafts: list[Draft] = []
    for number, line in enumerate(file, start=1):
        if line.strip():
            try:
                drafts.append(_draft_from_line(line, number, defaults))
            except PeerError as e:
                raise PeerError(f"{e.message}; nothing was added") from None
    return drafts


def _bulk_add(file: IO[str], defaults: Draft) -> None:
    drafts = _read_drafts(file, defaults)
    if not drafts:
        raise PeerError("the file holds no memories (no non-empty lines)")
    ids: list[str] = []
    started = time.monotonic()
    show_bar = not _json_mode() and sys.stderr.isatty()

    async def body(device: Device) -> None:
        progress = _ProgressBar("adding", len(drafts)) if show_bar else None
        try:
            for at in range(0, len(drafts), BULK_BATCH):
                # One transaction per batch: a bulk add that is killed keeps
                # every batch committed before, in input order.
                ids.extend(await device.add(drafts[at : at + BULK_BATCH]))
                if progress is not None:
                    progress.update(len(ids), len(drafts))
        finally:
            if progress is not None:
                progress.close()

    try:
        _with_device(body)
    except BaseException as e:
        error = _peer_error_in(e)
        if error is not None and ids:
            # Say what is already in, so the user can resume after it.
            raise PeerError(f"{error.message} (the first {len(ids)} memories were added)") from e
        raise
    seconds = time.monotonic() - started
    if _json_mode():
        _print_json({"added": len(ids), "ids": ids, "seconds": round(seconds, 3)})
    else:
        click.echo(f"added {len(ids)} memories in {seconds:.1f} s")


class _ProgressBar:
    """A rich progress bar on stderr (imported only when one is shown)."""

    def __init__(self, description: str, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def update(self, done: int, total: int | None) -> None:
        self._progress.update(self._task, completed=done, total=total)

    def close(self) -> None:
        self._progress.stop()


def _progress_callback(description: str) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A (done, total) callback drawing a bar when stderr is a terminal, and its closer."""
    if _json_mode() or not sys.stderr.isatty():
        return None, lambda: None
    bar: list[_ProgressBar] = []

    def update(done: int, total: int) -> None:
        if not bar:
            bar.append(_ProgressBar(description, total))
        bar[0].update(done, total)

    def close() -> None:
        if bar:
            bar[0].close()

    return update, close


# Reading -------------------------------------------------------------------------------


def _version_json(info: VersionInfo) -> dict[str, Any]:
    return {
        "version": info.version,
        "state": info.state,
        "deleted": info.deleted,
        "hlc": info.hlc,
        "content": info.content,
        "kind": info.kind,
        "project": info.project,
        "tags": list(info.tags),
        "updated_at": info.updated_at,
    }


@cli.command()
@click.argument("memory_id", metavar="ID")
@click.option("--versions", is_flag=True, help="Also list every version held (superseded ones and tombstones too).")
@common_options
def show(memory_id: str, versions: bool) -> None:
    """Show one memory (ID or a unique prefix of it)."""

    async def body(device: Device) -> tuple[Memory, list[VersionInfo]]:
        memory = await device.store.get(memory_id)
        return memory, (await device.store.versions(memory.id) if versions else [])

    memory, infos = _with_device(body)
    if _json_mode():
        out = memory.to_json()
        out["deleted"] = memory.deleted
        if versions:
            out["versions"] = [_version_json(v) for v in infos]
        _print_json(out)
        return
    rows: list[tuple[str, object]] = [("id", memory.id), ("kind", memory.kind)]
    if memory.project:
        rows.append(("project", memory.project))
    if memory.tags:
        rows.append(("tags", ", ".join(memory.tags)))
    if memory.metadata:
        rows.append(("metadata", json.dumps(memory.metadata, ensure_ascii=False)))
    if memory.importance is not None:
        rows.append(("importance", memory.importance))
    rows += [("created", _when(memory.created_at)), ("updated", _when(memory.updated_at)), ("version", memory.version)]
    if memory.deleted:
        rows.append(("state", "forgotten"))
    if memory.siblings:
        rows.append(("conflict", f"{memory.siblings} other live version(s); see `peer conflicts`"))
    _fields(rows)
    if not memory.deleted:
        click.echo()
        click.echo(memory.content)
    if versions:
        click.echo()
        for info in infos:
            what = "(forgotten)" if info.deleted else _one_line(info.content, 60)
            click.echo(f"{info.state:<10}  {info.version}  {_when(info.updated_at)}  {what}")


@cli.command(name="list")
@project_option
@kind_option
@click.option("--tag", help="Only memories with this tag.")
@click.option("--since", callback=_since_option, metavar="WHEN", help="Changed since a date (2026-01-31) or for a duration (12h, 7d).")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="At most this many (newest first).")
@common_options
def list_(project: str | None, kind: str | None, tag: str | None, since: float | None, limit: int | None) -> None:
    """List memories, most recently changed first."""

    async def body(device: Device) -> list[Memory]:
        return await device.store.list(project=project, kind=kind, tag=tag, since=since, limit=limit)

    memories = _with_device(body)
    if _json_mode():
        _print_json([m.to_json() for m in memories])
        return
    for memory in memories:
        click.echo(_memory_line(memory))
    if not memories:
        click.echo("no memories", err=True)


# Changing ------------------------------------------------------------------------------


@cli.command()
@click.argument("memory_id", metavar="ID")
@click.option("--text", help="New text (`-` reads stdin); the memory is re-embedded.")
@kind_option
@click.option("--project", help="New project (\"\" clears it).")
@click.option("--tag", "tags", multiple=True, help="Replace the tags (repeat for more).")
@click.option("--clear-tags", is_flag=True, help="Remove every tag.")
@click.option("--meta", "metadata", multiple=True, metavar="K=V", callback=_meta_option, help="Set metadata keys (others are kept).")
@click.option("--importance", type=click.FloatRange(0.0, 1.0))
@common_options
def edit(
    memory_id: str,
    text: str | None,
    kind: str | None,
    project: str | None,
    tags: tuple[str, ...],
    clear_tags: bool,
    metadata: dict[str, Any],
    importance: float | None,
) -> None:
    """Change a memory: a new version that supersedes the current one."""
    if tags and clear_tags:
        raise click.UsageError("give --tag or --clear-tags, not both")
    content = _read_text(text) if text is not None else None
    if content is None and kind is None and project is None and not tags and not clear_tags and not metadata and importance is None:
        raise click.UsageError("nothing to change: give --text, --kind, --project, --tag, --meta or --importance")

    async def body(device: Device) -> str:
        return await device.edit(
            memory_id,
            content=content,
            kind=kind,
            project=project,
            tags=() if clear_tags else (tags or None),
            metadata=metadata or None,
            importance=importance,
        )

    changed = _with_device(body)
    if _json_mode():
        _print_json({"id": changed})
    else:
        click.echo(changed)


@cli.command()
@click.argument("memory_id", metavar="ID")
@common_options
def forget(memory_id: str) -> None:
    """Delete a memory (a tombstone version that syncs like any change)."""

    async def body(device: Device) -> str:
        return await device.store.forget(memory_id)

    gone = _with_device(body)
    if _json_mode():
        _print_json({"id": gone})
    else:
        click.echo(f"forgot {gone}")


# Searching -----------------------------------------------------------------------------


@cli.command()
@click.argument("query")
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True, help="How many results.")
@project_option
@kind_option
@common_options
def search(query: str, k: int, project: str | None, kind: str | None) -> None:
    """Find memories by meaning and by keywords (hybrid search)."""
    if not query.strip():
        raise click.UsageError("the query is empty")
    update, close = _progress_callback("indexing")

    async def body(device: Device) -> list[SearchResult]:
        try:
            for warning in await device.prepare_index(progress=update):
                _warn(warning)
        finally:
            close()
        return await device.search(query, k=k, project=project, kind=kind)

    results = _with_device(body)
    if _json_mode():
        _print_json([r.to_json() for r in results])
        return
    for r in results:
        click.echo(_memory_line(r.memory, prefix=f"{r.hit.score:.2f}  "))
    if not results:
        click.echo("no matches", err=True)


# Health --------------------------------------------------------------------------------


@cli.command()
@common_options
def stats() -> None:
    """Counts, sizes and the state of the search index."""

    async def body(device: Device) -> dict[str, Any]:
        return await device.stats()

    info = _with_device(body)
    if _json_mode():
        _print_json(info)
        return
    from protocol.ids import format_device_id

    index = info["index"]
    _fields(
        [
            ("home", info["home"]),
            ("device", format_device_id(info["device_id"])),
            ("group", info["group_id"]),
            ("memories", f"{info['memories']:,} live, {info['forgotten']:,} forgotten"),
            ("versions", f"{info['versions']:,} ({info['tombstones']:,} tombstones)"),
            ("conflicts", f"{info['conflicts']:,}"),
            ("devices", f"{info['devices']:,}"),
            ("store", human_size(info["db_bytes"])),
            ("index", index["summary"]),
        ]
    )


def _print_report(report: DoctorReport) -> None:
    if _json_mode():
        _print_json(report.to_json())
        return
    for check in report.checks:
        mark = "ok  " if check.ok else "FAIL"
        click.echo(f"{mark}  {check.name}: {check.detail}")
        if not check.ok and check.fix:
            click.echo(f"      fix: {check.fix}")
    click.echo("healthy" if report.healthy else "NOT healthy")


@cli.command()
@click.option("--repair", is_flag=True, help="Rebuild the search index if it is not healthy.")
@common_options
def doctor(repair: bool) -> None:
    """Check the store, the index, the model and the key files; exit 1 if something is wrong."""
    update, close = _progress_callback("rebuilding index")

    async def body(device: Device) -> DoctorReport:
        try:
            return await device.doctor(repair=repair, progress=update)
        finally:
            close()

    report = _with_device(body)
    _print_report(report)
    if not report.healthy:
        raise click.exceptions.Exit(1)


@cli.command()
@common_options
def reindex() -> None:
    """Rebuild the search index from the store."""
    update, close = _progress_callback("rebuilding index")

    async def body(device: Device) -> dict[str, Any]:
        try:
            return await device.reindex(progress=update)
        finally:
            close()

    result = _with_device(body)
    if _json_mode():
        _print_json(result)
    else:
        click.echo(f"indexed {result['vectors']:,} memories in {result['seconds']:.1f} s")


# Pairing, members, conflicts -------------------------------------------------------------


def _ttl_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from .pairing import parse_ttl

    if value is not None:
        try:
            parse_ttl(value)
        except PeerError as e:
            raise click.BadParameter(e.message) from None
    return value


def _address_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from .sync import parse_address

    if value is not None:
        try:
            parse_address(value)
        except PeerError as e:
            raise click.BadParameter(e.message) from None
    return value


def _print_result(result: Any, text: str) -> None:
    if _json_mode():
        _print_json(result)
    else:
        click.echo(text)


@cli.command()
@click.option(
    "--ttl", default=None, metavar="DURATION", callback=_ttl_option, help="How long the code works: 90s, 15m (default), 2h, 1d."
)
@click.option(
    "--address",
    default=None,
    metavar="HOST[:PORT]",
    callback=_address_option,
    help="Where the new device reaches this device's agent (default: this host name, port 7847).",
)
@click.option(
    "--file",
    "file",
    default=None,
    metavar="FILE",
    help="Air-gapped: write the new device's identity to FILE, readable only with the code.",
)
@click.option("--name", default=None, help="With --file: the name of the new device.")
@common_options
def invite(ttl: str | None, address: str | None, file: str | None, name: str | None) -> None:
    """Print a one-time code that lets a new device join this device's group."""
    from .home import Home
    from .pairing import invite_command

    if name is not None and file is None:
        raise click.UsageError("--name names the device an invite file makes; use it with --file")
    home = Home.locate(_home_arg())
    _print_result(*_run(lambda: invite_command(home, ttl=ttl, address=address, file=file, name=name)))


@cli.command()
@click.argument("code", nargs=-1, required=True)
@click.option(
    "--host",
    default=None,
    metavar="HOST[:PORT]",
    callback=_address_option,
    help="The inviter's address, when the one in the code is not reachable from here.",
)
@click.option("--name", default=None, help="A name for this device (default: the host name).")
@click.option("--file", "file", default=None, metavar="FILE", help="Join with an invite file (`peer invite --file`).")
@common_options
def join(code: tuple[str, ...], host: str | None, name: str | None, file: str | None) -> None:
    """Join the group of the device that printed CODE (`peer invite`), then sync with it."""
    from .home import Home
    from .pairing import join_command

    if file is not None and (host is not None or name is not None):
        raise click.UsageError("an invite file already names the device and needs no host; drop --host/--name")
    home = Home.locate(_home_arg())
    # A code pasted with spaces arrives as several arguments.
    _print_result(*_run(lambda: join_command(home, "".join(code), host=host, name=name, file=file)))


@cli.command()
@common_options
def devices() -> None:
    """List the devices of this group (* marks this one)."""
    from .home import Home
    from .pairing import devices_command

    home = Home.locate(_home_arg())
    _print_result(*_run(lambda: devices_command(home)))


@cli.command()
@click.argument("device")
@common_options
def revoke(device: str) -> None:
    """Remove DEVICE (its name or a unique prefix of its id) from the group; it gets no new keys."""
    from .home import Home
    from .pairing import revoke_command

    home = Home.locate(_home_arg())
    _print_result(*_run(lambda: revoke_command(home, device)))


@cli.command()
@common_options
def conflicts() -> None:
    """List memories edited concurrently on several devices, with every live version."""
    from .home import Home
    from .pairing import conflicts_command

    home = Home.locate(_home_arg())
    _print_result(*_run(lambda: conflicts_command(home)))


@cli.command()
@click.argument("memory_id", metavar="ID")
@click.option("--keep", required=True, metavar="VERSION", help="The version to keep, as `peer conflicts` shows it.")
@common_options
def resolve(memory_id: str, keep: str) -> None:
    """Settle a conflict: keep one version of memory ID, superseding the others on every device."""
    from .home import Home
    from .pairing import resolve_command

    home = Home.locate(_home_arg())
    _print_result(*_run(lambda: resolve_command(home, memory_id, keep)))


# Sync --------------------------------------------------------------------------------


def _sync_progress() -> tuple[Callable[[Any], None] | None, Callable[[], None]]:
    """A bar for big transfers (versions sent and received so far), when stderr is a terminal."""
    if _json_mode() or not sys.stderr.isatty():
        return None, lambda: None
    bar: list[_ProgressBar] = []

    def update(p: Any) -> None:
        # How many versions will arrive is known only at the end: the bar counts, it cannot fill.
        if not bar and p.to_send + p.received < 1000:
            return
        if not bar:
            bar.append(_ProgressBar(f"syncing ({p.to_send:,} versions to send)", None))
        bar[0].update(p.sent + p.received, None)

    def close() -> None:
        if bar:
            bar[0].close()

    return update, close


@cli.command()
@click.argument("address", metavar="HOST[:PORT]")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help="How long HOST may take to answer, and to stay silent mid-sync (default 15 and 60).")
@common_options
def sync(address: str, timeout: float | None) -> None:
    """Sync with another device of the group over SSH, once, both ways (default port 7847)."""
    from .sync import parse_address, sync_device

    host, port = parse_address(address)
    limits: dict[str, float] = {} if timeout is None else {"connect_timeout": timeout, "read_timeout": timeout}
    update, close = _sync_progress()
    try:
        summary = _with_device(lambda device: sync_device(device, host, port, progress=update, **limits))
    finally:
        close()
    if _json_mode():
        _print_json(summary.to_json())
    else:
        click.echo(summary.describe())


@cli.command()
@click.option("--listen", metavar="ADDR:PORT", default=None,
              help="Where to accept SSH connections (default 0.0.0.0:7847, or [agent] listen; port 0 picks a free one).")
@click.option("--interface", "interfaces", multiple=True, metavar="IP",
              help="Advertise and browse mDNS on this address only (repeat for more; default: every non-loopback one).")
@click.option("--peer", "peers", multiple=True, metavar="HOST[:PORT]",
              help="Also keep this device in sync, mDNS or not (repeat for more; adds to [agent] peers).")
@click.option("--no-discovery", is_flag=True, help="Do not look for the group's devices on the LAN (mDNS).")
@click.option("--systemd-unit", is_flag=True,
              help="Print a systemd user unit that runs this agent at login, and exit (see the README).")
@click.option("-v", "--verbose", is_flag=True, help="Log every attempt and every session, not only those that move data.")
@common_options
def agent(
    listen: str | None,
    interfaces: tuple[str, ...],
    peers: tuple[str, ...],
    no_discovery: bool,
    systemd_unit: bool,
    verbose: bool,
) -> None:
    """Run this device's agent until Ctrl-C: find the group's devices on the LAN and keep them in sync.

    Settings come from config.toml in the home directory ([agent]); these options override it.
    """
    import ipaddress
    import logging

    from .agent import run_until_signalled, systemd_unit_text
    from .config import load_config
    from .home import Home
    from .sync import parse_address

    home = Home.locate(_home_arg())
    if systemd_unit:
        click.echo(systemd_unit_text(home, sys.argv[0], [*(f"--interface={i}" for i in interfaces),
                                                        *(f"--peer={p}" for p in peers),
                                                        *([f"--listen={listen}"] if listen else []),
                                                        *(["--no-discovery"] if no_discovery else [])]), nl=False)
        return
    settings = load_config(home.config_path)
    config = settings.agent
    host, port = parse_address(listen or config.listen)
    for address in interfaces:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise click.BadParameter(f"{address!r} is not an IP address", param_hint="--interface") from None
    for address in peers:
        parse_address(address)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("asyncssh", "zeroconf"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if verbose:
        logging.getLogger("peer").setLevel(logging.DEBUG)

    def listening(bound_host: str, bound_port: int, device_id: str) -> None:
        # The first line on stdout, so that scripts (and tests) learn the port.
        if _json_mode():
            click.echo(json.dumps({"listening": f"{bound_host}:{bound_port}", "host": bound_host,
                                   "port": bound_port, "device_id": device_id}))
        else:
            click.echo(f"listening on {bound_host}:{bound_port}")
        sys.stdout.flush()

    _run(lambda: run_until_signalled(
        home,
        host=host,
        port=port,
        config=config,
        backup=settings.backup,
        interfaces=interfaces or None,
        discovery=False if no_discovery else None,
        peers=[*config.peers, *peers],
        listening=listening,
    ))


@cli.command()
@common_options
def status() -> None:
    """The agent and the group's devices: addresses, last sync and its result, what each lacks."""
    from .home import Home
    from .status import status_command

    result = _run(lambda: status_command(Home.locate(_home_arg())))
    if _json_mode():
        _print_json(result.to_json())
    else:
        click.echo(result.text())


# Entry point ---------------------------------------------------------------------------


def _peer_error_in(exc: BaseException) -> PeerError | None:
    """The PeerError behind ``exc``, looking through exception groups with only PeerErrors in them."""
    if isinstance(exc, PeerError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [_peer_error_in(e) for e in exc.exceptions]
        if found and all(f is not None for f in found):
            return found[0]
    return None


def _fail(message: str, code: int) -> NoReturn:
    # One line, whatever the message holds.
    click.echo("error: " + " ".join(message.split()), err=True)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``peer`` console script: the one place that turns errors into ``error:`` lines."""
    try:
        code = cli.main(args=argv, prog_name="peer", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:
        # Bare `peer` (or a group without a command): the help, not an error.
        click.echo(e.format_message())
        sys.exit(0)
    except click.UsageError as e:
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        _fail(e.format_message() + hint, e.exit_code)
    except click.ClickException as e:
        _fail(e.format_message(), e.exit_code)
    except click.Abort:
        _fail("interrupted", 130)
    except BrokenPipeError:
        # The reader went away (`peer list | head`): not an error of ours.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        finally:
            sys.exit(0)
    except BaseException as e:
        error = _peer_error_in(e)
        if error is None:
            raise
        _fail(error.message, 1)
    sys.exit(code if isinstance(code, int) else 0)


from . import cli_interop as _cli_interop  # noqa: E402,F401  (registers export/import)
from . import cli_bundle as _cli_bundle  # noqa: E402,F401  (registers bundle and backup)
from . import cli_mcp as _cli_mcp  # noqa: E402,F401  (registers mcp and context)

"""``peer init``, ``add`` (one or many), ``show``, ``list``, ``edit``, ``forget``, ``search``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, TYPE_CHECKING, Any

import click

from peer.units import plural
from protocol import PeerError

from ._app import peer_error_in
from ._input import BULK_FORMATS, Interrupted, interrupted, read_bulk, read_stdin_text

if TYPE_CHECKING:
    from peer.consolidate import SimilarMemory
    from peer.device import Device, SearchResult
    from peer.memory import Draft, Memory, VersionInfo
from ._app import (
    cli,
    common_options,
    home_arg,
    json_mode,
    kind_option,
    meta_option,
    project_option,
    run,
    since_option,
    with_device,
)
from ._output import (
    ProgressBar,
    memory_line,
    one_line,
    print_fields,
    print_json,
    progress_callback,
    warn,
    when,
)

#: Memories embedded and committed per transaction by a bulk add: big enough
#: that the model runs efficiently, small enough that a killed add loses
#: little work and the progress bar moves.
BULK_BATCH = 256

#: `peer list` at a terminal without --limit: the most recent this many.
TERMINAL_LIST_LIMIT = 50


@cli.command()
@click.option("--name", default=None, help="A name for this device (default: the host name).")
@common_options
def init(name: str | None) -> None:
    """Create this device: its keys, an empty store and a new group."""
    import socket

    from peer.home import Home

    home = Home.locate(home_arg())
    result = run(lambda: home.init(name or socket.gethostname()))
    if json_mode():
        print_json({**result.to_json(), "home": str(home.path)})
        return
    from protocol import format_device_id

    print_fields([("device", format_device_id(result.device_id)), ("group", result.group_id), ("home", home.path)])


def _read_text(text: str) -> str:
    if text == "-":
        text = read_stdin_text()
        if text.endswith("\n"):
            text = text[:-1]
    if not text.strip():
        raise PeerError("the memory is empty; give its text as an argument, or `-` to read it from stdin")
    return text


@cli.command()
@click.argument("text", required=False)
@click.option("--file", "file", type=click.File("rb"), help="Bulk add: NDJSON or one memory per line (`-` is stdin).")
@click.option("--format", "fmt", type=click.Choice(BULK_FORMATS), default="auto", show_default=True,
              help="With --file: how lines are read (text: every line is plain text, even one starting with `{`).")
@kind_option
@project_option
@click.option("--tag", "tags", multiple=True, help="A tag (repeat for more).")
@click.option("--meta", "metadata", multiple=True, metavar="K=V", callback=meta_option, help="Metadata (repeat for more).")
@click.option("--importance", type=click.FloatRange(0.0, 1.0), help="Between 0 and 1.")
@click.option("--allow-duplicate", is_flag=True, help="Add it even when the same text is already in this project.")
@common_options
def add(
    text: str | None,
    file: IO[bytes] | None,
    fmt: str,
    kind: str | None,
    project: str | None,
    tags: tuple[str, ...],
    metadata: dict[str, Any],
    importance: float | None,
    allow_duplicate: bool,
) -> None:
    """Add a memory (TEXT, or `-` to read it from stdin), or many with --file."""
    from peer.memory import Draft

    if file is not None:
        if text is not None:
            raise click.UsageError("give either TEXT or --file, not both")
        defaults = Draft(content="", kind=kind or "note", project=project, tags=tags, metadata=metadata, importance=importance)
        _bulk_add(file, defaults, fmt)
        return
    if text is None:
        raise click.UsageError("missing TEXT (or `-` to read it from stdin, or --file for many)")
    draft = Draft(
        content=_read_text(text), kind=kind or "note", project=project, tags=tags, metadata=metadata, importance=importance
    )

    async def body(device: Device) -> tuple[str, bool, list[SimilarMemory]]:
        from peer.consolidate import exact_duplicate, similar_to

        if not allow_duplicate and draft.content.strip():
            existing = await exact_duplicate(device, draft)
            if existing is not None:
                return existing.id, True, []
        (memory_id,) = await device.add([draft])
        return memory_id, False, (await similar_to(device, [memory_id])).get(memory_id, [])

    memory_id, duplicate, similar = with_device(body)
    if json_mode():
        out: dict[str, Any] = {"id": memory_id}
        if duplicate:
            out["duplicate"] = True
        if similar:
            out["similar"] = [m.to_json() for m in similar]
        print_json(out)
        return
    click.echo(memory_id)
    if duplicate:
        warn(f"the same text is already memory {memory_id} in this project; nothing was added"
             " (--allow-duplicate adds it anyway)")
    for m in similar:
        warn(f"looks like {m.memory.id[:8]} (similarity {m.similarity:.2f}): {one_line(m.memory.content, 60)};"
             " `peer consolidate` can merge them")


def _bulk_add(file: IO[bytes], defaults: Draft, fmt: str) -> None:
    name = "stdin" if file.name in ("-", "<stdin>") else click.format_filename(file.name)
    numbered = read_bulk(file, name, defaults, fmt)
    drafts = [draft for _, draft in numbered]
    if not drafts:
        raise PeerError("the file holds no memories (no non-empty lines)")
    ids: list[str] = []
    started = time.monotonic()
    show_bar = not json_mode() and sys.stderr.isatty()

    async def body(device: Device) -> None:
        progress = ProgressBar("adding", len(drafts)) if show_bar else None
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
        with_device(body)
    except BaseException as e:
        if interrupted(e):
            # Batches are committed in order: everything before the first
            # draft not added is in, everything from it on is not.
            rest = f"; the rest starts at line {numbered[len(ids)][0]}" if len(ids) < len(drafts) else ""
            raise Interrupted(f"interrupted: {len(ids):,} of {len(drafts):,} added{rest}") from None
        error = peer_error_in(e)
        if error is not None and ids:
            # Say what is already in, so the user can resume after it.
            raise PeerError(f"{error.message} (the first {len(ids)} memories were added)") from e
        raise
    seconds = time.monotonic() - started
    if json_mode():
        print_json({"added": len(ids), "ids": ids, "seconds": round(seconds, 3)})
    else:
        click.echo(f"added {plural(len(ids), 'memory', 'memories')} in {seconds:.1f} s")


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

    memory, infos = with_device(body)
    from peer.consolidate import merged_into

    moved = merged_into(memory)
    if json_mode():
        out = memory.to_json()
        out["deleted"] = memory.deleted
        out["merged_into"] = moved
        if versions:
            out["versions"] = [_version_json(v) for v in infos]
        print_json(out)
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
    rows += [("created", when(memory.created_at)), ("updated", when(memory.updated_at)), ("version", memory.version)]
    if moved:
        rows.append(("state", f"merged into {moved}; `peer unmerge {memory.id[:8]}` brings it back"))
    elif memory.deleted:
        rows.append(("state", "forgotten"))
    if memory.siblings:
        rows.append(("conflict", f"{plural(memory.siblings, 'other live version')}; see `peer conflicts`"))
    print_fields(rows)
    if not memory.deleted:
        click.echo()
        click.echo(memory.content)
    if versions:
        click.echo()
        for info in infos:
            what = "(forgotten)" if info.deleted else one_line(info.content, 60)
            click.echo(f"{info.state:<10}  {info.version}  {when(info.updated_at)}  {what}")


@cli.command(name="list")
@project_option
@kind_option
@click.option("--tag", help="Only memories with this tag.")
@click.option("--since", callback=since_option, metavar="WHEN", help="Changed since a date (2026-01-31) or for a duration (12h, 7d).")
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help=f"At most this many (newest first; 0: all). At a terminal the default is {TERMINAL_LIST_LIMIT}.")
@common_options
def list_(project: str | None, kind: str | None, tag: str | None, since: float | None, limit: int | None) -> None:
    """List memories, most recently changed first."""
    # A person at a terminal wants the recent ones, not 2,000 lines; a
    # script or an assistant (stdout piped, or --json) gets everything.
    capped = limit is None and not json_mode() and sys.stdout.isatty()
    wanted = TERMINAL_LIST_LIMIT + 1 if capped else (None if limit == 0 else limit)

    async def body(device: Device) -> list[Memory]:
        return await device.store.list(project=project, kind=kind, tag=tag, since=since, limit=wanted)

    memories = with_device(body)
    if json_mode():
        print_json([m.to_json() for m in memories])
        return
    more = capped and len(memories) > TERMINAL_LIST_LIMIT
    for memory in memories[:TERMINAL_LIST_LIMIT] if more else memories:
        click.echo(memory_line(memory, dated=True))
    if more:
        async def count(device: Device) -> int:
            return len(await device.store.list(project=project, kind=kind, tag=tag, since=since))

        total = with_device(count)
        click.echo(f"showing the {TERMINAL_LIST_LIMIT} most recent of {plural(total, 'memory', 'memories')};"
                   " --limit N for more (0: all)", err=True)
    if not memories:
        click.echo("no memories", err=True)


@cli.command()
@click.argument("memory_id", metavar="ID")
@click.option("--text", help="New text (`-` reads stdin); the memory is re-embedded.")
@kind_option
@click.option("--project", help="New project (\"\" clears it).")
@click.option("--tag", "tags", multiple=True, help="Replace the tags (repeat for more).")
@click.option("--clear-tags", is_flag=True, help="Remove every tag.")
@click.option("--meta", "metadata", multiple=True, metavar="K=V", callback=meta_option, help="Set metadata keys (others are kept).")
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

    changed = with_device(body)
    if json_mode():
        print_json({"id": changed})
    else:
        click.echo(changed)


@cli.command()
@click.argument("memory_id", metavar="ID")
@common_options
def forget(memory_id: str) -> None:
    """Delete a memory (a tombstone version that syncs like any change)."""

    async def body(device: Device) -> str:
        return await device.store.forget(memory_id)

    gone = with_device(body)
    if json_mode():
        print_json({"id": gone})
    else:
        click.echo(f"forgot {gone}")


@cli.command()
@click.argument("query")
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True, help="How many results.")
@project_option
@kind_option
@click.option("--tag", help="Only memories with this tag.")
@click.option("--since", callback=since_option, metavar="WHEN", help="Changed since a date (2026-01-31) or for a duration (12h, 7d).")
@click.option(
    "--min-score", "min_score", type=click.FloatRange(-1.0, 1.0), default=None, metavar="S",
    help="Show results the keywords did not find down to this similarity (default: the calibrated rule).",
)
@click.option("--all", "show_all", is_flag=True, help="Show the k best whatever their similarity (no cut-off).")
@common_options
def search(
    query: str,
    k: int,
    project: str | None,
    kind: str | None,
    tag: str | None,
    since: float | None,
    min_score: float | None,
    show_all: bool,
) -> None:
    """Find memories by meaning and by keywords (hybrid search).

    Results the keywords did not find and that are not close in meaning are
    left out, so a query with no answer shows nothing.
    """
    from peer.search.fusion import MIN_SIMILARITY

    if not query.strip():
        raise click.UsageError("the query is empty")
    if show_all and min_score is not None:
        raise click.UsageError("give --min-score or --all, not both")
    min_similarity = None if show_all else (MIN_SIMILARITY if min_score is None else min_score)
    update, close = progress_callback("indexing")

    async def body(device: Device) -> list[SearchResult]:
        try:
            for warning in await device.prepare_index(progress=update):
                warn(warning)
        finally:
            close()
        return await device.search(
            query, k=k, project=project, kind=kind, tag=tag, since=since, min_similarity=min_similarity,
            calibrated=min_score is None,
        )

    results = with_device(body)
    if json_mode():
        print_json([r.to_json() for r in results])
        return
    for r in results:
        click.echo(memory_line(r.memory, prefix=f"{r.hit.score:.2f}  "))
    if not results:
        click.echo("no matches", err=True)

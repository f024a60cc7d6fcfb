"""``peer init``, ``add`` (one or many), ``show``, ``list``, ``edit``, ``forget``, ``search``.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from typing import IO, TYPE_CHECKING, Any

import click

from peer.units import plural
from protocol import PeerError

from ._app import peer_error_in
from ._input import BULK_FORMATS, Interrupted, interrupted, read_bulk, read_stdin_text

if TYPE_CHECKING:
    from peer.device import Device
    from peer.memory import Draft, SimilarMemory, VersionInfo
from ._app import (
    ask_agent,
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
        _bulk_add(file, defaults, fmt, allow_duplicate)
        return
    if text is None:
        raise click.UsageError("missing TEXT (or `-` to read it from stdin, or --file for many)")
    # The id is chosen here, so that an add the agent may have made before it died is
    # recognised when it runs again in process (never added twice, never lost).
    draft = Draft(
        content=_read_text(text), kind=kind or "note", project=project, tags=tags, metadata=metadata,
        importance=importance, id=str(uuid.uuid4()),
    )
    from peer.answers import Added

    answer = ask_agent("add", {
        "id": draft.id, "content": draft.content, "kind": draft.kind, "project": draft.project,
        "tags": list(draft.tags), "metadata": draft.metadata, "importance": draft.importance,
        "allow_duplicate": allow_duplicate,
    }, lost="rerun")
    if answer is not None:
        result = Added.from_wire(answer)
    else:
        from peer.warm import add_memory

        result = with_device(lambda device: add_memory(device, draft, allow_duplicate=allow_duplicate, retry=True))
    memory_id, duplicate, similar = result.id, result.duplicate, result.similar
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


def _bulk_add(file: IO[bytes], defaults: Draft, fmt: str, allow_duplicate: bool) -> None:
    name = "stdin" if file.name in ("-", "<stdin>") else click.format_filename(file.name)
    numbered = read_bulk(file, name, defaults, fmt)
    drafts = [draft for _, draft in numbered]
    if not drafts:
        raise PeerError("the file holds no memories (no non-empty lines)")
    added: list[str] = []  # ids of the drafts added, in the order of `fresh`
    fresh: list[int] = []  # the drafts to add (indexes): not repeats of a memory or an earlier line
    repeats: dict[int, str | int] = {}
    similar: dict[str, list[SimilarMemory]] = {}
    started = time.monotonic()
    show_bar = not json_mode() and sys.stderr.isatty()

    async def body(device: Device) -> None:
        from peer.consolidate import exact_duplicates, similar_to

        if not allow_duplicate:
            # Duplicates at the door, as for one add: one read of the projects' texts.
            repeats.update(await exact_duplicates(device, drafts))
        fresh.extend(at for at in range(len(drafts)) if at not in repeats)
        progress = ProgressBar("adding", len(fresh)) if show_bar and fresh else None
        try:
            for at in range(0, len(fresh), BULK_BATCH):
                # One transaction per batch: a bulk add that is killed keeps
                # every batch committed before, in input order.
                added.extend(await device.add([drafts[i] for i in fresh[at : at + BULK_BATCH]]))
                if progress is not None:
                    progress.update(len(added), len(fresh))
        finally:
            if progress is not None:
                progress.close()
        # Look-alikes: every new memory against the index in one batch query.
        similar.update(await similar_to(device, added))

    try:
        with_device(body)
    except BaseException as e:
        if interrupted(e):
            # Batches are committed in order: everything before the first
            # draft not added is in, everything from it on is not.
            rest = f"; the rest starts at line {numbered[fresh[len(added)]][0]}" if len(added) < len(fresh) else ""
            raise Interrupted(f"interrupted: {len(added):,} of {len(fresh) or len(drafts):,} added{rest}") from None
        error = peer_error_in(e)
        if error is not None and added:
            # Say what is already in, so the user can resume after it.
            raise PeerError(f"{error.message} (the first {len(added)} memories were added)") from e
        raise
    seconds = time.monotonic() - started
    new_id = dict(zip(fresh, added, strict=True))

    def id_of(at: int) -> str:
        to = repeats.get(at, at)
        return to if isinstance(to, str) else new_id[to]

    ids = [id_of(at) for at in range(len(drafts))]
    if json_mode():
        out: dict[str, Any] = {"added": len(added), "ids": ids, "seconds": round(seconds, 3)}
        if repeats:
            out["duplicates"] = [{"line": numbered[at][0], "id": ids[at]} for at in sorted(repeats)]
        if similar:
            out["similar"] = {m: [s.to_json() for s in hits] for m, hits in similar.items()}
        print_json(out)
        return
    click.echo(f"added {plural(len(added), 'memory', 'memories')} in {seconds:.1f} s")
    if repeats:
        warn(f"{plural(len(repeats), 'line')} repeated a memory of the same project (or an earlier line);"
             " nothing was added for them (--allow-duplicate adds them)")
    if similar:
        warn(f"{plural(len(similar), 'added memory', 'added memories')} look like existing ones"
             " (similarity >= 0.9); `peer consolidate` shows them and can merge them")


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
    from peer.answers import Shown

    answer = ask_agent("show", {"id": memory_id, "versions": versions}, lost="rerun")
    if answer is not None:
        shown = Shown.from_wire(answer)
    else:
        from peer.warm import show_memory

        shown = with_device(lambda device: show_memory(device, memory_id, versions=versions))
    memory, infos, moved = shown.memory, shown.versions, shown.merged_into
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

    from peer.answers import Listed

    answer = ask_agent("list", {
        "project": project, "kind": kind, "tag": tag, "since": since, "limit": wanted,
        "count_above": TERMINAL_LIST_LIMIT if capped else None,
    }, lost="rerun")
    if answer is not None:
        listed = Listed.from_wire(answer)
    else:
        from peer.warm import list_memories

        listed = with_device(lambda device: list_memories(
            device, project=project, kind=kind, tag=tag, since=since, limit=wanted,
            count_above=TERMINAL_LIST_LIMIT if capped else None,
        ))
    memories = listed.memories
    if json_mode():
        print_json([m.to_json() for m in memories])
        return
    more = capped and len(memories) > TERMINAL_LIST_LIMIT
    for memory in memories[:TERMINAL_LIST_LIMIT] if more else memories:
        click.echo(memory_line(memory, dated=True))
    if more:
        total = listed.total or 0
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

    new_tags = () if clear_tags else (tags or None)
    from peer.answers import Changed

    answer = ask_agent("edit", {
        "id": memory_id, "content": content, "kind": kind, "project": project,
        "tags": None if new_tags is None else list(new_tags), "metadata": metadata or None, "importance": importance,
    }, lost="fail")
    if answer is not None:
        changed = Changed.from_wire(answer).id
    else:
        from peer.warm import edit_memory

        changed = with_device(lambda device: edit_memory(
            device, memory_id, content=content, kind=kind, project=project, tags=new_tags,
            metadata=metadata or None, importance=importance,
        )).id
    if json_mode():
        print_json({"id": changed})
    else:
        click.echo(changed)


@cli.command()
@click.argument("memory_id", metavar="ID")
@common_options
def forget(memory_id: str) -> None:
    """Delete a memory (a tombstone version that syncs like any change)."""

    from peer.answers import Changed

    answer = ask_agent("forget", {"id": memory_id}, lost="fail")
    if answer is not None:
        gone = Changed.from_wire(answer).id
    else:
        from peer.warm import forget_memory

        gone = with_device(lambda device: forget_memory(device, memory_id)).id
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
    from peer.answers import Found

    answer = ask_agent("search", {
        "query": query, "k": k, "project": project, "kind": kind, "tag": tag, "since": since,
        "min_similarity": min_similarity, "calibrated": min_score is None,
    }, lost="rerun")
    if answer is not None:
        found = Found.from_wire(answer)
    else:
        from peer.warm import search as run_search

        update, close = progress_callback("indexing")
        found = with_device(lambda device: run_search(
            device, query, k=k, project=project, kind=kind, tag=tag, since=since, min_similarity=min_similarity,
            calibrated=min_score is None, progress=update, closed=close,
        ))
    for warning in found.warnings:
        warn(warning)
    results = found.results
    if json_mode():
        print_json([r.to_json() for r in results])
        return
    for r in results:
        click.echo(memory_line(r.memory, prefix=f"{r.hit.score:.2f}  "))
    if not results:
        click.echo("no matches", err=True)

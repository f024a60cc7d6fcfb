"""``peer consolidate`` (find, review and merge duplicates), ``peer merge`` and ``peer unmerge``.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from ._app import cli, common_options, json_mode, kind_option, project_option, with_device
from ._output import one_line, print_json, when

if TYPE_CHECKING:
    from peer.consolidate import DuplicateGroup, Duplicates, MergeResult
    from peer.device import Device

#: Where ``--review`` remembers the groups a person chose to keep apart.
KEPT_FILE = "consolidate-kept.json"


def _group_text(number: int, group: DuplicateGroup) -> str:
    lines = [f"group {number}: {group.describe()}{'  [auto-merge]' if group.auto_mergeable else ''}"]
    for at, m in enumerate(group.members):
        role = "keep " if at == 0 else "merge"
        where = f"{m.kind}{'/' + m.project if m.project else ''}"
        tags = " ".join("#" + t for t in m.tags)
        lines.append(f"  {role} {m.id[:8]}  {where}  {tags}  created {when(m.created_at)}  updated {when(m.updated_at)}")
        lines.append(f"        {one_line(m.content, 100)}")
    return "\n".join(lines)


def _kept_groups(device: Device) -> set[tuple[str, ...]]:
    path = device.home.path / KEPT_FILE
    try:
        return {tuple(g) for g in json.loads(path.read_text(encoding="utf-8"))}
    except (OSError, ValueError, TypeError):
        return set()


def _remember_kept(device: Device, kept: set[tuple[str, ...]]) -> None:
    from peer.files import write_atomic

    write_atomic(device.home.path / KEPT_FILE, json.dumps(sorted(kept)).encode())


@cli.command()
@project_option
@kind_option
@click.option("--threshold", type=click.FloatRange(0.5, 1.0), default=0.9, show_default=True,
              help="Similarity at or above which two memories are near duplicates.")
@click.option("--dry-run", is_flag=True, help="Only show the groups (the default without --auto-merge or --review).")
@click.option("--auto-merge", is_flag=True,
              help="Merge exact groups and groups above 0.95 worded alike; list the rest.")
@click.option("--review", is_flag=True, help="On a terminal, walk the groups: merge, keep both, or skip.")
@common_options
def consolidate(
    project: str | None, kind: str | None, threshold: float, dry_run: bool, auto_merge: bool, review: bool
) -> None:
    """Find duplicate memories (exact and near) and merge them, undoably (`peer unmerge`)."""
    from peer.consolidate import find_duplicates, merge

    if dry_run and (auto_merge or review):
        raise click.UsageError("--dry-run changes nothing; give it without --auto-merge or --review")
    if auto_merge and review:
        raise click.UsageError("give --auto-merge or --review, not both")
    if review and (json_mode() or not sys.stdin.isatty()):
        raise click.UsageError("--review asks questions on a terminal; use --json to get the groups for a script")

    async def body(device: Device) -> tuple[Duplicates, list[MergeResult]]:
        found = await find_duplicates(device, project=project, kind=kind, threshold=threshold)
        merged: list[MergeResult] = []
        if auto_merge:
            for group in found.groups:
                if group.auto_mergeable:
                    merged.append(await merge(device, [m.id for m in group.members], keep=group.members[0].id))
        elif review:
            merged.extend(await _review(device, found))
        return found, merged

    found, merged = with_device(body)
    if json_mode():
        out: dict[str, Any] = found.to_json()
        out["merged"] = [m.to_json() for m in merged]
        print_json(out)
        return
    if review:
        click.echo(f"merged {len(merged)} group(s)")
        return
    done = {m.survivor for m in merged}
    for number, group in enumerate(found.groups, 1):
        click.echo(_group_text(number, group))
        if group.members[0].id in done:
            click.echo("  merged")
        click.echo()
    click.echo(found.describe() + (f"; merged {len(merged)} group(s)" if auto_merge else ""))
    if not auto_merge and found.groups:
        click.echo("merge with `peer consolidate --auto-merge` (exact, and > 0.95 worded alike) or `--review`;"
                   " undo a merge with `peer unmerge ID`")


async def _review(device: Device, found: Duplicates) -> list[MergeResult]:
    import trio

    from peer.consolidate import merge

    kept = _kept_groups(device)
    merged: list[MergeResult] = []
    groups = [g for g in found.groups if tuple(sorted(m.id for m in g.members)) not in kept]
    for number, group in enumerate(groups, 1):
        click.echo(_group_text(number, group))
        answer = await trio.to_thread.run_sync(
            lambda: click.prompt(
                "[m]erge, [k]eep both, [s]kip, [q]uit", type=click.Choice(["m", "k", "s", "q"]), show_choices=False
            )
        )
        if answer == "q":
            break
        if answer == "m":
            result = await merge(device, [m.id for m in group.members], keep=group.members[0].id)
            merged.append(result)
            click.echo(result.describe())
        elif answer == "k":
            kept.add(tuple(sorted(m.id for m in group.members)))
            _remember_kept(device, kept)
        click.echo()
    return merged


@cli.command(name="merge")
@click.argument("memory_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--keep", metavar="ID", help="The memory that survives (default: the longest text, then the oldest).")
@common_options
def merge_command(memory_ids: tuple[str, ...], keep: str | None) -> None:
    """Merge memories into one; the others say where they went (`peer unmerge` undoes it)."""
    from peer.consolidate import merge

    async def body(device: Device) -> MergeResult:
        return await merge(device, memory_ids, keep=keep)

    result = with_device(body)
    if json_mode():
        print_json(result.to_json())
    else:
        click.echo(result.describe())


@cli.command()
@click.argument("memory_id", metavar="ID")
@common_options
def unmerge(memory_id: str) -> None:
    """Bring back a memory that a merge folded into another, exactly as it was."""
    from peer.consolidate import unmerge as unmerge_memory

    async def body(device: Device) -> MergeResult:
        return await unmerge_memory(device, memory_id)

    result = with_device(body)
    if json_mode():
        print_json({"id": result.merged[0], "was_merged_into": result.survivor})
    else:
        click.echo(f"restored {result.merged[0]} (it had been merged into {result.survivor})")

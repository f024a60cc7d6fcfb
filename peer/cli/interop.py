"""``peer export`` and ``peer import``: plaintext interop with files and other memory tools.

The commands are registered on :data:`peer.cli.cli` when :mod:`peer.cli`
imports this module (at its end). The work is in :mod:`peer.interop`;
this module parses options and prints.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from protocol import PeerError

from ._app import check_kind, cli, common_options, json_mode, since_option, with_device
from ._input import file_argument
from ._output import print_json, progress_callback, warn

if TYPE_CHECKING:
    from peer.consolidate import SimilarMemory
    from peer.device import Device
    from peer.interop import ImportFile, ImportReport

__all__ = ["export", "import_"]

#: Exports and imports smaller than this draw no progress bar.
_BAR_FROM = 1000

@cli.command(name="export")
@file_argument
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@click.option("--project", help="Only memories of this project.")
@click.option("--kind", callback=check_kind, help="Only memories of this kind.")
@click.option(
    "--since", callback=since_option, metavar="WHEN", help="Only memories changed since a date (2026-01-31) or for a duration (7d)."
)
@common_options
def export(file: str, force: bool, project: str | None, kind: str | None, since: float | None) -> None:
    """Write the memories to FILE (`-` for stdout) as NDJSON: a header line, then one memory per line.

    Every field is written and ids are kept, so `peer import` on another
    store brings them back as they are. Forgotten memories (tombstones) and
    the losing versions of a conflict are not exported. The file holds the
    memories in plain text; it is created readable by its owner only.
    """
    from pathlib import Path

    from peer.files import atomic_output
    from peer.interop import export_memories

    if file != "-" and not force and Path(file).exists():
        raise PeerError(f"{file} exists; give another file name, or --force to replace it (it was left as it is)")

    started = time.monotonic()
    update, close = progress_callback("exporting")

    def progress(done: int, total: int) -> None:
        if update is not None and total >= _BAR_FROM:
            update(done, total)

    async def body(device: Device) -> int:
        try:
            if file == "-":
                count = await export_memories(
                    device.store, sys.stdout.buffer, project=project, kind=kind, since=since, progress=progress
                )
                sys.stdout.buffer.flush()
                return count
            with atomic_output(file) as out:
                return await export_memories(
                    device.store, out, project=project, kind=kind, since=since, progress=progress
                )
        finally:
            close()

    count = with_device(body)
    seconds = time.monotonic() - started
    if file == "-":
        return  # stdout holds the export itself
    if json_mode():
        print_json({"exported": count, "file": file, "seconds": round(seconds, 3)})
    else:
        click.echo(f"exported {count:,} memories to {file} in {seconds:.1f} s")


@cli.command(name="import")
@file_argument
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "ndjson", "claude-memory", "ai-mem"]),
    default="auto",
    show_default=True,
    help="ndjson: `peer export`; claude-memory: Claude Memory RAG Server JSON export or .tar.gz backup;"
    " ai-mem: an ai-mem NDJSON snapshot; auto: tell from the file.",
)
@click.option(
    "--strategy",
    type=click.Choice(["skip", "overwrite", "merge"]),
    default="merge",
    show_default=True,
    help="For a memory this store holds with other content: skip keeps the local one, overwrite takes the"
    " file's, merge keeps the newer and, when both changed, the other as a sibling (`peer conflicts`).",
)
@click.option("--dry-run", is_flag=True, help="Change nothing; report what the import would do.")
@click.option("--allow-duplicate", is_flag=True,
              help="Import a new record even when a memory of its project already has the same text.")
@common_options
def import_(file: str, fmt: str, strategy: str, dry_run: bool, allow_duplicate: bool) -> None:
    """Import memories from FILE (`-` for stdin): peer's own export or another memory tool's.

    Ids are kept; importing the same file again changes nothing. The whole
    file is checked first: a bad line is reported with its number and
    nothing is imported. Then everything is written in one transaction.
    """
    from peer.interop import ImportReport, apply_import, plan_import, read_import_file

    started = time.monotonic()
    if fmt == "auto" and file != "-":
        _refuse_peer_files(file)
    parsed: ImportFile = read_import_file(file, fmt, stdin=sys.stdin.buffer)
    update, close = progress_callback("embedding")

    def progress(done: int, total: int) -> None:
        if update is not None and total >= _BAR_FROM // 4:
            update(done, total)

    similar: dict[str, list[SimilarMemory]] = {}
    repeated: dict[str, str] = {}  # record id -> the memory (or earlier record) whose text it repeats

    async def body(device: Device) -> ImportReport:
        from peer.consolidate import exact_duplicates, similar_to
        from peer.interop import Action

        plan = await plan_import(device.store, parsed, strategy)
        if not allow_duplicate:
            # Duplicates at the door, as for `peer add`: a new record with the
            # text of a live memory of its project is not written.
            new_steps = [at for at, step in enumerate(plan.steps) if step.action is Action.NEW]
            drafts = [plan.steps[at].record.draft() for at in new_steps]
            repeats = await exact_duplicates(device, drafts)
            if repeats:
                plan = plan.with_repeats({new_steps[i] for i in repeats})
                repeated.update(
                    (str(drafts[i].id), to if isinstance(to, str) else str(drafts[to].id)) for i, to in repeats.items()
                )
        if dry_run:
            return ImportReport(plan, dry_run=True, seconds=time.monotonic() - started)
        try:
            report = await apply_import(device, plan, progress)
        finally:
            close()
        new = [step.record.id for step in plan.steps if step.action is Action.NEW]
        # Look-alikes at the door: every new memory against what was here (not
        # the file's own others), in one batch query of the index.
        similar.update(await similar_to(device, new))
        return report

    report = with_device(body)
    if not dry_run:
        report = _with_seconds(report, time.monotonic() - started)
    similar = {m: hits for m, hits in similar.items() if hits}
    if json_mode():
        out = report.to_json()
        if similar:
            out["similar"] = {m: [s.to_json() for s in hits] for m, hits in similar.items()}
        if repeated:
            out["repeats"] = repeated
        print_json(out)
    else:
        click.echo(report.describe())
        if similar:
            warn(f"{len(similar):,} imported memories look like ones this store held (similarity >= 0.9);"
                 " `peer consolidate` shows them and can merge them")


def _refuse_peer_files(file: str) -> None:
    """peer's own bundles and backups are not import files: name the command that reads them."""
    from peer.backup import BACKUP_MAGIC
    from protocol import BUNDLE_MAGIC

    try:
        with open(file, "rb") as f:
            start = f.read(max(len(BACKUP_MAGIC), len(BUNDLE_MAGIC)))
    except OSError:
        return  # read_import_file says what is wrong with it
    if start.startswith(BACKUP_MAGIC):
        raise PeerError(f"{file} is a peer backup, not an import file: restore it with `peer backup restore --file {file}`;"
                        " nothing was imported")
    if start.startswith(BUNDLE_MAGIC):
        raise PeerError(f"{file} is a peer bundle, not an import file: apply it with `peer bundle import {file}`;"
                        " nothing was imported")


def _with_seconds(report: ImportReport, seconds: float) -> ImportReport:
    """The report with the whole command's time (reading and planning too)."""
    import dataclasses

    return dataclasses.replace(report, seconds=seconds)


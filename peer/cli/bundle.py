"""``peer bundle export`` and ``peer bundle import``: air-gapped sync (the work is in :mod:`peer.bundles`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from peer.device import Device
from ._app import cli, common_options, with_device
from ._input import file_argument
from ._output import print_result, stage_progress, warn


@cli.group()
@common_options
def bundle() -> None:
    """Air-gapped sync: carry what another device lacks in a file (a USB stick)."""


@bundle.command(name="export")
@file_argument
@click.option("--for", "for_device", metavar="DEVICE", default=None,
              help="The device the bundle is for (its name or a unique id prefix; default: the only other one).")
@click.option("--project", default=None, help="Only memories of this project (a partial bundle).")
@click.option("--all", "full", is_flag=True, help="Everything this device holds, whatever the other side has.")
@common_options
def bundle_export(file: str, for_device: str | None, project: str | None, full: bool) -> None:
    """Write what another device lacks to FILE (sealed and signed)."""
    from peer.bundles import ExportResult, export_bundle

    update, close = stage_progress()

    async def body(device: Device) -> ExportResult:
        try:
            return await export_bundle(
                device.store,
                device.home.identity().signing_key,
                Path(file),
                device=for_device,
                project=project,
                full=full,
                progress=update,
            )
        finally:
            close()

    result = with_device(body)
    print_result(result)


@bundle.command(name="import")
@file_argument
@click.option("--dry-run", is_flag=True, help="Verify FILE and say what it would add; change nothing.")
@common_options
def bundle_import(file: str, dry_run: bool) -> None:
    """Verify all of FILE, then add what this device lacks."""
    from peer.bundles import ImportResult, import_bundle

    update, close = stage_progress()
    warnings: list[str] = []

    async def body(device: Device) -> ImportResult:
        try:
            result = await import_bundle(device.store, Path(file), dry_run=dry_run, progress=update)
        finally:
            close()
        # Versions arrived: an index that exists catches up now (one never built waits for a search).
        if result.added and not dry_run:
            warning = await device.catch_up_index()
            if warning:
                warnings.append(warning)
        return result

    result = with_device(body)
    for warning in warnings:
        warn(warning)
    print_result(result)

"""``peer stats``, ``peer doctor`` and ``peer reindex``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ._app import cli, common_options, with_device
from ._output import print_result, progress_callback

if TYPE_CHECKING:
    from peer.device import Device, DoctorReport, ReindexResult, StatsReport


@cli.command()
@common_options
def stats() -> None:
    """Counts, sizes and the state of the search index."""

    async def body(device: Device) -> StatsReport:
        return await device.stats()

    print_result(with_device(body))


@cli.command()
@click.option("--repair", is_flag=True, help="Rebuild the search index if it is not healthy.")
@common_options
def doctor(repair: bool) -> None:
    """Check the store, the index, the model and the key files; exit 1 if something is wrong."""
    update, close = progress_callback("rebuilding index")

    async def body(device: Device) -> DoctorReport:
        try:
            return await device.doctor(repair=repair, progress=update)
        finally:
            close()

    report = with_device(body)
    print_result(report)
    if not report.healthy:
        raise click.exceptions.Exit(1)


@cli.command()
@common_options
def reindex() -> None:
    """Rebuild the search index from the store."""
    update, close = progress_callback("rebuilding index")

    async def body(device: Device) -> ReindexResult:
        try:
            return await device.reindex(progress=update)
        finally:
            close()

    print_result(with_device(body))

"""``peer stats``, ``peer doctor`` and ``peer reindex``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._app import cli, common_options, home_arg, run, with_device
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
@click.option(
    "--repair",
    is_flag=True,
    help="Rebuild the search index if it is not healthy; rewrite versions no other device can read.",
)
@click.option(
    "--salvage",
    "salvage_to",
    type=click.Path(file_okay=False, path_type=Path),
    help="Copy every memory that can still be read from a damaged store into a new home at this directory.",
)
@common_options
def doctor(repair: bool, salvage_to: Path | None) -> None:
    """Check the store, the index, the model and the key files; exit 1 if something is wrong."""
    from peer.device import Device
    from peer.errors import StoreDamaged
    from peer.home import Home
    from peer.salvage import diagnose_damaged, salvage

    home = Home.locate(home_arg())
    if salvage_to is not None:
        target = salvage_to
        print_result(run(lambda: salvage(home, target)))
        return
    update, close = progress_callback("rebuilding index")

    async def body() -> DoctorReport:
        try:
            device = await Device.open(home)
            try:
                return await device.doctor(repair=repair, progress=update)
            finally:
                close()
                await device.close()
        except StoreDamaged as e:
            # Nothing can be checked the ordinary way: say what SQLite finds and what can be read.
            return await diagnose_damaged(home, e)

    report = run(body)
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

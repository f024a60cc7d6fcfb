"""``peer stats``, ``peer doctor`` and ``peer reindex``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from peer.units import human_size

if TYPE_CHECKING:
    from peer.device import Device, DoctorReport
from ._app import cli, common_options, json_mode, with_device
from ._output import print_fields, print_json, progress_callback


@cli.command()
@common_options
def stats() -> None:
    """Counts, sizes and the state of the search index."""

    async def body(device: Device) -> dict[str, Any]:
        return await device.stats()

    info = with_device(body)
    if json_mode():
        print_json(info)
        return
    from protocol import format_device_id

    index = info["index"]
    print_fields(
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
    if json_mode():
        print_json(report.to_json())
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
    update, close = progress_callback("rebuilding index")

    async def body(device: Device) -> DoctorReport:
        try:
            return await device.doctor(repair=repair, progress=update)
        finally:
            close()

    report = with_device(body)
    _print_report(report)
    if not report.healthy:
        raise click.exceptions.Exit(1)


@cli.command()
@common_options
def reindex() -> None:
    """Rebuild the search index from the store."""
    update, close = progress_callback("rebuilding index")

    async def body(device: Device) -> dict[str, Any]:
        try:
            return await device.reindex(progress=update)
        finally:
            close()

    result = with_device(body)
    if json_mode():
        print_json(result)
    else:
        click.echo(f"indexed {result['vectors']:,} memories in {result['seconds']:.1f} s")

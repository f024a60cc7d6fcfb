"""``peer conflicts`` and ``peer resolve``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ._app import cli, common_options, home_arg, run
from ._output import print_result

if TYPE_CHECKING:
    from peer.conflicts import ConflictList, ResolveResult
    from peer.home import Home


@cli.command()
@common_options
def conflicts() -> None:
    """List memories edited concurrently on several devices, with every live version."""
    from peer.home import Home

    home = Home.locate(home_arg())
    print_result(run(lambda: conflicts_command(home)))


@cli.command()
@click.argument("memory_id", metavar="ID")
@click.option("--keep", required=True, metavar="VERSION", help="The version to keep, as `peer conflicts` shows it.")
@common_options
def resolve(memory_id: str, keep: str) -> None:
    """Settle a conflict: keep one version of memory ID, superseding the others on every device."""
    from peer.home import Home

    home = Home.locate(home_arg())
    print_result(run(lambda: resolve_command(home, memory_id, keep)))


async def conflicts_command(home: Home) -> ConflictList:
    from peer.conflicts import conflicts

    async with await home.open_store() as store:
        return await conflicts(store)


async def resolve_command(home: Home, memory_id: str, keep: str) -> ResolveResult:
    from peer.conflicts import resolve

    async with await home.open_store() as store:
        return await resolve(store, memory_id, keep)

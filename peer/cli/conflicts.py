"""``peer conflicts`` and ``peer resolve``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._output import when

if TYPE_CHECKING:
    from peer.home import Home

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    pass
from ._app import cli, common_options, home_arg, run
from ._output import print_result


@cli.command()
@common_options
def conflicts() -> None:
    """List memories edited concurrently on several devices, with every live version."""
    from peer.home import Home

    home = Home.locate(home_arg())
    print_result(*run(lambda: conflicts_command(home)))


@cli.command()
@click.argument("memory_id", metavar="ID")
@click.option("--keep", required=True, metavar="VERSION", help="The version to keep, as `peer conflicts` shows it.")
@common_options
def resolve(memory_id: str, keep: str) -> None:
    """Settle a conflict: keep one version of memory ID, superseding the others on every device."""
    from peer.home import Home

    home = Home.locate(home_arg())
    print_result(*run(lambda: resolve_command(home, memory_id, keep)))


def conflicts_text(found: Sequence[dict[str, Any]]) -> str:
    if not found:
        return "no conflicts"
    lines: list[str] = []
    for memory in found:
        lines.append(f"{memory['id']}  ({len(memory['versions'])} live versions)")
        for v in memory["versions"]:
            what = "(forgotten)" if v["deleted"] else " ".join(v["content"].split())[:70]
            role = "winner " if v["winner"] else "sibling"
            lines.append(f"  {role}  {v['version']}  {when(v['updated_at'])}  {what}")
        lines.append(f"  keep one with: peer resolve {memory['id']} --keep VERSION")
    return "\n".join(lines)


async def conflicts_command(home: Home) -> tuple[list[dict[str, Any]], str]:
    from peer.conflicts import conflicts

    async with await home.open_store() as store:
        found = await conflicts(store)
    return found, conflicts_text(found)


async def resolve_command(
    home: Home, memory_id: str, keep: str
) -> tuple[dict[str, Any], str]:
    from peer.conflicts import resolve

    async with await home.open_store() as store:
        result = await resolve(store, memory_id, keep)
    return result, f"resolved {result['id']}: kept {keep}, now version {result['version']}"

"""``peer relay add/list/remove/sync``: the command-line side of relays.

The work is done in :mod:`peer.relay`; here options are parsed and results printed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from protocol import PeerError

from ._app import cli, common_options, home_arg, json_mode, with_device
from ._output import print_json, warn

if TYPE_CHECKING:
    from peer.device import Device

__all__ = ["relay"]


def _home_path() -> Path:
    from peer.home import Home

    home = Home.locate(home_arg())
    if not home.exists():
        raise PeerError(f"no peer device in {home.path}; run `peer init` (or `peer join CODE`) first")
    return home.path


def _show(value: Any, text: str) -> None:
    if json_mode():
        print_json(value)
    else:
        click.echo(text)


@cli.group()
@common_options
def relay() -> None:
    """Sync through an untrusted folder (Dropbox, Syncthing, a NAS share) or an SFTP directory."""


@relay.command(name="add")
@click.argument("target", metavar="PATH|sftp://[user@]host[:port]/path")
@click.option("--name", default=None, help="What to call it (default: the folder's name).")
@common_options
def relay_add(target: str, name: str | None) -> None:
    """Use a folder or an SFTP directory as a relay for this device."""
    from peer.relay import add_relay

    spec = add_relay(_home_path(), target, name)
    _show(
        spec.to_json(),
        f"added relay {spec.name} ({spec.url}); `peer relay sync {spec.name}` exchanges with it now,"
        " and `peer agent` does so by itself",
    )


@relay.command(name="list")
@common_options
def relay_list() -> None:
    """The relays of this device and how the last exchange with each went."""
    from peer.relay import relay_status

    statuses = relay_status(_home_path())
    text = "\n".join(s.describe() for s in statuses) or "no relays yet; add one with `peer relay add PATH`"
    _show({"relays": [s.to_json() for s in statuses]}, text)


@relay.command(name="remove")
@click.argument("name")
@common_options
def relay_remove(name: str) -> None:
    """Stop using a relay (its files stay where they are; other devices may still use them)."""
    from peer.relay import remove_relay

    spec = remove_relay(_home_path(), name)
    _show(
        {"removed": spec.to_json()},
        f"removed relay {spec.name}; this device's files stay in {spec.url} (other devices may still use them)",
    )


@relay.command(name="sync")
@click.argument("name", required=False)
@common_options
def relay_sync(name: str | None) -> None:
    """One exchange with relay NAME (default: every relay): write what it lacks, read what this device lacks."""
    from peer.relay import find_relay, load_relays, sync_relay

    home = _home_path()
    specs = [find_relay(home, name)] if name is not None else load_relays(home)
    if not specs:
        raise PeerError("this device has no relay yet; add one with `peer relay add PATH|sftp://host/path`")

    async def body(device: Device) -> tuple[list[Any], list[str], list[str]]:
        done: list[Any] = []
        failed: list[str] = []
        warnings: list[str] = []
        added = 0
        for spec in specs:
            try:
                result = await sync_relay(device.store, device.home.identity().signing_key, home, spec)
            except PeerError as e:
                if len(specs) == 1:
                    raise
                failed.append(f"relay {spec.name}: {e.message}")
                done.append({"relay": spec.name, "error": e.message})
                continue
            added += result.versions_added
            done.append(result)
        if added:
            warning = await device.catch_up_index()
            if warning:
                warnings.append(warning)
        return done, failed, warnings

    done, failed, warnings = with_device(body)
    for warning in warnings:
        warn(warning)
    _show(
        {"relays": [d if isinstance(d, dict) else d.to_json() for d in done]},
        "\n".join(d.describe() for d in done if not isinstance(d, dict)),
    )
    for message in failed:
        click.echo(f"error: {message}", err=True)
    if failed:
        sys.exit(1)



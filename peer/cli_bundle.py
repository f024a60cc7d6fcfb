"""``peer bundle export/import`` and ``peer backup create/restore``: the command-line side.

Registered on :data:`peer.cli.cli` when ``peer.cli`` imports this module
(its last line). The work is done in :mod:`peer.bundles` and
:mod:`peer.backup`; here options are parsed, passphrases obtained and
results printed. Like the rest of the CLI, only click and the standard
library are imported at the top.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from protocol.errors import PeerError

from .cli import (
    _home_arg,
    _json_mode,
    _print_json,
    _ProgressBar,
    _run,
    _warn,
    _with_device,
    cli,
    common_options,
)

if TYPE_CHECKING:
    from .device import Device

__all__ = ["bundle", "backup"]

#: Below these, no bar is drawn: the work is over before one would be read.
_BAR_FROM = {"verifying": 8_000_000, "exporting": 2000, "applying": 2000}
_BAR_TEXT = {"verifying": "verifying bundle", "exporting": "exporting", "applying": "importing"}


def _stage_progress() -> tuple[Callable[[str, int, int], None] | None, Callable[[], None]]:
    """A bar per stage (verifying, exporting, applying) for big jobs, when stderr is a terminal."""
    if _json_mode() or not sys.stderr.isatty():
        return None, lambda: None
    bars: dict[str, _ProgressBar] = {}
    shown: list[_ProgressBar] = []

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            if total < _BAR_FROM.get(stage, 0):
                return
            close()
            bar = bars[stage] = _ProgressBar(_BAR_TEXT.get(stage, stage), total)
            shown.append(bar)
        bar.update(done, total)

    def close() -> None:
        while shown:
            shown.pop().close()

    return update, close


def _show(result: Any, text: str) -> None:
    if _json_mode():
        _print_json(result)
    else:
        click.echo(text)


# Bundles ----------------------------------------------------------------------------


@cli.group()
@common_options
def bundle() -> None:
    """Air-gapped sync: carry what another device lacks in a file (a USB stick)."""


@bundle.command(name="export")
@click.argument("file", metavar="FILE")
@click.option("--for", "for_device", metavar="DEVICE", default=None,
              help="The device the bundle is for (its name or a unique id prefix; default: the only other one).")
@click.option("--project", default=None, help="Only memories of this project (a partial bundle).")
@click.option("--all", "full", is_flag=True, help="Everything this device holds, whatever the other side has.")
@common_options
def bundle_export(file: str, for_device: str | None, project: str | None, full: bool) -> None:
    """Write what another device lacks to FILE (sealed and signed)."""
    from .bundles import export_command

    update, close = _stage_progress()

    async def body(device: Device) -> tuple[dict[str, Any], str]:
        try:
            return await export_command(
                device, file, for_device=for_device, project=project, full=full, progress=update
            )
        finally:
            close()

    _show(*_with_device(body))


@bundle.command(name="import")
@click.argument("file", metavar="FILE")
@click.option("--dry-run", is_flag=True, help="Verify FILE and say what it would add; change nothing.")
@common_options
def bundle_import(file: str, dry_run: bool) -> None:
    """Verify all of FILE, then add what this device lacks."""
    from .bundles import import_command

    update, close = _stage_progress()

    async def body(device: Device) -> tuple[dict[str, Any], str, list[str]]:
        try:
            return await import_command(device, file, dry_run=dry_run, progress=update)
        finally:
            close()

    result, text, warnings = _with_device(body)
    for warning in warnings:
        _warn(warning)
    _show(result, text)


# Backups ----------------------------------------------------------------------------


def _passphrase(file: str | None, *, confirm: bool) -> Callable[[], str]:
    """Where the passphrase comes from: --passphrase-file, else $PEER_BACKUP_PASSPHRASE, else a prompt."""
    from .backup import PASSPHRASE_ENV

    def get() -> str:
        if file is not None:
            try:
                with open(file, encoding="utf-8") as f:
                    text = f.readline().rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as e:
                raise PeerError(f"cannot read the passphrase file {file}: {getattr(e, 'strerror', None) or e}") from e
            if not text:
                raise PeerError(f"the passphrase file {file} is empty (the passphrase is its first line)")
            return text
        env = os.environ.get(PASSPHRASE_ENV)
        if env:
            return env
        if sys.stdin.isatty() and sys.stderr.isatty():
            value: str = click.prompt(
                "passphrase", hide_input=True, confirmation_prompt=confirm, err=True
            )
            return value
        raise PeerError(
            f"a passphrase is needed for the identity: give it with --passphrase-file F or ${PASSPHRASE_ENV},"
            " or run the command in a terminal to type it"
        )

    return get


_passphrase_option = click.option(
    "--passphrase-file",
    metavar="FILE",
    default=None,
    help="Read the passphrase from the first line of FILE (else $PEER_BACKUP_PASSPHRASE, else a prompt).",
)


@cli.group()
@common_options
def backup() -> None:
    """Back up this device (every memory, optionally its identity) and restore it."""


@backup.command(name="create")
@click.option("--output", "-o", "output", required=True, metavar="FILE", help="Where to write the backup.")
@click.option("--with-identity", is_flag=True,
              help="Also this device's keys and group keys, sealed under a passphrase: restorable on a new machine.")
@_passphrase_option
@common_options
def backup_create(output: str, with_identity: bool, passphrase_file: str | None) -> None:
    """Write every version and the member list to FILE (no text in the clear)."""
    from pathlib import Path

    from .backup import create_backup

    if passphrase_file is not None and not with_identity:
        raise click.UsageError("--passphrase-file seals the identity; use it with --with-identity")
    secret = _passphrase(passphrase_file, confirm=True)() if with_identity else None
    update, close = _stage_progress()

    async def body(device: Device) -> tuple[dict[str, Any], str]:
        try:
            result = await create_backup(
                device.store, device.home.identity(), Path(output), passphrase=secret, progress=update
            )
        finally:
            close()
        return result.to_json(), result.describe()

    _show(*_with_device(body))


@backup.command(name="restore")
@click.option("--file", "-f", "file", required=True, metavar="FILE", help="The backup to restore.")
@click.option("--strategy", type=click.Choice(["merge", "replace"]), default="merge", show_default=True,
              help="On an existing device: merge adds what it lacks; replace sets its store aside and rebuilds it.")
@_passphrase_option
@common_options
def backup_restore(file: str, strategy: str, passphrase_file: str | None) -> None:
    """Recreate this device from FILE, or add what it lacks."""
    from pathlib import Path

    from .backup import describe_restore, restore_backup
    from .home import Home

    home = Home.locate(_home_arg())
    update, close = _stage_progress()

    async def body() -> dict[str, Any]:
        try:
            return await restore_backup(
                home,
                Path(file),
                strategy=strategy,
                passphrase=_passphrase(passphrase_file, confirm=False),
                progress=update,
            )
        finally:
            close()

    result = _run(body)
    for warning in result.pop("warnings", []):
        _warn(warning)
    _show(result, describe_restore(result))

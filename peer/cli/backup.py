"""``peer backup create`` and ``peer backup restore`` (the work is in :mod:`peer.backup`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from protocol import PeerError

if TYPE_CHECKING:
    from peer.backup import BackupResult, RestoreResult
    from peer.device import Device
from ._app import cli, common_options, home_arg, run, with_device
from ._output import print_result, stage_progress, warn


def _passphrase(file: str | None, *, confirm: bool) -> Callable[[], str]:
    """Where the passphrase comes from: --passphrase-file, else $PEER_BACKUP_PASSPHRASE, else a prompt."""
    from peer.backup import PASSPHRASE_ENV

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
@click.option("--file", "-f", "--output", "-o", "output", required=True, metavar="FILE",
              help="Where to write the backup (--output/-o: the older spelling).")
@click.option("--with-identity", is_flag=True,
              help="Also this device's keys and group keys, sealed under a passphrase: restorable on a new machine.")
@_passphrase_option
@common_options
def backup_create(output: str, with_identity: bool, passphrase_file: str | None) -> None:
    """Write every version and the member list to FILE (no text in the clear)."""
    from pathlib import Path

    from peer.backup import create_backup

    if passphrase_file is not None and not with_identity:
        raise click.UsageError("--passphrase-file seals the identity; use it with --with-identity")
    secret = _passphrase(passphrase_file, confirm=True)() if with_identity else None
    update, close = stage_progress()

    async def body(device: Device) -> tuple[BackupResult, int]:
        try:
            result = await create_backup(
                device.store, device.home.identity(), Path(output), passphrase=secret, progress=update
            )
        finally:
            close()
        return result, sum(1 for m in device.store.membership.members() if not m.revoked)

    result, members = with_device(body)
    if not result.identity:
        # Said now, while the device still exists to make a better one.
        alone = (
            "this device is its group's only member, so nothing could take this backup in: "
            if members <= 1 else "it can only be restored into a surviving member of the group; "
        )
        warn(
            f"this backup cannot rebuild this device on a new machine (no identity in it): {alone}"
            "make one with --with-identity (sealed under a passphrase) for that"
        )
    print_result(result)


@backup.command(name="restore")
@click.option("--file", "-f", "file", required=True, metavar="FILE", help="The backup to restore.")
@click.option("--strategy", type=click.Choice(["merge", "replace"]), default="merge", show_default=True,
              help="On an existing device: merge adds what it lacks; replace sets its store aside and rebuilds it.")
@_passphrase_option
@common_options
def backup_restore(file: str, strategy: str, passphrase_file: str | None) -> None:
    """Recreate this device from FILE, or add what it lacks."""
    from pathlib import Path

    from peer.backup import restore_backup
    from peer.home import Home

    home = Home.locate(home_arg())
    update, close = stage_progress()

    async def body() -> RestoreResult:
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

    result = run(body)
    for warning in result.warnings:
        warn(warning)
    print_result(result)

"""``peer invite``, ``join``, ``devices`` and ``revoke``: the group's membership.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ._output import when

if TYPE_CHECKING:
    from peer.home import Home

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    pass
from ._app import address_option, cli, common_options, home_arg, run, ttl_option
from ._output import print_result


@cli.command()
@click.option(
    "--ttl", default=None, metavar="DURATION", callback=ttl_option, help="How long the code works: 90s, 15m (default), 2h, 1d."
)
@click.option(
    "--address",
    default=None,
    metavar="HOST[:PORT]",
    callback=address_option,
    help="Where the new device reaches this device's agent (default: this host name, port 7847).",
)
@click.option(
    "--file",
    "file",
    default=None,
    metavar="FILE",
    help="Air-gapped: write the new device's identity to FILE, readable only with the code.",
)
@click.option("--name", default=None, help="With --file: the name of the new device.")
@common_options
def invite(ttl: str | None, address: str | None, file: str | None, name: str | None) -> None:
    """Print a one-time code that lets a new device join this device's group."""
    from peer.home import Home

    if name is not None and file is None:
        raise click.UsageError("--name names the device an invite file makes; use it with --file")
    home = Home.locate(home_arg())
    print_result(*run(lambda: invite_command(home, ttl=ttl, address=address, file=file, name=name)))


@cli.command()
@click.argument("code", nargs=-1, required=True)
@click.option(
    "--host",
    default=None,
    metavar="HOST[:PORT]",
    callback=address_option,
    help="The inviter's address, when the one in the code is not reachable from here.",
)
@click.option("--name", default=None, help="A name for this device (default: the host name).")
@click.option("--file", "file", default=None, metavar="FILE", help="Join with an invite file (`peer invite --file`).")
@common_options
def join(code: tuple[str, ...], host: str | None, name: str | None, file: str | None) -> None:
    """Join the group of the device that printed CODE (`peer invite`), then sync with it."""
    from peer.home import Home

    if file is not None and (host is not None or name is not None):
        raise click.UsageError("an invite file already names the device and needs no host; drop --host/--name")
    home = Home.locate(home_arg())
    # A code pasted with spaces arrives as several arguments.
    print_result(*run(lambda: join_command(home, "".join(code), host=host, name=name, file=file)))


@cli.command()
@common_options
def devices() -> None:
    """List the devices of this group (* marks this one)."""
    from peer.home import Home

    home = Home.locate(home_arg())
    print_result(*run(lambda: devices_command(home)))


@cli.command()
@click.argument("device")
@common_options
def revoke(device: str) -> None:
    """Remove DEVICE (its name or a unique prefix of its id) from the group; it gets no new keys."""
    from peer.home import Home

    home = Home.locate(home_arg())
    print_result(*run(lambda: revoke_command(home, device)))


# Command bodies (the click commands above parse arguments and print; these do the work) ---------


def default_address(home: Home | None = None) -> str:
    """The address hint an invite carries when ``--address`` is not given.

    Where this device's running agent listens (its port; its address
    unless it listens on every interface, then this host's name); with no
    agent running, this host's name and the default port.
    """
    import socket

    from peer.aio import DEFAULT_PORT
    from peer.sync import WILDCARDS, read_status

    status = read_status(home) if home is not None else None
    if status is not None and status.get("listen"):
        host, _, port = str(status["listen"]).rpartition(":")
        if host in WILDCARDS:
            host = socket.gethostname()
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{socket.gethostname()}:{DEFAULT_PORT}"


async def invite_command(
    home: Home,
    *,
    ttl: str | None = None,
    address: str | None = None,
    file: str | None = None,
    name: str | None = None,
) -> tuple[dict[str, Any], str]:
    """``peer invite``: (JSON, text for a person)."""
    from peer.pairing import (
        DEFAULT_TTL_S,
        expires_text,
        make_invite,
        make_invite_file,
        parse_ttl,
    )
    from protocol import format_device_id

    ttl_s = DEFAULT_TTL_S if ttl is None else parse_ttl(ttl)
    async with await home.open_store() as store:
        if file is not None:
            text, code, new_id = await make_invite_file(
                store, home.identity(), Path(file), name=name or "new device", ttl_s=ttl_s
            )
        else:
            new_id = None
            text, code = await make_invite(
                home, store, ttl_s=ttl_s, address=default_address(home) if address is None else address
            )
    out: dict[str, Any] = {"code": text, "device_id": code.device_id, "expires_at": code.expires_at}
    if file is not None:
        out.update(file=file, new_device_id=new_id)
        human = (
            f"{text}\n\n"
            f"Carry {file} to the new device and run there:  peer join {text} --file {file}\n"
            f"Keep the code apart from the file. Device {format_device_id(new_id or '')} is a member already;"
            f" if the file is never used, revoke it."
        )
        return out, human
    out["address"] = code.address
    human = (
        f"{text}\n\n"
        f"On the new device run:  peer join {text}\n"
        f"The code works once and expires {expires_text(code.expires_at)}."
        f" `peer agent` must be running here{' at ' + code.address if code.address else ''}."
    )
    return out, human


async def join_command(
    home: Home,
    code: str,
    *,
    host: str | None = None,
    name: str | None = None,
    file: str | None = None,
) -> tuple[dict[str, Any], str]:
    import socket

    from peer.pairing import join, join_from_file
    from protocol import format_device_id

    if file is not None:
        result = await join_from_file(home, code, Path(file))
    else:
        result = await join(home, code, host=host, name=name or socket.gethostname())
    human = (
        f"joined group {result['group_id']} through device {format_device_id(result['inviter'])}"
        f" ({result['members']} members)\nthis device: {format_device_id(result['device_id'])}"
    )
    if "sync" in result:
        human += f"\nfirst sync: {result['sync'].get('received', 0)} versions received"
    elif "sync_error" in result:
        human += f"\nthe first sync failed ({result['sync_error']}); run `peer sync {result['address']}`"
    elif file is not None:
        human += (
            "\nnow bring the memories over: `peer bundle export FILE` on the inviter, `peer bundle import FILE`"
            " here (and bundles back the other way), or `peer sync HOST` once both devices share a network"
        )
    return result, human


def devices_text(listed: Sequence[dict[str, Any]]) -> str:
    names = {d["device_id"]: d["name"] for d in listed}
    lines = []
    for d in listed:
        mark = "*" if d["this_device"] else " "
        stamp = d["added_at"]
        if d["revoked"]:
            by = d.get("revoked_by")
            state = f"revoked by {names.get(by, by[:8])}" if by else "revoked"
            stamp = d.get("revoked_at") or stamp  # when it was revoked, not when it was added
        elif d["founder"]:
            state = "founder"
        else:
            state = f"added by {names.get(d['added_by'], d['added_by'][:8])}"
        lines.append(f"{mark} {d['display_id']}  {d['name']:<16}  {state:<22}  {when(stamp)}")
    return "\n".join(lines)


async def devices_command(home: Home) -> tuple[list[dict[str, Any]], str]:
    from peer.members import devices

    async with await home.open_store() as store:
        listed = await devices(store)
    return listed, devices_text(listed)


async def revoke_command(home: Home, device: str) -> tuple[dict[str, Any], str]:
    from peer.members import revoke
    from protocol import format_device_id

    async with await home.open_store() as store:
        result = await revoke(store, device)
    human = (
        f"revoked {format_device_id(result['device_id'])} ({result['name']}); the group key moved to epoch"
        f" {result['epoch']}. Other devices learn of it at their next sync."
    )
    return result, human

"""``peer invite``, ``join``, ``devices`` and ``revoke``: the group's membership.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._app import address_option, cli, common_options, home_arg, run, ttl_option
from ._output import print_result, warn

if TYPE_CHECKING:
    from peer.home import Home
    from peer.members import MemberList, RevokeResult
    from peer.pairing import InviteResult, JoinResult


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
    result = run(lambda: invite_command(home, ttl=ttl, address=address, file=file, name=name))
    if file is None:
        warning = agent_reachability_warning(home)
        if warning:
            warn(warning)
    print_result(result)


def agent_reachability_warning(home: Home) -> str | None:
    """Why a network invite cannot work as things stand here: no agent, or one other machines cannot reach."""
    import ipaddress

    from peer.sync import read_status

    status = read_status(home)
    if status is None:
        return (
            "no agent is running on this device now: the code works only while `peer agent` runs here,"
            " so start it before the other device joins"
        )
    host = str(status.get("listen", "")).rpartition(":")[0].strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return (
            f"the agent listens on {status.get('listen')} (loopback only), which no other machine can reach:"
            " restart it with `peer agent --listen 0.0.0.0:7847` (or [agent] listen) to pair another machine"
        )
    return None


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
    print_result(run(lambda: join_command(home, "".join(code), host=host, name=name, file=file)))


@cli.command()
@common_options
def devices() -> None:
    """List the devices of this group (* marks this one)."""
    from peer.home import Home

    home = Home.locate(home_arg())
    print_result(run(lambda: devices_command(home)))


@cli.command()
@click.argument("device")
@common_options
def revoke(device: str) -> None:
    """Remove DEVICE (its name or a unique prefix of its id) from the group; it gets no new keys."""
    from peer.home import Home

    home = Home.locate(home_arg())
    print_result(run(lambda: revoke_command(home, device)))


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
) -> InviteResult:
    """``peer invite``: a code for the network join, or with ``file`` an air-gapped invite file."""
    from peer.pairing import DEFAULT_TTL_S, make_invite, make_invite_file, parse_ttl

    ttl_s = DEFAULT_TTL_S if ttl is None else parse_ttl(ttl)
    async with await home.open_store() as store:
        if file is not None:
            return await make_invite_file(store, home.identity(), file, name=name or "new device", ttl_s=ttl_s)
        return await make_invite(
            home, store, ttl_s=ttl_s, address=default_address(home) if address is None else address
        )


async def join_command(
    home: Home,
    code: str,
    *,
    host: str | None = None,
    name: str | None = None,
    file: str | None = None,
) -> JoinResult:
    import socket

    from peer.pairing import join, join_from_file

    if file is not None:
        return await join_from_file(home, code, Path(file))
    return await join(home, code, host=host, name=name or socket.gethostname())


async def devices_command(home: Home) -> MemberList:
    from peer.members import devices

    async with await home.open_store() as store:
        return await devices(store)


async def revoke_command(home: Home, device: str) -> RevokeResult:
    from peer.members import revoke

    async with await home.open_store() as store:
        return await revoke(store, device)

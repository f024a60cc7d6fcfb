"""``peer sync``, ``peer agent`` and ``peer status``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from peer.home import Home

from ._app import ask_agent, cli, common_options, home_arg, json_mode, run, with_device
from ._input import Interrupted, interrupted
from ._output import print_result, sync_progress, warn


@cli.command()
@click.argument("address", metavar="HOST[:PORT]")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help="How long HOST may take to answer, and to stay silent mid-sync (default 15 and 60).")
@common_options
def sync(address: str, timeout: float | None) -> None:
    """Sync with another device of the group over SSH, once, both ways (default port 7847)."""
    from peer.sync import parse_address

    host, port = parse_address(address)
    limits: dict[str, float] = {} if timeout is None else {"connect_timeout": timeout, "read_timeout": timeout}
    update, close = sync_progress()
    try:
        summary = with_device(lambda device: device.sync_with(host, port, progress=update, **limits))
    except BaseException as e:
        if interrupted(e):
            # Versions are applied in committed batches: what arrived stays.
            raise Interrupted(
                f"interrupted: the versions received so far are kept; run `peer sync {address}` again for the rest"
            ) from None
        raise
    finally:
        close()
    for warning in summary.warnings:
        warn(warning)
    print_result(summary)


@cli.command()
@click.option("--listen", metavar="ADDR:PORT", default=None,
              help="Where to accept SSH connections (default 0.0.0.0:7847, or [agent] listen; port 0 picks a free one).")
@click.option("--interface", "interfaces", multiple=True, metavar="IP",
              help="Advertise and browse mDNS on this address only (repeat for more; default: every non-loopback one).")
@click.option("--peer", "peers", multiple=True, metavar="HOST[:PORT]",
              help="Also keep this device in sync, mDNS or not (repeat for more; adds to [agent] peers).")
@click.option("--no-discovery", is_flag=True, help="Do not look for the group's devices on the LAN (mDNS).")
@click.option("--systemd-unit", is_flag=True,
              help="Print a systemd user unit that runs this agent at login, and exit (see the README).")
@click.option("-v", "--verbose", is_flag=True, help="Log every attempt and every session, not only those that move data.")
@common_options
def agent(
    listen: str | None,
    interfaces: tuple[str, ...],
    peers: tuple[str, ...],
    no_discovery: bool,
    systemd_unit: bool,
    verbose: bool,
) -> None:
    """Run this device's agent until Ctrl-C: find the group's devices on the LAN and keep them in sync.

    Settings come from config.toml in the home directory ([agent]); these options override it.
    """
    import ipaddress
    import logging

    from peer.agent import run_until_signalled
    from peer.config import load_config
    from peer.home import Home
    from peer.sync import parse_address

    home = Home.locate(home_arg())
    if systemd_unit:
        click.echo(systemd_unit_text(home, sys.argv[0], [*(f"--interface={i}" for i in interfaces),
                                                        *(f"--peer={p}" for p in peers),
                                                        *([f"--listen={listen}"] if listen else []),
                                                        *(["--no-discovery"] if no_discovery else [])]), nl=False)
        return
    settings = load_config(home.config_path)
    config = settings.agent
    host, port = parse_address(listen or config.listen)
    for address in interfaces:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise click.BadParameter(f"{address!r} is not an IP address", param_hint="--interface") from None
    for address in peers:
        parse_address(address)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("asyncssh", "zeroconf"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if verbose:
        logging.getLogger("peer").setLevel(logging.DEBUG)

    def listening(bound_host: str, bound_port: int, device_id: str) -> None:
        # The first line on stdout, so that scripts (and tests) learn the port.
        if json_mode():
            click.echo(json.dumps({"listening": f"{bound_host}:{bound_port}", "host": bound_host,
                                   "port": bound_port, "device_id": device_id}))
        else:
            click.echo(f"listening on {bound_host}:{bound_port}")
        sys.stdout.flush()

    run(lambda: run_until_signalled(
        home,
        host=host,
        port=port,
        config=config,
        backup=settings.backup,
        interfaces=interfaces or None,
        discovery=False if no_discovery else None,
        peers=[*config.peers, *peers],
        listening=listening,
    ))


@cli.command()
@common_options
def status() -> None:
    """The agent and the group's devices: addresses, last sync and its result, what each lacks."""
    from peer.answers import Rendered

    answer = ask_agent("status_report", {}, lost="rerun")
    if answer is not None:
        print_result(Rendered.from_wire(answer))
        return
    from peer.home import Home
    from peer.warm import status as status_of

    print_result(run(lambda: status_of(Home.locate(home_arg()))))


def systemd_unit_text(home: Home, executable: str, options: Sequence[str] = ()) -> str:
    """A systemd *user* unit running this agent at login, restarted if it fails."""
    import shlex

    program = Path(executable).resolve()
    command = shlex.join([str(program), "agent", f"--home={home.path.resolve()}", *options])
    return f"""[Unit]
Description=peer agent: keeps this device's memories in sync with the group's other devices
# No After=network-online.target: a user unit cannot order itself after a system target.
# The agent needs no network to start; it finds the other devices whenever the network comes up.

[Service]
Type=simple
ExecStart={command}
Restart=on-failure
RestartSec=5
# SIGTERM stops it cleanly: running sessions end, nothing committed is lost.
KillSignal=SIGTERM
TimeoutStopSec=15

[Install]
WantedBy=default.target
"""

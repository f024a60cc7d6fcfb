"""The CLI's shared API: the command group, options every command takes, running a command.

Command modules import these public names; nothing here prints except
through :mod:`._output`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

import click

from protocol import PeerError

if TYPE_CHECKING:
    from peer.device import Device


T = TypeVar("T")


_HOME_KEY = "peer.home"


_JSON_KEY = "peer.json"


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    # Values are kept in ctx.meta, which the group's context and the
    # command's share; the command's callback runs last, so it wins, but
    # only when the option was actually given there.
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if key == _HOME_KEY and isinstance(value, str) and not value.strip():
            # An empty --home (often an unset shell variable) must not quietly mean the default home.
            raise click.BadParameter("is empty: give a directory, or leave --home out to use the default home")
        if value not in (None, False):
            ctx.meta[key] = value
        return value

    return callback


F = TypeVar("F", bound=Callable[..., Any])


def common_options(f: F) -> F:
    f = click.option(
        "--json",
        "json_output",
        is_flag=True,
        default=False,
        expose_value=False,
        callback=_remember(_JSON_KEY),
        help="Print machine-readable JSON on stdout.",
    )(f)
    f = click.option(
        "--home",
        metavar="DIR",
        default=None,
        expose_value=False,
        callback=_remember(_HOME_KEY),
        help="The device's home directory (default: $PEER_HOME, else the platform's user data dir).",
    )(f)
    return f


def json_mode() -> bool:
    return bool(click.get_current_context().meta.get(_JSON_KEY, False))


def home_arg() -> str | None:
    value = click.get_current_context().meta.get(_HOME_KEY)
    return None if value is None else str(value)


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run one command's async body under trio with the asyncio bridge the store needs."""
    import trio
    import trio_asyncio

    async def body() -> T:
        async with trio_asyncio.open_loop():
            return await fn()

    return trio.run(body)


def with_device(fn: Callable[[Device], Awaitable[T]]) -> T:
    from peer.device import Device
    from peer.home import Home

    home = Home.locate(home_arg())

    async def body() -> T:
        device = await Device.open(home)
        try:
            return await fn(device)
        finally:
            await device.close()

    return run(body)


#: Set (to anything) to run every command in process even when an agent runs (benchmarks compare both ways).
NO_AGENT_ENV = "PEER_NO_AGENT"


def ask_agent(method: str, params: dict[str, Any], *, lost: Literal["rerun", "fail"]) -> Any:
    """The running agent's answer to ``method`` (see :mod:`peer.agent_client`), or None: run it in process.

    An error the agent answers is this command's error (the same ``error:``
    line as in process). When the agent goes away mid-request, ``lost``
    says what the command does: ``"rerun"`` it in process (a read, or an add
    that carries its own id), or ``"fail"`` with one line saying what to check.
    """
    if os.environ.get(NO_AGENT_ENV):
        return None
    from peer.agent_client import AgentLost, AgentRefused, NoAgent, home_directory
    from peer.agent_client import ask_agent as ask

    try:
        return ask(home_directory(home_arg()), method, params)
    except KeyboardInterrupt:
        from ._input import Interrupted

        # As in process (where trio hands main() the interrupt): the agent cancels the request when the
        # connection closes, so nothing more is done. click would print "error: interrupted" instead.
        raise Interrupted("interrupted: nothing more was done") from None
    except NoAgent as e:
        if e.warning:
            click.echo(f"warning: {e.reason}", err=True)
        return None
    except AgentRefused as e:
        raise PeerError(e.message) from None
    except AgentLost as e:
        if lost == "fail":
            raise PeerError(f"{e}, so this change may or may not have been made: check with `peer show ID`,"
                            " then run the command again if it is missing") from None
        click.echo(f"warning: {e}; the command ran without the agent", err=True)
        return None


def parse_meta(items: Sequence[str]) -> dict[str, Any]:
    """``K=V`` pairs as metadata; V is typed when it reads as a JSON number, boolean or null."""
    metadata: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="'--meta'")
        value: Any = raw
        if raw in ("true", "false", "null") or re.fullmatch(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?", raw):
            value = json.loads(raw)
        metadata[key] = value
    return metadata


def parse_since(text: str, *, now: float | None = None) -> float:
    """``--since``: a duration back from now (``90m``, ``12h``, ``7d``, ``2w``, ``1d12h``) or an ISO date/time."""
    from peer.units import parse_since as parse

    try:
        return parse(text, now=now)
    except PeerError as e:
        raise click.BadParameter(e.message, param_hint="'--since'") from None


def check_kind(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    value = value.lower()  # kinds are lowercase words; `--kind FACT` means fact, not an error
    from protocol import valid_kind  # here, not at the top: it loads the records module (start-up time)

    if not valid_kind(value):
        raise click.BadParameter(f"{value!r} is not a kind: use a short lowercase word such as fact, procedure, note")
    return value


def meta_option(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, Any]:
    return parse_meta(value)


def since_option(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    return None if value is None else parse_since(value)


kind_option = click.option("--kind", callback=check_kind, help="fact, decision, procedure, error, preference, ...")


project_option = click.option("--project", help="Project the memory belongs to.")


#: Which module of this package registers each command. A command's module is
#: imported when the command is looked up, not at start-up: `peer search`
#: does not pay for backup's, relay's or interop's imports (assistants start
#: `peer` once per call). tests/peer/cli/test_lazy_commands.py keeps the
#: table true to what the modules register.
COMMAND_MODULES: Final[dict[str, str]] = {
    **dict.fromkeys(["add", "edit", "forget", "init", "list", "search", "show"], "peer.cli.memories"),
    **dict.fromkeys(["agent", "status", "sync"], "peer.cli.sync"),
    **dict.fromkeys(["context", "mcp"], "peer.cli.mcp"),
    **dict.fromkeys(["devices", "invite", "join", "revoke"], "peer.cli.group"),
    **dict.fromkeys(["doctor", "reindex", "stats"], "peer.cli.health"),
    **dict.fromkeys(["export", "import"], "peer.cli.interop"),
    **dict.fromkeys(["conflicts", "resolve"], "peer.cli.conflicts"),
    **dict.fromkeys(["consolidate", "merge", "unmerge"], "peer.cli.consolidate"),
    "backup": "peer.cli.backup",
    "bundle": "peer.cli.bundle",
    "relay": "peer.cli.relay",
}


class _Group(click.Group):
    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if cmd_name not in self.commands and module is not None:
            import importlib

            importlib.import_module(module)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMAND_MODULES))

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_paragraph()
        formatter.write_text("Run `peer COMMAND --help` for a command's options. Docs: docs/cli.md")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@common_options
@click.version_option(package_name="peer-memory", prog_name="peer")
def cli() -> None:
    """peer: a local-first memory store for AI assistants, synced between your devices."""


def ttl_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from peer.pairing import parse_ttl

    if value is not None:
        try:
            parse_ttl(value)
        except PeerError as e:
            raise click.BadParameter(e.message) from None
    return value


def address_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from peer.sync import parse_address

    if value is not None:
        try:
            parse_address(value)
        except PeerError as e:
            raise click.BadParameter(e.message) from None
    return value


def peer_error_in(exc: BaseException) -> PeerError | None:
    """The PeerError behind ``exc``, looking through exception groups with only PeerErrors in them."""
    if isinstance(exc, PeerError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [peer_error_in(e) for e in exc.exceptions]
        if found and all(f is not None for f in found):
            return found[0]
    return None

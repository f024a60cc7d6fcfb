"""``peer mcp`` and ``peer context``: the commands assistants' hosts run (see docs/mcp.md).

``peer mcp`` must keep stdout for protocol bytes: it never
prints there itself except for ``--print-config``.
"""

from __future__ import annotations

import os

import click

from ._app import ask_agent, cli, common_options, home_arg, json_mode, run
from ._output import print_json

__all__ = ["mcp", "context"]


@cli.command()
@click.option("--project", default=None, help="Default project for remember and search (default: the client's workspace).")
@click.option(
    "--print-config",
    "print_config",
    type=click.Choice(["claude-code", "claude-desktop", "cursor", "vscode"]),
    default=None,
    help="Print the snippet that registers this server with a host, and exit.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log each start-up step on stderr.")
@common_options
def mcp(project: str | None, print_config: str | None, verbose: bool) -> None:
    """Serve this device's memories to an assistant over MCP (stdio); see docs/mcp.md."""
    from peer.home import Home

    home = Home.locate(home_arg())
    if print_config is not None:
        from peer.mcp.hosts import host_config

        config = host_config(print_config, home.path, project)
        if json_mode():
            print_json(config.to_json())
        else:
            click.echo(config.text)
            click.echo(f"# {config.where}", err=True)
        return
    from peer.mcp import serve_stdio

    run(lambda: serve_stdio(home, project=project, verbose=verbose))


@cli.command()
@click.option("--project", default=None, help="The project (default: the current directory's git repository).")
@click.option("--all-projects", is_flag=True, help="Every project, not only the current one.")
@click.option("--limit", "tokens", type=click.IntRange(200, 20000), default=2000, show_default=True,
              help="At most this many tokens (estimated).")
@common_options
def context(project: str | None, all_projects: bool, tokens: int) -> None:
    """Print what an assistant should know when a session starts here (a SessionStart hook)."""
    from peer.answers import Rendered

    cwd = os.getcwd()
    answer = ask_agent("context", {"project": project, "all_projects": all_projects, "cwd": cwd, "tokens": tokens},
                       lost="rerun")
    if answer is not None:
        block = Rendered.from_wire(answer)
    else:
        from peer.home import Home
        from peer.warm import context as context_of

        home = Home.locate(home_arg())
        block = run(lambda: context_of(home, project=project, all_projects=all_projects, cwd=cwd, tokens=tokens))
    if json_mode():
        print_json(block.to_json())
    else:
        click.echo(block.describe())

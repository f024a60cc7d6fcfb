"""The ``peer`` command line.

Every command accepts ``--home DIR`` and ``--json`` both before the command
name (``peer --home H --json search Q``) and after it (``peer search Q
--home H --json``); a value given after the command wins.

Errors: :func:`main` is the one place that turns a :class:`PeerError` into a
single ``error: ...`` line on stderr and exit status 1; usage mistakes exit
with 2 and a one-line message. Anything else is a bug and keeps its
traceback.

One module per command group registers its commands on :data:`cli` when it
is imported, which happens when one of its commands is looked up
(``_app.COMMAND_MODULES``); :mod:`._app` (options, running a command) and
:mod:`._output` (printing, progress bars) are the API they share. This
package is the only place with click and rich, and the only one that turns
results into text.

Start-up time matters (assistants call ``peer`` once per tool call), so these
modules import only click and the standard library at the top; the store,
trio, the model and rich are imported by the commands that use them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from ._app import cli, parse_meta, parse_since, peer_error_in
from ._input import Interrupted, check_argv, interrupted

__all__ = ["cli", "main", "parse_meta", "parse_since"]


def _fail(message: str, code: int) -> NoReturn:
    # One line, whatever the message holds.
    click.echo("error: " + " ".join(message.split()), err=True)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``peer`` console script: the one place that turns errors into ``error:`` lines."""
    try:
        check_argv(sys.argv[1:] if argv is None else argv)
        code = cli.main(args=argv, prog_name="peer", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:
        # Bare `peer` (or a group without a command): the help, not an error.
        click.echo(e.format_message())
        sys.exit(0)
    except click.UsageError as e:
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        _fail(e.format_message() + hint, e.exit_code)
    except click.ClickException as e:
        _fail(e.format_message(), e.exit_code)
    except click.Abort:
        _fail("interrupted", 130)
    except Interrupted as e:
        # Ctrl-C is the user's choice, not a failure: no `error:` prefix.
        click.echo(" ".join(e.message.split()), err=True)
        sys.exit(e.exit_code)
    except BrokenPipeError:
        # The reader went away (`peer list | head`): not an error of ours.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        finally:
            sys.exit(0)
    except BaseException as e:
        if interrupted(e):
            click.echo("interrupted: nothing more was done", err=True)
            sys.exit(Interrupted.exit_code)
        error = peer_error_in(e)
        if error is None:
            raise
        _fail(error.message, 1)
    sys.exit(code if isinstance(code, int) else 0)

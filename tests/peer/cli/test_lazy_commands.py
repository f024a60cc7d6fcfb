"""The command table the CLI uses to import a command's module only when it runs."""

from __future__ import annotations

import json
import subprocess
import sys

from peer.cli._app import COMMAND_MODULES, cli


def test_the_table_names_every_command_and_the_module_that_registers_it() -> None:
    registered: dict[str, str] = {}
    for module in sorted(set(COMMAND_MODULES.values())):
        __import__(module)
    for name, command in cli.commands.items():
        assert command.callback is not None
        registered[name] = command.callback.__module__
    assert registered == COMMAND_MODULES


def test_a_command_imports_its_own_module_only() -> None:
    probe = (
        "import json, sys\n"
        "from peer.cli import cli\n"
        "assert cli.get_command(None, 'search') is not None\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('peer.cli.'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    assert "peer.cli.memories" in loaded
    assert not loaded & {"peer.cli.backup", "peer.cli.relay", "peer.cli.interop", "peer.cli.bundle"}


def test_help_still_lists_every_command() -> None:
    done = subprocess.run([sys.executable, "-m", "peer", "--help"], capture_output=True, text=True, check=True)
    listed = {line.split()[0] for line in done.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert set(COMMAND_MODULES) <= listed

"""``peer mcp --print-config HOST``: the exact snippet each MCP host wants, with absolute paths.

Hosts start stdio servers with a minimal environment and an unknown
working directory, so the command is this ``peer`` by absolute path and
the home is passed with ``--home`` (never left to ``$PEER_HOME``).
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = ["HOSTS", "HostConfig", "host_config", "peer_command"]

HOSTS: Final = ("claude-code", "claude-desktop", "cursor", "vscode")

_WHERE: Final = {
    "claude-code": "run it in a shell (add --scope project to share it through .mcp.json)",
    "claude-desktop": "merge into claude_desktop_config.json (macOS: ~/Library/Application Support/Claude/,"
    " Windows: %APPDATA%\\Claude\\, Linux: ~/.config/Claude/), then quit and restart Claude Desktop",
    "cursor": "merge into ~/.cursor/mcp.json (every project) or .cursor/mcp.json (this project)",
    "vscode": "merge into .vscode/mcp.json in the workspace (or the user settings' mcp section)",
}


def peer_command() -> list[str]:
    """How to start this very ``peer``: its console script by absolute path, else ``python -m peer``."""
    script = Path(sys.argv[0])
    if script.name == "peer" and script.exists():
        return [str(script.resolve())]
    found = shutil.which("peer")
    if found and Path(found).resolve().parent == Path(sys.executable).resolve().parent:
        return [str(Path(found).resolve())]
    return [str(Path(sys.executable).resolve()), "-m", "peer"]


@dataclass(frozen=True, slots=True)
class HostConfig:
    host: str
    text: str  # what to paste or run
    where: str  # where it goes

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "config": self.text, "where": self.where}


def host_config(host: str, home: Path, project: str | None = None) -> HostConfig:
    command, *prefix = peer_command()
    args = [*prefix, "--home", str(home.resolve()), "mcp", *(["--project", project] if project else [])]
    if host == "claude-code":
        text = shlex.join(["claude", "mcp", "add", "--transport", "stdio", "--scope", "user", "peer", "--", command, *args])
    elif host in ("claude-desktop", "cursor"):
        text = json.dumps({"mcpServers": {"peer": {"command": command, "args": args}}}, indent=2)
    elif host == "vscode":
        text = json.dumps({"servers": {"peer": {"type": "stdio", "command": command, "args": args}}}, indent=2)
    else:
        raise ValueError(host)
    return HostConfig(host, text, _WHERE[host])

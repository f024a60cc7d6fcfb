"""Which project a call is about, without the assistant typing it.

The order: a ``project`` given in the call; else ``peer mcp --project P``;
else the client's workspace (its first MCP root that is a local folder);
else the git repository of the server's working directory (hosts often
start stdio servers in the workspace, but sometimes in the home directory,
so a plain folder there names nothing). A folder names its project by its
git repository: the name of the directory that holds ``.git`` (a file, for
worktrees and submodules, or a directory); a workspace root outside any
repository is named by itself. The home directory and ``/``
name no project: memories made there stay unscoped.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

__all__ = ["project_of", "project_of_uri"]


def project_of(folder: Path, *, git_only: bool = False) -> str | None:
    """The project a folder belongs to: its git repository's name, else (unless ``git_only``) its own name."""
    try:
        folder = folder.resolve()
    except OSError:
        return None
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate.name or None
    if git_only or folder == Path(folder.anchor) or folder == Path.home():
        return None
    return folder.name or None


def project_of_uri(uri: str) -> str | None:
    """The project of a ``file://`` root; None for any other kind of root."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    path = Path(unquote(parsed.path))
    if os.name == "nt" and path.as_posix().startswith("/") and ":" in path.as_posix()[:4]:
        path = Path(path.as_posix()[1:])  # file:///C:/x
    return project_of(path)

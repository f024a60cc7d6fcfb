"""``peer mcp``: the MCP server assistants use (see docs/mcp.md).

:mod:`.server` runs the process, :mod:`.tools` declares the tools and reads
their arguments, :mod:`.service` does the work on a warm device,
:mod:`.scope` finds the current project, :mod:`.hosts` prints host
configurations and :mod:`.context` the session-start block.
"""

from .server import serve_stdio

__all__ = ["serve_stdio"]

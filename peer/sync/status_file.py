"""The running agent's status file (``agent.json`` in the home): written by the agent, read by commands.

The agent rewrites it whole (atomically) whenever its view changes; a reader
that finds it names a live process only if that process still exists, so an
agent killed without a word is not reported as running.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Final

from peer.files import write_atomic
from peer.home import Home
from protocol import StoreError

__all__ = ["STATUS_FILE", "read_status", "write_status"]

log = logging.getLogger(__name__)

#: The agent's status, for ``peer status``: in the home directory.
STATUS_FILE: Final = "agent.json"


def write_status(home: Home, status: dict[str, Any]) -> None:
    """Replace the status file; a failure (a full disk) is logged, never fatal to the agent."""
    path = home.path / STATUS_FILE
    try:
        write_atomic(path, json.dumps(status, indent=1).encode("utf-8"), mode=0o644)
    except StoreError as e:
        log.debug("could not write %s: %s", path, e)


def read_status(home: Home) -> dict[str, Any] | None:
    """The running agent's last status, or None when no agent is running on this home."""
    path = home.path / STATUS_FILE
    try:
        status: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        pid = int(status["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not status.get("running"):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # it died without saying so (SIGKILL)
    except PermissionError:
        pass
    return status

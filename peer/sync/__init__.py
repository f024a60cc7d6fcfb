"""Moving sealed versions between devices that meet: the session driver, addresses,
discovery on the LAN, the agent's status file and the ``peer status`` report.

Importing this face loads neither asyncssh nor zeroconf: the driver imports the
SSH transport where it connects or serves, and discovery is imported by the
agent from :mod:`peer.sync.discovery`.
"""

from .address import DEFAULT_LISTEN, WILDCARDS, parse_address
from .agent_lock import AGENT_LOCK_FILE, AgentLock
from .driver import (
    BUSY_ATTEMPTS,
    AfterSync,
    ProgressCallback,
    Syncer,
    SyncProgress,
    SyncSummary,
    sync_over,
)
from .status_file import STATUS_FILE, read_status, write_status

__all__ = [
    "AGENT_LOCK_FILE",
    "AgentLock",
    "BUSY_ATTEMPTS",
    "DEFAULT_LISTEN",
    "STATUS_FILE",
    "WILDCARDS",
    "AfterSync",
    "ProgressCallback",
    "SyncProgress",
    "SyncSummary",
    "Syncer",
    "parse_address",
    "read_status",
    "sync_over",
    "write_status",
]

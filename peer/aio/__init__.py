"""The asyncio adapters: the only package of peer that touches asyncio.

aiosqlite, asyncssh and zeroconf are asyncio libraries; the rest of peer is
trio. Each bridge is a module of its own: :mod:`peer.aio.sqlite` (the store's
database), :mod:`peer.aio.ssh` (the SSH transport) and :mod:`peer.aio.mdns`
(discovery). :mod:`peer.aio.transport` holds the transport's constants and
types without importing asyncssh, so commands that never open a connection do
not pay for loading it; callers import :mod:`peer.aio.ssh` where they connect.
"""

from .sqlite import Database, Row, translate_sqlite_error
from .transport import (
    CONNECT_TIMEOUT_S,
    DEFAULT_PORT,
    JOIN_SUBSYSTEM,
    JOIN_USER,
    LOGIN_TIMEOUT_S,
    READ_TIMEOUT_S,
    SYNC_SUBSYSTEM,
    SYNC_USER,
    Authorize,
    ByteStream,
    Explain,
    StreamHandler,
    Transport,
)

__all__ = [
    "Authorize",
    "ByteStream",
    "Explain",
    "CONNECT_TIMEOUT_S",
    "DEFAULT_PORT",
    "Database",
    "JOIN_SUBSYSTEM",
    "JOIN_USER",
    "LOGIN_TIMEOUT_S",
    "READ_TIMEOUT_S",
    "Row",
    "StreamHandler",
    "SYNC_SUBSYSTEM",
    "SYNC_USER",
    "Transport",
    "ssh_transport",
    "translate_sqlite_error",
]


def ssh_transport() -> Transport:
    """The SSH transport (asyncssh is loaded on this first call, not at import)."""
    from . import ssh

    return ssh

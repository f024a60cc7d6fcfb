"""What the transport offers the trio side, without importing asyncssh.

The constants and the stream types that sync, pairing and the agent need
live here so that importing them does not load asyncssh (a good part of a
short command's start-up); :mod:`peer.aio.ssh` implements them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import trio
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "Authorize",
    "Explain",
    "Transport",
    "ByteStream",
    "CONNECT_TIMEOUT_S",
    "DEFAULT_PORT",
    "JOIN_SUBSYSTEM",
    "JOIN_USER",
    "LOGIN_TIMEOUT_S",
    "READ_TIMEOUT_S",
    "StreamHandler",
    "SYNC_SUBSYSTEM",
    "SYNC_USER",
]

DEFAULT_PORT = 7847
SYNC_SUBSYSTEM = "peer-sync@peer"
JOIN_SUBSYSTEM = "peer-join@peer"
#: Members log in as this user; the name carries no meaning beyond that.
SYNC_USER = "peer"
#: Devices that are not members yet log in as this user, for the join subsystem only.
JOIN_USER = "peer-join"

#: TCP connect, key exchange and authentication together.
CONNECT_TIMEOUT_S = 15.0
#: How long the server gives a client to authenticate.
LOGIN_TIMEOUT_S = 15.0
#: The longest silence tolerated while waiting for the other side's bytes.
READ_TIMEOUT_S = 60.0


class ByteStream(Protocol):
    """One authenticated, ordered, bidirectional byte stream to another device."""

    @property
    def peer_device_id(self) -> str:
        """The device id of the key the other side authenticated with."""
        ...

    async def send_all(self, data: bytes) -> None: ...

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        """Some bytes (at most ``max_bytes``), or ``b""`` once the other side closed its end."""
        ...

    async def send_eof(self) -> None:
        """Tell the other side this one will send nothing more (it reads ``b""``); receiving goes on."""
        ...

    async def aclose(self) -> None: ...


#: The trio function that serves one channel; the stream is closed after it returns.
StreamHandler = Callable[[ByteStream], Awaitable[None]]
#: Whether a device (by id) may connect now; a trio function.
Authorize = Callable[[str], Awaitable[bool]]
#: Why a refused device is refused, told to it before the refusal (e.g. "it was revoked by ..."); None: nothing.
Explain = Callable[[str], Awaitable["str | None"]]


class Transport(Protocol):
    """How devices reach each other: :mod:`peer.aio.ssh` in use, a fake in unit tests.

    ``connect`` opens one subsystem channel to a device; ``serve`` listens
    until cancelled and calls ``task_status.started(port)`` once it accepts.
    """

    async def connect(
        self,
        host: str,
        port: int,
        signing_key: Ed25519PrivateKey,
        *,
        trust_host: Callable[[str], bool],
        subsystem: str = ...,
        connect_timeout: float = ...,
        read_timeout: float = ...,
    ) -> ByteStream: ...

    async def serve(
        self,
        signing_key: Ed25519PrivateKey,
        *,
        host: str,
        port: int,
        authorize: Authorize,
        handlers: Mapping[str, StreamHandler],
        explain: Explain | None = ...,
        login_timeout: float = ...,
        read_timeout: float = ...,
        task_status: trio.TaskStatus[int] = ...,
    ) -> None: ...

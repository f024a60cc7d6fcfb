"""The SSH transport: asyncssh server and client, bridged to trio (see peer.aio)."""

from __future__ import annotations

# =============================================================================
# SSH transport (asyncssh)
# =============================================================================
#
# Theory of operation. Every device runs an SSH server whose host key is its
# device key, and connects to others with the same key as its client key.
# Trust is decided here, from device ids alone: the server accepts a client
# key only when the trio side's ``authorize`` says its device is a current
# member (asked at connection time, so a revocation takes effect on the next
# connection), except on the username ``peer-join``, where any key may
# authenticate but only the join subsystem is served; the client accepts a
# host key only when ``trust_host`` says so. Nothing else of SSH is offered:
# no shell, no exec, no forwarding, no agent, no ~/.ssh files.
#
# A session is one channel running a named subsystem with raw bytes
# (encoding=None). The trio side sees it as a :class:`ByteStream`; the
# server calls back into trio through ``trio_as_aio`` for each channel.
#
# Strangers (anyone who can reach the port) must not be able to stop or
# exhaust the agent. Connections that have not proved membership (not yet
# logged in, or logged in as ``peer-join``) are *unproven*; at most
# :data:`MAX_UNPROVEN` of them are kept: a new one beyond that closes the
# oldest unproven one that never even sent an SSH version line, else the
# oldest, so an idle flood cannot hold the door shut for a member that
# connects during it (a member's connection speaks SSH at once and logs in
# within milliseconds). A ``peer-join`` login may open one channel and lives
# :data:`JOIN_LOGIN_S` at most. If descriptors or memory still run out, asyncio
# reports it from ``accept()``; under trio-asyncio such a report would be
# raised into the agent's nursery and stop it, so the listener installs a loop
# exception handler that logs it, closes unproven connections and lets
# asyncio pause accepting for a moment, while members' sessions go on.
import asyncio
import errno
import logging
import resource
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import asyncssh
import trio
import trio_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from protocol import (
    PeerError,
    TransportError,
    TrustError,
    device_id_for,
    format_device_id,
)

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
)

__all__ = [
    "ByteStream",
    "StreamHandler",
    "Authorize",
    "serve",
    "connect",
    "SYNC_SUBSYSTEM",
    "JOIN_SUBSYSTEM",
    "SYNC_USER",
    "JOIN_USER",
    "DEFAULT_PORT",
    "CONNECT_TIMEOUT_S",
    "READ_TIMEOUT_S",
    "LOGIN_TIMEOUT_S",
]

log = logging.getLogger(__name__)

#: SSH keepalives notice a vanished peer even while this side only writes.
KEEPALIVE_INTERVAL_S = 15.0
KEEPALIVE_COUNT_MAX = 3
#: The most a channel's data packet may carry, which each side advertises for what it receives (SSH's usual
#: 32 kiB makes a first sync's 20 MB about 640 packets, each a decryption call, callbacks and a wake-up of
#: the reading task; a peer that advertises less is sent less).
CHANNEL_PACKET_BYTES = 256 << 10
#: What a close may take before the connection is dropped instead.
CLOSE_TIMEOUT_S = 3.0
#: Connections that have not proved membership (logging in, or logged in as ``peer-join``) kept at once.
MAX_UNPROVEN = 64
#: How long a ``peer-join`` login may last: one join exchange takes a round trip.
JOIN_LOGIN_S = 30.0
#: Join channels one ``peer-join`` login may open (a join needs one).
JOIN_CHANNELS_PER_LOGIN = 1
#: Resource warnings are logged at most this often.
_WARN_EVERY_S = 10.0
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ED25519 = b"ssh-ed25519"
#: The longest refusal explanation sent to (or read from) the other side.
MAX_BANNER = 512


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text.strip())


def _device_of_key(key: asyncssh.SSHKey) -> str | None:
    """The device id of an SSH Ed25519 public key, None for any other kind of key."""
    data = bytes(key.public_data)
    try:
        n = int.from_bytes(data[:4], "big")
        algorithm = data[4 : 4 + n]
        m = int.from_bytes(data[4 + n : 8 + n], "big")
        raw = data[8 + n : 8 + n + m]
    except (IndexError, ValueError):
        return None
    if algorithm != _ED25519 or len(raw) != 32 or 8 + n + m != len(data):
        return None
    return device_id_for(raw)


def _ssh_key(signing_key: Ed25519PrivateKey) -> asyncssh.SSHKey:
    pem = signing_key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
    return asyncssh.import_private_key(pem)


def _no_known_hosts(host: str, addr: str, port: int | None) -> tuple[list[str], list[str], list[str]]:
    # A callable (not None, not empty) so that asyncssh neither skips host
    # key checks nor reads ~/.ssh/known_hosts: every key goes to
    # validate_host_public_key.
    return [], [], []


class _SSHStream:
    """A :class:`ByteStream` over one asyncssh channel's reader and writer."""

    def __init__(
        self,
        reader: asyncssh.SSHReader[bytes],
        writer: asyncssh.SSHWriter[bytes],
        peer_device_id: str,
        where: str,
        read_timeout: float,
        conn: asyncssh.SSHClientConnection | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._peer_device_id = peer_device_id
        self._where = where
        self._read_timeout = read_timeout
        self._conn = conn  # owned by the client side: closed with the stream
        self._closed = False

    @property
    def peer_device_id(self) -> str:
        return self._peer_device_id

    def _lost(self, e: BaseException) -> TransportError:
        # An exception is always true: its text may still be empty (asyncssh's ConnectionLost often is).
        why = str(e) or type(e).__name__
        return TransportError(
            f"the connection to device {format_device_id(self._peer_device_id)} ({self._where}) was lost: {why}"
        )

    async def send_all(self, data: bytes) -> None:
        if self._closed:
            raise TransportError(f"the connection to {self._where} is closed")
        writer = self._writer

        async def write() -> None:
            writer.write(data)
            await writer.drain()

        try:
            with trio.fail_after(self._read_timeout):
                await trio_asyncio.aio_as_trio(write)()
        except trio.TooSlowError as e:
            raise TransportError(
                f"device {format_device_id(self._peer_device_id)} ({self._where}) stopped reading:"
                f" nothing acknowledged for {self._read_timeout:g} s; giving up"
            ) from e
        except (asyncssh.Error, OSError, asyncio.IncompleteReadError) as e:
            raise self._lost(e) from e

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        if self._closed:
            raise TransportError(f"the connection to {self._where} is closed")
        try:
            with trio.fail_after(self._read_timeout):
                data: bytes = await trio_asyncio.aio_as_trio(self._reader.read)(max_bytes)
        except trio.TooSlowError as e:
            raise TransportError(
                f"device {format_device_id(self._peer_device_id)} ({self._where}) stopped responding:"
                f" nothing received for {self._read_timeout:g} s; giving up"
            ) from e
        except asyncssh.ConnectionLost as e:
            raise self._lost(e) from e
        except (asyncssh.Error, OSError) as e:
            raise self._lost(e) from e
        except AssertionError as e:
            # asyncssh (2.24) asserts that the channel still has its session
            # when a read resumes; when the other side dies mid-transfer the
            # session can be gone first. That is a lost connection, not a bug
            # of ours.
            raise self._lost(ConnectionResetError("the other side went away")) from e
        return data

    async def send_eof(self) -> None:
        if self._closed:
            return
        writer = self._writer

        async def eof() -> None:
            # After what was written before it: SSH keeps a channel's data in order.
            if writer.can_write_eof():
                writer.write_eof()

        try:
            await trio_asyncio.aio_as_trio(eof)()
        except (asyncssh.Error, OSError) as e:
            raise self._lost(e) from e

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        writer, conn = self._writer, self._conn

        async def close() -> None:
            try:
                if writer.can_write_eof():
                    writer.write_eof()
            except (asyncssh.Error, OSError):
                pass
            writer.close()
            if conn is not None:
                conn.close()
                await conn.wait_closed()

        # Shielded, so a cancelled sync still releases its connection; bounded,
        # so a dead peer cannot hold the close.
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
            try:
                await trio_asyncio.aio_as_trio(close)()
            except (asyncssh.Error, OSError):
                pass
        if conn is not None:
            conn.abort()


# Server ----------------------------------------------------------------------


class _Listener:
    """What all connections of one :func:`serve` share."""

    def __init__(
        self,
        authorize: Authorize,
        handlers: Mapping[str, StreamHandler],
        read_timeout: float,
        explain: Explain | None = None,
    ) -> None:
        self.authorize = authorize
        self.explain = explain
        self.handlers = dict(handlers)
        self.read_timeout = read_timeout
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self.scopes: set[trio.CancelScope] = set()
        # In arrival order (dicts keep it): the connections that have not proved membership.
        self.unproven: dict[asyncssh.SSHServerConnection, None] = {}
        self._warned_at: dict[str, float] = {}

    def warn(self, kind: str, message: str, *args: object) -> None:
        """Log ``message`` at WARNING, at most once per :data:`_WARN_EVERY_S` for each ``kind``."""
        now = time.monotonic()
        if now - self._warned_at.get(kind, -_WARN_EVERY_S) >= _WARN_EVERY_S:
            self._warned_at[kind] = now
            log.warning(message, *args)
        else:
            log.debug(message, *args)

    def admit_unproven(self, conn: asyncssh.SSHServerConnection) -> None:
        """A new connection: keep it, closing an older unproven one when there are too many."""
        self.unproven[conn] = None
        while len(self.unproven) > MAX_UNPROVEN:
            older = [c for c in self.unproven if c is not conn]
            victim = next((c for c in older if c.get_extra_info("client_version") is None), older[0])
            del self.unproven[victim]
            self.warn(
                "unproven",
                "more than %d connections have not proved membership: closing the oldest ones"
                " (a flood of connections? members go on syncing)",
                MAX_UNPROVEN,
            )
            victim.abort()

    def shed_unproven(self) -> None:
        """Out of descriptors or memory: close every unproven connection (members' sessions go on)."""
        for conn in list(self.unproven):
            conn.abort()
        self.unproven.clear()

    def exception_handler(
        self, previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None
    ) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
        """The loop's exception handler while serving: log what a stranger can cause, never stop the agent."""

        def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
                # asyncio stops accepting and tries again in a second (selector_events).
                self.warn(
                    "resources",
                    "out of system resources (%s) with %d connections open: not accepting new ones for a"
                    " moment, and closing %d that have not proved membership",
                    exc.strerror or exc, len(self.connections), len(self.unproven),
                )
                self.shed_unproven()
            elif any(key in context for key in ("transport", "protocol", "socket")):
                # One connection's trouble (a reset, a half-closed socket): that connection's, not ours.
                self.warn("connection", "a connection failed: %s (%s)", context.get("message"), exc)
            elif previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        return handle

    async def run_handler(self, handler: StreamHandler, stream: _SSHStream) -> None:
        """Runs in trio (through trio_as_aio): one channel, from start to close."""
        with trio.CancelScope() as scope:
            self.scopes.add(scope)
            try:
                await handler(stream)
            except PeerError as e:
                log.warning("session with device %s ended: %s", format_device_id(stream.peer_device_id), e)
            except Exception:
                log.exception("session with device %s failed", format_device_id(stream.peer_device_id))
            finally:
                self.scopes.discard(scope)
                await stream.aclose()


class _ServerConnection(asyncssh.SSHServer):
    """One incoming connection (asyncssh makes one of these per connection)."""

    def __init__(self, listener: _Listener) -> None:
        self._listener = listener
        self._conn: asyncssh.SSHServerConnection | None = None
        self._where = "?"
        self._device_id: str | None = None
        self._username = ""
        self._refusal_logged = False
        self._join_channels = 0
        self._expiry: asyncio.TimerHandle | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        self._where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"
        self._listener.connections.add(conn)
        self._listener.admit_unproven(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self._conn is not None:
            self._listener.connections.discard(self._conn)
            self._listener.unproven.pop(self._conn, None)

    def _expire(self) -> None:
        if self._conn is not None:
            log.info("closed the join login of device %s (%s): it lasted %g s",
                     format_device_id(self._device_id or ""), self._where, JOIN_LOGIN_S)
            self._conn.abort()

    def begin_auth(self, username: str) -> bool:
        return True  # authentication is always required

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        device_id = _device_of_key(key)
        if device_id is None:
            self._refuse("a key that is not an Ed25519 device key")
            return False
        if username == JOIN_USER:
            # Anyone may try to join; the join handler checks the invite.
            if JOIN_SUBSYSTEM not in self._listener.handlers:
                self._refuse(f"device {format_device_id(device_id)} asked to join, but joining is not served here")
                return False
        elif username == SYNC_USER:
            allowed = await trio_asyncio.trio_as_aio(self._listener.authorize)(device_id)
            if not allowed:
                why = None
                if self._listener.explain is not None:
                    why = await trio_asyncio.trio_as_aio(self._listener.explain)(device_id)
                if why and self._conn is not None:
                    # An SSH auth banner: the only words a refused client reads before the refusal.
                    self._conn.send_auth_banner(_printable(why)[:MAX_BANNER] + "\n")
                self._refuse(f"device {format_device_id(device_id)} is not a member of this group: refused"
                             + (f" ({why})" if why else ""))
                return False
        else:
            self._refuse(f"unknown user {username!r}")
            return False
        self._device_id = device_id
        self._username = username
        if username == SYNC_USER and self._conn is not None:
            self._listener.unproven.pop(self._conn, None)  # a member: no longer counted among strangers
        elif username == JOIN_USER:
            # Still a stranger: it stays counted among the unproven, and its login is short-lived.
            self._expiry = asyncio.get_running_loop().call_later(JOIN_LOGIN_S, self._expire)
        return True

    def _refuse(self, why: str) -> None:
        if not self._refusal_logged:
            self._refusal_logged = True
            log.warning("%s (connection from %s)", why, self._where)

    def session_requested(self) -> Any:
        device_id, username, listener = self._device_id, self._username, self._listener
        if device_id is None:
            return False
        if username == JOIN_USER:
            if self._join_channels >= JOIN_CHANNELS_PER_LOGIN:
                self._refuse(f"device {format_device_id(device_id)} opened more join channels than one login may")
                return False
            self._join_channels += 1
        where = self._where

        async def session(
            stdin: asyncssh.SSHReader[bytes], stdout: asyncssh.SSHWriter[bytes], stderr: asyncssh.SSHWriter[bytes]
        ) -> None:
            subsystem = stdin.channel.get_subsystem()
            allowed = subsystem == JOIN_SUBSYSTEM if username == JOIN_USER else subsystem != JOIN_SUBSYSTEM
            handler = listener.handlers.get(subsystem or "") if allowed else None
            if handler is None:
                log.warning(
                    "device %s (%s) asked for %s, which is not served to it: refused",
                    format_device_id(device_id), where, subsystem or "a shell or command",
                )
                channel = stdout.channel
                assert isinstance(channel, asyncssh.SSHServerChannel)
                channel.exit(1)
                return
            stream = _SSHStream(stdin, stdout, device_id, where, listener.read_timeout)
            await trio_asyncio.trio_as_aio(listener.run_handler)(handler, stream)

        return session


async def serve(
    signing_key: Ed25519PrivateKey,
    *,
    host: str,
    port: int,
    authorize: Authorize,
    handlers: Mapping[str, StreamHandler],
    explain: Explain | None = None,
    login_timeout: float = LOGIN_TIMEOUT_S,
    read_timeout: float = READ_TIMEOUT_S,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve SSH on ``host:port`` until cancelled; ``task_status.started(port)`` once listening.

    ``signing_key`` is the device key (the SSH host key). ``handlers`` maps
    subsystem names (:data:`SYNC_SUBSYSTEM`, :data:`JOIN_SUBSYSTEM`) to trio
    functions serving one channel each. Members (``authorize(device_id)``
    true, user :data:`SYNC_USER`) reach every subsystem but the join one;
    any key on user :data:`JOIN_USER` reaches only the join one. Port 0
    picks a free port; the port really bound is what ``started`` reports.
    """
    listener = _Listener(authorize, handlers, read_timeout, explain)
    host_key = _ssh_key(signing_key)
    _raise_open_files_limit()
    loop_handler: list[Any] = []

    async def start() -> asyncssh.SSHAcceptor:
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()
        ours = listener.exception_handler(previous)
        loop_handler.extend([previous, ours])
        loop.set_exception_handler(ours)
        return await asyncssh.create_server(
            lambda: _ServerConnection(listener),
            host,
            port,
            server_host_keys=[host_key],
            encoding=None,
            allow_pty=False,
            agent_forwarding=False,
            x11_forwarding=False,
            login_timeout=login_timeout,
            keepalive_interval=KEEPALIVE_INTERVAL_S,
            keepalive_count_max=KEEPALIVE_COUNT_MAX,
            max_pktsize=CHANNEL_PACKET_BYTES,
            reuse_address=True,
        )

    try:
        acceptor = await trio_asyncio.aio_as_trio(start)()
    except OSError as e:
        raise TransportError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    try:
        bound = acceptor.get_port()
        task_status.started(bound)
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
            for scope in list(listener.scopes):
                scope.cancel()

            async def stop() -> None:
                acceptor.close()
                for conn in list(listener.connections):
                    conn.close()
                await acceptor.wait_closed()
                loop = asyncio.get_running_loop()
                if loop_handler and loop.get_exception_handler() is loop_handler[1]:
                    loop.set_exception_handler(loop_handler[0])  # unless another listener put its own since

            await trio_asyncio.aio_as_trio(stop)()


def _raise_open_files_limit() -> None:
    """Use all the descriptors the system allows this process (the soft limit is often 1,024)."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as e:
        log.debug("could not raise the open files limit: %s", e)


# Client ----------------------------------------------------------------------


class _ClientConnection(asyncssh.SSHClient):
    def __init__(self, trust_host: Callable[[str], bool]) -> None:
        self._trust_host = trust_host
        self.host_device_id: str | None = None
        self.host_refused = False
        self.banner = ""

    def auth_banner_received(self, msg: str, lang: str) -> None:
        self.banner = _printable(msg)[:MAX_BANNER]

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        device_id = _device_of_key(key)
        self.host_device_id = device_id
        ok = device_id is not None and self._trust_host(device_id)
        self.host_refused = not ok
        return ok


async def connect(
    host: str,
    port: int,
    signing_key: Ed25519PrivateKey,
    *,
    trust_host: Callable[[str], bool],
    subsystem: str = SYNC_SUBSYSTEM,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    read_timeout: float = READ_TIMEOUT_S,
) -> ByteStream:
    """Connect to the device at ``host:port`` and open ``subsystem``; close the stream when done.

    ``trust_host(device_id)`` decides whether the server's host key is
    acceptable (a current member for sync; the inviter pinned by the code
    for join). The join subsystem logs in as :data:`JOIN_USER`, anything
    else as :data:`SYNC_USER`. Raises :class:`TransportError` when the
    connection fails or times out and :class:`TrustError` when either side
    refuses the other's key.
    """
    where = f"{host}:{port}"
    username = JOIN_USER if subsystem == JOIN_SUBSYSTEM else SYNC_USER
    client = _ClientConnection(trust_host)
    key = _ssh_key(signing_key)
    own_id = device_id_for(bytes(key.public_data)[-32:])

    async def open_channel() -> tuple[asyncssh.SSHClientConnection, asyncssh.SSHReader[bytes], asyncssh.SSHWriter[bytes]]:
        conn, _ = await asyncssh.create_connection(
            lambda: client,
            host,
            port,
            username=username,
            client_keys=[key],
            known_hosts=_no_known_hosts,
            server_host_key_algs=["ssh-ed25519"],
            config=None,
            agent_path=None,
            password=None,
            kbdint_auth=False,
            gss_auth=False,
            host_based_auth=False,
            connect_timeout=connect_timeout,
            keepalive_interval=KEEPALIVE_INTERVAL_S,
            keepalive_count_max=KEEPALIVE_COUNT_MAX,
            max_pktsize=CHANNEL_PACKET_BYTES,
        )
        try:
            writer, reader, _stderr = await conn.open_session(subsystem=subsystem, encoding=None)
        except BaseException:
            conn.abort()
            raise
        return conn, reader, writer

    try:
        with trio.fail_after(connect_timeout + 1):
            conn, reader, writer = await trio_asyncio.aio_as_trio(open_channel)()
    except (TimeoutError, trio.TooSlowError) as e:
        raise TransportError(
            f"{where} did not complete an SSH handshake within {connect_timeout:g} s; is `peer agent` running there?"
        ) from e
    except asyncssh.HostKeyNotVerifiable as e:
        if client.host_device_id is None:
            raise TrustError(f"the host key of {where} is not a peer device key; refusing to connect") from e
        raise TrustError(
            f"the host key of {where} belongs to device {format_device_id(client.host_device_id)}, which is not"
            " a member of this group; refusing to sync with it (pair the two devices first)"
            if subsystem != JOIN_SUBSYSTEM
            else f"the host key of {where} belongs to device {format_device_id(client.host_device_id)}, not to the"
            " inviter named in the code; refusing to join through it"
        ) from e
    except asyncssh.PermissionDenied as e:
        if client.banner:
            raise TrustError(f"{where} refused this device ({format_device_id(own_id)}): {client.banner}") from e
        raise TrustError(
            f"{where} refused this device ({format_device_id(own_id)}): it is not a member of that device's group;"
            " pair it first (`peer invite` there, `peer join` here)"
        ) from e
    except asyncssh.ChannelOpenError as e:
        raise TransportError(f"{where} does not serve {subsystem}: {e.reason}") from e
    except ConnectionRefusedError as e:
        raise TransportError(f"connection refused by {where} — is `peer agent` running there?") from e
    except socket.gaierror as e:
        raise TransportError(f"cannot resolve the host name {host!r}: {e.strerror or e}") from e
    except asyncssh.Error as e:
        raise TransportError(f"the SSH connection to {where} failed: {e.reason or e}") from e
    except OSError as e:
        raise TransportError(f"cannot connect to {where}: {e.strerror or e}") from e
    host_id = client.host_device_id
    assert host_id is not None
    return _SSHStream(reader, writer, host_id, where, read_timeout, conn)

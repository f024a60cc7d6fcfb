"""The agent's local API: a Unix socket inside the home, JSON lines, same user only.

Theory of operation. ``peer agent`` is the one long-lived process of a
device; short-lived processes (``peer mcp`` servers today, one-shot ``peer``
commands later) ask it things over ``HOME/agent.sock``:

* the socket is a file in the home directory (mode 0700), created with mode
  0600, and every connection's peer credentials (``SO_PEERCRED``) are checked
  against this process's uid: the API is for the user who owns the home,
  never for the network (there is no TCP listener at all);
* one request per line, one answer per line, in order, any number of them
  on one connection: ``{"id": 1, "method": "ping", "params": {}}`` gets
  ``{"id": 1, "result": {...}}`` or ``{"id": 1, "error": {"type", "message"}}``;
* the methods are a table (:class:`Methods`) the agent fills; a method is
  an async function of the params returning JSON. ``ping``, ``status`` and
  ``sync_now`` are the agent's own; the commands it answers warm (``peer
  search``, ``add``, ...: :mod:`peer.warm`) are added the same way, and
  ``ping`` lists the methods, so a client can tell an older agent (it must
  treat a missing method, or an ``unknown_method`` error, as "this agent is
  older: do it in process");
* a request never kills the agent: a line longer than :data:`MAX_LINE` ends
  that connection, a method that fails with anything but a
  :class:`PeerError` is logged with its traceback and answered with an
  ``internal`` error;
* a client that hangs up while its request runs (Ctrl-C, a killed process)
  cancels the request, as Ctrl-C would cancel the same work in process.

An error raised by a method as a :class:`PeerError` travels as its message
and is raised again on the client's side as :class:`AgentError` with the
same message, so a command prints the same line either way.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

import trio

from protocol import PeerError

__all__ = [
    "SOCKET_FILE",
    "MAX_LINE",
    "Method",
    "Methods",
    "AgentError",
    "AgentNotRunning",
    "socket_path",
    "serve",
    "call",
    "LocalClient",
]

log = logging.getLogger(__name__)

#: The socket's name inside the home directory.
SOCKET_FILE: Final = "agent.sock"
#: The longest request or answer line (room for a memory of 1 MiB, JSON-escaped).
MAX_LINE: Final = 8 << 20
#: sun_path is 108 bytes on Linux and 104 on the BSDs: the portable bound, with its NUL.
_MAX_PATH: Final = 103

#: One method: its params in, a JSON-able result out (or a PeerError).
Method = Callable[[dict[str, Any]], Awaitable[Any]]
Methods = Mapping[str, Method]


class AgentNotRunning(PeerError):
    """No agent runs on this home; start one with `peer agent` (or install it as a user service)."""


class AgentError(PeerError):
    """The agent answered with an error (its message says what)."""


def socket_path(home_path: Path) -> Path:
    return home_path / SOCKET_FILE


def _check_length(path: Path) -> None:
    if len(os.fsencode(path)) > _MAX_PATH:
        raise PeerError(
            f"the home's path is too long for a Unix socket ({path}); use a home with a shorter path"
        )


def _peer_uid(sock: trio.socket.SocketType) -> int | None:
    """The uid of the process at the other end, where the platform tells it."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None  # not Linux: the socket file's mode 0600 is the guard
    raw = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


class _Lines:
    """Newline-framed messages over a byte stream, each at most MAX_LINE bytes."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def receive(self) -> bytes | None:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                return line
            if len(self.buffer) > MAX_LINE:
                raise PeerError("a local API message is too long")
            chunk = await self.stream.receive_some(1 << 16)
            if not chunk:
                return None
            self.buffer += chunk

    async def send(self, message: Mapping[str, Any]) -> None:
        await self.stream.send_all(json.dumps(message, ensure_ascii=False).encode() + b"\n")


def _error(request_id: Any, kind: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "error": {"type": kind, "message": message}}


async def _answer(methods: Methods, line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
    except ValueError:
        return _error(None, "bad_request", "a request must be one JSON object per line")
    if not isinstance(request, dict) or not isinstance(request.get("method"), str):
        return _error(None, "bad_request", 'a request needs "method" (a string)')
    request_id = request.get("id")
    params = request.get("params") or {}
    if not isinstance(params, dict):
        return _error(request_id, "bad_request", '"params" must be an object')
    method = methods.get(request["method"])
    if method is None:
        return _error(request_id, "unknown_method", f"this agent has no method {request['method']!r}")
    try:
        return {"id": request_id, "result": await method(params)}
    except PeerError as e:
        return _error(request_id, "peer_error", e.message)
    except Exception as e:
        # A bug in one method must not take the agent (and every sync it runs) down.
        log.exception("local API method %r failed", request["method"])
        return _error(request_id, "internal", f"{e.__class__.__name__}: {e}")


async def _answer_while_connected(methods: Methods, line: bytes, lines: _Lines) -> dict[str, Any] | None:
    """The answer to ``line``, or None when the client hung up first (the request is then cancelled)."""
    answer: dict[str, Any] | None = None
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            # Reads what the client sends meanwhile (kept for the next request); EOF means it is gone.
            while len(lines.buffer) <= MAX_LINE:
                chunk = await lines.stream.receive_some(1 << 16)
                if not chunk:
                    nursery.cancel_scope.cancel()
                    return
                lines.buffer += chunk
            await trio.sleep_forever()  # no more reading until this request is answered

        nursery.start_soon(watch)
        answer = await _answer(methods, line)
        nursery.cancel_scope.cancel()
    return answer


async def _serve_connection(methods: Methods, stream: trio.SocketStream) -> None:
    uid = _peer_uid(stream.socket)
    if uid is not None and uid != os.getuid():
        log.warning("refused a local API connection from uid %d (only uid %d may use it)", uid, os.getuid())
        await stream.aclose()
        return
    lines = _Lines(stream)
    async with stream:
        try:
            while (line := await lines.receive()) is not None:
                if line.strip():
                    answer = await _answer_while_connected(methods, line, lines)
                    if answer is None:
                        log.debug("a local API client hung up before its answer: its request was cancelled")
                        return
                    await lines.send(answer)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away mid-answer: nothing to clean up
        except PeerError as e:
            log.info("local API connection closed: %s", e)


async def serve(home_path: Path, methods: Methods, *, task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``methods`` on ``HOME/agent.sock`` until cancelled; ``task_status.started(path)`` once listening."""
    path = socket_path(home_path)
    _check_length(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # A socket file left by an agent that was killed: nobody answers on it any more.
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        old_umask = os.umask(0o177)  # created 0600, never briefly wider
        try:
            await sock.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        identity = os.stat(path).st_ino
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    listener = trio.SocketListener(sock)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started(path)
            async with listener:
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(_serve_connection, methods, stream)
    finally:
        try:
            if os.stat(path).st_ino == identity:  # not one a newer agent put there
                os.unlink(path)
        except OSError:
            pass


class LocalClient:
    """One connection to the agent; ``await client.call(method, **params)``. Use ``async with``."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._lines = _Lines(stream)
        self._stream = stream
        self._next = 0
        self._lock = trio.Lock()

    @classmethod
    async def connect(cls, home_path: Path) -> LocalClient:
        path = socket_path(home_path)
        _check_length(path)
        try:
            stream = await trio.open_unix_socket(str(path))
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ECONNREFUSED):
                raise AgentNotRunning(
                    f"no agent runs on this home ({home_path}); start one with `peer --home {home_path} agent`"
                    " (or run it at login: `peer agent --systemd-unit`)"
                ) from e
            raise AgentError(f"cannot reach the agent at {path}: {e.strerror or e}") from e
        return cls(stream)

    async def __aenter__(self) -> LocalClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stream.aclose()

    async def call(self, method: str, **params: Any) -> Any:
        async with self._lock:
            self._next += 1
            try:
                await self._lines.send({"id": self._next, "method": method, "params": params})
                line = await self._lines.receive()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                raise AgentError("the agent closed the connection") from e
            if line is None:
                raise AgentError("the agent closed the connection without answering")
            try:
                answer = json.loads(line)
            except ValueError as e:
                raise AgentError("the agent's answer is not JSON") from e
            if "error" in answer:
                error = answer["error"]
                raise AgentError(str(error.get("message", "the agent refused the request")))
            return answer.get("result")


async def call(home_path: Path, method: str, *, timeout: float = 10.0, **params: Any) -> Any:
    """One request on a fresh connection; raises AgentNotRunning when nobody listens."""
    with trio.move_on_after(timeout) as scope:
        async with await LocalClient.connect(home_path) as client:
            return await client.call(method, **params)
    if scope.cancelled_caught:
        raise AgentError(f"the agent did not answer {method!r} within {timeout:g} s")
    raise AssertionError("unreachable")

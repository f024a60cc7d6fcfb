"""Asking the running agent from a one-shot command: a blocking client of ``HOME/agent.sock``.

Theory of operation. ``peer search`` and its siblings are answered by the
agent's warm model and index when an agent runs for the home (see
:mod:`peer.warm` for the agent's side and :mod:`peer.localapi` for the wire:
JSON lines, same user only). This module is what the command line imports
*before* it knows which way a command goes, so it uses the standard library
only: no trio, no store, no protocol face.

One request is three steps, each bounded:

1. **connect** within :data:`CONNECT_TIMEOUT_S`. No socket file, a socket
   nobody listens on (an agent that was killed), one not owned by this user,
   or an agent at the other end running as another user: :class:`NoAgent`,
   and the command runs in process (nothing was asked);
2. **hello** within :data:`PING_TIMEOUT_S`: the agent lists the methods it
   answers. One that does not answer in time (busy, stuck, stopping), does
   not know ``hello`` or does not list the method (an older agent) is
   :class:`NoAgent` too: nothing was asked yet;
3. **the request**, answered within :data:`ANSWER_TIMEOUT_S` (the work may
   embed a long text). Its answer is the result's JSON, or a :class:`PeerError`
   message that the command prints as its ``error:`` line (:class:`AgentRefused`).
   A connection lost here (the agent died mid-request) or an answer that
   never comes is :class:`AgentLost`: the request may or may not have been
   carried out, and the caller decides (a read runs again in process; an
   add runs again with the id the client chose, so it is detectably the
   same add; an edit or forget says so in one line).

Ctrl-C while waiting raises ``KeyboardInterrupt`` here as anywhere; closing
the connection tells the agent, which cancels the request (see
:mod:`peer.localapi`).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import time
from pathlib import Path
from typing import Any, Final

__all__ = [
    "SOCKET_FILE",
    "HOME_ENV",
    "CONNECT_TIMEOUT_S",
    "PING_TIMEOUT_S",
    "ANSWER_TIMEOUT_S",
    "NoAgent",
    "AgentLost",
    "AgentRefused",
    "home_directory",
    "ask_agent",
]

#: The socket's name inside the home directory (peer.localapi serves it).
SOCKET_FILE: Final = "agent.sock"
#: The environment variable naming the home when ``--home`` is not given.
HOME_ENV: Final = "PEER_HOME"
#: A local agent accepts in microseconds; one that does not within this is not answering.
CONNECT_TIMEOUT_S: Final = 0.2
#: ``hello`` is answered by the agent's event loop without touching the store.
PING_TIMEOUT_S: Final = 0.5
#: The request itself: embedding a text of the largest size allowed takes seconds, not minutes.
ANSWER_TIMEOUT_S: Final = 120.0
#: The longest answer read (a `peer list` of a very large store is tens of MB).
MAX_ANSWER: Final = 1 << 30


class NoAgent(Exception):
    """Nothing was asked: run the command in process. ``warning`` is set when a person should hear why."""

    def __init__(self, reason: str, *, warning: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.warning = warning


class AgentLost(Exception):
    """The request was sent but no answer came: it may or may not have been carried out."""


class AgentRefused(Exception):
    """The agent answered with an error; ``message`` is the line the command prints (``error: ...``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def home_directory(home: str | os.PathLike[str] | None) -> Path:
    """``--home DIR`` if given, else ``$PEER_HOME``, else the platform's user data directory."""
    if home is None or str(home) == "":
        home = os.environ.get(HOME_ENV)
        if not home:
            import platformdirs

            home = platformdirs.user_data_dir("peer")
    return Path(home).expanduser().absolute()


def _peer_uid(sock: socket.socket) -> int | None:
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None  # not Linux: the socket file's owner and mode are the guard
    raw = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    return int(struct.unpack("3i", raw)[1])


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.next_id = 0

    def send(self, method: str, params: dict[str, Any]) -> int:
        self.next_id += 1
        line = json.dumps({"id": self.next_id, "method": method, "params": params}, ensure_ascii=False)
        self.sock.sendall(line.encode() + b"\n")
        return self.next_id

    def receive(self, deadline: float) -> dict[str, Any]:
        """The next answer line; OSError/TimeoutError/EOFError when none comes by ``deadline``."""
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                answer = json.loads(line)
                if not isinstance(answer, dict):
                    raise ValueError("an answer must be an object")
                return answer
            if len(self.buffer) > MAX_ANSWER:
                raise ValueError("the answer is too long")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError
            self.buffer += chunk


def _connect(home_path: Path) -> _Connection:
    path = home_path / SOCKET_FILE
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise NoAgent("no agent runs on this home") from None
    except OSError as e:
        raise NoAgent(f"cannot look at {path}: {e.strerror or e}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise NoAgent(f"{path} is not a socket; the command ran without the agent", warning=True)
    if info.st_uid != os.getuid():
        raise NoAgent(f"{path} belongs to another user (uid {info.st_uid}); the command ran without the agent",
                      warning=True)
    if len(os.fsencode(path)) > 103:
        raise NoAgent("the home's path is too long for a Unix socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT_S)
        sock.connect(str(path))
        uid = _peer_uid(sock)
    except OSError as e:
        sock.close()
        # ECONNREFUSED: a socket file left by an agent that was killed; a timeout: one too busy to accept.
        raise NoAgent(f"the agent at {path} does not answer ({e.strerror or e.__class__.__name__})") from None
    if uid is not None and uid != os.getuid():
        sock.close()
        raise NoAgent(f"the process at {path} runs as another user (uid {uid}); the command ran without the agent",
                      warning=True)
    return _Connection(sock)


def ask_agent(home_path: Path, method: str, params: dict[str, Any], *,
              answer_timeout: float = ANSWER_TIMEOUT_S) -> Any:
    """``method(params)`` answered by the home's running agent; see the module's steps for what it raises."""
    connection = _connect(home_path)
    try:
        try:
            connection.send("hello", {})
            hello = connection.receive(time.monotonic() + PING_TIMEOUT_S)
        except (OSError, EOFError, ValueError) as e:
            raise NoAgent(f"the agent did not answer in time ({e.__class__.__name__})") from None
        result = hello.get("result")
        methods = result.get("methods") if isinstance(result, dict) else None
        if not isinstance(methods, list) or method not in methods:
            raise NoAgent(f"the running agent is older: it does not answer {method!r}")
        try:
            connection.send(method, params)
        except OSError as e:
            raise AgentLost(f"the agent closed the connection ({e.strerror or e})") from None
        try:
            answer = connection.receive(time.monotonic() + answer_timeout)
        except TimeoutError:
            raise AgentLost(f"the agent did not answer within {answer_timeout:g} s") from None
        except (OSError, EOFError) as e:
            raise AgentLost(f"the agent closed the connection ({e.__class__.__name__})") from None
        except ValueError as e:
            raise AgentLost(f"the agent's answer is not readable ({e})") from None
    finally:
        connection.sock.close()
    error = answer.get("error")
    if isinstance(error, dict):
        kind = error.get("type")
        message = str(error.get("message", ""))
        if kind == "peer_error":
            raise AgentRefused(message)
        if kind == "unknown_method":
            raise NoAgent(f"the running agent is older: {message}")
        raise AgentLost(f"the agent could not carry out {method!r} ({kind}: {message})")
    return answer.get("result")

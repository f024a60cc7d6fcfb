"""A loopback port that exists before the server behind it, for two agents that must each name the other.

Agents listen on port 0 and report the port the kernel gave them, so no test
races another process for a port chosen in advance. But two agents that list
each other as ``[agent] peers`` cannot both be told a port that is only known
once the other has started. The first agent started is given a :class:`Relay`'s
port instead: the relay listens at once, holds each connection until
:meth:`Relay.point_at` names the real port, then copies bytes both ways
(half-closes included) until either side ends. It runs in its own threads, so
trio tests, plain tests and the benchmarks can all use it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

#: How long a connection that arrived early waits for :meth:`Relay.point_at`.
WAIT_FOR_TARGET_S = 60.0


class Relay:
    """``127.0.0.1:port`` relayed to ``127.0.0.1:target`` once the target is known."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._target: int | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, name=f"relay:{self.port}", daemon=True).start()

    def point_at(self, port: int) -> None:
        """Relay every connection, those waiting included, to ``127.0.0.1:port``."""
        self._target = port
        self._ready.set()

    def close(self) -> None:
        """Stop listening and cut every relayed connection."""
        with self._lock:
            self._closed = True
            sockets, self._open = self._open, []
        self._ready.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _keep(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._closed:
                sock.close()
                return False
            self._open.append(sock)
            return True

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self._keep(client):
                threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        if not self._ready.wait(WAIT_FOR_TARGET_S) or self._target is None:
            client.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self._target))
        except OSError:
            client.close()  # as if nothing listened: the client sees the connection end
            return
        if not self._keep(upstream):
            client.close()
            return
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy ``source`` to ``sink`` until end of stream, then pass the end on (a half-close)."""
    try:
        while data := source.recv(1 << 16):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        # One side reset or was closed: end both, as a cut cable would.
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

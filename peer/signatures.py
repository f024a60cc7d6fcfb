"""Signature checks in helper processes, so that a big receive uses every core.

Theory of operation. Receiving a version costs one Ed25519 check (60 to
90 µs on the dev VMs, in libsodium) and about as much Python work (parsing,
key derivation, decryption, decoding, the SQLite rows). Threads do not
share that well: the check releases the GIL, but every hand-back of the GIL
between a checking thread and a thread doing Python costs tens of µs on
these VMs; two threads that each checked and opened versions ran *slower*
than one (``bench/receive.py`` in ``docs/performance.md``). A helper
process has its own interpreter: helpers check signatures on the other
cores while this process does everything else (one helper per core, up to
:data:`MAX_HELPERS`: the checks are the bigger half, and this process's half
releases its core whenever SQLite writes). A helper holds nothing secret:
it sees public keys, signatures and the signed bytes (a readable header and
a sealed box), nothing it could decrypt.

A helper is ``python -m peer.signature_helper`` (its requests and answers
are described there). Only big receives start them (:data:`WORKER_BATCH`).
Until a helper is ready, and for good once anything about it goes wrong
(it died, answered out of turn, a request was cancelled half way), it is
not asked; with no helper to ask, :meth:`SignatureWorker.check` returns
None and the caller checks the signatures itself: helpers can make a
receive faster, never accept a signature the caller would refuse.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import trio

from peer.signature_helper import MAX_REQUEST, READY, encode_request
from protocol import SignatureJob

__all__ = ["SignaturePool", "SignatureWorker", "WORKER_BATCH"]

#: A batch of at least this many received versions starts the helpers (a first sync, a big bundle).
WORKER_BATCH: Final = 200
#: Helpers started at most (one per core up to this).
MAX_HELPERS: Final = 4
#: Seconds a helper has to answer a request (plus per job: a check takes well under a millisecond).
ANSWER_WITHIN: Final = 10.0
ANSWER_PER_JOB: Final = 0.005
_F_SETPIPE_SZ: Final = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux
_PIPE_BYTES: Final = 1 << 20  # the default most an unprivileged process may ask for (pipe-max-size)


class SignatureWorker:
    """Helper processes checking signatures for this one (see the module's theory of operation)."""

    def __init__(self, helpers: Sequence[_Helper]) -> None:
        self._helpers = tuple(helpers)

    @classmethod
    async def start(cls, count: int | None = None) -> SignatureWorker | None:
        """Start ``count`` helpers (one per core by default); None if none can start."""
        if count is None:
            count = max(1, min(MAX_HELPERS, os.cpu_count() or 1))
        helpers = [h for h in [await _Helper.start() for _ in range(count)] if h is not None]
        return cls(helpers) if helpers else None

    @property
    def ready(self) -> bool:
        """True when at least one helper can be asked now."""
        return any([h.ready for h in self._helpers])

    @property
    def processes(self) -> tuple[trio.Process, ...]:
        return tuple(h.process for h in self._helpers)

    @property
    def usable(self) -> bool:
        """True while some helper is ready or still starting (not retired)."""
        return any([not h.retired for h in self._helpers])

    async def check(self, jobs: Sequence[SignatureJob]) -> list[bool] | None:
        """Whether each job's signature is valid; None if no helper could answer (check them yourself).

        The jobs are shared out in contiguous runs among the helpers ready now.
        """
        helpers = [h for h in self._helpers if h.ready]
        if not helpers:
            return None
        size = -(-len(jobs) // len(helpers)) or 1
        runs = [jobs[at : at + size] for at in range(0, len(jobs), size)] or [jobs]
        answers: list[list[bool] | None] = [None] * len(runs)

        async def ask(i: int) -> None:
            answers[i] = await helpers[i].check(runs[i])

        async with trio.open_nursery() as nursery:
            for i in range(len(runs)):
                nursery.start_soon(ask, i)
        out: list[bool] = []
        for answer in answers:
            if answer is None:
                return None
            out += answer
        return out

    async def aclose(self) -> None:
        for helper in self._helpers:
            await helper.aclose()


class _Helper:
    """One helper process."""

    def __init__(self, process: trio.Process) -> None:
        self._process = process
        self._lock = trio.Lock()
        self._ready = False
        self._broken = False
        self._number = 0
        self._buffer = bytearray()

    @classmethod
    async def start(cls) -> _Helper | None:
        """Start a helper (it imports its modules meanwhile: :attr:`ready` says when); None if it cannot start."""
        # The helper must import these very modules, wherever they were imported from.
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "peer.signature_helper"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        except OSError:
            return None
        if process.stdin is not None:
            # A request is up to a few MiB: a bigger pipe takes it in a few writes, not
            # one per 64 KiB (each wakes the helper). Best effort: the default works too.
            try:
                fcntl.fcntl(process.stdin.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)  # type: ignore[attr-defined]
            except OSError:
                pass
        return cls(process)

    @property
    def process(self) -> trio.Process:
        return self._process

    @property
    def retired(self) -> bool:
        """True once anything went wrong with it (it is never asked again)."""
        return self._broken

    @property
    def ready(self) -> bool:
        """True once the helper said it is ready (looked at without waiting), until anything went wrong."""
        if not self._ready and not self._broken and not self._lock.locked():
            self._poll_ready()
        return self._ready and not self._broken

    def _poll_ready(self) -> None:
        assert self._process.stdout is not None
        try:
            # The pipe is non-blocking (trio's), and nobody else reads it before the helper is ready.
            first = os.read(self._process.stdout.fileno(), 1)  # type: ignore[attr-defined]
        except BlockingIOError:
            return
        except OSError:
            first = b""
        self._ready = first == READY
        self._broken = not self._ready

    async def _receive(self, n: int) -> bytes:
        assert self._process.stdout is not None
        while len(self._buffer) < n:
            data = await self._process.stdout.receive_some(1 << 20)
            if not data:
                raise trio.BrokenResourceError("the signature helper ended")
            self._buffer += data
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    async def check(self, jobs: Sequence[SignatureJob]) -> list[bool] | None:
        """Whether each job's signature is valid; None if the helper cannot answer (check them yourself)."""
        if not self.ready:
            return None
        assert self._process.stdin is not None
        async with self._lock:
            if self._broken:
                return None
            self._number += 1
            request = encode_request(self._number, jobs)
            if len(request) - 4 > MAX_REQUEST:
                return None
            # Whatever interrupts the exchange (a cancel, a dead helper, a wrong
            # answer) may leave an answer in the pipe that nobody may ever take
            # for another request's: the helper is not asked again.
            answered = False
            try:
                # A helper that stopped answering (stopped, starved) is given up
                # on, and the caller checks this batch itself.
                with trio.move_on_after(ANSWER_WITHIN + len(jobs) * ANSWER_PER_JOB):
                    await self._process.stdin.send_all(request)
                    length = int.from_bytes(await self._receive(4), "big")
                    if length != 8 + len(jobs):
                        return None
                    answer = await self._receive(length)
                    if int.from_bytes(answer[:8], "big") != self._number or any(v > 1 for v in answer[8:]):
                        return None
                    answered = True
                    return [v == 1 for v in answer[8:]]
                return None
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return None
            finally:
                self._broken = self._broken or not answered

    async def aclose(self) -> None:
        """End the helper: close its input, give it a moment to exit, then kill it."""
        self._broken = True
        with trio.CancelScope(shield=True):
            if self._process.stdin is not None:
                try:
                    await self._process.stdin.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
            with trio.move_on_after(2):
                await self._process.wait()
            if self._process.returncode is None:
                self._process.kill()
                await self._process.wait()
            if self._process.stdout is not None:
                await self._process.stdout.aclose()


class SignaturePool:
    """The helpers every receive into one store shares: one set, however many receives run at once.

    An agent taking first syncs from several new devices at once, or a sync
    during a bundle import, would otherwise start a set per receive (each
    helper is about 27 MB). A receive takes a :meth:`lease` for as long as
    it checks; the helpers start with the first lease and end with the last.
    A set whose helpers were all retired (a receive cancelled mid-request
    retires the helper it was asking) is replaced for the leases after it;
    the receives still holding it check in process.
    """

    def __init__(self) -> None:
        self._lock = trio.Lock()
        self._current: SignatureWorker | None = None
        self._leases: dict[SignatureWorker, int] = {}

    @property
    def workers(self) -> tuple[SignatureWorker, ...]:
        """The sets of helpers leased now (one, unless one was replaced while in use)."""
        return tuple(self._leases)

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[SignatureWorker | None]:
        """The shared helpers (None if none can start), started if none run; ended when the last lease ends."""
        async with self._lock:
            worker = self._current
            if worker is None or not worker.usable:
                worker = self._current = await SignatureWorker.start()
            if worker is not None:
                self._leases[worker] = self._leases.get(worker, 0) + 1
        try:
            yield worker
        finally:
            if worker is not None:
                self._leases[worker] -= 1
                if not self._leases[worker]:
                    del self._leases[worker]
                    if self._current is worker:
                        self._current = None
                    await worker.aclose()  # shielded inside

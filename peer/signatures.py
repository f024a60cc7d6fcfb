"""Signature checks in a helper process, so that a big receive uses both cores.

Theory of operation. Receiving a version costs one Ed25519 check (60 to
90 µs on the dev VMs, in libsodium) and about as much Python work (parsing,
key derivation, decryption, decoding, the SQLite rows). Threads do not
share that well: the check releases the GIL, but every hand-back of the GIL
between a checking thread and a thread doing Python costs tens of µs on
these VMs; two threads that each checked and opened versions ran *slower*
than one (``bench/receive.py`` in ``docs/performance.md``). A helper
process has its own interpreter: it checks signatures on the other core
while this process does everything else. It holds nothing secret: it sees
public keys, signatures and the signed bytes (a readable header and a
sealed box), nothing it could decrypt.

The helper is ``python -m peer.signatures``. It writes one byte when it is
ready, then answers requests on its stdin, in order, on its stdout:

    request  = u32 length | u64 number | jobs (key 32 | signature 64 | u32 length | message)
    answer   = u32 length | u64 number | one byte per job (1 valid, 0 not)

Big receives only start one (:data:`WORKER_BATCH`). Until it is ready, and
for good once anything about it goes wrong (it died, answered out of turn,
a request was cancelled half way), :meth:`SignatureWorker.check` returns
None and the caller checks the signatures itself: a worker can make a
receive faster, never accept a signature the caller would refuse.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Final

import trio

from protocol import SignatureJob, signature_valid

__all__ = ["SignatureWorker", "WORKER_BATCH", "serve"]

#: A batch of at least this many received versions starts a helper (a first sync, a big bundle).
WORKER_BATCH: Final = 200
#: The most one request may hold (a batch is at most 4 MiB of versions, plus framing).
MAX_REQUEST: Final = 64 << 20
#: Seconds a helper has to start (import its modules) before the receive goes on without it.
READY_WITHIN: Final = 10.0
_READY: Final = b"\x01"
_KEY: Final = 32
_SIGNATURE: Final = 64


def _encode(number: int, jobs: Sequence[SignatureJob]) -> bytes:
    parts = [b"", number.to_bytes(8, "big")]
    for key, signature, message in jobs:
        if len(key) != _KEY or len(signature) != _SIGNATURE:
            raise ValueError("a signature job is a 32-byte key, a 64-byte signature and the message")
        parts += (key, signature, len(message).to_bytes(4, "big"), message)
    body_length = sum(len(p) for p in parts)
    parts[0] = body_length.to_bytes(4, "big")
    return b"".join(parts)


def _decode(body: bytes) -> tuple[int, list[SignatureJob]]:
    number = int.from_bytes(body[:8], "big")
    jobs: list[SignatureJob] = []
    at = 8
    while at < len(body):
        key, signature = body[at : at + _KEY], body[at + _KEY : at + _KEY + _SIGNATURE]
        at += _KEY + _SIGNATURE
        length = int.from_bytes(body[at : at + 4], "big")
        message = body[at + 4 : at + 4 + length]
        at += 4 + length
        if len(key) != _KEY or len(signature) != _SIGNATURE or len(message) != length:
            raise ValueError("truncated signature job")
        jobs.append((key, signature, message))
    return number, jobs


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """The helper's loop: answer each request until the input ends (the parent closed it, or died)."""
    answers.write(_READY)
    answers.flush()
    while head := requests.read(4):
        length = int.from_bytes(head, "big")
        if len(head) != 4 or not 8 <= length <= MAX_REQUEST:
            return
        body = requests.read(length)
        if len(body) != length:
            return
        number, jobs = _decode(body)
        verdicts = bytes(signature_valid(*job) for job in jobs)
        answers.write((8 + len(verdicts)).to_bytes(4, "big") + number.to_bytes(8, "big") + verdicts)
        answers.flush()


class SignatureWorker:
    """A helper process checking signatures for this one (see the module's theory of operation)."""

    def __init__(self, process: trio.Process) -> None:
        self._process = process
        self._lock = trio.Lock()
        self._ready = False
        self._broken = False
        self._number = 0
        self._buffer = bytearray()

    @classmethod
    async def start(cls, nursery: trio.Nursery) -> SignatureWorker | None:
        """Start a helper (it says when it is ready, in a task of ``nursery``); None if it cannot start."""
        # The helper must import these very modules, wherever they were imported from.
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "peer.signatures"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        except OSError:
            return None
        worker = cls(process)
        nursery.start_soon(worker._wait_ready)
        return worker

    @property
    def ready(self) -> bool:
        return self._ready and not self._broken

    async def _wait_ready(self) -> None:
        try:
            async with self._lock:
                with trio.move_on_after(READY_WITHIN):
                    self._ready = await self._receive(1) == _READY
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        self._broken = self._broken or not self._ready

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
            request = _encode(self._number, jobs)
            if len(request) - 4 > MAX_REQUEST:
                return None
            # Whatever interrupts the exchange (a cancel, a dead helper, a wrong
            # answer) may leave an answer in the pipe that nobody may ever take
            # for another request's: the helper is not asked again.
            answered = False
            try:
                await self._process.stdin.send_all(request)
                length = int.from_bytes(await self._receive(4), "big")
                if length != 8 + len(jobs):
                    return None
                answer = await self._receive(length)
                if int.from_bytes(answer[:8], "big") != self._number or any(v > 1 for v in answer[8:]):
                    return None
                answered = True
                return [v == 1 for v in answer[8:]]
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


def main() -> None:
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()

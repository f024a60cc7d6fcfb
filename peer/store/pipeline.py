"""Receive pipeline: check the next batches of received versions while the earlier ones are written.

Theory of operation. Applying a batch has a CPU half (Ed25519 verify,
key derivation, decrypt, decode: :meth:`Store.check_received`) and a write
half (SQLite, in the database's own thread: :meth:`Store.store_checked`).
Done one after the other, a receive never runs on more than one core.
:class:`ApplyPipeline` checks each batch as soon as it is submitted (at most
:data:`CHECKS_AT_ONCE` at a time, in order) while a writer task writes the
batches already checked, so the two halves overlap.

The writer joins consecutive checked batches into one transaction once
enough wait, or when :meth:`drain` asks for everything. How many: a
fortieth of what the store holds, from 256 to
:data:`~peer.store.store.BULK_WRITE_VERSIONS` versions
(:func:`transaction_versions`), and at most
:data:`~peer.store.store.BULK_WRITE_BYTES` sealed bytes. A big store's
indexes cost much less per row in a few big transactions than in many
small ones (``docs/performance.md``), and what a receiving process killed
outright loses stays a small part of what it held. :meth:`submit` waits
once twice a transaction's versions, or :data:`QUEUED_BYTES_AT_MOST`
sealed bytes, are queued, which bounds the memory one receive holds,
however big its memories.

Order and atomicity are the same as calling :meth:`Store.apply` batch by
batch: batches are written in submission order, a transaction holding
whole batches with the progress vectors submitted with them. A batch whose
check failed is raised (by the :meth:`submit` or :meth:`drain` after it)
once every batch before it is written; nothing after it is written.
Membership changes must not overlap a check: call :meth:`drain` before
applying member records (the batches after them are checked against them).
Not for use inside the caller's :meth:`Store.transaction`: the writer task
takes transactions of its own.

A big receive (a batch of :data:`~peer.signatures.WORKER_BATCH` versions or
more) leases the store's signature helpers (processes, one per core, shared
by every receive into the store: :class:`~peer.signatures.SignaturePool`),
which check the signatures while this one decrypts and writes, and raises the
store's page cache while it writes (:meth:`Store.bulk_writes`); :meth:`aclose`
(or leaving ``async with``) gives them back, and the last lease ends them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Final

import trio

from peer.signatures import WORKER_BATCH, SignatureWorker
from protocol import SealedVersion, VersionVector

from .store import BULK_WRITE_BYTES, BULK_WRITE_VERSIONS, ApplyResult, CheckedBatch, Store

__all__ = ["ApplyPipeline", "CHECKS_AT_ONCE", "QUEUED_BYTES_AT_MOST", "transaction_versions"]

#: Batches being checked at once (in submission order, so the oldest is ready first).
CHECKS_AT_ONCE: Final = 2
#: The fewest versions a big receive writes in a transaction (a sender's batch).
FEWEST_A_TRANSACTION: Final = 256
#: A transaction holds up to this fraction of what the store holds (see transaction_versions).
_SHARE: Final = 40
#: Sealed bytes submitted but not yet written, at most (a batch of big memories holds few versions;
#: opened, they take about twice this). The versions queued are bounded too: twice a transaction.
QUEUED_BYTES_AT_MOST: Final = 2 * BULK_WRITE_BYTES


@dataclass
class _Pending:
    versions: int
    bytes: int  # sealed
    progress: VersionVector | None
    checked: CheckedBatch | None = None
    error: Exception | None = None

    @property
    def batch(self) -> CheckedBatch:
        """The checked batch (once its check succeeded)."""
        assert self.checked is not None
        return self.checked


class ApplyPipeline:
    """Submit batches in order; a writer task writes them as they are checked (see the theory of operation)."""

    def __init__(
        self,
        store: Store,
        nursery: trio.Nursery,
        *,
        strict: bool = True,
        signatures: SignatureWorker | None = None,
        write_at: int | None = None,
        queued_at_most: int | None = None,
        write_bytes_at: int = BULK_WRITE_BYTES,
        queued_bytes_at_most: int = QUEUED_BYTES_AT_MOST,
    ) -> None:
        self._store = store
        self._nursery = nursery
        self._strict = strict
        #: Helpers given are the caller's; else this pipeline leases the store's (see SignaturePool).
        self._signatures = signatures
        self._leased = AsyncExitStack()
        self._started_helper = signatures is not None
        #: Fixed sizes (tests); else they follow transaction_versions(what the store holds).
        self._fixed = (write_at, queued_at_most)
        self._write_at = write_at or FEWEST_A_TRANSACTION
        self._queued_at_most = max(queued_at_most or 2 * self._write_at, self._write_at)
        self._held_before: int | None = None  # versions the store held when the big receive began
        self._write_bytes_at = write_bytes_at
        self._queued_bytes_at_most = max(queued_bytes_at_most, write_bytes_at)
        self._checking = trio.Semaphore(CHECKS_AT_ONCE)
        self._queue: deque[_Pending] = deque()  # submitted, not written, in order
        self._queued = 0  # versions in the queue
        self._queued_bytes = 0  # their sealed bytes
        self._changed = trio.lowlevel.ParkingLot()  # woken when the queue, a check or the writer's state changes
        self._flush = False  # drain() wants every queued batch written now
        self._writer: trio.CancelScope | None = None
        self._result = ApplyResult()  # written since the last submit() or drain() returned
        self._error: Exception | None = None  # a failed check or write: nothing more is written
        #: Versions in the batches written so far.
        self.written = 0

    async def __aenter__(self) -> ApplyPipeline:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the writer and give back the store's helpers, if leased (call :meth:`drain` first to write the rest)."""
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None
        self._signatures = None
        await self._leased.aclose()

    async def _check(self, pending: _Pending, versions: Sequence[SealedVersion]) -> None:
        """Check one batch (``submit`` took a place among the checks for it, in order)."""
        try:
            pending.checked = await self._store.check_received(
                versions, strict=self._strict, refresh=False, signatures=self._signatures
            )
        except Exception as e:  # raised to the caller once the batches before it are written
            pending.error = e
        finally:
            self._checking.release()
            self._changed.unpark_all()

    async def submit(
        self, versions: Sequence[SealedVersion], *, progress: VersionVector | None = None
    ) -> ApplyResult:
        """Start checking ``versions``; returns what was written since the last call (maybe nothing yet).

        Raises the first failure, of a check or a write, once it is known.
        """
        self._raise()
        # The membership read runs here, in the caller's task: a check must not wait for the database.
        await self._store.refresh()
        if len(versions) >= WORKER_BATCH and not self._started_helper:
            self._started_helper = True
            self._signatures = await self._leased.enter_async_context(self._store.signature_pool.lease())
            await self._leased.enter_async_context(self._store.bulk_writes())
            self._held_before = await self._store.versions_held()
            self._resize()
        if self._writer is None:
            self._writer = trio.CancelScope()
            self._nursery.start_soon(self._write_all, self._writer)
        size = sum(len(v.header_bytes) + len(v.box) for v in versions)
        while self._queue and self._error is None and (
            self._queued + len(versions) > self._queued_at_most
            or self._queued_bytes + size > self._queued_bytes_at_most
        ):
            await self._changed.park()  # bounded: the writer frees room as it writes
        self._raise()
        await self._checking.acquire()
        pending = _Pending(len(versions), size, progress)
        self._queue.append(pending)
        self._queued += pending.versions
        self._queued_bytes += pending.bytes
        self._nursery.start_soon(self._check, pending, list(versions))
        self._changed.unpark_all()
        return self._take_result()

    async def drain(self) -> ApplyResult:
        """Write every batch submitted; returns what was written since the last call."""
        self._flush = True
        self._changed.unpark_all()
        try:
            while self._queue and self._error is None:
                await self._changed.park()
        finally:
            self._flush = False
        self._raise()
        return self._take_result()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _take_result(self) -> ApplyResult:
        result, self._result = self._result, ApplyResult()
        return result

    def _ready(self) -> list[_Pending] | None:
        """The batches to write now, oldest first; [] when the oldest failed; None to wait for more."""
        group: list[_Pending] = []
        size = held = 0
        for pending in self._queue:
            if group and (size + pending.versions > self._write_at or held + pending.bytes > self._write_bytes_at):
                return group  # a whole transaction's worth
            if pending.error is not None:
                return group  # the batches before it are written, then the failure is told
            if pending.checked is None:
                break  # still being checked
            if group and pending.batch.membership is not group[0].batch.membership:
                return group
            group.append(pending)
            size += pending.versions
            held += pending.bytes
        full = size >= self._write_at or held >= self._write_bytes_at
        return group if group and (self._flush or full) else None

    async def _write_all(self, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                while (group := self._ready()) is None:
                    await self._changed.park()
                if not group:
                    head = self._queue[0]
                    assert head.error is not None
                    self._fail(head.error)
                    return
                progress: VersionVector | None = None
                for pending in group:
                    if pending.progress is not None:
                        progress = pending.progress if progress is None else progress.merge(pending.progress)
                checked = CheckedBatch.joined([p.batch for p in group])
                try:
                    result = await self._store.store_checked(checked, progress=progress)
                except Exception as e:
                    self._fail(e)
                    return
                self._resize()
                for pending in group:
                    self._queue.popleft()
                    self._queued -= pending.versions
                    self._queued_bytes -= pending.bytes
                    self.written += pending.versions
                self._result += result
                self._changed.unpark_all()

    def _resize(self) -> None:
        """Transactions (and the queue, twice one) grow with the store: see :func:`transaction_versions`."""
        if self._held_before is None:
            return
        write_at, queued_at_most = self._fixed
        self._write_at = write_at or transaction_versions(self._held_before + self.written)
        self._queued_at_most = max(queued_at_most or 2 * self._write_at, self._write_at)

    def _fail(self, error: Exception) -> None:
        self._error = error
        self._changed.unpark_all()


def transaction_versions(held: int) -> int:
    """Versions a big receive writes a transaction into a store holding ``held``: a fortieth, 256 to 2,048.

    Big transactions make a big store's writes cheaper (its indexes' pages
    are written once per transaction, not once per batch), and a small
    store gains little from them. What a receiving process killed outright
    loses (the transaction being written and the batches queued behind it,
    about twice one) is then at most a twentieth of what the store held, or
    two sender's batches: so the next sync after a kill sends little more
    than what had not arrived.
    """
    return max(FEWEST_A_TRANSACTION, min(BULK_WRITE_VERSIONS, held // _SHARE))

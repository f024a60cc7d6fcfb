"""Receive pipeline: check the next batch of received versions while the previous one is written.

Theory of operation. Applying a batch has a CPU half (Ed25519 verify,
key derivation, decrypt, decode: :meth:`Store.check_received`, in a worker
thread for big batches; verify releases the GIL) and a write half (SQLite,
in the database's own thread: :meth:`Store.store_checked`). Done one after
the other, a receive never runs on more than one core. :class:`ApplyPipeline`
starts checking batch N+1 as soon as it is submitted and only then writes
batch N, so the two halves overlap.

Order and atomicity are the same as calling :meth:`Store.apply` batch by
batch: batches are written in submission order, each in one transaction
(or inside the caller's :meth:`Store.transaction`: the writes run in the
caller's task, the checks in tasks of the nursery given), with the
progress vector submitted with it. A batch whose check failed raises when
its turn to be written comes, so nothing after it is written either.
Membership changes must not overlap a check: call :meth:`drain` before
applying member records (the batches after them are checked against them).

A big receive (a batch of :data:`~peer.signatures.WORKER_BATCH` versions or
more) leases the store's signature helpers (processes, one per core, shared
by every receive into the store: :class:`~peer.signatures.SignaturePool`),
which check the signatures while this one decrypts and writes; :meth:`aclose`
(or leaving ``async with``) gives them back, and the last lease ends them.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import trio

from peer.signatures import WORKER_BATCH, SignatureWorker
from protocol import SealedVersion, VersionVector

from .store import ApplyResult, CheckedBatch, Store

__all__ = ["ApplyPipeline"]


@dataclass
class _Pending:
    versions: int
    progress: VersionVector | None
    done: trio.Event = field(default_factory=trio.Event)
    checked: CheckedBatch | None = None
    error: Exception | None = None


class ApplyPipeline:
    """Submit batches in order; each call writes the batch before (see the module's theory of operation)."""

    def __init__(
        self,
        store: Store,
        nursery: trio.Nursery,
        *,
        strict: bool = True,
        signatures: SignatureWorker | None = None,
    ) -> None:
        self._store = store
        self._nursery = nursery
        self._strict = strict
        self._pending: _Pending | None = None
        #: Helpers given are the caller's; else this pipeline leases the store's (see SignaturePool).
        self._signatures = signatures
        self._leased = AsyncExitStack()
        self._started_helper = signatures is not None
        #: Versions in the batches written so far.
        self.written = 0

    async def __aenter__(self) -> ApplyPipeline:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Give back the store's signature helpers, if leased (pending batches are not written: :meth:`drain` first)."""
        self._signatures = None
        await self._leased.aclose()

    async def _check(self, pending: _Pending, versions: Sequence[SealedVersion]) -> None:
        try:
            pending.checked = await self._store.check_received(
                versions, strict=self._strict, refresh=False, signatures=self._signatures
            )
        except Exception as e:  # re-raised in the writing task, in order
            pending.error = e
        finally:
            pending.done.set()

    async def submit(
        self, versions: Sequence[SealedVersion], *, progress: VersionVector | None = None
    ) -> ApplyResult:
        """Start checking ``versions``, then write the batch submitted before it; returns what that write did."""
        # The membership read runs here, in the caller's task (which may hold
        # the transaction): the check task must not wait for the database.
        await self._store.refresh()
        if len(versions) >= WORKER_BATCH and not self._started_helper:
            self._started_helper = True
            self._signatures = await self._leased.enter_async_context(self._store.signature_pool.lease())
        pending = _Pending(len(versions), progress)
        self._nursery.start_soon(self._check, pending, list(versions))
        result = await self.drain()
        self._pending = pending
        return result

    async def drain(self) -> ApplyResult:
        """Write the batch still pending, if any; returns what that did."""
        pending, self._pending = self._pending, None
        if pending is None:
            return ApplyResult()
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.checked is not None
        result = await self._store.store_checked(pending.checked, progress=pending.progress)
        self.written += pending.versions
        return result

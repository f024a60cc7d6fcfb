"""The signature helper process: the same answers as checking in process, and never trusted once anything goes wrong."""

from __future__ import annotations

import errno
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import peer.bundles as bundles
import peer.signatures as signatures
from peer.bundles import import_bundle
from peer.home import Home
from peer.memory import Draft
from peer.signatures import SignaturePool, SignatureWorker
from peer.store import ApplyPipeline
from protocol import (
    BadSignature,
    PeerError,
    SealedVersion,
    SignatureJob,
    VersionVector,
    raw_public_key,
    signature_valid,
)
from protocol.bundle import BundleWriter
from tests.support.groups import admit, found
from tests.support.stores import make_pair, snapshot
from tests.support.waiting import wait_until_async


async def until_ready(worker: SignatureWorker) -> None:
    async def ready() -> bool:
        return all([helper.ready for helper in worker._helpers])

    await wait_until_async(ready, timeout=30, what="every signature helper to say it is ready")


@asynccontextmanager
async def ready_helper() -> AsyncIterator[SignatureWorker]:
    async with SignaturePool().lease() as worker:
        assert worker is not None
        await until_ready(worker)
        yield worker


def started_ready(monkeypatch: pytest.MonkeyPatch) -> list[tuple[SignatureWorker, list[int]]]:
    """Helpers start as the code starts them, but the start waits until they are ready.

    The receive goes on without a helper that is still importing (by design);
    a test that must see the helper used waits for it. Returns the helpers
    started, each with the number of jobs of each request it answered.
    """
    started: list[tuple[SignatureWorker, list[int]]] = []
    start = SignatureWorker.start

    async def start_and_wait() -> SignatureWorker | None:
        worker = await start()
        assert worker is not None
        await until_ready(worker)
        started.append((worker, count_calls(worker)))
        return worker

    monkeypatch.setattr(SignatureWorker, "start", start_and_wait)
    return started


def jobs() -> list[SignatureJob]:
    key = Ed25519PrivateKey.generate()
    other = Ed25519PrivateKey.generate()
    out: list[SignatureJob] = []
    for i in range(50):
        message = os.urandom(100 + i * 40)
        out.append((raw_public_key(key), key.sign(message), message))
    message = b"signed by another key"
    out.append((raw_public_key(key), other.sign(message), message))  # the wrong signer
    good = out[3]
    out.append((good[0], good[1], good[2] + b"!"))  # a changed message
    out.append((good[0], bytes(64), good[2]))  # garbage
    identity = bytes([1]) + bytes(31)
    out.append((identity, identity + bytes(32), b"anything"))  # what OpenSSL accepts and libsodium refuses
    out.append((bytes(32), bytes(64), b""))  # not a key at all
    return out


async def test_the_helper_answers_exactly_as_checking_in_process(aio_loop: object) -> None:
    work = jobs()
    expected = [signature_valid(*job) for job in work]
    assert expected.count(False) == 4 and expected[-2] is True
    async with ready_helper() as worker:
        assert await worker.check(work) == expected
        assert await worker.check(work[::-1]) == expected[::-1]  # request after request
        assert await worker.check([]) == []
        assert len(worker.processes) == min(signatures.MAX_HELPERS, os.cpu_count() or 1)
    assert all(p.returncode is not None for p in worker.processes)  # closing ends them


async def test_a_helper_that_died_is_never_asked_again(aio_loop: object) -> None:
    async with ready_helper() as worker:
        for process in worker.processes:
            process.kill()
            await process.wait()
        assert await worker.check(jobs()) is None
        assert not worker.ready
        assert await worker.check(jobs()[:1]) is None


async def test_a_request_cancelled_half_way_retires_the_helper(aio_loop: object) -> None:
    """Its answer would still be in the pipe: taking it for the next request's would be a disaster."""
    big = jobs() * 400
    async with ready_helper() as worker:
        with trio.move_on_after(0.001):
            await worker.check(big)
        assert not worker.ready
        assert await worker.check(jobs()) is None


async def test_a_helper_that_cannot_start_means_checking_in_process(
    aio_loop: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    assert await SignatureWorker.start() is None
    async with SignaturePool().lease() as worker:
        assert worker is None


async def test_checking_with_the_helper_decides_every_version_as_in_process(aio_loop: object, tmp_path: Path) -> None:
    """Same opened versions, same rejections in the same order, same error when strict."""
    a, b = await make_pair(tmp_path)
    async with a, b:
        await a.add_many([(Draft(f"note {i}"), None) for i in range(300)])
        versions = [v for batch in [x async for x in a.missing_for(await b.vector(), batch_size=1000)] for v in batch]
        versions[10] = replace(versions[10], signature=bytes(64))
        versions[20] = replace(versions[20], box=versions[20].box[:-1] + bytes([versions[20].box[-1] ^ 1]))
        versions.append(versions[30])  # a duplicate within the batch
        alone = await b.check_received(versions, strict=False)
        async with ready_helper() as worker:
            calls = count_calls(worker)
            helped = await b.check_received(versions, strict=False, signatures=worker)
            assert calls == [len(versions)]  # the helper did check them
            with pytest.raises(BadSignature) as with_helper:
                await b.check_received(versions, signatures=worker)
        with pytest.raises(BadSignature) as without:
            await b.check_received(versions)
    assert helped.opened.keys() == alone.opened.keys() and len(alone.opened) == 298
    assert [body for _, body in helped.opened.values()] == [body for _, body in alone.opened.values()]
    assert helped.rejected == alone.rejected and len(alone.rejected) == 2
    assert helped.in_batch_duplicates == alone.in_batch_duplicates == 1
    assert str(with_helper.value) == str(without.value)


def count_calls(worker: SignatureWorker) -> list[int]:
    """Wrap (not replace) the helper's check: how many jobs each answered call had."""
    calls: list[int] = []
    check = worker.check

    async def counted(work: Any) -> list[bool] | None:
        answer = await check(work)
        if answer is not None:
            calls.append(len(work))
        return answer

    worker.check = counted  # type: ignore[method-assign,assignment]
    return calls


@dataclass
class Sender:
    """A's memories as sealed versions, and B, admitted, to receive them as bundles A made."""

    b_home: Home
    versions: list[SealedVersion]
    bundle_of: Callable[[list[SealedVersion]], bytes]


async def sender_of(tmp_path: Path, n: int) -> Sender:
    a_home = await found(tmp_path / "a", "a")
    b_home = await admit(a_home, tmp_path / "b", "b")
    identity = a_home.identity()
    async with await a_home.open_store() as a:
        await a.add_many([(Draft(f"note {i}"), None) for i in range(n)])
        versions = [v for batch in [x async for x in a.missing_for(VersionVector())] for v in batch]
        records, vector, group_id = a.membership.records(), await a.vector(), a.group_id

    def bundle_of(these: list[SealedVersion]) -> bytes:
        """A whole, well-signed bundle of ``these`` (the same header each time)."""
        writer = BundleWriter(signing_key=identity.signing_key, group_id=group_id, sender_vector=vector, created_ms=1)
        out = writer.header() + b"".join(writer.add_member_record(r) for r in records)
        return out + b"".join(writer.add_version(v) for v in these) + writer.finish()

    return Sender(b_home, versions, bundle_of)


async def test_a_first_sync_sized_receive_uses_the_helper_and_a_tampered_version_still_stops_it(
    aio_loop: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await make_pair(tmp_path)
    started = started_ready(monkeypatch)
    async with a, b:
        await a.add_many([(Draft(f"note {i}"), None) for i in range(1200)])
        batches = [x async for x in a.missing_for(await b.vector(), batch_size=signatures.WORKER_BATCH)]
        batches[-1][-1] = replace(batches[-1][-1], signature=bytes(64))
        failure: PeerError | None = None
        async with trio.open_nursery() as checks, ApplyPipeline(b, checks) as pipeline:
            assert started == []  # nothing started before a batch that big
            try:
                for batch in batches:
                    await pipeline.submit(batch)
                await pipeline.drain()
            except PeerError as e:
                failure = e
        assert isinstance(failure, BadSignature)
        [(worker, calls)] = started
        assert calls == [len(batch) for batch in batches]  # every batch went through the helper
        assert all(p.returncode is not None for p in worker.processes)  # ended with the pipeline
        stored = await b.sealed([v.header.dot for batch in batches for v in batch])
        assert len(stored) == 1200 - len(batches[-1])  # every batch before the bad one


async def test_receives_into_one_store_at_once_share_one_set_of_helpers(
    aio_loop: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two first syncs at once (an agent meeting two new devices) start one set of helpers, not two."""
    a, b = await make_pair(tmp_path)
    started = started_ready(monkeypatch)
    async with a, b:
        await a.add_many([(Draft(f"note {i}"), None) for i in range(1600)])
        batches = [x async for x in a.missing_for(await b.vector(), batch_size=signatures.WORKER_BATCH)]
        leased: list[ApplyPipeline] = []
        both_leased = trio.Event()

        async def receive(part: list[list[SealedVersion]]) -> None:
            async with trio.open_nursery() as checks, ApplyPipeline(b, checks) as pipeline:
                await pipeline.submit(part[0])  # big enough to lease the helpers
                leased.append(pipeline)
                if len(leased) == 2:
                    both_leased.set()
                await both_leased.wait()  # both receives hold them at once from here on
                assert len(b.signature_pool.workers) == 1
                for batch in part[1:]:
                    await pipeline.submit(batch)
                await pipeline.drain()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive, batches[0::2])
            nursery.start_soon(receive, batches[1::2])
        [(worker, calls)] = started
        assert sum(calls) == 1600  # both receives' versions went through the one set
        assert b.signature_pool.workers == ()
        assert all(p.returncode is not None for p in worker.processes)  # ended with the last lease
        assert len(await b.sealed([v.header.dot for batch in batches for v in batch])) == 1600


async def test_a_set_of_helpers_all_retired_is_replaced_for_the_next_receive(aio_loop: object) -> None:
    pool = SignaturePool()
    async with pool.lease() as first:
        assert first is not None
        await until_ready(first)
        for process in first.processes:
            process.kill()
            await process.wait()
        assert await first.check(jobs()) is None and not first.usable
        async with pool.lease() as second:  # the first is still leased, but of no use to anyone
            assert second is not None and second is not first and second.usable
            await until_ready(second)
            work = jobs()
            assert await second.check(work) == [signature_valid(*job) for job in work]
            assert set(pool.workers) == {first, second}
            async with pool.lease() as third:
                assert third is second  # shared while usable
        assert pool.workers == (first,)
        assert all(p.returncode is not None for p in second.processes)
    assert not pool.workers


async def test_a_big_bundle_with_one_tampered_version_changes_nothing(
    aio_loop: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helper checks the signatures of a big bundle; one bad version anywhere still means nothing imported."""
    sender = await sender_of(tmp_path, 1500)
    versions = list(sender.versions)
    versions[1234] = replace(versions[1234], signature=bytes(64))
    (tmp_path / "big.bundle").write_bytes(sender.bundle_of(versions))
    started = started_ready(monkeypatch)
    async with await sender.b_home.open_store() as b:
        before = await snapshot(b)
        with pytest.raises(PeerError, match="bad signature.*nothing was imported"):
            await import_bundle(b, tmp_path / "big.bundle")
        assert await snapshot(b) == before
    [(worker, calls)] = started
    assert all(p.returncode is not None for p in worker.processes)
    assert sum(calls) == 1500  # the helper checked every version


async def test_a_big_bundle_changed_on_disk_after_its_checks_imports_what_was_checked(
    aio_loop: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Too big to keep its opened versions in memory, a bundle keeps them in a spill file: never read twice."""
    sender = await sender_of(tmp_path, 600)
    versions, bundle_of = sender.versions, sender.bundle_of
    target = versions[450]
    (tmp_path / "big.bundle").write_bytes(bundle_of(versions))
    changed = bundle_of([*versions[:450], replace(target, signature=bytes(64)), *versions[451:]])
    monkeypatch.setattr(bundles, "APPLY_BATCH", 200)
    monkeypatch.setattr(bundles, "KEEP_CHECKED_BYTES", 0)  # checked whole, kept in a temporary file until written
    apply_checked = bundles._apply_checked

    async def after_the_checks_someone_edits_the_file(*args: Any) -> Any:
        (tmp_path / "big.bundle").write_bytes(changed)  # a valid bundle, one version's bytes not those checked
        return await apply_checked(*args)

    monkeypatch.setattr(bundles, "_apply_checked", after_the_checks_someone_edits_the_file)
    started = started_ready(monkeypatch)
    async with await sender.b_home.open_store() as b:
        result = await import_bundle(b, tmp_path / "big.bundle")
        assert result.added == 600
        assert await b.sealed([target.header.dot]) == [target]  # the bytes that were checked
        assert await b.sealed([v.header.dot for v in versions]) == list(versions)
    assert started and sum(started[0][1]) == 600  # checked through the helpers, once


async def test_a_spill_that_cannot_be_written_changes_nothing(
    aio_loop: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while a big bundle's checked versions are kept: one clear error, nothing imported."""
    sender = await sender_of(tmp_path, 600)
    (tmp_path / "big.bundle").write_bytes(sender.bundle_of(sender.versions))
    monkeypatch.setattr(bundles, "APPLY_BATCH", 200)
    monkeypatch.setattr(bundles, "KEEP_CHECKED_BYTES", 0)

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", full)
    async with await sender.b_home.open_store() as b:
        before = await snapshot(b)
        with pytest.raises(PeerError, match="No space left on device.*nothing was imported"):
            await import_bundle(b, tmp_path / "big.bundle")
        assert await snapshot(b) == before


async def test_a_helper_that_stops_answering_is_given_up_on(aio_loop: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped helper (SIGSTOP: a debugger, a starved machine) must not hang the receive."""
    monkeypatch.setattr(signatures, "ANSWER_WITHIN", 0.5)
    async with ready_helper() as worker:
        for process in worker.processes:
            process.send_signal(signal.SIGSTOP)
        try:
            with trio.fail_after(10):
                assert await worker.check(jobs()) is None
            assert not worker.ready
        finally:
            for process in worker.processes:
                process.send_signal(signal.SIGCONT)

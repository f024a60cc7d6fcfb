"""Checking received versions: one thread, two threads, or signature helper processes.

Usage: .venv/bin/python bench/checking.py [--sample 2000] [--rounds 3]

Why receiving uses helper processes (docs/design-notes.md, "Signatures
checked in helper processes"). On bench/floor.py's sample of real sealed
versions, per version, interleaved in each round:

* one thread: ``open_version`` (Ed25519 check, key derivation, decrypt,
  decode) on every version, in this thread;
* two threads: the same, half the versions in each of two threads (the
  check releases the GIL; the rest holds it);
* helpers: the signature jobs sent to ``peer.signatures``'s helper processes
  (one per core) while this thread decrypts and decodes, then the verdicts
  taken: what ``Store.check_received`` does for a big receive.

Printed beside the raw primitives measured in the same round (bench/floor.py:
verify, HKDF+AEAD, decode) and the load average.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import threading
import time
from pathlib import Path

import trio
import trio_asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # bench/floor.py, the same-run floor

import floor  # noqa: E402

from peer.signatures import SignatureWorker  # noqa: E402
from protocol import SealedVersion, open_version, signature_job, unseal_version  # noqa: E402


async def round_(sample: int) -> None:
    home = await floor.sample_home(sample)
    with sqlite3.connect(home.store_path) as conn:
        versions = [SealedVersion.decode(b) for (b,) in conn.execute("SELECT sealed FROM versions ORDER BY id")]
    async with await home.open_store() as store:
        group_id, keys, author_key = store.group_id, dict(store.group_keys), store.membership.author_key
    n = len(versions)

    def open_all(part: list[SealedVersion]) -> None:
        for v in part:
            open_version(v, group_id=group_id, group_keys=keys, author_key=author_key)

    started = time.perf_counter()
    open_all(versions)
    one = (time.perf_counter() - started) / n

    halves = [versions[: n // 2], versions[n // 2 :]]
    threads = [threading.Thread(target=open_all, args=(half,)) for half in halves]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    two = (time.perf_counter() - started) / n

    worker = await SignatureWorker.start()
    assert worker is not None, "the signature helpers did not start"
    try:
        with trio.fail_after(30):
            while not all([h.ready for h in worker._helpers]):
                await trio.sleep(0.02)
        verdicts: list[bool] | None = None
        started = time.perf_counter()
        jobs = [signature_job(v, group_id=group_id, author_key=author_key) for v in versions]

        async def ask() -> None:
            nonlocal verdicts
            verdicts = await worker.check(jobs)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            for i, v in enumerate(versions):
                if i % 64 == 0:
                    await trio.lowlevel.checkpoint()
                unseal_version(v, keys)
        helpers = (time.perf_counter() - started) / n
        assert verdicts is not None and all(verdicts)
        count = len(worker.processes)
    finally:
        await worker.aclose()

    fl = await floor.measure(sample)
    raw = fl.verify + fl.kdf_aead + fl.decode
    print(
        f"  per version: one thread {one * 1e6:.0f} µs, two threads {two * 1e6:.0f} µs,"
        f" {count} helper processes + this thread {helpers * 1e6:.0f} µs;"
        f" raw primitives verify {fl.verify * 1e6:.0f} + HKDF/AEAD {fl.kdf_aead * 1e6:.0f} + decode"
        f" {fl.decode * 1e6:.0f} = {raw * 1e6:.0f} µs; {floor.load()}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(floor.context())

    async def run() -> None:
        for r in range(args.rounds):
            print(f"round {r + 1}:", flush=True)
            await round_(args.sample)

    trio_asyncio.run(run)


if __name__ == "__main__":
    main()

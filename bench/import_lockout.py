"""Other writers during a long bundle import (hostile report B9): do they get in, and how long do they wait?

Usage: .venv/bin/python bench/import_lockout.py [--versions 60000] [--no-vectors]

Device A (a fresh store with N memories, with 384-d vectors unless
``--no-vectors``, built with bench/sync.py's helpers) exports a bundle for a
freshly admitted device B; B imports it with ``peer.bundles.import_bundle``.
While the import runs, a second handle on B's store (its own SQLite
connection, as ``peer add`` in another process or the agent has) adds one
memory every 0.25 s, and a third receives a small sync from device C every
second. Printed: the import's duration and phases, how many of those writes
failed ("busy": they waited past the 10 s busy timeout) and how long the
others waited (median, slowest); as this run's reference, the same add and
sync on the idle store just before the import; the load average and this
process's peak RSS.

Before the fix (one write transaction for the whole of pass two) an add
waited for the whole import: 60,000 versions took 22 s and made writers fail.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from peer.bundles import export_bundle, import_bundle  # noqa: E402
from peer.dev.groups import admit, found  # noqa: E402
from peer.memory import Draft  # noqa: E402
from peer.store import Store  # noqa: E402
from protocol import PeerError  # noqa: E402

OUT = ROOT / "bench" / "out"


def _sync_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_sync", ROOT / "bench" / "sync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def _sync_from(c: Store, b: Store) -> int:
    """What a sync session from C does to B's store: membership, versions batch by batch, the vector."""
    added = 0
    if await c.membership_digest() != await b.membership_digest():
        await b.apply_membership(c.membership.records())
    async for batch in c.missing_for(await b.vector(), batch_size=100):
        added += (await b.apply(batch)).added
    await b.merge_vector(await c.vector())
    return added


def _waits(label: str, waits: list[float], failures: list[str]) -> str:
    if not waits:
        return f"{label}: none succeeded, {len(failures)} failed"
    return (
        f"{label}: {len(waits)} succeeded (median wait {statistics.median(waits):.3f} s,"
        f" slowest {max(waits):.3f} s), {len(failures)} failed"
    )


async def run(n: int, vectors: bool) -> None:
    sync_bench = _sync_bench()
    work = OUT / "lockout-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    a_home = await found(work / "a", "a")
    b_home = await admit(a_home, work / "b", "b")
    c_home = await admit(a_home, work / "c", "c")
    async with await a_home.open_store() as a:
        for start in range(0, n, 5000):
            part = sync_bench.drafts(start, min(5000, n - start), "lockout", 7 + start)
            if vectors:
                await a.add_many(part, sync_bench.MINILM_ID)
            else:
                await a.add_many([(draft, None) for draft, _ in part])
        written = await export_bundle(a, a_home.identity().signing_key, work / "full.bundle", device="b")
    print(f"bundle: {written.written.versions:,} versions, {written.written.size / 1e6:.1f} MB", flush=True)

    async with (
        await b_home.open_store() as b,
        await b_home.open_store() as adder,
        await b_home.open_store() as receiver,
        await c_home.open_store() as c,
    ):
        await _sync_from(c, receiver)  # C's membership known, so each later sync is only versions
        started = time.monotonic()
        await adder.add(Draft("reference add on the idle store"))
        idle_add = time.monotonic() - started
        await c.add_many([(Draft("reference sync on the idle store"), None)])
        started = time.monotonic()
        await _sync_from(c, receiver)
        idle_sync = time.monotonic() - started
        print(f"reference (idle store, this run): one add {idle_add:.3f} s, one small sync {idle_sync:.3f} s", flush=True)

        add_waits: list[float] = []
        add_failures: list[str] = []
        sync_waits: list[float] = []
        sync_failures: list[str] = []
        phases: dict[str, float] = {}
        done = trio.Event()

        def progress(stage: str, at: int, total: int) -> None:
            phases.setdefault(stage, time.monotonic())

        async def writer() -> None:
            i = 0
            while not done.is_set():
                started = time.monotonic()
                try:
                    await adder.add(Draft(f"written during the import {i}"))
                    add_waits.append(time.monotonic() - started)
                except PeerError as e:
                    add_failures.append(f"after {time.monotonic() - started:.1f} s: {e.message}")
                i += 1
                await trio.sleep(0.25)

        async def syncer() -> None:
            i = 0
            while not done.is_set():
                await c.add_many([(Draft(f"from C during the import {i}"), None)])
                started = time.monotonic()
                try:
                    await _sync_from(c, receiver)
                    sync_waits.append(time.monotonic() - started)
                except PeerError as e:
                    sync_failures.append(f"after {time.monotonic() - started:.1f} s: {e.message}")
                i += 1
                await trio.sleep(1.0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            nursery.start_soon(syncer)
            started = time.monotonic()
            result = await import_bundle(b, work / "full.bundle", progress=progress)
            took = time.monotonic() - started
            done.set()
    stages = ", ".join(f"{stage} from {at - started:.1f} s" for stage, at in phases.items())
    print(f"import: {result.added:,} versions in {took:.1f} s ({stages})", flush=True)
    print(_waits("concurrent adds", add_waits, add_failures), flush=True)
    print(_waits("concurrent syncs", sync_waits, sync_failures), flush=True)
    for failure in (add_failures + sync_failures)[:3]:
        print(f"  {failure}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average {load} on {os.cpu_count()} cores; peak RSS of this process {peak:.0f} MB")
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--versions", type=int, default=60_000)
    parser.add_argument("--no-vectors", action="store_true")
    args = parser.parse_args()

    async def body() -> None:
        async with trio_asyncio.open_loop():
            await run(args.versions, not args.no_vectors)

    trio.run(body)


if __name__ == "__main__":
    main()

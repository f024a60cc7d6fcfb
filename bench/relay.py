"""Relay exchange cost: no change, a change of d versions, and catching up N versions, next to bundles.

Usage: .venv/bin/python bench/relay.py [--size 10000] [--delta 100]

Device A is the cached store of bench/sync.py (N memories with 384-d
vectors, under bench/out/). On a copy of it, two fresh devices C and D are
admitted (holding nothing), and a folder relay is made; then, timed in
this process:

* A's first exchange: C and D have no state record yet, so A writes all N
  versions as one segment; beside it, ``export_bundle`` of the same N
  versions (the same sealed bytes in the same format: the floor);
* C catching up from the relay alone (fetch, verify, apply N versions),
  beside D importing the full bundle with ``import_bundle``;
* a no-change exchange (after every device wrote its state record): the
  bytes and files it read, beside the floor of listing the folder and
  reading the state records raw;
* A adds d memories and exchanges: bytes written per version, beside the
  size of a bundle of just those d versions; then C reads them.

The load average is printed at the start and the end: figures from a busy
2-core machine are only comparable within one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import trio_asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from peer.bundles import export_bundle, import_bundle  # noqa: E402
from peer.home import Home  # noqa: E402
from peer.relay import ExchangeResult, add_relay, sync_relay  # noqa: E402
from peer.relay.config import RelaySpec  # noqa: E402

OUT = ROOT / "bench" / "out"


def _sync_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_sync", ROOT / "bench" / "sync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def exchange(home: Home, spec: RelaySpec) -> tuple[ExchangeResult, float]:
    async with await home.open_store() as store:
        started = time.monotonic()
        result = await sync_relay(store, home.identity().signing_key, home.path, spec)
        return result, time.monotonic() - started


def raw_state_read(folder: Path) -> tuple[float, int, int]:
    """The floor of a no-change exchange: list the folder, read every state record."""
    started = time.monotonic()
    total = files = 0
    for group in folder.iterdir():
        for name in os.listdir(group):
            if name.endswith(".state"):
                total += len((group / name).read_bytes())
                files += 1
    return time.monotonic() - started, files, total


async def measure(n: int, delta: int, sync_bench: Any) -> None:
    pair, _ = await sync_bench.build_pair(n)
    work = OUT / "relay-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    a = sync_bench.copy_home(pair / "a", work / "a")
    c = await sync_bench.admit(a, work / "c")
    d = await sync_bench.admit(a, work / "d")
    relay = work / "relay"
    relay.mkdir()
    spec = add_relay(a.path, str(relay), name="bench")
    for home in (c, d):
        add_relay(home.path, str(relay), name="bench")

    first, first_s = await exchange(a, spec)
    bundle = work / "full.bundle"
    async with await a.open_store() as store:
        started = time.monotonic()
        exported = await export_bundle(store, a.identity().signing_key, bundle, full=True)
        export_s = time.monotonic() - started
    print(f"N={n:,}: A writes {first.segment_written:,} versions to the relay: {first.bytes_written / 1e6:.1f} MB in"
          f" {first_s:.2f} s; export_bundle of the same {exported.written.versions:,}: {exported.written.size / 1e6:.1f}"
          f" MB in {export_s:.2f} s", flush=True)

    caught, caught_s = await exchange(c, spec)
    async with await d.open_store() as store:
        started = time.monotonic()
        imported = await import_bundle(store, bundle)
        import_s = time.monotonic() - started
    assert caught.versions_added == imported.added == n, (caught.versions_added, imported.added)
    print(f"N={n:,}: C catches up {caught.versions_added:,} versions from the relay in {caught_s:.2f} s"
          f" ({caught.versions_added / caught_s:,.0f}/s); D imports the bundle in {import_s:.2f} s"
          f" ({imported.added / import_s:,.0f}/s): relay/bundle = {caught_s / import_s:.2f}", flush=True)

    # The same two catch-ups again on two more fresh devices, in the other order (a busy machine's
    # caches and neighbours favour whichever runs second).
    e = await sync_bench.admit(a, work / "e")
    f = await sync_bench.admit(a, work / "f")
    add_relay(f.path, str(relay), name="bench")
    async with await e.open_store() as store:
        started = time.monotonic()
        await import_bundle(store, bundle)
        import2_s = time.monotonic() - started
    caught2, caught2_s = await exchange(f, spec)
    assert caught2.versions_added == n
    print(f"N={n:,}: in the other order: bundle import {import2_s:.2f} s, relay catch-up {caught2_s:.2f} s:"
          f" relay/bundle = {caught2_s / import2_s:.2f}", flush=True)
    shutil.rmtree(e.path)

    for home in (d, f, a, c, d, f, a):
        await exchange(home, spec)
    quiet, quiet_s = await exchange(a, spec)
    floor_s, floor_files, floor_bytes = raw_state_read(relay)
    assert quiet.segments_read == 0 and quiet.segment_written == 0 and not quiet.state_written
    print(f"N={n:,}: no-change exchange: read {quiet.files_read} files, {quiet.bytes_read:,} B, wrote nothing, in"
          f" {quiet_s * 1000:.0f} ms (of which opening the store is not counted); floor (list + read"
          f" {floor_files} state records raw, {floor_bytes:,} B): {floor_s * 1000:.1f} ms; the relay holds"
          f" {quiet.bytes_held / 1e6:.1f} MB", flush=True)

    async with await a.open_store() as store:
        await sync_bench.fill_delta(store, n, delta)
    changed, changed_s = await exchange(a, spec)
    delta_bundle = work / "delta.bundle"
    async with await a.open_store() as store:
        known = await store.known_peer(c.identity().device_id)
        assert known is not None
        ref = await export_bundle(store, a.identity().signing_key, delta_bundle, device=c.identity().device_id)
    got, got_s = await exchange(c, spec)
    print(f"N={n:,}: d={delta:,}: A wrote {changed.segment_written:,} versions, {changed.bytes_written:,} B"
          f" ({changed.bytes_written / max(1, changed.segment_written):,.0f} B/version) in {changed_s * 1000:.0f} ms;"
          f" a bundle of the same {ref.written.versions:,} versions: {ref.written.size:,} B; C read"
          f" {got.versions_added:,} in {got_s * 1000:.0f} ms", flush=True)
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--delta", type=int, default=100)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    sync_bench = _sync_bench()

    async def run() -> None:
        print(f"load average at the start {os.getloadavg()}", flush=True)
        async with trio_asyncio.open_loop():
            await measure(args.size, args.delta, sync_bench)
        print(f"load average at the end {os.getloadavg()}")

    import trio

    trio.run(run)


if __name__ == "__main__":
    main()

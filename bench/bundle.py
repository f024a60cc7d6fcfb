"""Bundle export and import throughput: a full bundle of N memories, then the bundles of later rounds.

Usage: .venv/bin/python bench/bundle.py [--sizes 10000,100000] [--delta 1000]

Device A is the cached store of bench/sync.py (N memories with 384-d
vectors, built once under bench/out/ and reused; building the 100,000 one
takes several minutes). On a copy of it, a freshly admitted device C
(holding nothing) is made, and then, each timed in this process:

* full export: A writes everything to a bundle for C (``export_bundle``);
* verify: pass one of an import alone (``scan_bundle``: read, hash, decode,
  check the sender's signature), and a ``--dry-run`` import;
* full import into C's empty store (``import_bundle``: verify, then apply
  in one transaction: every version's signature checked and decrypted,
  merged, stored; C has no search index, so no re-indexing is timed);
* the same bundle imported again (every version already held);
* a later round: C sends its acknowledgement back, A adds d memories,
  and the bundle for C holds just those (export and import timed);
* an acknowledgement with nothing new (its size).

Figures are versions per second and MB per second of bundle file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import floor  # noqa: E402
from peer.bundles import BundleSource, Trust, export_bundle, import_bundle, scan_bundle  # noqa: E402

OUT = ROOT / "bench" / "out"


def _sync_bench() -> Any:
    """bench/sync.py, for its cached stores (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_sync", ROOT / "bench" / "sync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def rate(count: int, size: int, seconds: float) -> str:
    return f"{count / seconds:,.0f} versions/s, {size / seconds / 1e6:.1f} MB/s"


async def measure(n: int, delta: int, sync_bench: Any) -> dict[str, Any]:
    pair, _ = await sync_bench.build_pair(n)
    work = OUT / "bundle-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    a_home = sync_bench.copy_home(pair / "a", work / "a")
    c_home = await sync_bench.admit(a_home, work / "c")
    key_a, key_c = a_home.identity().signing_key, c_home.identity().signing_key
    a_id, c_id = a_home.identity().device_id, c_home.identity().device_id  # B of the cached pair is a member too
    full_file, delta_file, ack_file = work / "full.bundle", work / "delta.bundle", work / "ack.bundle"
    row: dict[str, Any] = {"n": n, "delta": delta}
    fl = await floor.measure(work=work)
    row["floor"] = fl.to_json()
    print(f"  N={n:,}: {fl.describe()}", flush=True)
    async with await a_home.open_store() as a:
        started = time.monotonic()
        exported = await export_bundle(a, key_a, full_file, device=c_id)
        row["export_s"] = time.monotonic() - started
        row["versions"] = exported.written.versions
        row["bytes"] = exported.written.size
    print(f"  N={n:,}: full export {row['versions']:,} versions, {row['bytes'] / 1e6:.1f} MB in"
          f" {row['export_s']:.1f} s ({rate(row['versions'], row['bytes'], row['export_s'])})", flush=True)
    async with await c_home.open_store() as c:
        started = time.monotonic()
        await scan_bundle(BundleSource(full_file), Trust.of(c))
        row["verify_s"] = time.monotonic() - started
        started = time.monotonic()
        dry = await import_bundle(c, full_file, dry_run=True)
        row["dry_run_s"] = time.monotonic() - started
        assert dry.added == row["versions"]
        started = time.monotonic()
        imported = await import_bundle(c, full_file)
        row["import_s"] = time.monotonic() - started
        assert imported.added == row["versions"] and imported.vector_merged
        started = time.monotonic()
        again = await import_bundle(c, full_file)
        row["reimport_s"] = time.monotonic() - started
        assert again.nothing_new
        await export_bundle(c, key_c, ack_file, device=a_id)
    print(f"  N={n:,}: verify {row['verify_s']:.1f} s, dry run {row['dry_run_s']:.1f} s, import"
          f" {row['import_s']:.1f} s ({rate(row['versions'], row['bytes'], row['import_s'])}),"
          f" again {row['reimport_s']:.1f} s; import {fl.versus(row['import_s'], row['versions'])};"
          f" {floor.load()}", flush=True)
    async with await a_home.open_store() as a:
        await import_bundle(a, ack_file)
        await sync_bench.fill_delta(a, n, delta)
        started = time.monotonic()
        later = await export_bundle(a, key_a, delta_file, device=c_id)
        row["delta_export_s"] = time.monotonic() - started
        row["delta_versions"] = later.written.versions
        row["delta_bytes"] = later.written.size
        assert later.written.versions == delta
    async with await c_home.open_store() as c:
        started = time.monotonic()
        got = await import_bundle(c, delta_file)
        row["delta_import_s"] = time.monotonic() - started
        assert got.added == delta
        nothing = await export_bundle(c, key_c, ack_file, device=a_id)
        row["ack_bytes"] = nothing.written.size
    print(f"  N={n:,}: a later round of d={delta:,}: {row['delta_bytes'] / 1e6:.2f} MB, export"
          f" {row['delta_export_s']:.2f} s, import {row['delta_import_s']:.2f} s; nothing new:"
          f" {row['ack_bytes']:,} B", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return row


def report(rows: list[dict[str, Any]]) -> None:
    print()
    print("| N | bundle | export | verify only | import (verify + apply) | vs 1-core / 2-core floor | import again"
          " | dry run |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['n']:,} | {r['bytes'] / 1e6:.1f} MB | {r['export_s']:.1f} s ({rate(r['versions'], r['bytes'], r['export_s'])})"
            f" | {r['verify_s']:.1f} s ({rate(r['versions'], r['bytes'], r['verify_s'])})"
            f" | {r['import_s']:.1f} s ({rate(r['versions'], r['bytes'], r['import_s'])})"
            f" | {r['import_s'] / r['versions'] / r['floor']['one_core']:.2f}x /"
            f" {r['import_s'] / r['versions'] / r['floor']['two_core']:.2f}x"
            f" | {r['reimport_s']:.1f} s | {r['dry_run_s']:.1f} s |"
        )
    print()
    print("| N | later round | bundle | export | import | nothing new |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['n']:,} | {r['delta']:,} new | {r['delta_bytes'] / 1e3:,.0f} kB | {r['delta_export_s']:.2f} s"
            f" | {r['delta_import_s']:.2f} s | {r['ack_bytes']:,} B |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 100_000])
    parser.add_argument("--delta", type=int, default=1000)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    sync_bench = _sync_bench()

    async def run() -> None:
        rows = []
        async with trio_asyncio.open_loop():
            for n in args.sizes:
                print(f"N={n:,}: {floor.context()}", flush=True)
                rows.append(await measure(n, args.delta, sync_bench))
                (OUT / f"bundle-results-{n}.json").write_text(json.dumps(rows[-1], indent=1))
        print(f"at the end: {floor.context()}")
        report(rows)

    trio.run(run)


if __name__ == "__main__":
    main()

"""Receiving N versions (bundle import, first sync) beside the same-run floor of the primitives.

Usage: .venv/bin/python bench/receive.py [--sizes 10000] [--rounds 3]

Device A is bench/sync.py's cached store of N memories (built under
bench/out/ on first use). Every round, interleaved so that a busy machine
weighs on all figures alike:

* floor: on up to 5,000 of A's own sealed versions, the raw primitives of
  receiving one, in this process: Ed25519 verify (``verify_version``), the
  rest of opening it (HKDF, ChaCha20-Poly1305, body decode), and SQLite
  inserts of the store's rows with the store's current schema (fresh file,
  WAL, 256 rows a transaction, keyword-index rows per batch). The one-core
  floor is their sum; the two-core floor puts verify on the other core:
  max(verify, the rest);
* bundle import: A's full bundle for a freshly admitted device C, imported
  into C's empty store (``import_bundle``: pass one, then the apply);
* first sync: a fresh C syncs with A over SSH on loopback, both in this
  process (so the sender's reads and asyncssh share the cores too).

With ``--resume``: a first sync cut once half of its bytes have arrived,
then a second sync; prints how many versions each moved (the second should
carry only what the first did not store).

Each figure is printed with its ratio to both floors and the load average
(the dev VMs are shared: absolute figures mean little, ratios taken in the
same run are what to compare).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from peer.aio import ByteStream  # noqa: E402
from peer.aio.ssh import connect  # noqa: E402
from peer.bundles import export_bundle, import_bundle  # noqa: E402
from peer.store import schema  # noqa: E402
from peer.store.rows import version_row  # noqa: E402
from peer.sync import Syncer, sync_over  # noqa: E402
from protocol import (  # noqa: E402
    PeerError,
    SealedVersion,
    TransportError,
    VersionState,
    open_version,
    verify_version,
)

OUT = ROOT / "bench" / "out"
FLOOR_SAMPLE = 5000


def _sync_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_sync", ROOT / "bench" / "sync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f} on {os.cpu_count()} CPUs"


async def floor(a_home: Any, work: Path) -> dict[str, float]:
    """Per-version µs of the primitives, on A's own versions (see the module docstring)."""
    with sqlite3.connect(a_home.store_path) as conn:
        blobs = [b for (b,) in conn.execute("SELECT sealed FROM versions ORDER BY id LIMIT ?", (FLOOR_SAMPLE,))]
    versions = [SealedVersion.decode(b) for b in blobs]
    async with await a_home.open_store() as a:
        group_id, keys, author_key = a.group_id, dict(a.group_keys), a.membership.author_key
    n = len(versions)
    started = time.perf_counter()
    for v in versions:
        verify_version(v, group_id=group_id, author_key=author_key)
    verify = (time.perf_counter() - started) / n
    started = time.perf_counter()
    bodies = [open_version(v, group_id=group_id, group_keys=keys, author_key=author_key) for v in versions]
    opened = (time.perf_counter() - started) / n
    rows = [version_row(v, b, VersionState.WINNER, i + 1) for i, (v, b) in enumerate(zip(versions, bodies))]
    path = work / "floor.db"
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for step in schema.MIGRATIONS:
        for statement in step:
            conn.execute(statement)
    # Run from an older tree (to compare), the schema there indexes through its trigger.
    fts_new_rows: str | None = getattr(schema, "FTS_NEW_ROWS", None)
    started = time.perf_counter()
    for at in range(0, n, 256):
        conn.execute("BEGIN IMMEDIATE")
        last = conn.execute("SELECT coalesce(max(id), 0) FROM versions").fetchone()[0]
        conn.executemany(schema.INSERT_VERSION, rows[at : at + 256])
        if fts_new_rows is not None:
            conn.execute(fts_new_rows, (last,))
        conn.execute("COMMIT")
    sql = (time.perf_counter() - started) / n
    conn.close()
    rest = opened - verify + sql
    return {"verify": verify, "open": opened, "sql": sql, "one_core": opened + sql, "two_core": max(verify, rest)}


def versus(seconds: float, n: int, fl: dict[str, float]) -> str:
    per = seconds / n
    return (
        f"{seconds:.2f} s, {n / seconds:,.0f} versions/s; {per / fl['one_core']:.2f}x the 1-core floor"
        f" ({1 / fl['one_core']:,.0f}/s), {per / fl['two_core']:.2f}x the 2-core floor ({1 / fl['two_core']:,.0f}/s)"
    )


async def round_(n: int, sb: Any, pair: Path, work: Path) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    a_home = sb.copy_home(pair / "a", work / "a")
    fl = await floor(a_home, work)
    print(
        f"  floor: verify {fl['verify'] * 1e6:.0f} µs, open (verify+HKDF+AEAD+decode) {fl['open'] * 1e6:.0f} µs,"
        f" SQLite {fl['sql'] * 1e6:.0f} µs per version; {load()}",
        flush=True,
    )
    row: dict[str, Any] = {"floor": fl}
    c_home = await sb.admit(a_home, work / "c")
    bundle = work / "full.bundle"
    async with await a_home.open_store() as a:
        await export_bundle(a, a_home.identity().signing_key, bundle, device=c_home.identity().device_id)
    async with await c_home.open_store() as c:
        started = time.monotonic()
        imported = await import_bundle(c, bundle)
        row["import_s"] = time.monotonic() - started
    assert imported.added == n, imported
    print(f"  bundle import: {versus(row['import_s'], n, fl)}; {load()}", flush=True)
    d_home = await sb.admit(a_home, work / "d")
    async with await a_home.open_store() as a, await d_home.open_store() as d, trio.open_nursery() as nursery:
        port: int = await nursery.start(partial(Syncer(a, a_home.identity().signing_key).serve, "127.0.0.1", 0))
        started = time.monotonic()
        summary = await Syncer(d, d_home.identity().signing_key).sync_with("127.0.0.1", port)
        row["sync_s"] = time.monotonic() - started
        nursery.cancel_scope.cancel()
    assert summary.received == n, summary
    print(f"  first sync:    {versus(row['sync_s'], n, fl)}; {load()}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return row


class _CutAfter:
    """A stream that breaks for good once ``limit`` bytes have arrived (a laptop going to sleep)."""

    def __init__(self, stream: ByteStream, limit: int) -> None:
        self._stream = stream
        self._left = limit

    @property
    def peer_device_id(self) -> str:
        return self._stream.peer_device_id

    async def send_all(self, data: bytes) -> None:
        if self._left <= 0:
            raise TransportError("cut")
        await self._stream.send_all(data)

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        if self._left <= 0:
            raise TransportError("cut")
        data = await self._stream.receive_some(min(max_bytes, self._left))
        self._left -= len(data)
        return data

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def resume(n: int, sb: Any, pair: Path, work: Path, full_bytes: int) -> None:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    a_home = sb.copy_home(pair / "a", work / "a")
    d_home = await sb.admit(a_home, work / "d")
    async with await a_home.open_store() as a, await d_home.open_store() as d, trio.open_nursery() as nursery:
        port: int = await nursery.start(partial(Syncer(a, a_home.identity().signing_key).serve, "127.0.0.1", 0))
        raw = await connect("127.0.0.1", port, d_home.identity().signing_key, trust_host=lambda _: True)
        try:
            await sync_over(_CutAfter(raw, full_bytes // 2), d)
            raise AssertionError("the cut sync completed")
        except PeerError as e:
            print(f"  cut at {full_bytes // 2:,} of {full_bytes:,} B: {e}", flush=True)
        await raw.aclose()
        kept = int(await d.count_live())
        started = time.monotonic()
        summary = await Syncer(d, d_home.identity().signing_key).sync_with("127.0.0.1", port)
        seconds = time.monotonic() - started
        nursery.cancel_scope.cancel()
    print(
        f"N={n:,} resume: the cut sync stored {kept:,} versions; the next one moved {summary.received:,}"
        f" ({summary.received / n:.0%} of N) in {seconds:.2f} s and completed; {load()}",
        flush=True,
    )
    assert kept + summary.received == n
    shutil.rmtree(work, ignore_errors=True)


async def main_async(args: argparse.Namespace) -> None:
    sb = _sync_bench()
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, {load()}")
    for n in args.sizes:
        pair, initial = await sb.build_pair(n)
        if args.resume:
            await resume(n, sb, pair, OUT / "receive-work", initial.bytes)
            continue
        rows = []
        for r in range(args.rounds):
            print(f"N={n:,} round {r + 1}:", flush=True)
            rows.append(await round_(n, sb, pair, OUT / "receive-work"))
        for what in ("import_s", "sync_s"):
            ratios1 = [row[what] / n / row["floor"]["one_core"] for row in rows]
            ratios2 = [row[what] / n / row["floor"]["two_core"] for row in rows]
            rates = [n / row[what] for row in rows]
            print(
                f"N={n:,} {what[:-2]}: {max(rates):,.0f} / {statistics.median(rates):,.0f} versions/s (best/median);"
                f" vs 1-core floor {min(ratios1):.2f} / {statistics.median(ratios1):.2f},"
                f" vs 2-core floor {min(ratios2):.2f} / {statistics.median(ratios2):.2f}"
            )
    print(f"end: {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--resume", action="store_true", help="Cut a first sync at half its bytes, then sync again.")
    trio_asyncio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()

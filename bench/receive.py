"""Receiving N versions (bundle import, first sync) beside the same-run floor of the primitives.

Usage: .venv/bin/python bench/receive.py [--sizes 10000] [--rounds 3]

Device A is bench/sync.py's cached store of N memories (built under
bench/out/ on first use). Every round, interleaved so that a busy machine
weighs on all figures alike:

* floor: bench/floor.py's primitives of receiving one version, measured
  in this process in this round (Ed25519 verify, HKDF, ChaCha20-Poly1305,
  decoding, SQLite inserts with the store's current schema, hnswlib add).
  The one-core floor is their sum; the two-core floor puts verify on the
  other core: max(verify, the rest);
* bundle import: A's full bundle for a freshly admitted device C, imported
  into C's empty store (``import_bundle``: pass one, then the apply);
* search-ready: the first search after that import builds C's index
  (``Device.prepare_index``); printed beside hnswlib alone adding the
  same vectors with the same parameters on two threads;
* first sync: a fresh C syncs with A over SSH on loopback, both in this
  process (so the sender's reads and asyncssh share one interpreter too);
* first sync, sender apart: the same with A served by another process
  (``--serve``), as a real sender is another machine; on this machine the
  two processes still share the cores.

With ``--resume``: a first sync cut once half of its bytes have arrived,
then a second sync; prints how many versions each moved (the second should
carry only what the first did not store). Then the same with the receiving
side stopped dead at half (cancelled, as a killed process: it writes
nothing more), so what it had not yet committed is sent again.

Each figure is printed with its ratio to both floors and the load average
(the dev VMs are shared: absolute figures mean little, ratios taken in the
same run are what to compare).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
from peer.sync import Syncer, sync_over  # noqa: E402
from protocol import (  # noqa: E402
    PeerError,
    TransportError,
)

OUT = ROOT / "bench" / "out"


def _sync_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_sync", ROOT / "bench" / "sync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _floor_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_floor", ROOT / "bench" / "floor.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


floor = _floor_module()


def load() -> str:
    return str(floor.load())


async def round_(n: int, sb: Any, pair: Path, work: Path) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    a_home = sb.copy_home(pair / "a", work / "a")
    fl = await floor.measure(work=work)
    print(f"  {fl.describe()}", flush=True)
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
    print(f"  bundle import: {fl.versus(row['import_s'], n, checked_first=True)}; {load()}", flush=True)
    row["index_s"], row["raw_index_s"] = await first_index(c_home)
    ready = row["import_s"] + row["index_s"]
    print(
        f"  index built in {row['index_s']:.2f} s (raw hnswlib on the same vectors, 2 threads:"
        f" {row['raw_index_s']:.2f} s); search-ready {ready:.2f} s after the import started; {load()}",
        flush=True,
    )
    d_home = await sb.admit(a_home, work / "d")
    async with await a_home.open_store() as a, await d_home.open_store() as d, trio.open_nursery() as nursery:
        port: int = await nursery.start(partial(Syncer(a, a_home.identity().signing_key).serve, "127.0.0.1", 0))
        started = time.monotonic()
        summary = await Syncer(d, d_home.identity().signing_key).sync_with("127.0.0.1", port)
        row["sync_s"] = time.monotonic() - started
        nursery.cancel_scope.cancel()
    assert summary.received == n, summary
    print(f"  first sync:    {fl.versus(row['sync_s'], n)}; {load()}", flush=True)
    e_home = await sb.admit(a_home, work / "e")
    async with serving_apart(a_home.path) as port, await e_home.open_store() as e:
        started = time.monotonic()
        summary = await Syncer(e, e_home.identity().signing_key).sync_with("127.0.0.1", port)
        row["sync_apart_s"] = time.monotonic() - started
    assert summary.received == n, summary
    print(f"  first sync, sender apart: {fl.versus(row['sync_apart_s'], n)}; {load()}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return row


async def first_index(home: Any) -> tuple[float, float]:
    """Seconds the first search spends building the index of a store that just received everything.

    Beside it, the same run's reference: hnswlib alone adding the same
    vectors (already decrypted, in one array) with the index's parameters.
    """
    import hnswlib
    import numpy as np

    from peer.device import Device
    from peer.search import index as search_index

    async with await Device.open(home) as device:
        started = time.monotonic()
        await device.prepare_index()
        index_s = time.monotonic() - started
        vectors = [
            np.frombuffer(change.embedding, dtype=np.float32)
            async for batch in device.store.all_live_embeddings(search_index.BATCH)
            for change in batch
        ]
    stacked = np.stack(vectors)
    raw = hnswlib.Index(space="cosine", dim=stacked.shape[1])
    raw.init_index(max_elements=len(stacked), M=search_index.M, ef_construction=search_index.EF_CONSTRUCTION)
    raw.set_num_threads(2)
    started = time.monotonic()
    for at in range(0, len(stacked), search_index.BATCH):
        raw.add_items(stacked[at : at + search_index.BATCH], np.arange(at, min(at + search_index.BATCH, len(stacked))))
    return index_s, time.monotonic() - started


@asynccontextmanager
async def serving_apart(home: Path) -> AsyncIterator[int]:
    """A serves syncs from another process (this script with ``--serve``); yields its port."""
    process = await trio.lowlevel.open_process(
        [sys.executable, __file__, "--serve", str(home)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        line = b""
        while not line.endswith(b"\n"):
            data = await process.stdout.receive_some(100)
            if not data:
                raise RuntimeError("the serving process ended before it said its port")
            line += data
        yield int(line)
    finally:
        await process.stdin.aclose()  # it serves until its input ends
        with trio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def serve(home_path: Path) -> None:
    from peer.home import Home

    home = Home(home_path)
    async with await home.open_store() as store, trio.open_nursery() as nursery:
        port: int = await nursery.start(partial(Syncer(store, home.identity().signing_key).serve, "127.0.0.1", 0))
        print(port, flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(0))
        while await stdin.receive_some(100):
            pass
        nursery.cancel_scope.cancel()


class _CutAfter:
    """A stream that breaks for good once ``limit`` bytes have arrived (a laptop going to sleep).

    With ``kill``, the receiving side is cancelled there instead: it stops
    at once and writes nothing more, as a process killed outright (what it
    had not committed is lost).
    """

    def __init__(self, stream: ByteStream, limit: int, kill: trio.CancelScope | None = None) -> None:
        self._stream = stream
        self._left = limit
        self._kill = kill

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
        if self._left <= 0 and self._kill is not None:
            self._kill.cancel()
            await trio.lowlevel.checkpoint()
        return data

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def resume(n: int, sb: Any, pair: Path, work: Path, full_bytes: int, *, kill: bool = False) -> None:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    a_home = sb.copy_home(pair / "a", work / "a")
    d_home = await sb.admit(a_home, work / "d")
    async with await a_home.open_store() as a, await d_home.open_store() as d, trio.open_nursery() as nursery:
        port: int = await nursery.start(partial(Syncer(a, a_home.identity().signing_key).serve, "127.0.0.1", 0))
        raw = await connect("127.0.0.1", port, d_home.identity().signing_key, trust_host=lambda _: True)
        with trio.CancelScope() as killed:
            try:
                await sync_over(_CutAfter(raw, full_bytes // 2, killed if kill else None), d)
                raise AssertionError("the cut sync completed")
            except PeerError as e:
                print(f"  cut at {full_bytes // 2:,} of {full_bytes:,} B: {e}", flush=True)
        if kill:
            print(f"  receiving side stopped at {full_bytes // 2:,} of {full_bytes:,} B, as if killed", flush=True)
        await raw.aclose()
        kept = int(await d.count_live())
        started = time.monotonic()
        summary = await Syncer(d, d_home.identity().signing_key).sync_with("127.0.0.1", port)
        seconds = time.monotonic() - started
        nursery.cancel_scope.cancel()
    how = "killed" if kill else "cut"
    print(
        f"N={n:,} resume: the {how} sync stored {kept:,} versions; the next one moved {summary.received:,}"
        f" ({summary.received / n:.0%} of N) in {seconds:.2f} s and completed; {load()}",
        flush=True,
    )
    assert kept + summary.received == n
    shutil.rmtree(work, ignore_errors=True)


async def main_async(args: argparse.Namespace) -> None:
    sb = _sync_bench()
    print(floor.context())
    for n in args.sizes:
        pair, initial = await sb.build_pair(n)
        if args.resume:
            await resume(n, sb, pair, OUT / "receive-work", initial.bytes)
            await resume(n, sb, pair, OUT / "receive-work", initial.bytes, kill=True)
            continue
        rows = []
        for r in range(args.rounds):
            print(f"N={n:,} round {r + 1}:", flush=True)
            rows.append(await round_(n, sb, pair, OUT / "receive-work"))
        (OUT / f"receive-results-{n}.json").write_text(json.dumps({
            "n": n,
            "import_s": [row["import_s"] for row in rows],
            "sync_s": [row["sync_s"] for row in rows],
            "sync_apart_s": [row["sync_apart_s"] for row in rows],
            "index_s": [row["index_s"] for row in rows],
            "raw_index_s": [row["raw_index_s"] for row in rows],
            "floors": [row["floor"].to_json() for row in rows],
            "machine": floor.machine(),
            "load_end": floor.load(),
        }, indent=1))
        for what in ("import_s", "sync_s", "sync_apart_s"):
            ratios1 = [row[what] / n / row["floor"].one_core for row in rows]
            ratios2 = [row[what] / n / row["floor"].two_core for row in rows]
            rates = [n / row[what] for row in rows]
            checked = ""
            if what == "import_s":
                ratios3 = [row[what] / n / row["floor"].checked_then_written for row in rows]
                checked = f", vs checked-then-written floor {min(ratios3):.2f} / {statistics.median(ratios3):.2f}"
            print(
                f"N={n:,} {what[:-2]}: {max(rates):,.0f} / {statistics.median(rates):,.0f} versions/s (best/median);"
                f" vs 1-core floor {min(ratios1):.2f} / {statistics.median(ratios1):.2f},"
                f" vs 2-core floor {min(ratios2):.2f} / {statistics.median(ratios2):.2f}{checked}"
            )
        ready = [row["import_s"] + row["index_s"] for row in rows]
        over_raw = [row["index_s"] / row["raw_index_s"] for row in rows]
        print(
            f"N={n:,} search-ready (import, then the index built): {min(ready):.2f} / {statistics.median(ready):.2f} s"
            f" (best/median); index build {min(over_raw):.2f} / {statistics.median(over_raw):.2f}x raw hnswlib"
        )
    print(f"end: {load()}")
    if args.plot:
        plot(Path(args.plot))
        print(f"plot written to {args.plot} (every size measured so far: bench/out/receive-results-*.json)")


def plot(path: Path) -> None:
    """Receive throughput per size beside the same-run floors (median of rounds; whiskers: best and worst)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [json.loads(p.read_text()) for p in OUT.glob("receive-results-*.json")]
    results.sort(key=lambda r: r["n"])
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    width = 0.16
    for i, r in enumerate(results):
        n = r["n"]
        one = [1 / f["one_core"] for f in r["floors"]]
        two = [1 / f["two_core"] for f in r["floors"]]
        series = [
            ("bundle import", [n / s for s in r["import_s"]], "tab:blue"),
            ("first sync (SSH, loopback)", [n / s for s in r["sync_s"]], "tab:orange"),
            ("first sync, sender in another process", [n / s for s in r.get("sync_apart_s", r["sync_s"])], "tab:green"),
            ("1-core floor, same run", one, "tab:gray"),
            ("2-core floor, same run", two, "lightgray"),
        ]
        for j, (label, rates, color) in enumerate(series):
            mid = statistics.median(rates)
            bar = ax.bar(i + (j - 2) * width, mid, width, color=color, label=label if i == 0 else None,
                         yerr=[[mid - min(rates)], [max(rates) - mid]], capsize=3)
            ax.bar_label(bar, labels=[f"{mid:,.0f}"], fontsize=7, padding=2, label_type="center")
    ax.set_xticks(range(len(results)), [f"N = {r['n']:,}\n({len(r['import_s'])} round{'s' if len(r['import_s']) > 1 else ''}; {r['load_end']})"
                                        for r in results], fontsize=8)
    ax.set_ylabel("versions per second (median; whiskers: best, worst)")
    ax.set_title(f"Receiving versions vs the floor measured in the same run\n{results[0]['machine']}", fontsize=9)
    ax.set_ylim(top=ax.get_ylim()[1] * 1.35)
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--resume", action="store_true", help="Cut (then kill) a first sync at half its bytes, then sync again.")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "receive-vs-floor.png"),
                        help="Draw every size measured so far here ('' for none).")
    parser.add_argument("--plot-only", action="store_true", help="Redraw the plot from bench/out/receive-results-*.json.")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the sender apart (see serving_apart)
    args = parser.parse_args()
    if args.serve:
        trio_asyncio.run(serve, args.serve)
        return
    if args.plot_only:
        plot(Path(args.plot))
        return
    trio_asyncio.run(main_async, args)


if __name__ == "__main__":
    main()

"""Sync against the full-export baseline: two devices holding the same N memories, d new on one side.

Usage: .venv/bin/python bench/sync.py [--sizes 10000,100000] [--deltas 0,10,1000] [--plot docs/sync-bench.png]

For every N a pair of member stores is built once (device A fills its
store with N memories, a freshly admitted device B receives them by a
real sync over SSH on loopback, and B's search index is built), timed as
the *initial sync*, and cached under bench/out/ with its WAL checkpointed
(the stores are closed), so later runs and every d start from copies of
the same files. For every d, A adds d memories (not timed) and then, each
on its own copy of B:

* sync over an established connection: the SSH handshake (``connect``)
  is timed apart from the session (``sync_over``) in this process;
* a fresh ``peer sync 127.0.0.1:PORT`` CLI process against A served from
  this process: wall time of the whole process (interpreter start,
  imports, SSH handshake, session, index catch-up);
* the baseline of today's memory tools: A's live memories dumped to a JSON
  file (every field, the 384-d vector as a list of floats), then loaded on
  B's side and merged by id, keeping the newer ``updated_at``, with the
  new or changed ones written through the real Store API.

Vectors are random unit vectors (seeded): sync moves them as opaque bytes
and the index treats them like any other, so the model is not part of what
is measured. Texts are paragraphs of peer's built-in corpus.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import trio
import trio_asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import floor  # noqa: E402
from peer.aio import SYNC_SUBSYSTEM
from peer.aio.ssh import connect, serve  # noqa: E402
from peer.dev.corpus import paragraphs  # noqa: E402
from peer.dev.groups import admit as admit_device
from peer.device import Device  # noqa: E402
from peer.home import Home  # noqa: E402
from peer.memory import Draft, Memory  # noqa: E402
from peer.search.embedder import MINILM_ID  # noqa: E402
from peer.store import Store  # noqa: E402
from peer.sync import Syncer, SyncSummary, sync_over  # noqa: E402

OUT = ROOT / "bench" / "out"
DIM = 384
FILL_BATCH = 2000
NO_CHANGE_REPEATS = 5


def unit_vectors(count: int, seed: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((count, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def drafts(start: int, count: int, label: str, seed: int) -> list[tuple[Draft, bytes | None]]:
    texts = paragraphs(2000)
    vectors = unit_vectors(count, seed)
    return [
        (Draft(f"[{label} {i}] {texts[i % len(texts)]}", project=f"p{i % 7}"), vectors[i - start].tobytes())
        for i in range(start, start + count)
    ]


async def fill(store: Store, count: int, label: str, seed: int) -> None:
    for start in range(0, count, FILL_BATCH):
        n = min(FILL_BATCH, count - start)
        await store.add_many(drafts(start, n, label, seed + start), MINILM_ID)


async def admit(inviter: Home, path: Path) -> Home:
    """Device B joins A's group: the membership records pairing would exchange, written directly."""
    return await admit_device(inviter, path, "b")


@dataclass
class Initial:
    n: int
    fill_s: float
    sync_s: float
    bytes: int
    index_s: float

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "fill_s": self.fill_s, "sync_s": self.sync_s, "bytes": self.bytes, "index_s": self.index_s}


async def build_pair(n: int) -> tuple[Path, Initial]:
    """The cached pair for N (built now if missing): A and B holding the same N memories, B's index built."""
    pair = OUT / f"sync-pair-{n}"
    meta = pair / "initial.json"
    if meta.exists():
        return pair, Initial(**json.loads(meta.read_text()))
    shutil.rmtree(pair, ignore_errors=True)
    pair.mkdir(parents=True)
    a_home = Home(pair / "a")
    await a_home.init("a")
    b_home = await admit(a_home, pair / "b")
    async with await a_home.open_store() as a:
        started = time.monotonic()
        await fill(a, n, "a", seed=n)
        fill_s = time.monotonic() - started
        print(f"  N={n:,}: A filled in {fill_s:.1f} s", flush=True)
        async with await b_home.open_store() as b, trio.open_nursery() as nursery:
            port: int = await nursery.start(partial(Syncer(a, a_home.identity().signing_key).serve, "127.0.0.1", 0))
            started = time.monotonic()
            summary = await Syncer(b, b_home.identity().signing_key).sync_with("127.0.0.1", port)
            sync_s = time.monotonic() - started
            nursery.cancel_scope.cancel()
    assert summary.received == n, summary
    # Search-ready: what `peer sync` on a fresh device ends with before a search can use the memories.
    started = time.monotonic()
    async with await Device.open(b_home) as device:
        await device.prepare_index()
    index_s = time.monotonic() - started
    initial = Initial(n, fill_s, sync_s, summary.bytes_sent + summary.bytes_received, index_s)
    print(f"  N={n:,}: initial sync {sync_s:.1f} s ({initial.bytes:,} B), index {index_s:.1f} s", flush=True)
    meta.write_text(json.dumps(initial.to_json()))
    return pair, initial


def copy_home(src: Path, dst: Path) -> Home:
    # The stores were closed (WAL checkpointed into the file and removed), so copying the files is consistent.
    if Path(f"{Home(src).store_path}-wal").exists():
        raise SystemExit(f"{src} has a write-ahead log: is a store still open?")
    shutil.copytree(src, dst)
    return Home(dst)


@dataclass
class Row:
    n: int
    d: int
    handshake_s: float = 0.0
    session_s: float = 0.0
    protocol_bytes: int = 0
    cli_s: float = 0.0
    cli_bytes: int = 0
    export_s: float = 0.0
    import_s: float = 0.0
    json_bytes: int = 0
    written: int = 0
    session_runs: list[float] = field(default_factory=list)

    @property
    def baseline_s(self) -> float:
        return self.export_s + self.import_s


async def export_json(store: Store, path: Path) -> None:
    """Dump every live memory with its fields and vector, the way today's memory tools do."""
    memories = await store.list()
    vectors: dict[str, list[float]] = {}
    async for batch in store.all_live_embeddings():
        for change in batch:
            vectors[change.memory_id] = np.frombuffer(change.embedding, dtype="<f4").tolist()
    dump = [{**m.to_json(), "embedding": vectors.get(m.id, [])} for m in memories]
    with path.open("w") as f:
        json.dump({"memories": dump}, f)


async def import_json(store: Store, path: Path) -> int:
    """Load the dump and merge it by id, newer ``updated_at`` wins; returns how many memories were written."""
    with path.open() as f:
        incoming: list[dict[str, Any]] = json.load(f)["memories"]
    held: dict[str, Memory] = {}
    for at in range(0, len(incoming), 5000):
        held.update(await store.get_many([m["id"] for m in incoming[at : at + 5000]]))
    new: list[tuple[Draft, bytes | None]] = []
    changed = 0
    for m in incoming:
        vector = np.asarray(m["embedding"], dtype="<f4").tobytes()
        mine = held.get(m["id"])
        if mine is None:
            draft = Draft(
                m["content"],
                kind=m["kind"],
                project=m["project"],
                tags=tuple(m["tags"]),
                metadata=m["metadata"],
                importance=m["importance"],
                id=m["id"],
                created_at=m["created_at"],
            )
            new.append((draft, vector))
        elif m["updated_at"] > mine.updated_at:
            await store.edit(
                mine.id,
                content=m["content"],
                kind=m["kind"],
                project=m["project"],
                tags=tuple(m["tags"]),
                metadata=m["metadata"],
                embedding=vector,
                embedder=MINILM_ID,
            )
            changed += 1
    for at in range(0, len(new), FILL_BATCH):
        await store.add_many(new[at : at + FILL_BATCH], MINILM_ID)
    return len(new) + changed


async def measure(pair: Path, n: int, d: int, work: Path) -> Row:
    row = Row(n, d)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    a_home = copy_home(pair / "a", work / "a")
    b_live = copy_home(pair / "b", work / "b-live")
    b_cli = copy_home(pair / "b", work / "b-cli")
    b_base = copy_home(pair / "b", work / "b-baseline")
    key_a = a_home.identity().signing_key
    async with await a_home.open_store() as a:
        await fill_delta(a, n, d)
        syncer_a = Syncer(a, key_a)
        async with trio.open_nursery() as nursery:
            port: int = await nursery.start(
                partial(serve, key_a, host="127.0.0.1", port=0, authorize=syncer_a.authorize,
                        handlers={SYNC_SUBSYSTEM: syncer_a.handle})
            )
            # Over an established connection, in this process.
            async with await b_live.open_store() as b:
                key_b = b_live.identity().signing_key
                runs = 1 if d else NO_CHANGE_REPEATS
                for _ in range(runs):
                    started = time.monotonic()
                    stream = await connect("127.0.0.1", port, key_b, trust_host=lambda device: device == a.device_id)
                    connected = time.monotonic()
                    try:
                        summary: SyncSummary = await sync_over(stream, b)
                    finally:
                        await stream.aclose()
                    done = time.monotonic()
                    row.session_runs.append(done - connected)
                    row.handshake_s = connected - started
                    if d:
                        assert summary.received == d, summary
                    row.protocol_bytes = summary.bytes_sent + summary.bytes_received
            row.session_s = statistics.median(row.session_runs)
            # A fresh CLI process (its own interpreter, imports, handshake, index catch-up).
            started = time.monotonic()
            out = await trio.run_process(
                [sys.executable, "-m", "peer", "sync", f"127.0.0.1:{port}", "--home", str(b_cli.path), "--json"],
                capture_stdout=True,
                capture_stderr=True,
                cwd=str(ROOT),
            )
            row.cli_s = time.monotonic() - started
            cli = json.loads(out.stdout)
            assert cli["received"] == d, cli
            row.cli_bytes = cli["bytes_sent"] + cli["bytes_received"]
            nursery.cancel_scope.cancel()
        # The baseline: full export from A, import with merge on B.
        dump = work / "export.json"
        started = time.monotonic()
        await export_json(a, dump)
        row.export_s = time.monotonic() - started
        row.json_bytes = dump.stat().st_size
    async with await b_base.open_store() as b:
        started = time.monotonic()
        row.written = await import_json(b, dump)
        row.import_s = time.monotonic() - started
    assert row.written == d, row
    shutil.rmtree(work, ignore_errors=True)
    return row


async def fill_delta(store: Store, n: int, d: int) -> None:
    if d:
        await store.add_many(drafts(n, d, "a-new", seed=n + 7_000_000), MINILM_ID)


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r.n for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    for ax, n in zip(axes[0], sizes, strict=True):
        mine = [r for r in rows if r.n == n]
        x = np.arange(len(mine))
        width = 0.27
        series = [
            ("sync, established connection", [r.session_s for r in mine]),
            ("sync, fresh `peer sync` process", [r.cli_s for r in mine]),
            ("JSON export + import with merge", [r.baseline_s for r in mine]),
        ]
        for i, (label, values) in enumerate(series):
            bars = ax.bar(x + (i - 1) * width, values, width, label=label)
            ax.bar_label(bars, labels=[_secs(v) for v in values], fontsize=7)
        ax.set_yscale("log")
        # Head room above the tallest bar for the legend.
        ax.set_ylim(top=max(max(v) for _, v in series) * 12)
        ax.set_xticks(x, [f"d = {r.d:,}" for r in mine])
        ax.set_ylabel("wall time (s, log scale)")
        ax.set_title(f"N = {n:,} memories on both devices")
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _secs(v: float) -> str:
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.1f} s"


def report(rows: list[Row], initials: list[Initial]) -> None:
    print("\ninitial sync (fresh device B receives N; index built after):")
    for i in initials:
        print(f"  N={i.n:,}: fill A {i.fill_s:.1f} s; sync {i.sync_s:.2f} s, {i.bytes:,} B;"
              f" index {i.index_s:.2f} s; search-ready {i.sync_s + i.index_s:.2f} s")
    print("\n| N | d | handshake | session (established) | protocol bytes | fresh `peer sync` | export | import+merge"
          " | baseline total | JSON file | sync / baseline |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.n:,} | {r.d:,} | {r.handshake_s * 1000:.0f} ms | {r.session_s * 1000:.1f} ms"
              f" | {r.protocol_bytes:,} B | {r.cli_s:.2f} s ({r.cli_bytes:,} B) | {r.export_s:.2f} s"
              f" | {r.import_s:.2f} s | {r.baseline_s:.2f} s | {r.json_bytes / 1e6:.1f} MB"
              f" | {100 * r.session_s / r.baseline_s:.2f}% |")
        if len(r.session_runs) > 1:
            print(f"|   | (no-change session runs: {', '.join(f'{s * 1000:.1f}' for s in r.session_runs)} ms) |")


async def main_async(args: argparse.Namespace) -> None:
    rows: list[Row] = []
    initials: list[Initial] = []
    for n in args.sizes:
        print(f"N={n:,}: {floor.context()}", flush=True)
        pair, initial = await build_pair(n)
        initials.append(initial)
        for d in args.deltas:
            fl = await floor.measure()
            print(f"  {fl.describe()}", flush=True)
            row = await measure(pair, n, d, OUT / "sync-work")
            # A session that moves d versions cannot beat d times the receive floor (d = 0: no floor).
            vs = f"; session {fl.versus(row.session_s, d)}" if d else ""
            print(f"  N={n:,} d={d:,}: session {row.session_s * 1000:.1f} ms ({row.protocol_bytes:,} B),"
                  f" handshake {row.handshake_s * 1000:.0f} ms, CLI {row.cli_s:.2f} s,"
                  f" baseline {row.baseline_s:.2f} s ({row.json_bytes / 1e6:.1f} MB){vs}; {floor.load()}", flush=True)
            rows.append(row)
    print(f"at the end: {floor.context()} (the initial sync figures are from when the cached pair was built)")
    report(rows, initials)
    for n in args.sizes:
        (OUT / f"sync-results-{n}.json").write_text(json.dumps(
            [{k: v for k, v in r.__dict__.items()} for r in rows if r.n == n], indent=1))
    if args.plot:
        plot(saved_rows(), Path(args.plot))
        print(f"plot written to {args.plot} (every size measured so far: bench/out/sync-results-*.json)")


def saved_rows() -> list[Row]:
    """Every size's latest rows, so that a run of one size redraws the plot with the others too."""
    rows: list[Row] = []
    for path in sorted(OUT.glob("sync-results-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1])):
        rows.extend(Row(**r) for r in json.loads(path.read_text()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10_000])
    parser.add_argument("--deltas", type=lambda s: [int(x) for x in s.split(",")], default=[0, 10, 1000])
    parser.add_argument("--plot", default=str(ROOT / "docs" / "sync-bench.png"))
    parser.add_argument("--plot-only", action="store_true", help="Redraw the plot from bench/out/sync-results-*.json.")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.plot_only:
        plot(saved_rows(), Path(args.plot))
        return

    async def run() -> None:
        async with trio_asyncio.open_loop():
            await main_async(args)

    trio.run(run)


if __name__ == "__main__":
    main()

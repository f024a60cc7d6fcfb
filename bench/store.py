"""Benchmark of the local store: adding, searching, index rebuilds, `peer stats` start-up.

Run from the repository root:

    .venv/bin/python bench/store.py                        # sizes 10000,100000
    .venv/bin/python bench/store.py --sizes 10000 --queries 100

What it measures, and how:

* add throughput: bulk adds of corpus paragraphs in batches (one
  transaction per batch), once with the real model embedding every text
  and once with vectors given (what a device does with versions received
  from a peer that uses the same embedder);
* search latency p50/p95 at each size, through :meth:`Device.search`, so it
  includes embedding the query, the hnswlib and FTS5 queries, fusion and
  reading the winning memories;
* index rebuild (:meth:`Device.reindex`) next to raw hnswlib ``add_items``
  on the same vectors with the same parameters;
* wall time of the ``peer stats`` command (a fresh process) on each store.

Embedding 100,000 texts on two cores takes long, so the store's texts are
corpus paragraphs (peer.dev.corpus, about 15,000) embedded once and cached in
bench/out/; beyond the corpus size, memories are variants: the paragraph
with a numbered suffix, and its vector plus small Gaussian noise,
renormalised. That keeps the vectors' distribution (clusters of near
duplicates included) realistic for hnswlib and the texts realistic for FTS5.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio
import trio_asyncio
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import floor  # noqa: E402
from peer.dev.corpus import paragraphs  # noqa: E402
from peer.device import Device  # noqa: E402
from peer.home import Home  # noqa: E402
from peer.memory import Draft  # noqa: E402
from peer.search.embedder import default_embedder  # noqa: E402

OUT = ROOT / "bench" / "out"
BATCH = 256

QUERIES = [
    "how do I run the tests", "open a file for reading", "what happens when an exception is not caught",
    "format a date as text", "sort a list by a key", "read environment variables", "start a subprocess and wait",
    "parse command line arguments", "compare floating point numbers", "remove a directory tree",
    "how does garbage collection work", "connect to a socket with a timeout", "decode bytes to a string",
    "make a class iterable", "write a context manager", "what is a coroutine", "join paths portably",
    "copy a dictionary deeply", "regular expression groups", "thread safety of queues",
]


def _peer_cmd() -> list[str]:
    script = Path(sys.executable).with_name("peer")
    return [str(script)] if script.exists() else [sys.executable, "-m", "peer"]


def corpus_vectors(texts: list[str]) -> NDArray[np.float32]:
    """The model's vectors of the corpus paragraphs, cached on disk by corpus and embedder."""
    embedder = default_embedder()
    key = hashlib.sha256(("\n".join(texts) + embedder.id).encode()).hexdigest()[:16]
    cache = OUT / f"corpus-vectors-{key}.npy"
    if cache.exists():
        cached: NDArray[np.float32] = np.load(cache)
        return cached
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"embedding {len(texts)} corpus paragraphs once (cached in {cache}) ...", flush=True)
    started = time.monotonic()
    parts = []
    for at in range(0, len(texts), 512):
        parts.append(embedder.embed(texts[at : at + 512]))
        print(f"  {min(at + 512, len(texts))}/{len(texts)}", end="\r", flush=True)
    vectors: NDArray[np.float32] = np.concatenate(parts).astype(np.float32)
    print(f"  embedded in {time.monotonic() - started:.0f} s{' ' * 20}")
    np.save(cache, vectors)
    return vectors


def dataset(size: int, texts: list[str], vectors: NDArray[np.float32]) -> tuple[list[str], NDArray[np.float32]]:
    """``size`` texts and vectors: the corpus, then numbered variants with perturbed vectors."""
    rng = np.random.default_rng(7)
    out_texts: list[str] = []
    out_vectors = np.empty((size, vectors.shape[1]), dtype=np.float32)
    for i in range(size):
        base = i % len(texts)
        round_ = i // len(texts)
        if round_ == 0:
            out_texts.append(texts[base])
            out_vectors[i] = vectors[base]
        else:
            out_texts.append(f"{texts[base]} (variant {round_})")
            v = vectors[base] + np.asarray(rng.normal(0, 0.02, vectors.shape[1]), dtype=np.float32)
            out_vectors[i] = v / np.linalg.norm(v)
    return out_texts, out_vectors


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def bench_add_with_model(root: Path, texts: list[str]) -> float:
    home = Home.locate(root / "add-model")
    await home.init("bench")
    device = await Device.open(home)
    try:
        await device.embed(["warm up the model"])
        started = time.perf_counter()
        for at in range(0, len(texts), BATCH):
            await device.add([Draft(content=t) for t in texts[at : at + BATCH]])
        return len(texts) / (time.perf_counter() - started)
    finally:
        await device.close()


async def fill(home: Home, texts: list[str], vectors: NDArray[np.float32]) -> float:
    """Add memories with their vectors given (no model); returns memories per second."""
    device = await Device.open(home)
    try:
        embedder_id = device.embedder.id
        started = time.perf_counter()
        for at in range(0, len(texts), BATCH):
            batch = [
                (Draft(content=texts[i], kind="fact", project=f"p{i % 5}"), np.asarray(vectors[i], dtype="<f4").tobytes())
                for i in range(at, min(at + BATCH, len(texts)))
            ]
            await device.store.add_many(batch, embedder_id)
        return len(texts) / (time.perf_counter() - started)
    finally:
        await device.close()


def raw_hnswlib_seconds(vectors: NDArray[np.float32]) -> float:
    import hnswlib

    from peer import index as index_module

    m = index_module.M
    ef_construction = index_module.EF_CONSTRUCTION
    started = time.perf_counter()
    graph = hnswlib.Index(space="cosine", dim=vectors.shape[1])
    graph.init_index(max_elements=len(vectors), M=m, ef_construction=ef_construction)
    graph.add_items(vectors, np.arange(len(vectors)))
    return time.perf_counter() - started


async def bench_size(root: Path, size: int, texts: list[str], vectors: NDArray[np.float32], queries: int) -> dict[str, Any]:
    data_texts, data_vectors = dataset(size, texts, vectors)
    fl = await floor.measure()
    print(f"[{size}] {fl.describe()}", flush=True)
    home = Home.locate(root / f"store-{size}")
    await home.init("bench")
    print(f"[{size}] filling the store ...", flush=True)
    add_rate = await fill(home, data_texts, data_vectors)

    device = await Device.open(home)
    try:
        started = time.perf_counter()
        await device.prepare_index()
        first_catch_up = time.perf_counter() - started
        started = time.perf_counter()
        await device.reindex()
        rebuild = time.perf_counter() - started
        started = time.perf_counter()
        await device.prepare_index()
        noop_catch_up = time.perf_counter() - started

        await device.search("warm up", k=10)
        latencies = []
        for i in range(queries):
            query = QUERIES[i % len(QUERIES)]
            started = time.perf_counter()
            await device.search(query, k=10)
            latencies.append((time.perf_counter() - started) * 1000)
        embed_only = []
        for i in range(min(queries, 50)):
            started = time.perf_counter()
            await device.embed([QUERIES[i % len(QUERIES)]])
            embed_only.append((time.perf_counter() - started) * 1000)
    finally:
        await device.close()

    raw = raw_hnswlib_seconds(data_vectors)
    sealed = _sealed_bytes(home)

    stats_times = []
    for _ in range(7):
        started = time.perf_counter()
        subprocess.run([*_peer_cmd(), "--home", str(home.path), "stats"], check=True, capture_output=True)
        stats_times.append(time.perf_counter() - started)

    return {
        "size": size,
        "add_given_vectors_per_s": add_rate,
        "first_catch_up_s": first_catch_up,
        "rebuild_s": rebuild,
        "raw_hnswlib_s": raw,
        "noop_catch_up_ms": noop_catch_up * 1000,
        "search_p50_ms": pct(latencies, 0.5),
        "search_p95_ms": pct(latencies, 0.95),
        "query_embed_p50_ms": pct(embed_only, 0.5),
        "stats_wall_s": statistics.median(stats_times),
        "db_mb": os.path.getsize(home.store_path) / 1e6,
        "db_bytes_per_memory": os.path.getsize(home.store_path) / size,
        "sealed_bytes_per_memory": sealed / size,
        # Adding with vectors given seals, signs and writes: the same primitives as receiving
        # (sign ≈ verify), so the receive floor on one core is the reference.
        "add_vs_one_core_floor": (1 / add_rate) / fl.one_core,
        "raw_vs_floor_hnsw2": raw / size / fl.hnsw2,
        "floor": fl.to_json(),
        "load": floor.load(),
    }


def _sealed_bytes(home: Home) -> int:
    import sqlite3

    with sqlite3.connect(home.store_path) as conn:
        (total,) = conn.execute("SELECT coalesce(sum(length(sealed)), 0) FROM versions").fetchone()
    return int(total)


async def main_async(args: argparse.Namespace) -> None:
    texts = paragraphs()
    vectors = corpus_vectors(texts)
    print(floor.context(), flush=True)
    root = Path(tempfile.mkdtemp(prefix="peer-bench-"))
    try:
        async with trio_asyncio.open_loop():
            model_rate = await bench_add_with_model(root, texts[: args.model_adds])
            print(f"add with the model embedding ({args.model_adds} paragraphs, batches of {BATCH}): "
                  f"{model_rate:.0f} memories/s", flush=True)
            rows = []
            for size in args.sizes:
                row = await bench_size(root, size, texts, vectors, args.queries)
                rows.append(row)
                print(
                    f"[{size}] add (vectors given) {row['add_given_vectors_per_s']:.0f}/s | "
                    f"search p50 {row['search_p50_ms']:.1f} ms p95 {row['search_p95_ms']:.1f} ms "
                    f"(query embedding p50 {row['query_embed_p50_ms']:.1f} ms) | "
                    f"index rebuild {row['rebuild_s']:.2f} s vs raw hnswlib {row['raw_hnswlib_s']:.2f} s "
                    f"({row['rebuild_s'] / row['raw_hnswlib_s']:.2f}x) | first catch-up {row['first_catch_up_s']:.2f} s | "
                    f"no-op catch-up {row['noop_catch_up_ms']:.1f} ms | `peer stats` {row['stats_wall_s']:.2f} s | "
                    f"store {row['db_mb']:.0f} MB ({row['db_bytes_per_memory']:,.0f} B per memory,"
                    f" {row['db_bytes_per_memory'] / row['sealed_bytes_per_memory']:.2f}x the sealed bytes) | "
                    f"add {row['add_vs_one_core_floor']:.2f}x the 1-core receive floor | {row['load']}",
                    flush=True,
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print("| memories | add, vectors given | search p50 | search p95 | index rebuild | raw hnswlib | `peer stats` |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['size']:,} | {row['add_given_vectors_per_s']:,.0f}/s | {row['search_p50_ms']:.1f} ms | "
            f"{row['search_p95_ms']:.1f} ms | {row['rebuild_s']:.2f} s | {row['raw_hnswlib_s']:.2f} s | "
            f"{row['stats_wall_s']:.2f} s |"
        )
    print(f"end: {floor.context()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="store sizes, comma-separated")
    parser.add_argument("--queries", type=int, default=200, help="searches per size")
    parser.add_argument("--model-adds", type=int, default=2000, help="paragraphs added with the model")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    trio.run(main_async, args)


if __name__ == "__main__":
    main()

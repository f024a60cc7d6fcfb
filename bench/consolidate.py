"""Benchmark of ``peer consolidate``: finding duplicate groups at 10,000 and 100,000 memories.

Run from the repository root:

    .venv/bin/python bench/consolidate.py                  # sizes 10000,100000
    .venv/bin/python bench/consolidate.py --sizes 10000

The store is filled as bench/store.py fills it: the first 10,000 corpus
paragraphs with their (cached) vectors, and beyond that numbered variants
whose vectors are the paragraph's plus Gaussian noise (cosine about 0.93 to
it): at 100,000 memories every paragraph has nine near duplicates, a
harder case for the graph than a real store. The variants' texts differ in
their number, so the lexical checks (peer/consolidate.py) part them: each
near pair costs a look at the texts' numbers. Timed: :func:`find_duplicates`
(reading every live text and vector from SQLite, exact grouping, the
hnswlib graph and its batch neighbour query on every core, the lexical
checks, union-find, reading the groups' memories), next to the same run's
raw hnswlib build and batch query of the same vectors with the same
parameters, and the load average before and after (two cores shared with
other work).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import trio
import trio_asyncio
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from store import corpus_vectors, dataset, fill  # noqa: E402

from peer.consolidate import find_duplicates  # noqa: E402
from peer.dev.corpus import paragraphs  # noqa: E402
from peer.device import Device  # noqa: E402
from peer.home import Home  # noqa: E402


def raw_hnswlib(vectors: NDArray[np.float32]) -> float:
    import hnswlib

    started = time.perf_counter()
    graph = hnswlib.Index(space="cosine", dim=vectors.shape[1])
    graph.init_index(max_elements=len(vectors), M=8, ef_construction=48)
    graph.add_items(vectors, np.arange(len(vectors)), num_threads=os.cpu_count() or 1)
    graph.set_ef(32)
    graph.knn_query(vectors, k=9, num_threads=os.cpu_count() or 1)
    return time.perf_counter() - started


async def run_size(root: Path, size: int, texts: list[str], vectors: NDArray[np.float32]) -> None:
    data_texts, data_vectors = dataset(size, texts, vectors)
    home = Home.locate(root / f"store-{size}")
    await home.init("bench")
    started = time.perf_counter()
    await fill(home, data_texts, data_vectors)
    print(f"[{size:,}] filled in {time.perf_counter() - started:.0f} s", flush=True)
    device = await Device.open(home)
    try:
        load = os.getloadavg()[0]
        found = await find_duplicates(device)
        raw = raw_hnswlib(data_vectors)
        load_after = os.getloadavg()[0]
    finally:
        await device.close()
    exact = sum(g.exact for g in found.groups)
    biggest = max((len(g.members) for g in found.groups), default=0)
    print(
        f"[{size:,}] consolidate: {found.seconds:.1f} s ({len(found.groups):,} groups, {exact:,} exact,"
        f" largest {biggest}) | raw hnswlib build + 9-NN of the same vectors: {raw:.1f} s"
        f" | load average {load:.2f} before, {load_after:.2f} after",
        flush=True,
    )


async def main_async(args: argparse.Namespace) -> None:
    texts = paragraphs(10_000)
    vectors = corpus_vectors(texts)
    root = Path(tempfile.mkdtemp(prefix="peer-consolidate-"))
    try:
        async with trio_asyncio.open_loop():
            for size in args.sizes:
                await run_size(root, size, texts, vectors)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="store sizes, comma-separated")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    trio.run(main_async, args)


if __name__ == "__main__":
    main()

"""Bytes per memory: the store file and the search index beside the sealed bytes they hold.

Usage: .venv/bin/python bench/size.py [--sizes 10000,100000] [--no-index]

A fresh device adds N memories (corpus paragraphs, random 384-d unit
vectors: the model is not what is measured, and a float32 vector takes
the same room whatever its values), its store is closed (the WAL is
checkpointed into peer.db) and then, per memory:

* sealed: the sealed versions' bytes (what sync and bundles carry: the
  header, the encrypted body with text and vector, the signature): the
  least a device that can forward versions must keep;
* peer.db: the whole store file, and its split by table and index
  (SQLite's dbstat: pages in use, including their free space);
* the search index files (hnswlib graph and its labels), built by
  ``Device.prepare_index`` as a search would.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import trio_asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import floor  # noqa: E402
from peer.dev.corpus import paragraphs  # noqa: E402
from peer.dev.groups import found  # noqa: E402
from peer.device import Device  # noqa: E402
from peer.memory import Draft  # noqa: E402
from peer.search.embedder import MINILM_ID  # noqa: E402

OUT = ROOT / "bench" / "out"


def breakdown(db: Path) -> list[tuple[str, int]]:
    """Bytes of every table and index in the file (pages in use), biggest first."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
    return [(str(name), int(size)) for name, size in rows]


async def measure(n: int, work: Path, index: bool) -> None:
    shutil.rmtree(work, ignore_errors=True)
    home = await found(work, "size")
    texts = paragraphs(2000)
    rng = floor.np.random.default_rng(n)
    started = time.monotonic()
    async with await home.open_store() as store:
        for at in range(0, n, 2000):
            count = min(2000, n - at)
            vectors = rng.standard_normal((count, floor.DIM)).astype(floor.np.float32)
            vectors /= floor.np.linalg.norm(vectors, axis=1, keepdims=True)
            await store.add_many(
                [(Draft(f"[{at + i}] {texts[(at + i) % len(texts)]}", project=f"p{i % 7}"), vectors[i].tobytes())
                 for i in range(count)],
                MINILM_ID,
            )
    filled = time.monotonic() - started
    if index:
        async with await Device.open(home) as device:
            await device.prepare_index()
    with sqlite3.connect(home.store_path) as conn:
        sealed, content = conn.execute("SELECT sum(length(sealed)), sum(length(CAST(content AS BLOB))) FROM versions"
                                       ).fetchone() if "content" in {
            r[1] for r in conn.execute("PRAGMA table_info(versions)")} else conn.execute(
            "SELECT sum(length(sealed)), 0 FROM versions").fetchone()
    db = home.store_path.stat().st_size
    wal = Path(f"{home.store_path}-wal")
    db += wal.stat().st_size if wal.exists() else 0
    index_bytes = sum(p.stat().st_size for p in home.path.rglob("*") if p.is_file() and p != home.store_path
                      and not p.name.startswith("peer.db") and ("index" in p.parts[-2] or p.suffix in (".bin", ".json")))
    print(f"N={n:,} (filled in {filled:.1f} s): sealed {sealed / n:,.0f} B per memory (text {content / n:,.0f} B);"
          f" peer.db {db / n:,.0f} B per memory = {db / sealed:.2f}x the sealed bytes;"
          f" index files {index_bytes / n:,.0f} B per memory; db + index {(db + index_bytes) / sealed:.2f}x;"
          f" {floor.load()}", flush=True)
    for name, size in breakdown(home.store_path):
        if size / n >= 5:  # the small tables are a page or two each
            print(f"    {name:28} {size / n:8,.0f} B per memory", flush=True)
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 100_000])
    parser.add_argument("--no-index", action="store_true", help="Skip building the search index.")
    args = parser.parse_args()
    print(floor.context())

    async def run() -> None:
        for n in args.sizes:
            await measure(n, OUT / "size-work", not args.no_index)

    trio_asyncio.run(run)


if __name__ == "__main__":
    main()

"""The floor: what the primitives of receiving a version cost in this process, now, on this machine.

Usage: .venv/bin/python bench/floor.py [--sample 2000] [--rounds 3]
       (the other benches import it and call :func:`measure` in their own run)

The dev machines are shared and their load swings from 0.2 to 15 within
minutes, so an absolute figure means little on its own. Every bench in
bench/ therefore measures this floor in the same run as its own figures and
prints its result as a ratio to it, with the load average and the machine.

Per version, on a sample of real sealed versions (a corpus paragraph and a
384-d float32 vector each, written by a temporary device under bench/out/):

* verify: Ed25519 signature check (``verify_version``); releases the GIL;
* kdf_aead: the per-version key derivation (HKDF) and ChaCha20-Poly1305
  decrypt of the box, as ``open_version`` does them (``unseal_version``
  minus its body decode);
* decode: parsing the sealed version and its body (``SealedVersion.decode``
  + ``MemoryBody.decode``);
* sql: inserting the store's rows with the store's real current schema
  (:mod:`peer.store.schema`: every migration, indexes, triggers), keyword
  index rows per batch, 256 rows a transaction, WAL, synchronous=NORMAL;
* hnsw1 / hnsw2: hnswlib ``add_items`` of the same vectors, M=16,
  ef_construction=100, on one and on two threads (what search-ready adds).

Derived floors: ``one_core`` = decode + verify + kdf_aead + sql (all on
one core, one after the other); ``two_core`` = max(verify, the rest): the
signature checks on the second core, everything else on the first (verify
is the only big part that releases the GIL); ``checked_then_written`` =
max(verify, decode + kdf_aead) + sql: a bundle import, which must check
every version before it writes any (a bad version anywhere changes
nothing), so its writes cannot overlap its checks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import trio_asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from peer.dev.corpus import paragraphs  # noqa: E402
from peer.dev.groups import found  # noqa: E402
from peer.home import Home  # noqa: E402
from peer.memory import Draft  # noqa: E402
from peer.search.embedder import MINILM_ID  # noqa: E402
from peer.store import schema  # noqa: E402
from peer.store.rows import version_row  # noqa: E402
from protocol import (  # noqa: E402
    MemoryBody,
    SealedVersion,
    VersionState,
    open_version,
    unseal_version,
    verify_version,
)

OUT = ROOT / "bench" / "out"
DIM = 384
BATCH = 256

__all__ = ["Floor", "machine", "load", "context", "measure", "sample_home"]


def machine() -> str:
    """CPU count and model (from /proc/cpuinfo), Python and SQLite versions."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f}/{five:.2f}/{fifteen:.2f}"


def context() -> str:
    """The line every bench prints with its figures: the machine and the load average now."""
    return f"{machine()}; {load()}"


@dataclass(frozen=True)
class Floor:
    """Seconds per version of each primitive (see the module docstring), and the load when measured."""

    verify: float
    kdf_aead: float
    decode: float
    sql: float
    hnsw1: float
    hnsw2: float
    load: str

    @property
    def one_core(self) -> float:
        return self.decode + self.verify + self.kdf_aead + self.sql

    @property
    def two_core(self) -> float:
        return max(self.verify, self.one_core - self.verify)

    @property
    def checked_then_written(self) -> float:
        """Two cores, but every version checked before the first is written (a bundle import)."""
        return max(self.verify, self.decode + self.kdf_aead) + self.sql

    @property
    def search_ready_two_core(self) -> float:
        """Receive and index: hnswlib's two threads run after (or beside) the two-core receive."""
        return self.two_core + self.hnsw2

    def describe(self) -> str:
        us = {k: v * 1e6 for k, v in asdict(self).items() if isinstance(v, float)}
        return (
            f"floor per version: verify {us['verify']:.0f} µs, HKDF+AEAD {us['kdf_aead']:.1f},"
            f" decode {us['decode']:.1f}, SQLite (store schema) {us['sql']:.0f}, hnswlib add {us['hnsw1']:.0f} (1 thread)"
            f" / {us['hnsw2']:.0f} (2); 1-core {self.one_core * 1e6:.0f} µs = {1 / self.one_core:,.0f}/s,"
            f" 2-core {self.two_core * 1e6:.0f} µs = {1 / self.two_core:,.0f}/s; {self.load}"
        )

    def versus(self, seconds: float, n: int, *, checked_first: bool = False) -> str:
        """``seconds`` for ``n`` versions as a rate and as ratios to the receive floors.

        ``checked_first`` (a bundle import) adds the ratio to :attr:`checked_then_written`.
        """
        per = seconds / n
        out = (
            f"{seconds:.2f} s, {n / seconds:,.0f} versions/s; {per / self.one_core:.2f}x the 1-core floor,"
            f" {per / self.two_core:.2f}x the 2-core floor"
        )
        if checked_first:
            out += f", {per / self.checked_then_written:.2f}x the checked-then-written floor"
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "one_core": self.one_core,
            "two_core": self.two_core,
            "checked_then_written": self.checked_then_written,
        }


async def sample_home(n: int) -> Home:
    """A device holding ``n`` typical memories (cached under bench/out/: built once, in a few seconds)."""
    path = OUT / f"floor-sample-{n}"
    if (path / "done").exists():
        return Home(path)
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    home = await found(path, "floor")
    texts = paragraphs(2000)
    rng = np.random.default_rng(n)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    async with await home.open_store() as store:
        for at in range(0, n, 1000):
            drafts = [
                (Draft(texts[i % len(texts)], project=f"p{i % 7}"), vectors[i].tobytes())
                for i in range(at, min(n, at + 1000))
            ]
            await store.add_many(drafts, MINILM_ID)
    (path / "done").write_text("")
    return home


def _per(n: int, started: float) -> float:
    return (time.perf_counter() - started) / n


async def measure(sample: int = 2000, work: Path | None = None) -> Floor:
    """Measure every primitive once on ``sample`` versions; call it from inside a trio-asyncio loop."""
    home = await sample_home(sample)
    with sqlite3.connect(home.store_path) as conn:
        blobs = [b for (b,) in conn.execute("SELECT sealed FROM versions ORDER BY id")]
    async with await home.open_store() as store:
        group_id, keys, author_key = store.group_id, dict(store.group_keys), store.membership.author_key
    n = len(blobs)

    started = time.perf_counter()
    versions = [SealedVersion.decode(b) for b in blobs]
    decode = _per(n, started)
    started = time.perf_counter()
    for v in versions:
        verify_version(v, group_id=group_id, author_key=author_key)
    verify = _per(n, started)
    started = time.perf_counter()
    bodies = [unseal_version(v, keys) for v in versions]
    unseal = _per(n, started)
    plain = [b.encode() for b in bodies]
    started = time.perf_counter()
    for p in plain:
        MemoryBody.decode(p)
    body_decode = _per(n, started)
    decode += body_decode
    kdf_aead = max(0.0, unseal - body_decode)
    # The real path, once, so that a change to open_version cannot silently leave the floor behind.
    assert open_version(versions[0], group_id=group_id, group_keys=keys, author_key=author_key) == bodies[0]

    rows = [version_row(v, b, VersionState.WINNER, i + 1) for i, (v, b) in enumerate(zip(versions, bodies))]
    directory = work or OUT
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"floor-{os.getpid()}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        for step in schema.MIGRATIONS:
            for statement in step:
                db.execute(statement)
        started = time.perf_counter()
        for at in range(0, n, BATCH):
            db.execute("BEGIN IMMEDIATE")
            batch = rows[at : at + BATCH]
            db.executemany(schema.INSERT_VERSION, batch)
            db.execute(schema.FTS_NEW_ROWS, (json.dumps([row[4] for row in batch]),))
            db.execute("COMMIT")
        sql = _per(n, started)
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    import hnswlib

    vectors = np.stack([np.frombuffer(b.embedding, dtype=np.float32) for b in bodies])
    hnsw: list[float] = []
    for threads in (1, 2):
        index = hnswlib.Index(space="cosine", dim=vectors.shape[1])
        index.init_index(max_elements=n, M=16, ef_construction=100)
        index.set_num_threads(threads)
        started = time.perf_counter()
        index.add_items(vectors, np.arange(n))
        hnsw.append(_per(n, started))
    return Floor(verify, kdf_aead, decode, sql, hnsw[0], hnsw[1], load())


def median_floor(floors: list[Floor]) -> Floor:
    """Field-wise median of several floors (for a summary line over rounds)."""
    fields = ("verify", "kdf_aead", "decode", "sql", "hnsw1", "hnsw2")
    values = {f: statistics.median(getattr(fl, f) for fl in floors) for f in fields}
    return Floor(**values, load=floors[-1].load)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(context())

    async def run() -> None:
        for _ in range(args.rounds):
            print(" ", (await measure(args.sample)).describe(), flush=True)

    trio_asyncio.run(run)


if __name__ == "__main__":
    main()

"""Benchmark of `peer mcp`: the round trip of `search` through a real MCP client, beside in-process search.

Run from the repository root:

    .venv/bin/python bench/mcp.py                      # sizes 10000,100000
    .venv/bin/python bench/mcp.py --sizes 10000 --queries 200

For each size a store is filled with corpus paragraphs and their vectors
(as bench/store.py does: paragraphs embedded once and cached in bench/out/,
numbered variants with perturbed vectors beyond the corpus), its index is
built, and then, in the same run:

* in process: :meth:`Device.search` (k=10), the floor: embedding the query,
  hnswlib and FTS5, fusion, reading the memories;
* through MCP: `peer mcp` started as a subprocess by the SDK's own stdio
  client (`stdio_client` + `ClientSession`, on trio), the `search` tool
  called with the same queries (limit 10, all projects): the floor plus
  JSON-RPC over pipes, argument checks, the freshness check and the result
  shaping.

and, through one server, `remember` then `search` 20 times: the search
right after a write (it catches the index up with that write first).

It prints p50/p95 of both, their ratio and the load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
# This file is named like the SDK's package: take its folder off the path before importing the SDK.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(ROOT))

from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402


def _bench_store() -> Any:
    """bench/store.py's helpers (fill, dataset, cached corpus vectors), loaded by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_store", BENCH / "store.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_store = _bench_store()
QUERIES, _peer_cmd, corpus_vectors, dataset, fill, pct = (
    _store.QUERIES, _store._peer_cmd, _store.corpus_vectors, _store.dataset, _store.fill, _store.pct
)

from peer.corpus import paragraphs  # noqa: E402
from peer.device import Device  # noqa: E402
from peer.home import Home  # noqa: E402


async def in_process(home: Home, queries: int) -> list[float]:
    device = await Device.open(home)
    try:
        await device.prepare_index()
        await device.search("warm up", k=10)
        latencies = []
        for i in range(queries):
            started = time.perf_counter()
            await device.search(QUERIES[i % len(QUERIES)], k=10)
            latencies.append((time.perf_counter() - started) * 1000)
        return latencies
    finally:
        await device.close()


async def write_then_search(home: Home, rounds: int) -> list[float]:
    """``remember`` then ``search`` through one server: the search's round trip, which sees the write."""
    command = _peer_cmd()
    params = StdioServerParameters(command=command[0], args=[*command[1:], "--home", str(home.path), "mcp"],
                                   cwd=str(home.path))
    latencies = []
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            await session.call_tool("search", {"query": "warm up", "all_projects": True})
            for i in range(rounds):
                await session.call_tool("remember", {"content": f"bench note {i}: the cache layer {i} sits before the API"})
                started = time.perf_counter()
                result = await session.call_tool("search", {"query": f"cache layer {i}", "all_projects": True})
                latencies.append((time.perf_counter() - started) * 1000)
                assert not result.is_error
    return latencies


async def through_mcp(home: Home, queries: int, arguments: dict[str, Any]) -> tuple[list[float], float]:
    command = _peer_cmd()
    params = StdioServerParameters(command=command[0], args=[*command[1:], "--home", str(home.path), "mcp"],
                                   cwd=str(home.path))
    started = time.perf_counter()
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            first = await session.call_tool("search", {"query": "warm up", **arguments})
            assert not first.is_error, first.content
            ready = time.perf_counter() - started
            latencies = []
            for i in range(queries):
                started = time.perf_counter()
                result = await session.call_tool("search", {"query": QUERIES[i % len(QUERIES)], **arguments})
                latencies.append((time.perf_counter() - started) * 1000)
                assert not result.is_error and isinstance(result.structured_content, dict)
                assert result.structured_content["results"]
    return latencies, ready


async def bench_size(root: Path, size: int, texts: list[str], vectors: Any, queries: int) -> dict[str, Any]:
    data_texts, data_vectors = dataset(size, texts, vectors)
    home = Home.locate(root / f"store-{size}")
    await home.init("bench")
    print(f"[{size:,}] filling the store and building the index ...", flush=True)
    await fill(home, data_texts, data_vectors)
    load_before = os.getloadavg()
    local = await in_process(home, queries)
    remote, ready = await through_mcp(home, queries, {"limit": 10, "all_projects": True})
    scoped, _ = await through_mcp(home, queries // 2, {"limit": 10, "project": "p1"})
    after_write = await write_then_search(home, 20)
    local_again = await in_process(home, queries)
    load_after = os.getloadavg()
    local_all = local + local_again
    return {
        "size": size,
        "local_p50": pct(local_all, 0.5), "local_p95": pct(local_all, 0.95),
        "mcp_p50": pct(remote, 0.5), "mcp_p95": pct(remote, 0.95),
        "scoped_p50": pct(scoped, 0.5),
        "after_write_p50": pct(after_write, 0.5), "after_write_max": max(after_write),
        "first_answer_s": ready,
        "load": (load_before[0], load_after[0]),
    }


async def main_async(args: argparse.Namespace) -> None:
    texts = paragraphs(args.corpus)
    vectors = corpus_vectors(texts)
    root = Path(tempfile.mkdtemp(prefix="peer-bench-mcp-"))
    rows = []
    try:
        async with trio_asyncio.open_loop():
            for size in args.sizes:
                row = await bench_size(root, size, texts, vectors, args.queries)
                rows.append(row)
                print(
                    f"[{size:,}] search p50/p95: in process {row['local_p50']:.1f}/{row['local_p95']:.1f} ms, "
                    f"through MCP {row['mcp_p50']:.1f}/{row['mcp_p95']:.1f} ms "
                    f"({row['mcp_p50'] / row['local_p50']:.2f}x at p50); one project (p1, 20% of the store) "
                    f"p50 {row['scoped_p50']:.1f} ms; search right after a remember p50 {row['after_write_p50']:.1f} ms "
                    f"(max {row['after_write_max']:.0f} ms); server start to first answer {row['first_answer_s']:.1f} s; "
                    f"load average {row['load'][0]:.2f} -> {row['load'][1]:.2f}",
                    flush=True,
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print("| memories | in process p50 / p95 | through MCP p50 / p95 | ratio at p50 | one project, MCP p50 "
          "| after a remember, p50 / max | load average |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['size']:,} | {row['local_p50']:.1f} / {row['local_p95']:.1f} ms | "
            f"{row['mcp_p50']:.1f} / {row['mcp_p95']:.1f} ms | {row['mcp_p50'] / row['local_p50']:.2f}x | "
            f"{row['scoped_p50']:.1f} ms | {row['after_write_p50']:.1f} / {row['after_write_max']:.0f} ms | "
            f"{row['load'][0]:.2f} -> {row['load'][1]:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="store sizes, comma-separated")
    parser.add_argument("--queries", type=int, default=200, help="searches per measurement")
    parser.add_argument("--corpus", type=int, default=3000, help="distinct paragraphs (the rest are variants)")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    trio.run(main_async, args)


if __name__ == "__main__":
    main()

"""`peer search` and `peer add` as fresh processes, answered by a running agent and in process.

Usage (from the repository root):

    .venv/bin/python bench/cli_warm.py                      # 10,000 memories, 15 rounds
    .venv/bin/python bench/cli_warm.py --sizes 10000,100000 --rounds 20

For each size, a home is filled with corpus paragraphs and their real
vectors (bench/store.py's cached corpus embedding and variants beyond it),
its index built once, and a real ``peer agent`` started on it (loopback, no
mDNS). Then, round after round, interleaved so that both see the same load:

* ``peer search QUERY`` answered by the agent, and the same with
  ``PEER_NO_AGENT=1`` (in process: imports, index open, model load, search);
* ``peer add TEXT`` both ways (a new text each time);
* the same-run references: ``python -c pass`` (interpreter start) and
  ``python -c "import peer.cli"`` (what a thin client cannot avoid).

Beside each wall time, the process's own CPU time (user + system, not the
agent's): it moves less with the load than wall time does.

Every sample is the wall time of the whole process, as a user or an
assistant sees it. The script prints p50/p90 for each, the ratio of in
process to agent, and the 1-minute load average (min-max over the
samples): on a shared 2-core machine absolute times mean little without it.
It checks that the agent really answered every delegated command (its
``hello`` counts them).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from peer.agent_client import ask_agent  # noqa: E402
from peer.dev.corpus import paragraphs  # noqa: E402
from peer.home import Home  # noqa: E402

PEER = [str(Path(sys.executable).with_name("peer"))]


def _bench_store() -> Any:
    """bench/store.py as a module (its cached corpus vectors, variants and fill)."""
    spec = importlib.util.spec_from_file_location("bench_store", ROOT / "bench" / "store.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_store"] = module
    spec.loader.exec_module(module)
    return module


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Samples:
    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self.loads: dict[str, list[float]] = {}

    def timed(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        load = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv[:4])} failed: {done.stderr}")
        self.times.setdefault(name, []).append(elapsed)
        # CPU time of the process itself (not the agent's): less at the mercy of the load than wall time.
        self.cpu.setdefault(name, []).append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        self.loads.setdefault(name, []).append(load)

    def row(self, name: str, reference: str | None = None) -> str:
        values = self.times[name]
        loads = self.loads[name]
        ratio = ""
        if reference is not None:
            ratio = f"{pct(self.times[reference], 0.5) / pct(values, 0.5):5.1f}x"
        return (f"  {name:<28} p50 {pct(values, 0.5) * 1000:7.0f} ms  p90 {pct(values, 0.9) * 1000:7.0f} ms"
                f"  {ratio:>6}  own CPU p50 {pct(self.cpu[name], 0.5) * 1000:5.0f} ms"
                f"  load {min(loads):.1f}-{max(loads):.1f}")


def build(root: Path, size: int, store_bench: Any) -> Home:
    texts = paragraphs()
    vectors = store_bench.corpus_vectors(texts)
    data_texts, data_vectors = store_bench.dataset(size, texts, vectors)
    home = Home.locate(root / f"home-{size}")

    async def fill() -> None:
        async with trio_asyncio.open_loop():
            await home.init("bench")
            await store_bench.fill(home, data_texts, data_vectors)

    started = time.monotonic()
    trio.run(fill)
    # The index, built once in process (as the first `peer search` would).
    subprocess.run([*PEER, "--home", str(home.path), "search", "warm up"], check=True, capture_output=True,
                   env={**os.environ, "PEER_NO_AGENT": "1"})
    print(f"  store of {size:,} memories and its index built in {time.monotonic() - started:.0f} s", flush=True)
    return home


def bench_size(root: Path, size: int, rounds: int, store_bench: Any) -> None:
    print(f"\n{size:,} memories", flush=True)
    home = build(root, size, store_bench)
    base_env = {k: v for k, v in os.environ.items() if k != "PEER_HOME"}
    alone_env = {**base_env, "PEER_NO_AGENT": "1"}
    agent = subprocess.Popen([*PEER, "--home", str(home.path), "agent", "--listen", "127.0.0.1:0", "--no-discovery",
                              "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=base_env)
    try:
        assert agent.stdout is not None
        json.loads(agent.stdout.readline())
        # The agent loads its model and index in the background; one search waits for them.
        subprocess.run([*PEER, "--home", str(home.path), "search", "warm up"], check=True, capture_output=True,
                       env=base_env)
        before = ask_agent(home.path, "hello", {})["answered"]
        samples = Samples()
        queries = store_bench.QUERIES
        for i in range(rounds):
            query = queries[i % len(queries)]
            text = f"bench note {i} at {time.time():.3f}: the agent answered this add, or the process did"
            samples.timed("python -c pass", [sys.executable, "-c", "pass"], base_env)
            samples.timed("python -c 'import peer.cli'", [sys.executable, "-c", "import peer.cli"], base_env)
            samples.timed("search, agent", [*PEER, "--home", str(home.path), "search", query], base_env)
            samples.timed("search, in process", [*PEER, "--home", str(home.path), "search", query], alone_env)
            samples.timed("add, agent", [*PEER, "--home", str(home.path), "add", text + " (agent)"], base_env)
            samples.timed("add --kind fact, agent",
                          [*PEER, "--home", str(home.path), "add", "--kind", "fact", text + " (agent, fact)"], base_env)
            samples.timed("add, in process", [*PEER, "--home", str(home.path), "add", text + " (alone)"], alone_env)
        after = ask_agent(home.path, "hello", {})["answered"]
        for method, count in (("search", rounds), ("add", 2 * rounds)):
            answered = after.get(method, 0) - before.get(method, 0)
            assert answered == count, f"the agent answered {answered} of {count} {method} commands"
    finally:
        agent.terminate()
        agent.wait(60)
    print(f"  {rounds} rounds, interleaved; wall time of each fresh process; ratio = in process / agent")
    print(samples.row("python -c pass"))
    print(samples.row("python -c 'import peer.cli'"))
    print(samples.row("search, in process"))
    print(samples.row("search, agent", reference="search, in process"))
    print(samples.row("add, in process"))
    print(samples.row("add, agent", reference="add, in process"))
    print(samples.row("add --kind fact, agent", reference="add, in process"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000", help="comma-separated store sizes (default 10000)")
    parser.add_argument("--rounds", type=int, default=15, help="samples per command and mode (default 15)")
    args = parser.parse_args()
    store_bench = _bench_store()
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()},"
          f" load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    root = Path(tempfile.mkdtemp(prefix="peer-cli-warm-"))
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            bench_size(root, size, args.rounds, store_bench)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

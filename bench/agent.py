"""The agent at work and at rest: propagation latency, and what an idle agent costs.

Usage:
    .venv/bin/python bench/agent.py propagation [--changes 100] [--find mdns|peer]
    .venv/bin/python bench/agent.py idle [--minutes 5] [--size 100000] [--find mdns|peer]

*propagation*: two devices of one group, each with a real ``peer agent``
process on loopback; they find each other by mDNS on 127.0.0.1 (or, with
``--find peer``, from ``--peer`` addresses). This process adds a memory on A
through the store, as ``peer add`` does from another process, and polls
B with ``Device.search`` (the real model, hybrid search) every 20 ms until
the new memory is among the hits: the time from A's commit to B's hit is
one sample. Changes are spaced 0.5 s apart. Beside p50/p90 it prints the
same-run floor: B's own search for the memory once it is there plus
bench/floor.py's one-core cost of receiving one version (what any
propagation must pay), the machine and the load average.

*idle*: two agents on copies of the cached 100k-memory pair that
bench/sync.py builds (bench/out/sync-pair-100000; run that first), syncing
with each other every 60 s (the default anti-entropy interval), nothing
else happening. Every 5 s the script reads A's CPU time and resident
memory from /proc; it prints the mean CPU share over the whole window and
the peak RSS.
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
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import floor  # noqa: E402
from peer.dev.corpus import paragraphs  # noqa: E402
from peer.device import Device  # noqa: E402
from peer.home import Home  # noqa: E402
from peer.memory import Draft  # noqa: E402
from tests.support.relay import Relay  # noqa: E402

PEER = [str(Path(sys.executable).with_name("peer"))]
TICK = os.sysconf("SC_CLK_TCK")


def _bench_sync() -> Any:
    """bench/sync.py as a module (its pair builder and admission helper)."""
    spec = importlib.util.spec_from_file_location("bench_sync", ROOT / "bench" / "sync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_sync"] = module
    spec.loader.exec_module(module)
    return module


#: How the agents find each other: mDNS on loopback (the real path), or `--peer` addresses.
FIND = {"mdns": ["--interface", "127.0.0.1"], "peer": ["--no-discovery", "--peer"]}


class AgentProcess:
    """``peer agent`` listening on 127.0.0.1, port 0: the port is the one it reports on its first line."""

    def __init__(self, home: Path, other: int | None, log: Path, find: str) -> None:
        self.log = open(log, "wb")  # noqa: SIM115
        how = FIND[find] + ([f"127.0.0.1:{other}"] if find == "peer" else [])
        self.process = subprocess.Popen(
            [*PEER, "--home", str(home), "agent", "--listen", "127.0.0.1:0", "--json", *how],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        if not first:
            raise SystemExit(f"the agent on {home} did not start: see {log}")
        self.port = int(json.loads(first)["port"])

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def start_pair(a: Path, b: Path, logs: Path, find: str, relay: Relay) -> tuple[AgentProcess, AgentProcess]:
    """A and B on ports the kernel picks. With ``--peer``, B is started first and names A through
    ``relay`` (A's port is not known yet); A names B directly, so A->B, the measured way, is direct."""
    agent_b = AgentProcess(b, relay.port, logs / "b.log", find)
    agent_a = AgentProcess(a, agent_b.port, logs / "a.log", find)
    relay.point_at(agent_a.port)
    return agent_a, agent_b


async def propagation(changes: int, work: Path, find: str) -> dict[str, Any]:
    bench_sync = _bench_sync()
    a = Home(work / "a")
    await a.init("a")
    b = await bench_sync.admit(a, work / "b")
    texts = [p for p in paragraphs() if 80 <= len(p) <= 400][:changes]
    relay = Relay()
    agents = start_pair(a.path, b.path, work, find, relay)
    samples: list[float] = []
    searches: list[float] = []
    fl = await floor.measure()
    print(fl.describe(), file=sys.stderr)
    try:
        async with await Device.open(a) as on_a, await Device.open(b) as on_b:
            await on_b.prepare_index()
            await trio.sleep(5)  # the agents find each other and run their first round
            for i, text in enumerate(texts):
                (memory_id,) = await on_a.add([Draft(text, kind="fact")])
                committed = time.perf_counter()
                with trio.fail_after(30):
                    while memory_id not in {hit.memory.id for hit in await on_b.search(text, k=3)}:
                        await trio.sleep(0.02)
                samples.append(time.perf_counter() - committed)
                # The search B has to run anyway, timed once the memory is there: with the
                # receive floor of one version, the least a propagation can take.
                started = time.perf_counter()
                await on_b.search(text, k=3)
                searches.append(time.perf_counter() - started)
                if (i + 1) % 20 == 0:
                    print(f"  {i + 1}/{len(texts)} changes, last {samples[-1] * 1000:.0f} ms", file=sys.stderr)
                await trio.sleep(0.5)
    finally:
        for agent in agents:
            agent.stop()
        relay.close()
    samples.sort()
    reference = statistics.median(searches) + fl.one_core
    return {
        "find": find,
        "changes": len(samples),
        "p90_s": round(samples[int(0.90 * (len(samples) - 1))], 3),
        "floor_s": round(reference, 4),
        "p50_vs_floor": round(statistics.median(samples) / reference, 1),
        "machine": floor.machine(),
        "load_start": fl.load,
        "load_end": floor.load(),
        "p50_s": round(statistics.median(samples), 3),
        "p95_s": round(samples[int(0.95 * (len(samples) - 1))], 3),
        "max_s": round(samples[-1], 3),
        "mean_s": round(statistics.fmean(samples), 3),
    }


def copy_home(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)


def idle(minutes: float, size: int, work: Path, find: str) -> dict[str, Any]:
    pair = ROOT / "bench" / "out" / f"sync-pair-{size}"
    if not pair.exists():
        raise SystemExit(f"{pair} is missing: run `.venv/bin/python bench/sync.py --sizes {size} --deltas 0` first")
    copy_home(pair / "a", work / "a")
    copy_home(pair / "b", work / "b")
    relay = Relay()
    agents = start_pair(work / "a", work / "b", work, find, relay)
    try:
        time.sleep(10)  # start-up and the first round of syncs are not idle time
        agent = agents[0]
        start_cpu, start = agent.cpu_s(), time.monotonic()
        peak = agent.rss_mb()
        rss: list[float] = []
        while time.monotonic() - start < minutes * 60:
            time.sleep(5)
            rss.append(agent.rss_mb())
            peak = max(peak, rss[-1])
        cpu = (agent.cpu_s() - start_cpu) / (time.monotonic() - start)
        status = json.loads((work / "a" / "agent.json").read_text())
    finally:
        for agent in agents:
            agent.stop()
        relay.close()
    return {
        "find": find,
        "memories": size,
        "minutes": minutes,
        "cpu_percent": round(100 * cpu, 3),
        "rss_mb_peak": round(peak, 1),
        "rss_mb_median": round(statistics.median(rss), 1),
        "syncs_seen": [p["last_result"] for p in status["peers"]],
        "machine": floor.machine(),
        "load_end": floor.load(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("propagation")
    p.add_argument("--changes", type=int, default=100)
    i = sub.add_parser("idle")
    i.add_argument("--minutes", type=float, default=5.0)
    i.add_argument("--size", type=int, default=100_000)
    for sub_parser in (p, i):
        sub_parser.add_argument("--find", choices=sorted(FIND), default="mdns",
                                help="mdns: the agents find each other by mDNS on 127.0.0.1 (default); peer: --peer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="peer-bench-agent-") as tmp:
        work = Path(tmp)
        if args.what == "propagation":

            async def run() -> dict[str, Any]:
                async with trio_asyncio.open_loop():
                    return await propagation(args.changes, work, args.find)

            result = trio.run(run)
        else:
            result = idle(args.minutes, args.size, work, args.find)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Search quality on a labelled set: recall@1, recall@5, MRR and no-answer precision.

Run from the repository root:

    .venv/bin/python bench/quality.py                    # 10,000 memories
    .venv/bin/python bench/quality.py --sizes 10000,100000

The labelled set is bench/quality_queries.tsv: queries written by hand for
the first 10,000 paragraphs of peer.dev.corpus, of three kinds:
paraphrases (the answer in other words), exact tokens (identifiers, error
and issue numbers, file and option names) and questions no paragraph
answers. Each answerable query names a substring of its right paragraphs.

The store is filled as bench/store.py fills it (corpus paragraphs with their
cached vectors; beyond the corpus, numbered variants), then every query
runs once through :meth:`Device.search` with no cut-off. Its hits carry
both retrievers' ranks, so the same run yields three rankings:
vector-only (by vector rank), keyword-only (by keyword rank) and hybrid
(the fused order). Figures:

* recall@1, recall@5: answerable queries with a right paragraph first / in
  the first five;
* MRR: mean of 1/rank of the first right paragraph (0 beyond rank 10);
* no-answer precision: share of unanswerable queries that return nothing
  (vector-only: no hit reaches the similarity cut-off; keyword-only: no
  keyword match at all; hybrid: no hit that :func:`peer.search.fusion.relevant`
  keeps: every query keyword matched, or the similarity at the cut-off).

Then the cut-off is swept: for each similarity threshold, hybrid recall@5
counting only the hits the cut-off keeps, next to no-answer precision. The
default (``MIN_SIMILARITY``) is the lowest threshold at which at least 80%
of the unanswerable queries return nothing while recall@5 is no lower than
without a cut-off (a low cut-off errs towards showing short notes, whose
similarity to a question runs lower than a documentation paragraph's); the
sweep prints which that is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import trio
import trio_asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from store import corpus_vectors, dataset, fill  # noqa: E402

from peer.dev.corpus import paragraphs  # noqa: E402
from peer.device import Device, SearchResult  # noqa: E402
from peer.home import Home  # noqa: E402
from peer.search.fusion import MIN_SIMILARITY, keyword_coverage, relevant  # noqa: E402

QUERIES = ROOT / "bench" / "quality_queries.tsv"
DEPTH = 200  # hits asked of each search: deep enough that each retriever's top 10 is inside
THRESHOLDS = [round(0.20 + 0.05 * i, 2) for i in range(9)]


@dataclass(frozen=True, slots=True)
class Query:
    kind: str  # "paraphrase", "exact" or "none"
    text: str
    answer: str  # "" for "none"


def load_queries() -> list[Query]:
    out: list[Query] = []
    for line in QUERIES.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        kind, text, *answer = line.split("\t")
        out.append(Query(kind, text, answer[0] if answer else ""))
    return out


@dataclass(frozen=True, slots=True)
class Run:
    query: Query
    hits: list[SearchResult]

    def ranking(self, mode: str) -> list[SearchResult]:
        if mode == "hybrid":
            return self.hits
        if mode == "vector":
            return sorted((h for h in self.hits if h.hit.vector_rank is not None), key=lambda h: h.hit.vector_rank or 0)
        return sorted((h for h in self.hits if h.hit.keyword_rank is not None), key=lambda h: h.hit.keyword_rank or 0)

    def first_right(self, ranked: list[SearchResult]) -> int | None:
        for at, result in enumerate(ranked[:10], 1):
            if self.query.answer in result.memory.content:
                return at
        return None


_QUERY_OF: dict[int, str] = {}


def coverage_of(result: SearchResult) -> float:
    query = _QUERY_OF[id(result)]
    return keyword_coverage(query, result.memory.content) if result.hit.keyword_match else 0.0


def kept(mode: str, ranked: list[SearchResult], threshold: float) -> list[SearchResult]:
    """What a cut-off at ``threshold`` leaves of one ranking."""
    if mode == "keyword":
        return ranked  # every keyword hit is a keyword match
    if mode == "vector":
        return [r for r in ranked if r.hit.similarity is not None and r.hit.similarity >= threshold]
    return [r for r in ranked if relevant(r.hit, threshold, coverage_of(r))]


def figures(runs: list[Run], mode: str, threshold: float | None) -> dict[str, float]:
    answerable = [r for r in runs if r.query.kind != "none"]
    unanswerable = [r for r in runs if r.query.kind == "none"]
    at1 = at5 = rr = 0.0
    for run in answerable:
        ranked = run.ranking(mode)
        if threshold is not None:
            ranked = kept(mode, ranked, threshold)
        rank = run.first_right(ranked)
        if rank is not None:
            at1 += rank == 1
            at5 += rank <= 5
            rr += 1 / rank
    silent = sum(not kept(mode, run.ranking(mode), threshold if threshold is not None else MIN_SIMILARITY)
                 for run in unanswerable)
    n = len(answerable) or 1
    return {"r1": at1 / n, "r5": at5 / n, "mrr": rr / n, "none": silent / (len(unanswerable) or 1)}


async def evaluate(root: Path, size: int, texts: list[str], vectors: object, queries: list[Query]) -> None:
    import numpy as np

    data_texts, data_vectors = dataset(size, texts, np.asarray(vectors))
    home = Home.locate(root / f"store-{size}")
    await home.init("bench")
    print(f"[{size:,}] filling the store ...", flush=True)
    await fill(home, data_texts, data_vectors)
    device = await Device.open(home)
    try:
        await device.prepare_index()
        started = time.perf_counter()
        runs = [Run(q, await device.search(q.text, k=DEPTH, min_similarity=None)) for q in queries]
        seconds = time.perf_counter() - started
        for run in runs:
            for result in run.hits:
                _QUERY_OF[id(result)] = run.query.text
    finally:
        await device.close()
    print(f"[{size:,}] {len(queries)} queries in {seconds:.1f} s (load average {os.getloadavg()[0]:.2f})")
    kinds = {k: sum(q.kind == k for q in queries) for k in ("paraphrase", "exact", "none")}
    print(f"[{size:,}] queries: {kinds}")
    print()
    print(f"memories: {size:,}; cut-off for vector-only and hybrid: {MIN_SIMILARITY}")
    print("| retrieval | queries | recall@1 | recall@5 | MRR@10 | no-answer precision |")
    print("|---|---|---:|---:|---:|---:|")
    for mode in ("vector", "keyword", "hybrid"):
        for kind in ("paraphrase", "exact", "all"):
            subset = [r for r in runs if kind == "all" or r.query.kind in (kind, "none")]
            f = figures(subset, mode, None)
            print(f"| {mode} | {kind} | {f['r1']:.3f} | {f['r5']:.3f} | {f['mrr']:.3f} | {f['none']:.3f} |")
    print()
    base = figures(runs, "hybrid", None)
    print(f"hybrid, answerable recall@5 with no cut-off: {base['r5']:.3f}")
    print("| cut-off (similarity) | hybrid recall@5 kept | hybrid MRR kept | no-answer precision | vector-only no-answer precision |")
    print("|---:|---:|---:|---:|---:|")
    chosen = None
    for t in THRESHOLDS:
        f = figures(runs, "hybrid", t)
        v = figures(runs, "vector", t)
        print(f"| {t:.2f} | {f['r5']:.3f} | {f['mrr']:.3f} | {f['none']:.3f} | {v['none']:.3f} |")
        if chosen is None and f["none"] >= 0.8 and f["r5"] >= base["r5"]:
            chosen = t
    print(f"lowest cut-off with no-answer precision >= 0.8 and recall@5 not below no cut-off: {chosen}"
          f" (MIN_SIMILARITY is {MIN_SIMILARITY})")
    leaks = [r.query.text for r in runs if r.query.kind == "none" and kept("hybrid", r.hits, MIN_SIMILARITY)]
    print(f"unanswerable queries that still return something at {MIN_SIMILARITY}: {leaks}")


async def main_async(args: argparse.Namespace) -> None:
    # Up to 10,000 memories the store is the first paragraphs themselves (the
    # labelled set's answers are among them); beyond, the whole corpus and variants.
    texts = paragraphs(10_000) if max(args.sizes) <= 10_000 else paragraphs()
    vectors = corpus_vectors(texts)
    queries = load_queries()
    root = Path(tempfile.mkdtemp(prefix="peer-quality-"))
    try:
        async with trio_asyncio.open_loop():
            for size in args.sizes:
                await evaluate(root, size, texts, vectors, queries)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000", help="store sizes, comma-separated")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    trio.run(main_async, args)


if __name__ == "__main__":
    main()

"""Search quality on labelled sets: recall@1, recall@5, MRR, and how well "no match" is told apart.

Run from the repository root:

    .venv/bin/python bench/quality.py                    # corpus at 10,000 memories, and the short notes
    .venv/bin/python bench/quality.py --sizes 10000,100000

Two labelled sets, both written by hand:

* bench/quality_queries.tsv: 212 queries for the first 10,000 paragraphs
  of peer.dev.corpus (documentation paragraphs): paraphrases, exact tokens
  (identifiers, error and issue numbers, file and option names) and
  questions no paragraph answers. Run at each ``--sizes`` (beyond the
  corpus, numbered variants, as bench/store.py fills).
* bench/quality_notes.tsv: 110 short notes of the kinds assistants store
  (decisions, commands, errors, preferences) and queries against them:
  paraphrases, terse questions ("linter"), exact tokens, and 55 queries
  with no answer (gibberish, plausible but unanswered questions). Run on
  the notes alone and on the notes among 2,000 corpus paragraphs.

Every query runs once through :meth:`Device.search` with no cut-off. Its
hits carry both retrievers' ranks and the similarity, so the same run
yields vector-only (by vector rank), keyword-only (by keyword rank) and
hybrid rankings (re-fused here for each keyword weight tried), and any
cut-off rule can be applied afterwards. Figures:

* recall@1, recall@5: answerable queries with a right memory first / in the
  first five, after the cut-off;
* MRR: mean of 1/rank of the first right memory (0 beyond rank 10);
* no-answer precision: share of unanswerable queries that return nothing;
* wrongly cut (the no-answer rule's misses on answerable queries): share of
  answerable queries that had a right memory in the first five without a
  cut-off and have none with it.

Calibration. Each labelled file is split in two halves (alternate
queries, in file order): calibration and held-out. Fusion weights and the
cut-off are chosen on the calibration halves of all sets pooled (10,000
memories), and the held-out halves report how well the choice carries
over; the figures of both halves are printed. The cut-off rule chosen is
the one with the highest no-answer precision among those that wrongly cut
at most :data:`BUDGET` of the answerable calibration queries, ties going
to the lowest thresholds. ``MIN_SIMILARITY``, ``FLOOR_SIMILARITY`` and
``MIN_MARGIN`` in peer/search/fusion.py hold the values chosen.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from store import corpus_vectors, dataset, fill  # noqa: E402

from peer.dev.corpus import paragraphs  # noqa: E402
from peer.device import Device  # noqa: E402
from peer.home import Home  # noqa: E402
from peer.search.embedder import default_embedder  # noqa: E402
from peer.search.fusion import (  # noqa: E402
    COVERAGE_WEIGHT,
    MIN_SIMILARITY,
    RRF_K,
    UNKNOWN_WORDS_PENALTY,
    SearchHit,
    keyword_coverage,
    relevant,
    stemmed_coverage,
)

QUERIES = ROOT / "bench" / "quality_queries.tsv"
NOTES = ROOT / "bench" / "quality_notes.tsv"
DEPTH = 200  # hits asked of each search: deep enough that each retriever's top 10 is inside
KEEP_HITS = 50  # hits kept per query for the figures: a cut-off can promote a right hit from below rank 10
NOTES_BACKGROUND = 2000  # corpus paragraphs the notes are mixed with in the "notes+corpus" set
BACKGROUND_RANK = 10
BUDGET = 0.01  # share of answerable calibration queries a cut-off rule may wrongly cut
KEYWORD_WEIGHTS = [0.5, 0.75, 1.0, 1.5, 2.0]
THRESHOLDS = [round(0.30 + 0.025 * i, 3) for i in range(13)]  # 0.30 .. 0.60
WEIGHTS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3]
MARGIN_FACTORS = [0.25, 0.5, 1.0]


@dataclass(frozen=True, slots=True)
class Query:
    kind: str  # "paraphrase", "terse", "exact" or "none"
    text: str
    answers: tuple[str, ...]  # substrings of the right memories; empty for "none"
    calibration: bool  # which half of its file the query belongs to


def load_queries() -> list[Query]:
    out: list[Query] = []
    for line in QUERIES.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        kind, text, *answer = line.split("\t")
        out.append(Query(kind, text, (answer[0],) if answer and answer[0] else (), len(out) % 2 == 0))
    return out


def load_notes() -> tuple[dict[str, str], list[Query]]:
    notes: dict[str, str] = {}
    queries: list[Query] = []
    for line in NOTES.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if fields[0] == "note":
            notes[fields[1]] = fields[2]
        else:
            ids = fields[3].split(",") if len(fields) > 3 else []
            queries.append(Query(fields[1], fields[2], tuple(notes[i] for i in ids), len(queries) % 2 == 0))
    return notes, queries


@dataclass(frozen=True, slots=True)
class Hit:
    """What the bench keeps of one search result."""

    hit: SearchHit
    right: bool
    exact_coverage: float  # keyword_coverage when the keyword search found it (the old rule's evidence)
    stemmed: float  # stemmed_coverage of its content


@dataclass(frozen=True, slots=True)
class Run:
    query: Query
    hits: list[Hit]
    background: float | None  # similarity of the query's BACKGROUND_RANK-th nearest memory
    known_words: bool  # whether the keyword search found anything: some query word is in the store

    def ranking(self, mode: str, keyword_weight: float = 1.0) -> list[Hit]:
        if mode == "vector":
            return sorted((h for h in self.hits if h.hit.vector_rank is not None), key=lambda h: h.hit.vector_rank or 0)
        if mode == "keyword":
            return sorted((h for h in self.hits if h.hit.keyword_rank is not None), key=lambda h: h.hit.keyword_rank or 0)
        if keyword_weight == 1.0:
            return self.hits  # the order Device.search gave

        def score(h: Hit) -> tuple[float, str]:
            s = 0.0
            if h.hit.vector_rank is not None:
                s += 1.0 / (RRF_K + h.hit.vector_rank)
            if h.hit.keyword_rank is not None:
                s += keyword_weight / (RRF_K + h.hit.keyword_rank)
            return (-s, h.hit.memory_id)

        return sorted(self.hits, key=score)


@dataclass(frozen=True, slots=True)
class Rule:
    """A cut-off rule for the hybrid ranking (vector-only uses the similarity threshold alone).

    ``family`` "old": a keyword match holding every query word exactly, or
    similarity >= threshold (the rule before calibration, and what
    ``--min-score`` still does). "evidence": :func:`relevant` with stemmed
    keyword evidence and ``weight``. "calibrated", what the code does:
    "evidence" asking UNKNOWN_WORDS_PENALTY more of a query none of whose
    words the store holds (gibberish detection). "background": "evidence"
    plus ``a`` times the hit's margin over the query's BACKGROUND_RANK-th
    neighbour.
    """

    threshold: float | None  # None: no cut-off
    family: str = "old"
    weight: float = 0.0
    a: float = 0.0

    def keeps(self, mode: str, run: Run, h: Hit) -> bool:
        if self.threshold is None:
            return True
        if mode == "keyword":
            return True  # every keyword hit is a keyword match: keyword-only search has no cut-off
        if mode == "vector":
            return h.hit.similarity is not None and h.hit.similarity >= self.threshold
        if self.family == "old":
            return relevant(h.hit, self.threshold, h.exact_coverage)
        threshold = self.threshold
        if self.family == "background" and h.hit.similarity is not None and run.background is not None:
            threshold -= self.a * (h.hit.similarity - run.background)
        known = run.known_words or self.family != "calibrated"
        return relevant(h.hit, threshold, h.exact_coverage, h.stemmed, weight=self.weight, known_words=known)

    def describe(self) -> str:
        if self.threshold is None:
            return "no cut-off"
        if self.family == "old":
            return f"old: similarity >= {self.threshold:.3f}"
        extra = {"evidence": "", "calibrated": f", +{UNKNOWN_WORDS_PENALTY} for unknown words",
                 "background": f", + {self.a} x margin over rank {BACKGROUND_RANK}"}[self.family]
        return f"{self.family}: similarity + {self.weight} x evidence >= {self.threshold:.3f}{extra}"


NONE = Rule(None)


def figures(runs: Sequence[Run], mode: str, rule: Rule, keyword_weight: float = 1.0) -> dict[str, float]:
    answerable = [r for r in runs if r.query.answers]
    unanswerable = [r for r in runs if not r.query.answers]
    at1 = at5 = rr = cut = 0.0
    for run in answerable:
        ranked = run.ranking(mode, keyword_weight)
        before = next((at for at, h in enumerate(ranked[:10], 1) if h.right), None)
        kept = itertools.islice((h for h in ranked if rule.keeps(mode, run, h)), 10)
        rank = next((at for at, h in enumerate(kept, 1) if h.right), None)
        if rank is not None:
            at1 += rank == 1
            at5 += rank <= 5
            rr += 1 / rank
        cut += before is not None and before <= 5 and (rank is None or rank > 5)
    default = rule if rule.threshold is not None else current_rule()
    silent = sum(not any(default.keeps(mode, run, h) for h in run.ranking(mode, keyword_weight)) for run in unanswerable)
    n = len(answerable) or 1
    return {"r1": at1 / n, "r5": at5 / n, "mrr": rr / n, "none": silent / (len(unanswerable) or 1), "cut": cut / n}


OLD_SIMILARITY = 0.35  # the cut-off before this calibration


def current_rule() -> Rule:
    return Rule(MIN_SIMILARITY, "calibrated", COVERAGE_WEIGHT)


def old_rule() -> Rule:
    return Rule(OLD_SIMILARITY)


async def run_set(
    root: Path, name: str, texts: list[str], vectors: Any, queries: list[Query]
) -> list[Run]:
    home = Home.locate(root / name)
    await home.init("bench")
    print(f"[{name}] filling the store with {len(texts):,} memories ...", flush=True)
    await fill(home, texts, vectors)
    device = await Device.open(home)
    try:
        await device.prepare_index()
        started = time.perf_counter()
        runs: list[Run] = []
        for q in queries:
            results = await device.search(q.text, k=DEPTH, min_similarity=None)
            hits = [
                Hit(
                    r.hit,
                    any(a in r.memory.content for a in q.answers),
                    keyword_coverage(q.text, r.memory.content) if r.hit.keyword_match else 0.0,
                    stemmed_coverage(q.text, r.memory.content),
                )
                for r in results[:KEEP_HITS]
            ]
            background = next((h.hit.similarity for h in hits if h.hit.vector_rank == BACKGROUND_RANK), None)
            runs.append(Run(q, hits, background, any(h.hit.keyword_match for h in hits)))
        seconds = time.perf_counter() - started
    finally:
        await device.close()
    print(f"[{name}] {len(queries)} queries in {seconds:.1f} s (load average {os.getloadavg()[0]:.2f})", flush=True)
    return runs


def table(sets: dict[str, list[Run]], rules: dict[str, Rule], keyword_weight: float) -> None:
    print("| set | half | retrieval | cut-off | recall@1 | recall@5 | MRR@10 | no-answer precision | wrongly cut |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for name, runs in sets.items():
        for half, subset in (("calibration", [r for r in runs if r.query.calibration]),
                             ("held-out", [r for r in runs if not r.query.calibration])):
            for mode in ("vector", "keyword", "hybrid"):
                for label, rule in rules.items():
                    if mode != "hybrid" and label != "before":
                        continue  # vector-only uses the old threshold; keyword-only has no cut-off
                    f = figures(subset, mode, rule, keyword_weight)
                    shown = "similarity" if mode == "vector" else ("none" if mode == "keyword" else label)
                    print(f"| {name} | {half} | {mode} | {shown} | {f['r1']:.3f} | {f['r5']:.3f} | {f['mrr']:.3f}"
                          f" | {f['none']:.3f} | {f['cut']:.3f} |")


def candidates() -> list[Rule]:
    out = [Rule(t) for t in THRESHOLDS]
    out += [Rule(t, "evidence", w) for t in THRESHOLDS for w in WEIGHTS]
    out += [Rule(t, "calibrated", w) for t in THRESHOLDS for w in WEIGHTS]
    out += [Rule(t, "background", w, a) for t in THRESHOLDS for w in WEIGHTS for a in MARGIN_FACTORS]
    return out


def choose(calibration: list[Run], rules: Sequence[Rule]) -> Rule:
    """The rule with the best no-answer precision that wrongly cuts at most :data:`BUDGET`.

    The labelled set cannot tell apart rules one unanswerable query apart,
    so among those within one query of the best the simplest wins: the
    lowest threshold (it errs towards showing short notes), then the plain
    families before the alternatives, then the lowest weight.
    """
    scored = [(figures(calibration, "hybrid", r), r) for r in rules]
    within = [(f, r) for f, r in scored if f["cut"] <= BUDGET]
    if not within:
        return min(scored, key=lambda fr: fr[0]["cut"])[1]
    n_none = sum(not r.query.answers for r in calibration) or 1
    best = max(f["none"] for f, _ in within)
    near = [r for f, r in within if f["none"] >= best - 1 / n_none - 1e-9]
    order = {"old": 0, "evidence": 1, "calibrated": 2, "background": 3}
    return min(near, key=lambda r: (r.threshold or 0, order[r.family], r.weight, r.a))


async def main_async(args: argparse.Namespace) -> None:
    import numpy as np

    texts = paragraphs()
    vectors = np.asarray(corpus_vectors(texts))
    queries = load_queries()
    notes, note_queries = load_notes()
    note_texts = list(notes.values())
    note_vectors = default_embedder().embed(note_texts)
    root = Path(tempfile.mkdtemp(prefix="peer-quality-"))
    sets: dict[str, list[Run]] = {}
    try:
        async with trio_asyncio.open_loop():
            for size in args.sizes:
                data_texts, data_vectors = dataset(size, texts[: min(size, 10_000)] if size <= 10_000 else texts,
                                                   vectors[: min(size, 10_000)] if size <= 10_000 else vectors)
                sets[f"corpus {size:,}"] = await run_set(root, f"corpus-{size}", data_texts, data_vectors, queries)
                shutil.rmtree(root / f"corpus-{size}", ignore_errors=True)
            sets["notes"] = await run_set(root, "notes", note_texts, note_vectors, note_queries)
            mixed_texts = texts[:NOTES_BACKGROUND] + note_texts
            mixed_vectors = np.concatenate([vectors[:NOTES_BACKGROUND], note_vectors])
            sets[f"notes + {NOTES_BACKGROUND:,} paragraphs"] = await run_set(
                root, "notes-mixed", mixed_texts, mixed_vectors, note_queries
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.dump:
        dump(sets, Path(args.dump))

    # Calibrate on the calibration halves of the sets at the smallest corpus size (the sets a
    # person's store resembles); larger sizes are reported, not tuned on.
    smallest = f"corpus {min(args.sizes):,}"
    tuned = [n for n in sets if n == smallest or n.startswith("notes")]
    calibration = [r for n in tuned for r in sets[n] if r.query.calibration]
    held_out = [r for n in tuned for r in sets[n] if not r.query.calibration]
    counts = {k: sum(r.query.kind == k for r in calibration) for k in ("paraphrase", "terse", "exact", "none")}
    print(f"\ncalibration queries (pooled over {', '.join(tuned)}): {counts}; held-out: {len(held_out)}")

    print("\nfusion weight (vector 1.0), hybrid without cut-off:")
    print("| keyword weight | calibration MRR | calibration recall@5 | held-out MRR | held-out recall@5 |")
    print("|---:|---:|---:|---:|---:|")
    best_weight, best_mrr = 1.0, figures(calibration, "hybrid", NONE, 1.0)["mrr"]
    for w in KEYWORD_WEIGHTS:
        c = figures(calibration, "hybrid", NONE, w)
        h = figures(held_out, "hybrid", NONE, w)
        print(f"| {w} | {c['mrr']:.3f} | {c['r5']:.3f} | {h['mrr']:.3f} | {h['r5']:.3f} |")
        if c["mrr"] > best_mrr + 0.01:  # only a clear gain moves off equal weights
            best_weight, best_mrr = w, c["mrr"]
    print(f"keyword weight chosen on the calibration half (equal unless MRR gains > 0.01): {best_weight}"
          " (the code uses 1.0)")

    print(f"\ncut-off rules on the calibration half (hybrid; wrongly cut at most {BUDGET}):")
    print("| rule | recall@5 | MRR | no-answer precision | wrongly cut |")
    print("|---|---:|---:|---:|---:|")
    rules = candidates()
    for family in ("old", "evidence", "calibrated", "background"):
        best = choose(calibration, [r for r in rules if r.family == family])
        for t in THRESHOLDS if family in ("old", "calibrated") else [best.threshold]:
            shown = Rule(t, family, best.weight, best.a) if family != "old" else Rule(t)
            f = figures(calibration, "hybrid", shown)
            print(f"| {shown.describe()} | {f['r5']:.3f} | {f['mrr']:.3f} | {f['none']:.3f} | {f['cut']:.3f} |")
    chosen = choose(calibration, rules)
    old_best = choose(calibration, [r for r in rules if r.family == "old"])
    print(f"\nchosen on the calibration half: {chosen.describe()}")
    print(f"best of the old form within the same budget: {old_best.describe()}")
    print(f"in the code: {current_rule().describe()}; before: {old_rule().describe()}")
    print("| rule | half | recall@5 | MRR | no-answer precision | wrongly cut |")
    print("|---|---|---:|---:|---:|---:|")
    for label, rule in (("chosen", chosen), ("in the code", current_rule()), ("best old form", old_best),
                        ("before", old_rule())):
        for half, subset in (("calibration", calibration), ("held-out", held_out)):
            f = figures(subset, "hybrid", rule)
            print(f"| {label}: {rule.describe()} | {half} | {f['r5']:.3f} | {f['mrr']:.3f} | {f['none']:.3f}"
                  f" | {f['cut']:.3f} |")

    print(f"\nper set (keyword weight 1.0; 'before' = {old_rule().describe()}, 'now' = {current_rule().describe()}):")
    table(sets, {"before": old_rule(), "now": current_rule()}, 1.0)
    print()
    for name, runs in sets.items():
        leaks = [r.query.text for r in runs if not r.query.answers
                 and any(current_rule().keeps("hybrid", r, h) for h in r.hits)]
        print(f"[{name}] unanswerable queries that still return something: {leaks}")
        lost = [r.query.text for r in runs if r.query.answers
                and any(h.right for h in r.hits[:5])
                and not any(h.right for h in [h for h in r.hits if current_rule().keeps("hybrid", r, h)][:5])]
        print(f"[{name}] answerable queries whose answer the rule cuts: {lost}")


def dump(sets: dict[str, list[Run]], path: Path) -> None:
    """Every run's figures as JSON, to try other rules without searching again."""
    import json

    out = {
        name: [
            {
                "kind": r.query.kind, "text": r.query.text, "calibration": r.query.calibration,
                "background": r.background, "known": r.known_words,
                "hits": [[h.hit.similarity, h.hit.vector_rank, h.hit.keyword_rank, h.right, h.exact_coverage, h.stemmed]
                         for h in r.hits[:50]],
            }
            for r in runs
        ]
        for name, runs in sets.items()
    }
    path.write_text(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000", help="corpus store sizes, comma-separated")
    parser.add_argument("--dump", help="write every run's hits to this JSON file")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    trio.run(main_async, args)


if __name__ == "__main__":
    main()

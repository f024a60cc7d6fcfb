"""Hybrid search: fusing the semantic (hnswlib) and keyword (FTS5) rankings.

Theory of operation. The two retrievers score on scales that cannot be
compared: cosine similarity lives in [-1, 1] and clusters tightly for
short texts, while SQLite's bm25 is unbounded and depends on document
lengths and term rarity across the whole store. Normalising and adding
the raw scores would let whichever scale is wider dominate, and the result
would shift as the store grows. Reciprocal-rank fusion (Cormack, Clarke and
Buettcher, SIGIR 2009) uses only each item's *rank* in each list:

    rrf(d) = sum over lists L of  w_L / (K + rank_L(d))      (rank from 1)

An item near the top of both lists beats one at the top of a single list,
and an item found by one retriever only still scores, so a pure keyword
match (an error code, a file name) or a pure paraphrase both surface. K
damps the gap between ranks 1 and 2; 60 is the value the paper found
robust and is kept here. Scores are reported divided by the best possible
value (rank 1 in every list), so 1.0 means "first for both retrievers".

Ties (equal fused score) go to the item with the better single rank; when
that is equal too, which happens when each retriever puts a different item
first, the keyword match wins. That is the case hybrid search exists for:
the query holds a literal token the embedding model does not understand (an
error code, an identifier, a name) and only the keyword index finds its
memory, while the vector list's head is whatever happens to lie nearest to
gibberish. The opposite case, a paraphrase that shares no word with its
memory, rarely reaches a tie: the paraphrase's words usually bring the
memory into the keyword list as well, and agreement scores higher. Then
the higher cosine similarity, then the memory id decide, so results are
deterministic.

Fused scores rank; they do not say whether anything matched: the top
result of a query with no answer scores like the top result of a good one.
So every hit also carries what each retriever saw (its cosine similarity,
whether the keyword search found it), and :func:`relevant` decides what is
shown. A hit is kept when it holds every keyword of the query (as the
keyword index found it, or in some form of each word: :func:`stem`, so
"linter" finds "linting"); otherwise its similarity plus a bonus for the
share of query words it holds must reach :data:`MIN_SIMILARITY`.

The values were chosen with ``bench/quality.py`` (docs/performance.md,
"search quality") on labelled queries against documentation paragraphs
and against short notes of the kinds assistants store, calibrated on one
half and checked on the other. The bench's own pick (the most
unanswerable queries returning nothing among rules that lose the answer
of at most 1% of the answerable ones) is 0.45; the default is 0.40, one
notch lower, because the labelled notes hold few questions that share no
word with their note, and such a question sits near 0.40 ("a bird of prey
hunting above the road" for a note about a kestrel hovering over a
motorway verge: 0.402). The hit's margin over the query's 10th neighbour
(the query's "background") was measured and left out: it did not help,
since plausible questions about things the store mentions but does not
answer stand out from their background as much as right answers do.
Whether any query word occurs in the store is used although it changes
nothing on the labelled data at 10,000 memories: a query none of whose
words the store holds needs 0.1 more, because among 100,000 (synthetic)
memories gibberish comes as close as 0.48 to its nearest.

This module is pure: the device hub (:mod:`peer.device`) gathers the
candidate lists, filters them to live memories and calls :func:`fuse`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from peer.memory import Memory

__all__ = [
    "RRF_K",
    "MIN_SIMILARITY",
    "COVERAGE_WEIGHT",
    "UNKNOWN_WORDS_PENALTY",
    "SearchHit",
    "SearchResult",
    "fuse",
    "candidate_count",
    "keyword_query",
    "keyword_coverage",
    "stem",
    "stemmed_coverage",
    "relevant",
]

RRF_K = 60

#: The cosine similarity (all-MiniLM-L6-v2), bonus included, below which a
#: result without every query word is not shown by default; calibrated by
#: bench/quality.py.
MIN_SIMILARITY = 0.40

#: How much keyword evidence lowers the similarity a hit needs: a memory
#: holding half the query's words (in some form) needs MIN_SIMILARITY - 0.05.
#: Calibrated with MIN_SIMILARITY by bench/quality.py.
COVERAGE_WEIGHT = 0.1

#: How much more similarity a query needs when none of its words occurs in
#: the store. Free on the labelled data at 10,000 memories (no answerable
#: query there lacks every word and needs it); at 100,000 synthetic memories
#: gibberish reaches 0.48, which this keeps out.
UNKNOWN_WORDS_PENALTY = 0.1


# Function words of English questions. Any word may match in the keyword
# search, so "how do I run the tests" would otherwise rank (and, at 100k
# memories, score) nearly every memory for "the", "do" and "i". bm25 already
# gives them little weight; dropping them saves the work and keeps the
# keyword list about the words that carry the question.
_STOPWORDS = frozenset(
    ["a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "because", "been", "before", "being", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours"]
)
_WORD = re.compile(r"\w+")


def keyword_query(text: str) -> str:
    """The words of a query worth a keyword search: without English function words.

    A query made only of function words ("to be or not to be") is kept
    whole, since then they are what the user is looking for.
    """
    words = _WORD.findall(text)
    kept = [w for w in words if w.lower() not in _STOPWORDS]
    return " ".join(kept or words)


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One fused result. Ranks start at 1; None means "not found by that retriever"."""

    memory_id: str
    score: float
    vector_rank: int | None = None
    similarity: float | None = None
    keyword_rank: int | None = None
    keyword_score: float | None = None

    @property
    def keyword_match(self) -> bool:
        """Whether the keyword search found this memory."""
        return self.keyword_rank is not None


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One answer of :meth:`Device.search`: the fused ranks and the memory they point at."""

    hit: SearchHit
    memory: Memory

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.memory.id, "score": round(self.hit.score, 6), "content": self.memory.content}
        out.update((k, v) for k, v in self.memory.to_json().items() if k not in out)
        out["similarity"] = None if self.hit.similarity is None else round(self.hit.similarity, 6)
        out["keyword_match"] = self.hit.keyword_match
        out["vector_rank"] = self.hit.vector_rank
        out["keyword_rank"] = self.hit.keyword_rank
        return out


def _folded_words(text: str) -> set[str]:
    """Words as the keyword index sees them: lower case, accents removed."""
    out: set[str] = set()
    for word in _WORD.findall(text):
        decomposed = unicodedata.normalize("NFKD", word)
        out.add("".join(c for c in decomposed if not unicodedata.combining(c)).lower())
    return out


def keyword_coverage(query: str, content: str) -> float:
    """The share of the query's keyword words (see :func:`keyword_query`) that ``content`` holds."""
    wanted = _folded_words(keyword_query(query))
    if not wanted:
        return 0.0
    return len(wanted & _folded_words(content)) / len(wanted)


def stem(word: str) -> str:
    """A crude English stem of one folded word, so "linter", "linting" and "lints" compare equal.

    Only common inflection and agent suffixes go, and only from words of
    five letters or more that keep three: enough for the keyword evidence of
    :func:`stemmed_coverage`, which asks "does the memory hold this word in
    some form", not for ranking. Words with digits (codes, versions) stay whole.
    """
    if len(word) < 5 or not word.isalpha():
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            base = word[: -len(suffix)]
            if suffix == "ies":
                return base + "y"
            if len(base) >= 4 and base[-1] == base[-2] and base[-1] not in "lsz":
                base = base[:-1]  # running -> runn -> run
            word = base
            break
    if len(word) >= 5 and word.endswith("e"):
        word = word[:-1]  # database(s) -> databas, like its plural
    return word


_SUFFIXES = ("ingly", "ings", "ing", "ers", "er", "ies", "ed", "es", "s")
#: A query word this long or longer also matches words it begins (postgres, PostgreSQL).
_PREFIX_CHARS = 4


def stemmed_coverage(query: str, content: str) -> float:
    """Like :func:`keyword_coverage`, but a query word matches any form of it in ``content``.

    Two words match when their stems (:func:`stem`) are equal or the query
    word's stem begins a word of the content. This is what a porter or
    prefix tokenizer would give the keyword index, done on the query side
    for the hits already found, so the store's FTS table (unicode61, no
    stemming) needs no migration.
    """
    words = _folded_words(keyword_query(query))
    # A lone letter is left of a possessive or an initial ("Carol's" -> "carol", "s"): no evidence either way.
    wanted = {stem(w) for w in words if len(w) > 1} or {stem(w) for w in words}
    if not wanted:
        return 0.0
    have = _folded_words(content)
    stems = {stem(w) for w in have}
    found = 0
    for w in wanted:
        if w in stems or (len(w) >= _PREFIX_CHARS and any(h.startswith(w) for h in have)):
            found += 1
    return found / len(wanted)


def relevant(
    hit: SearchHit,
    min_similarity: float | None = MIN_SIMILARITY,
    coverage: float = 1.0,
    evidence: float | None = None,
    *,
    weight: float = COVERAGE_WEIGHT,
    known_words: bool = True,
) -> bool:
    """Whether a hit is worth showing: keyword evidence for every query word, or close enough in meaning.

    The keyword search matches any one word of the query, so a question
    with no answer still finds memories that share one of its words ("the
    capital of France" finds "capital letters"); a keyword match counts on
    its own only when it holds all of them (``coverage``, from
    :func:`keyword_coverage`). ``evidence`` is the calibrated rule's
    keyword evidence, :func:`stemmed_coverage` of the hit's content: all
    query words in some form keep the hit; some of them lower the
    similarity it needs by ``weight`` times their share, and a query none
    of whose words occur anywhere in the store (``known_words`` false:
    gibberish, mostly) needs :data:`UNKNOWN_WORDS_PENALTY` more. Without
    ``evidence`` (``peer search --min-score``) the similarity alone must
    reach ``min_similarity``. ``None`` keeps every hit (``peer search --all``).
    """
    if min_similarity is None:
        return True
    if hit.keyword_match and coverage >= 1.0:
        return True
    if evidence is not None and evidence >= 1.0:
        return True
    if hit.similarity is None:
        return False
    if evidence is None:
        return hit.similarity >= min_similarity
    needed = min_similarity + (0.0 if known_words else UNKNOWN_WORDS_PENALTY)
    return hit.similarity + weight * evidence >= needed


def candidate_count(k: int) -> int:
    """How many candidates to take from each retriever for a top-``k`` answer.

    Fusion can promote an item that is only moderately ranked by both
    retrievers, so each list must reach well below k; filters (project,
    kind) also drop candidates after retrieval.
    """
    return max(4 * k, 50)


def fuse(
    vector_hits: Sequence[tuple[str, float]],
    keyword_hits: Sequence[tuple[str, float]],
    *,
    limit: int,
    rrf_k: int = RRF_K,
    vector_weight: float = 1.0,
    keyword_weight: float = 1.0,
) -> list[SearchHit]:
    """Fuse two rankings, each given best first, into at most ``limit`` hits.

    ``vector_hits`` are ``(memory_id, cosine similarity)``; ``keyword_hits``
    are ``(memory_id, keyword relevance)`` as the store reports it (its
    negated bm25: higher is better). Only the order of each
    list matters to the fused score; the raw scores are carried along for
    display and tie-breaking. A memory listed twice in one list counts at
    its first (best) position.
    """
    if limit <= 0:
        return []
    if rrf_k < 0 or vector_weight < 0 or keyword_weight < 0:
        raise ValueError("rrf_k and the weights must not be negative")
    best = (vector_weight + keyword_weight) / (rrf_k + 1)
    if best == 0:
        raise ValueError("at least one weight must be positive")

    vector: dict[str, tuple[int, float]] = {}
    for memory_id, similarity in vector_hits:
        vector.setdefault(memory_id, (len(vector) + 1, similarity))
    keyword: dict[str, tuple[int, float]] = {}
    for memory_id, relevance in keyword_hits:
        keyword.setdefault(memory_id, (len(keyword) + 1, relevance))

    hits: list[SearchHit] = []
    for memory_id in vector.keys() | keyword.keys():
        v = vector.get(memory_id)
        w = keyword.get(memory_id)
        raw = 0.0
        if v is not None:
            raw += vector_weight / (rrf_k + v[0])
        if w is not None:
            raw += keyword_weight / (rrf_k + w[0])
        hits.append(
            SearchHit(
                memory_id=memory_id,
                score=raw / best,
                vector_rank=v[0] if v else None,
                similarity=v[1] if v else None,
                keyword_rank=w[0] if w else None,
                keyword_score=w[1] if w else None,
            )
        )

    def order(hit: SearchHit) -> tuple[float, int, bool, float, str]:
        ranks = [r for r in (hit.vector_rank, hit.keyword_rank) if r is not None]
        similarity = hit.similarity if hit.similarity is not None else -math.inf
        return (-hit.score, min(ranks), hit.keyword_rank is None, -similarity, hit.memory_id)

    hits.sort(key=order)
    return hits[:limit]

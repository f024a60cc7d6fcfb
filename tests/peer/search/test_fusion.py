"""Reciprocal-rank fusion (peer.search.fusion.fuse): what a searcher would notice."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.search.fusion import RRF_K, SearchHit, candidate_count, fuse, keyword_query


def ids(hits: list[SearchHit]) -> list[str]:
    return [h.memory_id for h in hits]


def test_agreement_beats_a_single_first_place() -> None:
    # "b" is second for both retrievers; "a" and "c" are each first for only one.
    vector = [("a", 0.9), ("b", 0.8), ("d", 0.1)]
    keyword = [("c", 9.0), ("b", 8.0), ("e", 1.0)]
    hits = fuse(vector, keyword, limit=5)
    assert ids(hits)[0] == "b"
    assert set(ids(hits)) == {"a", "b", "c", "d", "e"}


def test_first_in_both_lists_scores_one() -> None:
    hits = fuse([("x", 0.7)], [("x", 3.0)], limit=1)
    assert hits[0].score == pytest.approx(1.0)
    assert (hits[0].vector_rank, hits[0].keyword_rank) == (1, 1)
    assert (hits[0].similarity, hits[0].keyword_score) == (0.7, 3.0)


def test_item_found_by_one_retriever_only_still_ranks() -> None:
    hits = fuse([], [("kw", 2.0), ("kw2", 1.0)], limit=10)
    assert ids(hits) == ["kw", "kw2"]
    assert hits[0].vector_rank is None and hits[0].similarity is None
    assert hits[0].score == pytest.approx((1 / (RRF_K + 1)) / (2 / (RRF_K + 1)))


def test_ties_between_the_two_first_places_go_to_the_keyword_match() -> None:
    # An error code: only the keyword index finds its memory, the vector
    # list's head is an unrelated paragraph. Equal fused scores.
    hits = fuse([("nearest-noise", 0.3)], [("exact-code", 5.0)], limit=2)
    assert hits[0].score == pytest.approx(hits[1].score)
    assert ids(hits) == ["exact-code", "nearest-noise"]


def test_other_ties_go_to_higher_similarity_then_id() -> None:
    # Both found by both retrievers, crosswise: same score, same best rank, both keyword matches.
    hits = fuse([("v", 0.5), ("k", 0.4)], [("k", 5.0), ("v", 4.0)], limit=2)
    assert hits[0].score == pytest.approx(hits[1].score)
    assert ids(hits) == ["v", "k"]
    hits = fuse([("b", 0.5), ("a", 0.5)], [], limit=2)
    assert ids(hits) == ["b", "a"]  # different ranks: order kept
    hits = fuse([], [("b", 1.0)], limit=1) + fuse([], [("a", 1.0)], limit=1)
    assert ids(hits) == ["b", "a"]


def test_duplicates_count_at_their_best_position() -> None:
    hits = fuse([("a", 0.9), ("b", 0.8), ("a", 0.1)], [], limit=5)
    assert ids(hits) == ["a", "b"]
    assert hits[1].vector_rank == 2


def test_limit_and_weights() -> None:
    vector = [("a", 0.9), ("b", 0.8)]
    keyword = [("b", 9.0), ("a", 8.0)]
    assert ids(fuse(vector, keyword, limit=1, keyword_weight=0.0)) == ["a"]
    assert ids(fuse(vector, keyword, limit=1, vector_weight=0.0)) == ["b"]
    assert fuse(vector, keyword, limit=0) == []
    with pytest.raises(ValueError):
        fuse(vector, keyword, limit=1, vector_weight=0.0, keyword_weight=0.0)


def test_candidate_count_reaches_below_k() -> None:
    assert candidate_count(1) >= 50
    assert candidate_count(100) >= 400


rankings = st.lists(st.sampled_from("abcdefghij"), unique=True, max_size=10)


@given(rankings, rankings, st.integers(min_value=1, max_value=12))
def test_fusion_is_a_ranking_of_the_union(vector: list[str], keyword: list[str], limit: int) -> None:
    hits = fuse([(m, 1.0 - i / 10) for i, m in enumerate(vector)], [(m, -10.0 + i) for i, m in enumerate(keyword)],
                limit=limit)
    union = set(vector) | set(keyword)
    assert len(hits) == min(limit, len(union))
    assert len(set(ids(hits))) == len(hits) and set(ids(hits)) <= union
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < s <= 1.0 + 1e-12 for s in scores)
    # Swapping the two lists changes nothing but which rank is which.
    swapped = fuse([(m, 1.0 - i / 10) for i, m in enumerate(keyword)], [(m, -10.0 + i) for i, m in enumerate(vector)],
                   limit=limit)
    assert sorted(h.score for h in swapped) == pytest.approx(sorted(scores))


def test_keyword_query_drops_function_words_but_not_everything() -> None:
    assert keyword_query("how do I run the tests?") == "run tests"
    assert keyword_query("QX-4471 on staging") == "QX 4471 staging"
    assert keyword_query("to be or not to be") == "to be or not to be"
    assert keyword_query("  ") == ""

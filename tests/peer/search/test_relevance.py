"""The relevance cut-off of search results and the text folding of duplicate detection (pure functions)."""

from __future__ import annotations

from peer.consolidate import normalized
from peer.search.fusion import MIN_SIMILARITY, SearchHit, keyword_coverage, relevant


def test_keyword_coverage_counts_the_query_words_a_memory_holds() -> None:
    assert keyword_coverage("how do I run the tests", "run the tests with pytest") == 1.0
    assert keyword_coverage("how do I run the tests", "Use pytest -q to run the test suite") == 0.5
    assert keyword_coverage("what is the capital of France", "capital letters start a sentence") == 0.5
    assert keyword_coverage("Café QX-4471", "the cafe failed with qx 4471") == 1.0  # folded like FTS5
    assert keyword_coverage("the", "the end") == 1.0  # only function words: they are the query
    assert keyword_coverage("", "anything") == 0.0


def test_a_hit_is_kept_when_every_keyword_matched_or_it_is_close() -> None:
    close = SearchHit("a", 0.5, vector_rank=1, similarity=MIN_SIMILARITY)
    far = SearchHit("b", 0.5, vector_rank=1, similarity=MIN_SIMILARITY - 0.01)
    keyword_only = SearchHit("c", 0.5, keyword_rank=1, keyword_score=3.0)
    assert relevant(close) and not relevant(far)
    assert relevant(keyword_only, coverage=1.0) and not relevant(keyword_only, coverage=0.5)
    assert relevant(far, min_similarity=0.2) and not relevant(close, min_similarity=0.9)
    assert relevant(far, None) and relevant(keyword_only, None, coverage=0.0)  # --all
    assert keyword_only.keyword_match and not close.keyword_match


def test_exact_duplicates_compare_folded_text() -> None:
    assert normalized("  Use  pytest\n-q ") == normalized("use pytest -q") == "use pytest -q"
    assert normalized("ＦＵＬＬ width") == "full width"  # NFKC
    assert normalized("run the tests") != normalized("run the test")

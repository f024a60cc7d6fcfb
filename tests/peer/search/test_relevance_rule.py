"""The calibrated "no match" rule: keyword evidence in any form of a word, and partial evidence as a bonus (pure)."""

from __future__ import annotations

from peer.search.fusion import COVERAGE_WEIGHT, MIN_SIMILARITY, SearchHit, relevant, stem, stemmed_coverage


def test_a_word_and_its_inflections_share_a_stem() -> None:
    assert stem("linter") == stem("linting") == stem("lints") == "lint"
    assert stem("tests") == stem("test")
    assert stem("databases") == stem("database")
    assert stem("queries") == "query"
    assert stem("e1042") == "e1042" and stem("run") == "run"  # codes and short words stay whole
    assert stem("linter") != stem("linen")


def test_stemmed_coverage_finds_query_words_in_any_form() -> None:
    assert stemmed_coverage("which linter do we use", "We use ruff for linting.") == 1.0
    assert stemmed_coverage("why postgres", "We chose PostgreSQL over MySQL") == 1.0  # a prefix of a longer word
    assert stemmed_coverage("how do I run the tests", "Use pytest -q to run the test suite") == 1.0
    assert stemmed_coverage("what is Carol's phone number", "Carol owns the search service") == 1 / 3
    assert stemmed_coverage("qwxz flurb zzkq", "We use ruff for linting.") == 0.0
    assert stemmed_coverage("", "anything") == 0.0


def test_evidence_keeps_a_hit_or_lowers_the_similarity_it_needs() -> None:
    low = SearchHit("a", 0.5, vector_rank=1, similarity=MIN_SIMILARITY - 0.04)
    # Every word in some form: kept whatever the similarity, even when FTS5 (no stemming) missed it.
    assert relevant(low, evidence=1.0)
    # Half the words: the bonus is COVERAGE_WEIGHT / 2 = 0.05, enough for 0.04 below the cut-off.
    assert COVERAGE_WEIGHT / 2 > 0.04
    assert relevant(low, evidence=0.5) and not relevant(low, evidence=0.0)
    # Without evidence (--min-score) only the similarity counts, as before.
    assert not relevant(low) and relevant(low, min_similarity=MIN_SIMILARITY - 0.05)
    assert relevant(low, None, evidence=0.0)  # --all


def test_gibberish_close_to_nothing_is_dropped() -> None:
    # The figures of "qwxz flurb zzkq" against a store of notes: no word in common, similarity under 0.2.
    nearest = SearchHit("a", 1.0, vector_rank=1, similarity=0.154)
    assert not relevant(nearest, evidence=stemmed_coverage("qwxz flurb zzkq", "we use ruff for linting"))


def test_a_query_whose_words_the_store_lacks_needs_more_similarity() -> None:
    # Among 100,000 memories gibberish comes close to something by chance; none of its words is in the store.
    close_by_chance = SearchHit("a", 1.0, vector_rank=1, similarity=MIN_SIMILARITY + 0.05)
    assert relevant(close_by_chance, evidence=0.0, known_words=True)
    assert not relevant(close_by_chance, evidence=0.0, known_words=False)
    assert relevant(close_by_chance, None, evidence=0.0, known_words=False)  # --all
    assert relevant(close_by_chance, known_words=False)  # --min-score: the similarity alone

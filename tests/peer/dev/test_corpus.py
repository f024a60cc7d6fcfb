"""The sample corpus (peer.dev.corpus): real prose, bounded, unique, in a fixed order."""

from __future__ import annotations

import subprocess
import sys

from peer.dev.corpus import MAX_CHARS, MIN_CHARS, paragraphs


def test_paragraphs_are_unique_prose_in_bounds() -> None:
    paras = paragraphs()
    assert len(paras) >= 10_000, len(paras)
    assert len(set(paras)) == len(paras)
    assert all(MIN_CHARS <= len(p) <= MAX_CHARS for p in paras)
    assert all("\n" not in p and ">>>" not in p for p in paras)
    # Mostly words: a paragraph of code or a table would fail this.
    assert all(sum(c.isalpha() or c == " " for c in p) >= 0.75 * len(p) for p in paras)


def test_a_prefix_is_the_start_of_the_whole() -> None:
    assert paragraphs(500) == paragraphs()[:500]


def test_order_is_the_same_in_another_process() -> None:
    code = "from peer.dev.corpus import paragraphs; import hashlib; print(hashlib.sha256('\\n'.join(paragraphs(3000)).encode()).hexdigest())"
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in range(2)}
    import hashlib

    assert runs == {hashlib.sha256("\n".join(paragraphs(3000)).encode()).hexdigest() + "\n"}

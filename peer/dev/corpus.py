"""Realistic sample text: paragraphs of the Python documentation that ships with the interpreter.

Tests, the demo and the benchmarks need many memories that read like real
notes, not random words, or search quality and embedding cost would be
fiction. Every Python installation carries such text: the reference topics
of ``pydoc_data.topics`` and the docstrings and comment blocks of the
standard library's sources. Reading them needs no network and no extra
package.

Theory of operation. Sources are read in a fixed order (pydoc topics by
key, then the standard library's ``.py`` files in sorted path order, test
packages last), cut into paragraphs at blank lines, whitespace-collapsed,
and kept when they are 80-1500 characters long, look like prose (mostly
letters, at least ten words, no interactive-prompt examples) and were not
seen before. The same interpreter therefore always yields the same
paragraphs in the same order. Files are only read as text, never imported,
so nothing in them runs; string literals are found with a regular
expression rather than :mod:`ast`, which is about three times faster and
good enough for sample text.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import sysconfig
from collections.abc import Iterator

__all__ = ["MIN_CHARS", "MAX_CHARS", "iter_paragraphs", "paragraphs"]

MIN_CHARS = 80
MAX_CHARS = 1500

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
# A triple-quoted string that opens a line: docstrings and most long literals.
_TRIPLE_QUOTED = re.compile(r"^[ \t]*[rRuU]?(\"\"\"|''')(.*?)\1", re.S | re.M)
_NOT_LETTERS = re.compile(r"[^\w ]|[\d_]")
# Source code quoted in strings and commented-out code are not prose.
_CODE_MARKERS = re.compile(r"\bdef |\bself\.|\breturn |\bimport |==| = |\):|[{};]|\bassert")
_SKIPPED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
_TEST_DIRS = frozenset({"test", "tests", "idle_test"})


def _prose(text: str) -> str | None:
    """The paragraph as one line, or None when it is not usable prose."""
    para = " ".join(text.split())
    if not MIN_CHARS <= len(para) <= MAX_CHARS:
        return None
    if ">>>" in para or para.count(" ") < 9:
        return None
    if len(_NOT_LETTERS.findall(para)) > 0.2 * len(para):
        return None
    if len(_CODE_MARKERS.findall(para)) >= 2:
        return None
    return para


def _split(text: str) -> Iterator[str]:
    for chunk in _PARAGRAPH_BREAK.split(text):
        para = _prose(chunk)
        if para is not None:
            yield para


def _topics() -> Iterator[str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        return
    for key in sorted(topics):
        yield from _split(topics[key])


def _source_files() -> list[str]:
    root = sysconfig.get_paths()["stdlib"]
    regular: list[str] = []
    tests: list[str] = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith("."))
        in_tests = bool(_TEST_DIRS.intersection(os.path.relpath(directory, root).split(os.sep)))
        target = tests if in_tests else regular
        target.extend(os.path.join(directory, f) for f in sorted(files) if f.endswith(".py"))
    return regular + tests


def _comment_blocks(source: str) -> Iterator[str]:
    block: list[str] = []
    for line in itertools.chain(source.splitlines(), [""]):
        stripped = line.strip()
        if stripped.startswith("#") and not stripped.startswith("#!"):
            block.append(stripped.lstrip("#"))
        elif block:
            yield "\n".join(block)
            block = []


def _sources() -> Iterator[str]:
    for path in _source_files():
        try:
            with open(path, encoding="utf-8") as f:
                source = f.read()
        except (OSError, UnicodeDecodeError):
            continue
        for match in _TRIPLE_QUOTED.finditer(source):
            yield from _split(match.group(2))
        for block in _comment_blocks(source):
            para = _prose(block)
            if para is not None:
                yield para


def iter_paragraphs() -> Iterator[str]:
    """Every usable paragraph, unique, in a fixed order (lazily: the first thousand are quick)."""
    seen: set[str] = set()
    for para in itertools.chain(_topics(), _sources()):
        if para not in seen:
            seen.add(para)
            yield para


@functools.cache
def _all_paragraphs() -> tuple[str, ...]:
    return tuple(iter_paragraphs())


def paragraphs(limit: int | None = None) -> list[str]:
    """The first ``limit`` paragraphs (all of them, about 15,000, when None)."""
    if limit is None:
        return list(_all_paragraphs())
    return list(itertools.islice(iter_paragraphs(), limit))


if __name__ == "__main__":
    import sys

    count = int(sys.argv[1]) if len(sys.argv) > 1 else None
    for p in paragraphs(count):
        print(p)

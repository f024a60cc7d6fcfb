"""Numbers as people read them in peer's messages."""

from __future__ import annotations

__all__ = ["human_size", "count_of"]


def human_size(n: int) -> str:
    """``388 B``, ``25.1 kB``, ``200.7 MB``, ``1.2 GB`` (powers of 1000)."""
    size = float(n)
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def count_of(n: int, word: str, plural: str | None = None) -> str:
    """``1 version``, ``12,345 versions``, ``2 memories`` (with ``plural``)."""
    return f"{n:,} {word if n == 1 else plural or word + 's'}"

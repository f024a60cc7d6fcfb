"""The CLI's output: JSON, one-line memories, fields, warnings and progress bars.

rich is imported only when a bar is shown (a terminal and a long job).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import click

from peer.units import fields_text, local_minute

from ._app import json_mode

if TYPE_CHECKING:
    from peer.memory import Memory
    from peer.sync import SyncProgress


def print_json(value: Any) -> None:
    # Indented for a person at a terminal, one line for a program reading a pipe.
    click.echo(json.dumps(value, ensure_ascii=False, indent=2 if sys.stdout.isatty() else None))


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def when(timestamp: float) -> str:
    return local_minute(timestamp)


def one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "\u2026"


def terminal_width() -> int:
    try:
        return max(60, os.get_terminal_size(sys.stdout.fileno()).columns)
    except (OSError, ValueError):
        return 100


def memory_line(memory: Memory, prefix: str = "", *, dated: bool = False) -> str:
    parts = [prefix + memory.id[:8]]
    if dated:
        parts.append(local_minute(memory.updated_at))  # when it last changed: what the order is by
    parts.append(memory.kind)
    if memory.project:
        parts.append(memory.project)
    if memory.tags:
        parts.append(" ".join("#" + t for t in memory.tags))
    if memory.siblings:
        parts.append(f"[conflict: {memory.siblings + 1} versions]")
    head = "  ".join(parts)
    return f"{head}  {one_line(memory.content, max(20, terminal_width() - len(head) - 2))}"


def print_fields(rows: Iterable[tuple[str, object]]) -> None:
    click.echo(fields_text(rows))


class ProgressBar:
    """A rich progress bar on stderr (imported only when one is shown)."""

    def __init__(self, description: str, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def update(self, done: int, total: int | None) -> None:
        self._progress.update(self._task, completed=done, total=total)

    def close(self) -> None:
        self._progress.stop()


class Result(Protocol):
    """What a domain operation returns: its JSON and the text a person reads."""

    def to_json(self) -> Any: ...

    def describe(self) -> str: ...


def print_result(result: Result) -> None:
    """``result.to_json()`` with --json, else ``result.describe()``."""
    if json_mode():
        print_json(result.to_json())
    else:
        click.echo(result.describe())


class Bars:
    """The one progress adapter: a bar per stage of a long job, on stderr, only where a person watches.

    Nothing is drawn with ``--json`` or when stderr is not a terminal; a
    stage gets its bar on its first report whose total reaches the stage's
    threshold (short work is over before a bar could be read); a new stage
    closes the previous stage's bar. ``total=None`` draws a bar that counts
    without filling (a sync does not know what will arrive).
    """

    def __init__(self, labels: Mapping[str, str] | None = None, thresholds: Mapping[str, int] | None = None) -> None:
        self.active = not json_mode() and sys.stderr.isatty()
        self._labels = dict(labels or {})
        self._thresholds = dict(thresholds or {})
        self._bar: ProgressBar | None = None
        self._stage: str | None = None

    def update(self, stage: str, done: int, total: int | None, *, label: str | None = None) -> None:
        if not self.active:
            return
        if stage != self._stage:
            if (total if total is not None else done) < self._thresholds.get(stage, 0):
                return
            self.close()
            self._stage = stage
            self._bar = ProgressBar(label or self._labels.get(stage, stage), total)
        assert self._bar is not None
        self._bar.update(done, total)

    @property
    def showing(self) -> bool:
        return self._bar is not None

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = self._stage = None


def progress_callback(description: str) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A ``(done, total)`` callback for one long step, and its closer (None when no bar is drawn)."""
    bars = Bars()
    if not bars.active:
        return None, bars.close
    return (lambda done, total: bars.update(description, done, total)), bars.close


#: Below these totals no bar is drawn: the work is over before one would be read.
_SYNC_BAR_FROM = 1000
_STAGE_FROM = {"verifying": 8_000_000, "exporting": 2000, "applying": 2000}
_STAGE_TEXT = {"verifying": "verifying bundle", "exporting": "exporting", "applying": "importing"}


def sync_progress() -> tuple[Callable[[SyncProgress], None] | None, Callable[[], None]]:
    """A bar for big transfers (versions sent and received so far)."""
    bars = Bars()
    if not bars.active:
        return None, bars.close

    def update(p: SyncProgress) -> None:
        # How many versions will arrive is known only at the end: the bar counts, it cannot fill.
        if not bars.showing and p.to_send + p.received < _SYNC_BAR_FROM:
            return
        bars.update("syncing", p.sent + p.received, None, label=f"syncing ({p.to_send:,} versions to send)")

    return update, bars.close


def stage_progress() -> tuple[Callable[[str, int, int], None] | None, Callable[[], None]]:
    """A bar per stage (verifying, exporting, applying) of a bundle or backup."""
    bars = Bars(_STAGE_TEXT, _STAGE_FROM)
    if not bars.active:
        return None, bars.close
    return bars.update, bars.close

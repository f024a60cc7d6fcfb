"""The CLI's output: JSON, one-line memories, fields, warnings and progress bars.

rich is imported only when a bar is shown (a terminal and a long job).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import click

from peer.units import fields_text, local_minute

from ._app import json_mode

if TYPE_CHECKING:
    from peer.memory import Memory


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


def memory_line(memory: Memory, prefix: str = "") -> str:
    parts = [prefix + memory.id[:8], memory.kind]
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


def progress_callback(description: str) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A (done, total) callback drawing a bar when stderr is a terminal, and its closer."""
    if json_mode() or not sys.stderr.isatty():
        return None, lambda: None
    bar: list[ProgressBar] = []

    def update(done: int, total: int) -> None:
        if not bar:
            bar.append(ProgressBar(description, total))
        bar[0].update(done, total)

    def close() -> None:
        if bar:
            bar[0].close()

    return update, close


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


def sync_progress() -> tuple[Callable[[Any], None] | None, Callable[[], None]]:
    """A bar for big transfers (versions sent and received so far), when stderr is a terminal."""
    if json_mode() or not sys.stderr.isatty():
        return None, lambda: None
    bar: list[ProgressBar] = []

    def update(p: Any) -> None:
        # How many versions will arrive is known only at the end: the bar counts, it cannot fill.
        if not bar and p.to_send + p.received < 1000:
            return
        if not bar:
            bar.append(ProgressBar(f"syncing ({p.to_send:,} versions to send)", None))
        bar[0].update(p.sent + p.received, None)

    def close() -> None:
        if bar:
            bar[0].close()

    return update, close


#: Below these, no bar is drawn: the work is over before one would be read.
_BAR_FROM = {"verifying": 8_000_000, "exporting": 2000, "applying": 2000}
_BAR_TEXT = {"verifying": "verifying bundle", "exporting": "exporting", "applying": "importing"}


def stage_progress() -> tuple[Callable[[str, int, int], None] | None, Callable[[], None]]:
    """A bar per stage (verifying, exporting, applying) for big jobs, when stderr is a terminal."""
    if json_mode() or not sys.stderr.isatty():
        return None, lambda: None
    bars: dict[str, ProgressBar] = {}
    shown: list[ProgressBar] = []

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            if total < _BAR_FROM.get(stage, 0):
                return
            close()
            bar = bars[stage] = ProgressBar(_BAR_TEXT.get(stage, stage), total)
            shown.append(bar)
        bar.update(done, total)

    def close() -> None:
        while shown:
            shown.pop().close()

    return update, close

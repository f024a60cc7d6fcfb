"""Waiting for a condition with a deadline: the one polling loop of the suite.

A test that waits for something another process or task does (a sync, a
backup, a line in a log) polls for it. :func:`wait_until` and
:func:`wait_until_async` call a predicate until it returns something true and
return that value; after ``timeout`` seconds they fail the test with a
message naming ``what`` was awaited (and ``detail()``, when given, for the
evidence: a log, the states seen). Deadlines here are generous: they bound a
broken run, they do not measure speed (bench/ does that).

A predicate may itself raise AssertionError to stop early, e.g. when the
process it waits on has exited.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

T = TypeVar("T")


def _timed_out(what: str, timeout: float, detail: Callable[[], str] | None) -> AssertionError:
    message = f"timed out after {timeout:g} s waiting for {what}"
    if detail is not None:
        message += f"\n{detail()}"
    return AssertionError(message)


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    detail: Callable[[], str] | None = None,
) -> T:
    """``predicate()``'s first true value, polling every ``interval`` s; fails naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, detail)
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], Awaitable[T | None]],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    detail: Callable[[], str] | None = None,
) -> T:
    """:func:`wait_until` for trio tests: awaits ``predicate()`` and sleeps without blocking the other tasks."""
    deadline = trio.current_time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if trio.current_time() >= deadline:
            raise _timed_out(what, timeout, detail)
        await trio.sleep(interval)

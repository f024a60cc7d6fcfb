"""Merging the versions of one memory, as pure functions.

Theory of operation. A memory is the set of all its versions ever written.
Each version names, in its *context*, the dots of the versions it
supersedes (the ones its author saw as live when it wrote it). From the
set alone, every device computes the same state:

* a version is *superseded* when another version of the set has its dot
  in its context;
* the others are *live*; when more than one is live, the memory is in
  conflict and the live versions are *siblings*;
* the *winner* is the live version with the highest (clock time, device
  id, replica, counter), preferring versions that are not tombstones: a
  concurrent edit survives a concurrent delete; the memory is deleted only
  when every live version is a tombstone.

Because the state is a function of the set, and sync only ever grows the
set (applying a version twice is a no-op), any devices that end up holding
the same versions show the same winners, siblings and tombstones, whatever
order the versions arrived in. Superseded versions are kept (they are
small and make late arrivals resolve correctly); nothing is ever lost.

An edit, a forget or a resolve writes a version whose context is every
live dot, so it supersedes all siblings at once.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .clock import Dot
from .ids import device_of

__all__ = [
    "VersionMeta",
    "VersionState",
    "MemoryState",
    "state_of",
    "winner_key",
    "context_for_new_version",
]


@dataclass(frozen=True, slots=True)
class VersionMeta:
    """What merging needs to know of one version (all readable in its header, plus the deleted flag)."""

    dot: Dot
    context: tuple[Dot, ...]
    hlc: int
    deleted: bool


class VersionState(enum.IntEnum):
    SUPERSEDED = 0
    SIBLING = 1
    WINNER = 2


@dataclass(frozen=True, slots=True)
class MemoryState:
    """The resolved state of one memory."""

    winner: Dot | None
    states: Mapping[Dot, VersionState]
    deleted: bool

    @property
    def live(self) -> tuple[Dot, ...]:
        """Winner first, then the other siblings in dot order."""
        others = sorted(d for d, s in self.states.items() if s is VersionState.SIBLING)
        return ((self.winner,) if self.winner is not None else ()) + tuple(others)

    @property
    def in_conflict(self) -> bool:
        return len(self.live) > 1


def winner_key(v: VersionMeta) -> tuple[bool, int, str, str, int]:
    """Total order used to pick the winner: non-tombstones first, then clock time, then device id."""
    return (not v.deleted, v.hlc, device_of(v.dot.origin), v.dot.origin, v.dot.counter)


def state_of(versions: Iterable[VersionMeta]) -> MemoryState:
    """The state of a memory given all the versions of it this device holds.

    (Not "resolve": that is the user's verb for settling a conflict, ``peer resolve``.)
    """
    by_dot: dict[Dot, VersionMeta] = {}
    for v in versions:
        by_dot.setdefault(v.dot, v)
    superseded: set[Dot] = set()
    for v in by_dot.values():
        superseded.update(v.context)
    live = [v for d, v in by_dot.items() if d not in superseded]
    if not live:
        # Only possible with a context cycle, which honest authors cannot
        # make (a context names versions that existed before). Fall back to
        # treating every version as live so nothing disappears.
        live = list(by_dot.values())
    winner = max(live, key=winner_key)
    live_dots = {v.dot for v in live}
    states = {
        d: (
            VersionState.WINNER
            if d == winner.dot
            else VersionState.SIBLING if d in live_dots else VersionState.SUPERSEDED
        )
        for d in by_dot
    }
    return MemoryState(winner=winner.dot, states=states, deleted=winner.deleted)


def context_for_new_version(state: MemoryState | None) -> tuple[Dot, ...]:
    """The context of a new version (edit, forget, resolve): every live dot, sorted."""
    if state is None:
        return ()
    return tuple(sorted(state.live))

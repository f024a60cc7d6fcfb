"""Unit tests of protocol.merge: what a user sees after concurrent changes.

The random histories below are built the way real devices build them:
each replica writes against its own (partial) view of the memory, with the
context every live dot of that view, and views grow by copying arbitrary
subsets of versions between replicas (what interrupted syncs do).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from protocol import Dot, MemoryState, VersionMeta, VersionState, context_for_new_version, state_of, winner_key

A = "A" * 26
B = "B" * 26
C = "C" * 26
A1 = A + ".1"  # device A after one restore from backup


def meta(dot: Dot, context: tuple[Dot, ...] = (), hlc: int = 0, deleted: bool = False) -> VersionMeta:
    return VersionMeta(dot=dot, context=tuple(sorted(context)), hlc=hlc, deleted=deleted)


def test_a_single_version_is_the_winner() -> None:
    v = meta(Dot(A, 1), hlc=10)
    state = state_of([v])
    assert state.winner == v.dot
    assert state.states == {v.dot: VersionState.WINNER}
    assert not state.deleted and not state.in_conflict
    assert state.live == (v.dot,)


def test_an_edit_supersedes_what_its_author_saw() -> None:
    v1 = meta(Dot(A, 1), hlc=10)
    v2 = meta(Dot(B, 5), (v1.dot,), hlc=3)  # even with an older clock time
    state = state_of([v1, v2])
    assert state.winner == v2.dot
    assert state.states[v1.dot] is VersionState.SUPERSEDED
    assert not state.in_conflict


def test_concurrent_edit_survives_concurrent_delete() -> None:
    base = meta(Dot(A, 1), hlc=10)
    edit = meta(Dot(A, 2), (base.dot,), hlc=20)
    # The forget is later in clock time and from a higher device id: it would
    # win any plain last-writer-wins comparison, and must not here.
    forget = meta(Dot(C, 3), (base.dot,), hlc=99, deleted=True)
    state = state_of([base, edit, forget])
    assert not state.deleted
    assert state.winner == edit.dot
    assert state.states[forget.dot] is VersionState.SIBLING
    assert state.in_conflict
    assert state.live == (edit.dot, forget.dot)


def test_memory_is_deleted_only_when_every_live_version_is_a_tombstone() -> None:
    base = meta(Dot(A, 1), hlc=10)
    f1 = meta(Dot(A, 2), (base.dot,), hlc=20, deleted=True)
    f2 = meta(Dot(B, 2), (base.dot,), hlc=21, deleted=True)
    state = state_of([base, f1, f2])
    assert state.deleted
    assert state.winner == f2.dot  # highest clock among the tombstones
    assert set(state.live) == {f1.dot, f2.dot}


def test_a_forget_after_seeing_the_edit_deletes() -> None:
    base = meta(Dot(A, 1), hlc=10)
    edit = meta(Dot(B, 2), (base.dot,), hlc=20)
    forget = meta(Dot(A, 3), (edit.dot,), hlc=15, deleted=True)
    state = state_of([base, edit, forget])
    assert state.deleted and state.winner == forget.dot and not state.in_conflict


def test_resolving_version_covers_all_siblings() -> None:
    base = meta(Dot(A, 1), hlc=10)
    siblings = [
        meta(Dot(A, 2), (base.dot,), hlc=20),
        meta(Dot(B, 3), (base.dot,), hlc=30),
        meta(Dot(C, 4), (base.dot,), hlc=25, deleted=True),
    ]
    before = state_of([base, *siblings])
    assert len(before.live) == 3
    context = context_for_new_version(before)
    assert context == tuple(sorted(v.dot for v in siblings))
    resolution = meta(Dot(B, 9), context, hlc=5)  # clock time does not matter for supersession
    after = state_of([base, *siblings, resolution])
    assert after.winner == resolution.dot and not after.in_conflict
    assert all(after.states[v.dot] is VersionState.SUPERSEDED for v in siblings)


def test_new_memory_has_empty_context() -> None:
    assert context_for_new_version(None) == ()


def test_winner_is_by_clock_time_then_device_id() -> None:
    base = meta(Dot(A, 1), hlc=10)
    early = meta(Dot(C, 2), (base.dot,), hlc=50)
    late = meta(Dot(A, 3), (base.dot,), hlc=60)
    assert state_of([base, early, late]).winner == late.dot

    # Same clock time: the higher device id wins, whatever the counters.
    tie_a = meta(Dot(A, 900), (base.dot,), hlc=70)
    tie_b = meta(Dot(B, 2), (base.dot,), hlc=70)
    assert state_of([base, tie_a, tie_b]).winner == tie_b.dot
    assert state_of([base, tie_b, tie_a]).winner == tie_b.dot

    # Same device, two incarnations (before and after a restore), same time:
    # the device id ties, so the replica id decides, deterministically.
    inc0 = meta(Dot(A, 5), (base.dot,), hlc=80)
    inc1 = meta(Dot(A1, 5), (base.dot,), hlc=80)
    assert state_of([base, inc0, inc1]).winner == inc1.dot
    assert winner_key(inc1) > winner_key(inc0)


def test_late_arriving_superseded_version_stays_superseded() -> None:
    v1 = meta(Dot(A, 1), hlc=100)  # the original, arriving last
    v2 = meta(Dot(B, 2), (v1.dot,), hlc=1)
    only_v2 = state_of([v2])
    assert only_v2.winner == v2.dot
    state = state_of([v2, v1])
    assert state.winner == v2.dot
    assert state.states[v1.dot] is VersionState.SUPERSEDED
    assert not state.in_conflict


def test_duplicates_are_harmless() -> None:
    v1 = meta(Dot(A, 1), hlc=10)
    v2 = meta(Dot(B, 2), (v1.dot,), hlc=20)
    assert state_of([v1, v2, v1, v2, v2]) == state_of([v1, v2])


# -- random histories ---------------------------------------------------------


@dataclass
class History:
    versions: list[VersionMeta]

    def by_dot(self) -> dict[Dot, VersionMeta]:
        return {v.dot: v for v in self.versions}


REPLICAS = [A, B, C, A1]


@st.composite
def histories(draw: st.DrawFn) -> History:
    """A causally honest history of one memory written by up to four replicas."""
    n = len(REPLICAS)
    views: list[dict[Dot, VersionMeta]] = [{} for _ in range(n)]
    counters = [0] * n
    clock = 1000
    written: list[VersionMeta] = []
    first = draw(st.integers(0, n - 1))
    counters[first] = 1
    root = meta(Dot(REPLICAS[first], 1), hlc=clock)
    views[first][root.dot] = root
    written.append(root)
    for _ in range(draw(st.integers(0, 25))):
        if draw(st.booleans()):
            r = draw(st.integers(0, n - 1))
            view = views[r]
            state = state_of(view.values()) if view else None
            counters[r] += draw(st.integers(1, 3))
            clock += draw(st.integers(-5, 10))  # clocks may go back; merge must not care
            v = meta(
                Dot(REPLICAS[r], counters[r]),
                context_for_new_version(state),
                hlc=max(clock, 0),
                deleted=draw(st.booleans()),
            )
            view[v.dot] = v
            written.append(v)
        else:
            src, dst = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
            # Any subset: an interrupted sync may deliver versions out of causal order.
            for dot in draw(st.lists(st.sampled_from(sorted(views[src])), unique=True)) if views[src] else []:
                views[dst][dot] = views[src][dot]
    return History(written)


@given(histories(), st.randoms(use_true_random=False))
def test_state_does_not_depend_on_arrival_order(history: History, rnd: random.Random) -> None:
    reference = state_of(history.versions)
    shuffled = list(history.versions)
    rnd.shuffle(shuffled)
    # Redeliver some of them, as duplicated sessions and bundles do.
    shuffled += rnd.sample(shuffled, k=rnd.randint(0, len(shuffled)))
    rnd.shuffle(shuffled)
    assert state_of(shuffled) == reference


@given(histories())
def test_resolved_state_is_coherent(history: History) -> None:
    state: MemoryState = state_of(history.versions)
    superseded = {d for v in history.versions for d in v.context}
    by_dot = history.by_dot()
    assert state.winner is not None
    assert state.winner not in superseded
    assert set(state.states) == set(by_dot)
    for dot, s in state.states.items():
        assert (s is VersionState.SUPERSEDED) == (dot in superseded)
    live = [by_dot[d] for d in state.live]
    assert max(live, key=winner_key).dot == state.winner
    assert state.deleted == all(v.deleted for v in live)
    # A version written with the full state as context ends any conflict.
    fix = meta(Dot(B, 10_000), context_for_new_version(state), hlc=0)
    after = state_of([*history.versions, fix])
    assert after.live == (fix.dot,)


@given(histories(), st.data())
def test_growing_a_set_never_revives_a_superseded_version(history: History, data: st.DataObject) -> None:
    order = data.draw(st.permutations(history.versions))
    held: list[VersionMeta] = []
    dead: set[Dot] = set()
    for v in order:
        held.append(v)
        state = state_of(held)
        now_dead = {d for d, s in state.states.items() if s is VersionState.SUPERSEDED}
        assert dead <= now_dead
        dead = now_dead

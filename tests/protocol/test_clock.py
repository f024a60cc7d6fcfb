from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocol import Dot, HybridLogicalClock, Ordering, VersionVector, next_counter

A = "A" * 26
B = "B" * 26
C = "C" * 26

vectors = st.dictionaries(st.sampled_from([A, B, C, A + ".1"]), st.integers(0, 50)).map(VersionVector)


def test_empty_vector_is_before_everything_else() -> None:
    assert VersionVector().compare(VersionVector()) is Ordering.EQUAL
    assert VersionVector().compare(VersionVector({A: 1})) is Ordering.BEFORE
    assert VersionVector({A: 1}).compare(VersionVector()) is Ordering.AFTER


def test_concurrent_vectors() -> None:
    assert VersionVector({A: 2, B: 1}).compare(VersionVector({A: 1, B: 2})) is Ordering.CONCURRENT


@given(vectors, vectors)
def test_merge_dominates_both_and_is_commutative(a: VersionVector, b: VersionVector) -> None:
    m = a.merge(b)
    assert m.dominates(a) and m.dominates(b)
    assert m == b.merge(a)
    assert VersionVector.decode(m.encode()) == m


@given(vectors, vectors)
def test_compare_is_antisymmetric(a: VersionVector, b: VersionVector) -> None:
    flip = {Ordering.BEFORE: Ordering.AFTER, Ordering.AFTER: Ordering.BEFORE}
    ab, ba = a.compare(b), b.compare(a)
    assert flip.get(ab, ab) is ba


def test_covers() -> None:
    vv = VersionVector({A: 10})
    assert vv.covers(Dot(A, 10)) and not vv.covers(Dot(A, 11)) and not vv.covers(Dot(B, 1))


def test_counter_rule_never_reuses_a_counter_when_the_clock_goes_back() -> None:
    assert next_counter(last=100, now_ms=50) == 101
    assert next_counter(last=100, now_ms=5000) == 5000


def test_hlc_is_monotonic_and_passes_observed_times() -> None:
    now = [1000]
    clock = HybridLogicalClock(lambda: now[0])
    t1 = clock.tick()
    now[0] = 900  # wall clock jumps back
    t2 = clock.tick()
    assert t2 > t1
    clock.observe(t2 + 10_000_000)
    assert clock.tick() > t2 + 10_000_000


def test_a_far_future_clock_time_does_not_stop_later_writes() -> None:
    from protocol import MAX_COUNTER, hlc_unpack
    from protocol.clock import MAX_CLOCK_SKEW_MS

    wall = 1_700_000_000_000
    clock = HybridLogicalClock(lambda: wall)
    clock.observe(MAX_COUNTER << 16)  # a version from a badly broken clock
    ms, _ = hlc_unpack(clock.tick())
    assert wall < ms <= wall + MAX_CLOCK_SKEW_MS + 1
    # A time within the allowed skew is still passed, as an HLC must.
    clock.observe((wall + 5_000) << 16)
    assert hlc_unpack(clock.tick())[0] >= wall + 5_000

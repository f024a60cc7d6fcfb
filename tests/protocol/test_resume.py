"""Resumable sessions: a sender that promises per-origin order (FLAG_ORDERED) lets a cut session keep its progress."""

from __future__ import annotations

import pytest

from protocol import (
    FLAG_ORDERED,
    NEED_DATA,
    LocalProtocolError,
    RemoteProtocolError,
    SyncSession,
    VersionsReceived,
    VersionVector,
)
from protocol.frames import Members, VersionsBatch, encode_frame
from tests.support.protocol_frames import GROUP, device_id, device_key, make_version
from tests.support.sim import SessionPlan, SimClock, SimDevice, memory_uuid, run_session

KEY_A, KEY_B = device_key(21), device_key(22)
A, B = device_id(KEY_A), device_id(KEY_B)
DIGEST = b"\x22" * 32


def _laptop_with(n: int) -> tuple[SimDevice, SimDevice]:
    clock = SimClock()
    laptop = SimDevice.found("laptop", clock)
    desktop = laptop.invite("desktop")
    for i in range(1, n + 1):
        clock.advance(5)
        laptop.add(memory_uuid(i), f"note {i} " + "x" * 200)
    return laptop, desktop


@pytest.mark.parametrize("cut_at", [900, 2500, 6000, 9000, 14_000])
def test_a_cut_first_sync_keeps_its_progress_and_the_next_one_sends_only_the_rest(cut_at: int) -> None:
    laptop, desktop = _laptop_with(60)
    cut = run_session(laptop, desktop, SessionPlan(chunk_seed=cut_at, cut_at=cut_at))
    assert cut.cut and "desktop" not in cut.completed
    kept = len(desktop.versions)
    assert kept < 60
    # Everything that arrived is covered by the desktop's vector: durable progress.
    assert all(desktop.vector.covers(dot) for dot in desktop.versions)
    done = run_session(laptop, desktop, SessionPlan(chunk_seed=7))
    assert len(done.completed) == 2
    assert done.versions_delivered == 60 - kept  # nothing that arrived is sent again
    assert desktop.views() == laptop.views()
    assert desktop.vector == laptop.vector


def test_cut_after_cut_still_finishes_and_each_session_moves_the_vector_on() -> None:
    laptop, desktop = _laptop_with(80)
    sent = 0
    for attempt in range(1, 40):
        before = len(desktop.versions)
        result = run_session(laptop, desktop, SessionPlan(chunk_seed=attempt, cut_at=8000))
        sent += result.versions_delivered
        if not result.cut:
            break
        assert len(desktop.versions) > before  # room for at least one whole batch each time
    assert desktop.views() == laptop.views()
    assert sent == 80  # across all the cut sessions, every version travelled once


def _receiver(ordered_peer: bool) -> SyncSession:
    """B's session after A's HELLO (with or without FLAG_ORDERED) and empty MEMBERS arrived."""
    b = SyncSession(B, GROUP, VersionVector(), DIGEST, peer_device_id=A)
    b.start()
    a = SyncSession(A, GROUP, VersionVector({A: 10}), DIGEST, flags=FLAG_ORDERED if ordered_peer else 0)
    b.receive_data(a.start())
    b.next_event()  # HelloReceived
    b.send(Members(()))
    b.receive_data(encode_frame(Members(())))
    b.next_event()  # MembersReceived
    return b


def _batch_event(session: SyncSession, counters: list[int]) -> VersionsReceived:
    session.receive_data(encode_frame(VersionsBatch(tuple(make_version(KEY_A, c) for c in counters))))
    event = session.next_event()
    assert isinstance(event, VersionsReceived)
    return event


def test_progress_stops_at_the_senders_vector_and_at_the_last_counter_received() -> None:
    b = _receiver(ordered_peer=True)
    assert _batch_event(b, [2, 5]).progress == VersionVector({A: 5})
    # Versions above the sender's own vector (10) prove nothing about what lies below them.
    assert _batch_event(b, [9, 12]).progress == VersionVector({A: 10})


def test_a_peer_without_the_flag_gives_no_progress() -> None:
    b = _receiver(ordered_peer=False)
    assert _batch_event(b, [5, 2]).progress is None


def test_a_peer_that_breaks_its_order_promise_fails_the_session() -> None:
    b = _receiver(ordered_peer=True)
    _batch_event(b, [3, 4])
    b.receive_data(encode_frame(VersionsBatch((make_version(KEY_A, 4),))))
    with pytest.raises(RemoteProtocolError, match="out of the per-origin counter order"):
        b.next_event()


def test_a_peer_that_returns_to_an_origin_it_left_fails_the_session() -> None:
    b = _receiver(ordered_peer=True)
    versions = (make_version(KEY_A, 3), make_version(KEY_B, 1), make_version(KEY_A, 5))
    b.receive_data(encode_frame(VersionsBatch(versions)))
    with pytest.raises(RemoteProtocolError, match="out of the per-origin counter order"):
        b.next_event()


def test_this_side_cannot_send_out_of_the_order_it_promised() -> None:
    a = SyncSession(A, GROUP, VersionVector(), DIGEST, flags=FLAG_ORDERED)
    a.start()
    b = SyncSession(B, GROUP, VersionVector(), DIGEST)
    a.receive_data(b.start())
    assert a.next_event() is not NEED_DATA
    a.send(Members(()))
    with pytest.raises(LocalProtocolError, match="FLAG_ORDERED"):
        a.send(VersionsBatch((make_version(KEY_A, 7), make_version(KEY_A, 6))))

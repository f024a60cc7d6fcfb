"""Fuzzing the two decoders that read bytes from outside: frames and bundles.

Whatever the bytes, chunking and end of stream, the decoders may only
return results or raise a PeerError subclass: never IndexError,
UnicodeDecodeError, MemoryError, a hang, or anything else.

Cases per run (each test states its count in @settings):
random frame streams 2,500 + mutated frame streams 3,000 + mutated sessions
1,500 + random bundles 1,500 + mutated bundles 3,000 = 11,500.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import PeerError, VersionVector
from protocol.bundle import BUNDLE_MAGIC, BundleEnd, BundleReader
from protocol.frames import END_OF_STREAM, NEED_DATA, FrameDecoder, encode_frame
from protocol.session import PAUSED, HelloReceived, SyncSession, outgoing
from tests.support.protocol_bundles import KEYS, make_bundle
from tests.support.protocol_frames import GROUP, sample_frames
from tests.support.protocol_sessions import DIGEST, A, B, MemorySource, stores

FRAME_STREAMS = [
    b"".join(encode_frame(f) for f in sample_frames()),
    b"".join(encode_frame(f) for f in sample_frames()[:4]),
    encode_frame(sample_frames()[4]),
]
BUNDLES = [make_bundle(versions=1), make_bundle(versions=2, recipient=A, base=VersionVector({A: 1}))]
FAST = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def mutate(data: bytes, pool: list[bytes], rng: random.Random) -> bytes:
    """A valid encoding with a few bit flips, cuts, splices, insertions, deletions and overwrites."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(("flip", "truncate", "splice", "insert", "delete", "overwrite"))
        pos = rng.randrange(len(out) + 1)
        if op == "flip" and pos < len(out):
            out[pos] ^= 1 << rng.randrange(8)
        elif op == "truncate":
            del out[pos:]
        elif op == "splice":
            other = rng.choice(pool)
            out[pos:] = other[rng.randrange(len(other) + 1) :]
        elif op == "insert":
            out[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == "delete":
            del out[pos : pos + rng.randint(1, 8)]
        elif op == "overwrite":
            # Lengths and counts are where decoders go wrong: try extreme values.
            out[pos : pos + 4] = bytes([rng.choice((0x00, 0x7F, 0x80, 0xFF))]) * min(4, len(out) - pos)
    return bytes(out)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    chunks, pos = [], 0
    for n in cuts:
        if pos >= len(data):
            break
        chunks.append(data[pos : pos + n])
        pos += n
    chunks.append(data[pos:])
    # An empty chunk would mean "end of stream" to the decoders.
    return [c for c in chunks if c]


def cuts_for(rng: random.Random) -> list[int]:
    return [rng.randint(1, 64) for _ in range(rng.randrange(9))]


# Hypothesis draws a seed per case; the mutations and the chunking follow from it, which
# keeps each case to two draws (seconds for the whole file) and still reproducible.
SEEDS = st.integers(0, 2**64 - 1)


def decode_frames(data: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder(max_frame_size=1 << 16)
    try:
        for chunk in chunked(data, cuts):
            decoder.receive_data(chunk)
            while decoder.next_frame() is not NEED_DATA:
                pass
        decoder.receive_data(b"")
        for _ in range(len(data) + 2):  # each frame consumes at least 5 bytes: this bounds the loop
            if decoder.next_frame() is END_OF_STREAM:
                return
        raise AssertionError("the decoder neither ended nor failed")
    except PeerError:
        pass


@settings(FAST, max_examples=2500)
@given(st.binary(max_size=300), SEEDS)
def test_random_bytes_into_frame_decoder(data: bytes, seed: int) -> None:
    decode_frames(data, cuts_for(random.Random(seed)))


@settings(FAST, max_examples=3000)
@given(st.sampled_from(FRAME_STREAMS), SEEDS)
def test_mutated_frames_into_frame_decoder(valid: bytes, seed: int) -> None:
    rng = random.Random(seed)
    decode_frames(mutate(valid, FRAME_STREAMS, rng), cuts_for(rng))


def session_stream() -> bytes:
    """What device B sends device A in a real session (HELLO, MEMBERS, VERSIONS, DONE)."""
    source_a, source_b, _, _ = stores()
    a = SyncSession(A, GROUP, source_a.vector, DIGEST)
    b = SyncSession(B, GROUP, source_b.vector, DIGEST)
    stream = b.start()
    b.receive_data(a.start())
    assert isinstance(b.next_event(), HelloReceived)
    return stream + b"".join(outgoing(b, source_b, batch_size=2))


SESSION_STREAMS = [session_stream()]


@settings(FAST, max_examples=1500)
@given(st.sampled_from(SESSION_STREAMS + FRAME_STREAMS), SEEDS, st.booleans())
def test_mutated_streams_into_a_session(valid: bytes, seed: int, close: bool) -> None:
    rng = random.Random(seed)
    data = mutate(valid, SESSION_STREAMS + FRAME_STREAMS, rng)
    cuts = cuts_for(rng)
    source = MemorySource()
    session = SyncSession(A, GROUP, VersionVector(), DIGEST)
    session.start()
    try:
        for chunk in chunked(data, cuts) + ([b""] if close else []):
            session.receive_data(chunk)
            for _ in range(len(data) + 4):
                event = session.next_event()
                if event is NEED_DATA or event is PAUSED:
                    break
                if isinstance(event, HelloReceived):
                    for _bytes in outgoing(session, source):
                        pass
    except PeerError:
        pass


def read_bundle(data: bytes, cuts: list[int]) -> bool:
    reader = BundleReader(group_id=GROUP, sender_key=KEYS.get)
    ended = False
    try:
        for chunk in chunked(data, cuts) + [b""]:
            reader.receive_data(chunk)
            while (event := reader.next_event()) is not NEED_DATA and event is not END_OF_STREAM:
                ended = ended or isinstance(event, BundleEnd)
        return ended
    except PeerError:
        return False


@settings(FAST, max_examples=1500)
@given(st.binary(max_size=300), st.booleans(), SEEDS)
def test_random_bytes_into_bundle_reader(data: bytes, with_magic: bool, seed: int) -> None:
    # With the magic in front, the random part reaches the header and entry parsers.
    assert not read_bundle((BUNDLE_MAGIC + b"\x01" if with_magic else b"") + data, cuts_for(random.Random(seed)))


@settings(FAST, max_examples=3000)
@given(st.sampled_from(BUNDLES), SEEDS)
def test_mutated_bundles_are_refused(valid: bytes, seed: int) -> None:
    rng = random.Random(seed)
    data = mutate(valid, BUNDLES, rng)
    verified = read_bundle(data, cuts_for(rng))
    # A mutation can land back on a valid bundle (a splice of one onto itself); nothing else verifies.
    assert verified == (data in BUNDLES)

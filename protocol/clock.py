"""Clocks: dots, version vectors, the hybrid logical clock, the counter rule.

Theory of operation. Every version a replica writes gets a *dot*
``(replica, counter)``. Counters of one replica only grow, by the rule
``max(last + 1, now_ms)``: wall-clock milliseconds when the clock is sane,
one more than the last dot when it is not. A store's *version vector* maps
each replica to the highest counter up to which it holds *every* version of
that replica; ``covers(dot)`` is then "I already have it". Two vectors
compare as equal, before, after or concurrent.

The *hybrid logical clock* (HLC) stamps versions with a time that is close
to wall-clock but never goes backwards and always exceeds every time seen
so far; it orders concurrent siblings deterministically (with the device id
as the tie-break) and is encoded as one integer: ``ms << 16 | logical``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from .codec import Reader, Writer, decode_whole
from .errors import DecodeError, LocalProtocolError
from .ids import is_replica_id

__all__ = [
    "Dot",
    "Ordering",
    "VersionVector",
    "HybridLogicalClock",
    "next_counter",
    "hlc_pack",
    "hlc_unpack",
    "MAX_COUNTER",
    "MAX_CLOCK_SKEW_MS",
]

#: Counters are milliseconds since the epoch at most a few millennia ahead.
MAX_COUNTER = 2**62
#: How far ahead of the local wall clock a received clock time can move ours.
MAX_CLOCK_SKEW_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True, slots=True, order=True)
class Dot:
    """One version's identity: the replica that wrote it and its counter."""

    origin: str
    counter: int

    def __post_init__(self) -> None:
        if not is_replica_id(self.origin):
            raise LocalProtocolError(f"invalid replica id {self.origin!r} in a dot")
        if not 0 < self.counter <= MAX_COUNTER:
            raise LocalProtocolError(f"dot counter {self.counter} out of range")

    def __str__(self) -> str:
        return f"{self.origin}:{self.counter}"

    @classmethod
    def parse(cls, text: str) -> Dot:
        origin, sep, counter = text.rpartition(":")
        if not sep or not counter.isdigit():
            raise DecodeError(f"malformed version id {text!r}; expected REPLICA:COUNTER")
        try:
            return cls(origin, int(counter))
        except LocalProtocolError as e:
            # Text someone typed or another program wrote: a parse error, not this side's bug.
            raise e.as_remote(f"version id {text!r}") from None

    def encode_into(self, w: Writer) -> None:
        w.str(self.origin).uvarint(self.counter)

    @classmethod
    def decode_from(cls, r: Reader) -> Dot:
        origin = r.str(limit=64)
        counter = r.uvarint(limit=MAX_COUNTER)
        return cls(origin, counter)


class Ordering(enum.Enum):
    EQUAL = "equal"
    BEFORE = "before"
    AFTER = "after"
    CONCURRENT = "concurrent"


class VersionVector(Mapping[str, int]):
    """An immutable map replica -> highest counter held contiguously.

    Missing replicas count as 0; the empty vector is valid and is before
    every non-empty one.
    """

    __slots__ = ("_entries", "_hash")

    def __init__(self, entries: Mapping[str, int] | Iterable[tuple[str, int]] = ()) -> None:
        items = entries.items() if isinstance(entries, Mapping) else entries
        clean: dict[str, int] = {}
        for origin, counter in items:
            if not is_replica_id(origin):
                raise LocalProtocolError(f"invalid replica id {origin!r} in a version vector")
            if not 0 <= counter <= MAX_COUNTER:
                raise LocalProtocolError(f"counter {counter} out of range in a version vector")
            if counter:
                clean[origin] = max(counter, clean.get(origin, 0))
        self._entries = dict(sorted(clean.items()))
        self._hash: int | None = None

    # Mapping protocol -------------------------------------------------
    def __getitem__(self, origin: str) -> int:
        return self._entries[origin]

    def get(self, origin: str, default: int = 0) -> int:  # type: ignore[override]
        return self._entries.get(origin, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, VersionVector):
            return self._entries == other._entries
        return NotImplemented

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._entries.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"VersionVector({self._entries!r})"

    # Vector operations ------------------------------------------------
    def covers(self, dot: Dot) -> bool:
        return dot.counter <= self._entries.get(dot.origin, 0)

    def compare(self, other: VersionVector) -> Ordering:
        less = greater = False
        for origin in self._entries.keys() | other._entries.keys():
            a = self._entries.get(origin, 0)
            b = other._entries.get(origin, 0)
            if a < b:
                less = True
            elif a > b:
                greater = True
            if less and greater:
                return Ordering.CONCURRENT
        if less:
            return Ordering.BEFORE
        if greater:
            return Ordering.AFTER
        return Ordering.EQUAL

    def dominates(self, other: VersionVector) -> bool:
        """True when self covers everything other covers."""
        return self.compare(other) in (Ordering.EQUAL, Ordering.AFTER)

    def merge(self, other: VersionVector) -> VersionVector:
        merged = dict(self._entries)
        for origin, counter in other._entries.items():
            if counter > merged.get(origin, 0):
                merged[origin] = counter
        return VersionVector(merged)

    def with_dot(self, dot: Dot) -> VersionVector:
        """This vector raised to include ``dot`` (the caller holds all before it)."""
        if self.covers(dot):
            return self
        entries = dict(self._entries)
        entries[dot.origin] = dot.counter
        return VersionVector(entries)

    def missing_from(self, other: VersionVector) -> dict[str, tuple[int, int]]:
        """Per replica, the counter range (exclusive, inclusive] self has and other lacks."""
        return {
            origin: (other.get(origin), counter)
            for origin, counter in self._entries.items()
            if counter > other.get(origin)
        }

    def as_dict(self) -> dict[str, int]:
        return dict(self._entries)

    # Encoding ---------------------------------------------------------
    def encode_into(self, w: Writer) -> None:
        w.uvarint(len(self._entries))
        for origin, counter in self._entries.items():
            w.str(origin).uvarint(counter)

    def encode(self) -> bytes:
        w = Writer()
        self.encode_into(w)
        return w.getvalue()

    @classmethod
    def decode_from(cls, r: Reader, max_entries: int = 100_000) -> VersionVector:
        n = r.uvarint(limit=max_entries)
        entries: list[tuple[str, int]] = []
        previous = ""
        for _ in range(n):
            origin = r.str(limit=64)
            counter = r.uvarint(limit=MAX_COUNTER)
            if origin <= previous or counter == 0:
                raise DecodeError("version vector entries are not canonical (sorted, unique, non-zero)")
            previous = origin
            entries.append((origin, counter))
        return cls(entries)

    @classmethod
    def decode(cls, data: bytes) -> VersionVector:
        return decode_whole(cls.decode_from, data, "version vector")


def next_counter(last: int, now_ms: int) -> int:
    """The counter rule: never reuse or go below a counter, track wall-clock time."""
    return max(last + 1, now_ms)


def hlc_pack(ms: int, logical: int) -> int:
    if not 0 <= logical < 1 << 16:
        raise ValueError("HLC logical part out of range")
    return (ms << 16) | logical


def hlc_unpack(value: int) -> tuple[int, int]:
    return value >> 16, value & 0xFFFF


class HybridLogicalClock:
    """A hybrid logical clock with injected wall time (milliseconds)."""

    __slots__ = ("_now_ms", "_last")

    def __init__(self, now_ms: Callable[[], int], last: int = 0) -> None:
        self._now_ms = now_ms
        self._last = last

    @property
    def last(self) -> int:
        return self._last

    def tick(self) -> int:
        """A new timestamp for a local event.

        ``last`` is first brought down to at most :data:`MAX_CLOCK_SKEW_MS`
        ahead of the wall clock: a time observed before that cap existed, or
        this device's own clock that ran ahead and was set right, must not
        pin every later write (and, near the end of the range, make writing
        impossible). Times only order concurrent siblings, never supersession.
        """
        wall = self._now_ms()
        self._last = min(self._last, hlc_pack(max(wall, 0) + MAX_CLOCK_SKEW_MS, 0))
        last_ms, last_logical = hlc_unpack(self._last)
        if wall > last_ms:
            self._last = hlc_pack(wall, 0)
        elif last_logical + 1 < 1 << 16:
            self._last = hlc_pack(last_ms, last_logical + 1)
        else:
            self._last = hlc_pack(last_ms + 1, 0)
        return self._last

    def observe(self, remote: int) -> None:
        """Account for a timestamp seen on a received version.

        A remote time more than :data:`MAX_CLOCK_SKEW_MS` ahead of our wall
        clock only pulls us that far: one version stamped in the far future
        (a broken clock) must not drag every later write with it, up to the
        end of the clock's range where no write is possible any more.
        """
        remote = min(remote, hlc_pack(self._now_ms() + MAX_CLOCK_SKEW_MS, 0))
        if remote > self._last:
            self._last = remote

"""A small canonical binary encoding.

Everything peer signs or seals is encoded with these primitives, so the
same value always has exactly one encoding: unsigned LEB128 varints that
must be minimal, length-prefixed byte strings, UTF-8 text. A ``Reader``
never reads past its buffer and raises :class:`DecodeError` for anything
malformed, so decoders built on it can be fed arbitrary bytes.
"""

from __future__ import annotations

import builtins
import struct
from collections.abc import Callable
from typing import TypeVar

from .errors import DecodeError, LocalProtocolError

__all__ = ["Writer", "Reader", "encode_uvarint", "decode_whole", "MAX_VARINT_BYTES"]

_T = TypeVar("_T")

#: 12 bytes hold 84 bits: enough for the largest value we encode, a hybrid
#: clock time (a 62-bit counter shifted by 16); longer varints are garbage.
MAX_VARINT_BYTES = 12


# The one-byte encodings, which most lengths and counts are: a lookup, not a loop.
_SMALL = tuple(bytes((i,)) for i in range(0x80))


def encode_uvarint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL[value]
    if value < 0:
        raise ValueError(f"uvarint cannot encode a negative number: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Writer:
    """Appends canonical encodings to a buffer."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def uvarint(self, value: int) -> Writer:
        if 0 <= value < 0x80:
            self._buf.append(value)
        else:
            self._buf += encode_uvarint(value)
        return self

    def bool(self, value: bool) -> Writer:
        self._buf.append(1 if value else 0)
        return self

    def raw(self, data: bytes) -> Writer:
        self._buf += data
        return self

    def bytes(self, data: bytes) -> Writer:
        n = len(data)
        if n < 0x80:
            self._buf.append(n)
        else:
            self._buf += encode_uvarint(n)
        self._buf += data
        return self

    def str(self, text: str) -> Writer:
        return self.bytes(text.encode("utf-8"))

    def f64(self, value: float) -> Writer:
        self._buf += struct.pack("<d", value)
        return self

    # ``bytes`` is shadowed by the method of that name inside this class body.
    def getvalue(self) -> builtins.bytes:
        return bytes(self._buf)


class Reader:
    """Reads canonical encodings; every failure is a :class:`DecodeError`."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes | bytearray | memoryview, what: str = "data") -> None:
        self._data = bytes(data)
        self._pos = 0
        self._what = what

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    @property
    def position(self) -> int:
        return self._pos

    def _fail(self, why: str) -> DecodeError:
        return DecodeError(f"malformed {self._what}: {why} at byte {self._pos}")

    def uvarint(self, limit: int | None = None) -> int:
        pos = self._pos
        if pos < len(self._data) and (byte := self._data[pos]) < 0x80:
            # One byte, the common case: always minimal.
            if limit is not None and byte > limit:
                raise self._fail(f"number {byte} above limit {limit}")
            self._pos = pos + 1
            return byte
        result = 0
        shift = 0
        start = self._pos
        for i in range(MAX_VARINT_BYTES):
            if self._pos >= len(self._data):
                raise self._fail("truncated number")
            byte = self._data[self._pos]
            self._pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    self._pos = start
                    raise self._fail("non-minimal number")
                if limit is not None and result > limit:
                    self._pos = start
                    raise self._fail(f"number {result} above limit {limit}")
                return result
            shift += 7
        raise self._fail("number too long")

    def bool(self) -> bool:
        value = self.raw(1)[0]
        if value > 1:
            raise self._fail("boolean neither 0 nor 1")
        return value == 1

    def raw(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise self._fail(f"truncated: wanted {n} bytes, {self.remaining} left")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def bytes(self, limit: int | None = None) -> bytes:
        n = self.uvarint()
        if limit is not None and n > limit:
            raise self._fail(f"field of {n} bytes above limit {limit}")
        return self.raw(n)

    def str(self, limit: int | None = None) -> str:
        data = self.bytes(limit)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self._fail("invalid UTF-8") from e

    def f64(self) -> float:
        value: float = struct.unpack("<d", self.raw(8))[0]
        return value

    def end(self) -> None:
        """Require that everything was consumed (no trailing bytes)."""
        if self._pos != len(self._data):
            raise self._fail(f"{self.remaining} trailing bytes")


def decode_whole(decode_from: Callable[[Reader], _T], data: bytes, what: str) -> _T:
    """Decode ``data`` with ``decode_from``, which must consume every byte.

    This is where received bytes become values, so a value that fails its
    own validation here is the sender's fault: its :class:`LocalProtocolError`
    is re-raised as a :class:`DecodeError` naming ``what``.
    """
    r = Reader(data, what)
    try:
        value = decode_from(r)
    except LocalProtocolError as e:
        raise e.as_remote(what) from None
    r.end()
    return value

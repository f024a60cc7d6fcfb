"""The signature helper process's side (``python -m peer.signature_helper``): see :mod:`peer.signatures`.

It imports nothing but the protocol's signature check, so it is ready in a
fraction of a second. It reads requests on stdin and answers on stdout, in
order, until its input ends (the parent closed it, or died):

    request  = u32 length | u64 number | jobs (key 32 | signature 64 | u32 length | message)
    answer   = u32 length | u64 number | one byte per job (1 valid, 0 not)

Its first byte out (``READY``) says it has imported what it needs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import BinaryIO, Final

from protocol import SignatureJob, signature_valid

__all__ = ["READY", "MAX_REQUEST", "encode_request", "decode_request", "serve", "main"]

READY: Final = b"\x01"
#: The most one request may hold (a batch is at most 4 MiB of versions, plus framing).
MAX_REQUEST: Final = 64 << 20
_KEY: Final = 32
_SIGNATURE: Final = 64


def encode_request(number: int, jobs: Sequence[SignatureJob]) -> bytes:
    parts = [b"", number.to_bytes(8, "big")]
    for key, signature, message in jobs:
        if len(key) != _KEY or len(signature) != _SIGNATURE:
            raise ValueError("a signature job is a 32-byte key, a 64-byte signature and the message")
        parts += (key, signature, len(message).to_bytes(4, "big"), message)
    parts[0] = sum(len(p) for p in parts).to_bytes(4, "big")
    return b"".join(parts)


def decode_request(body: bytes) -> tuple[int, list[SignatureJob]]:
    """A request's number and jobs (``body`` without its length); raises ValueError if it is cut short."""
    if len(body) < 8:
        raise ValueError("truncated request")
    number = int.from_bytes(body[:8], "big")
    jobs: list[SignatureJob] = []
    at = 8
    while at < len(body):
        key, signature = body[at : at + _KEY], body[at + _KEY : at + _KEY + _SIGNATURE]
        at += _KEY + _SIGNATURE
        length = int.from_bytes(body[at : at + 4], "big")
        message = body[at + 4 : at + 4 + length]
        at += 4 + length
        if len(key) != _KEY or len(signature) != _SIGNATURE or len(message) != length:
            raise ValueError("truncated signature job")
        jobs.append((key, signature, message))
    return number, jobs


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer each request until the input ends; stop at anything malformed (the parent stops trusting us)."""
    answers.write(READY)
    answers.flush()
    while head := requests.read(4):
        length = int.from_bytes(head, "big")
        if len(head) != 4 or not 8 <= length <= MAX_REQUEST:
            return
        body = requests.read(length)
        if len(body) != length:
            return
        try:
            number, jobs = decode_request(body)
        except ValueError:
            return
        verdicts = bytes(signature_valid(*job) for job in jobs)
        answers.write((8 + len(verdicts)).to_bytes(4, "big") + number.to_bytes(8, "big") + verdicts)
        answers.flush()


def main() -> None:
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()

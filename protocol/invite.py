"""Invite codes: what a person copies from a member to the device that joins.

A code names the inviter's device (so the joiner can pin its SSH host key),
a random invite id, a 128-bit secret, an expiry and where the inviter's agent
listens. It is shown in base32 (no 0, 1, 8 or 9, and those look-alikes are
read as O, I and B), in groups of five behind ``PEER1-``, and ends with a
checksum, so a typo is caught here, before anything is sent.

Layout (before base32 and grouping)::

    u8 code version (1) | raw(16) inviter device id | raw(8) invite id
    | raw(16) secret | uvarint expiry (unix seconds) | str address hint
    | raw(4) checksum: SHA-256("peer/v1/invite-code\0" | everything before)

The inviter keeps only a *verifier* of the secret (a one-way hash); the join
proof is keyed with it (see ``peer.pairing``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Final

from .codec import Reader, Writer
from .errors import DecodeError, UnsupportedFormat

__all__ = [
    "CODE_PREFIX",
    "INVITE_ID_BYTES",
    "SECRET_BYTES",
    "InviteCode",
    "MistypedCode",
    "decode_code",
    "encode_code",
    "verifier_for",
]

CODE_PREFIX: Final = "PEER1"
CODE_VERSION: Final = 1
INVITE_ID_BYTES: Final = 8
SECRET_BYTES: Final = 16
_CHECKSUM_BYTES: Final = 4
_DEVICE_BYTES: Final = 16
_MAX_ADDRESS_BYTES: Final = 255
_VERIFIER_LABEL: Final = b"peer/v1/invite-verifier\x00"
_CHECKSUM_LABEL: Final = b"peer/v1/invite-code\x00"


class MistypedCode(DecodeError):
    """This invite code is mistyped; copy it again exactly as `peer invite` printed it."""


@dataclass(frozen=True, slots=True)
class InviteCode:
    """What a person copies from the inviter to the new device."""

    device_id: str
    invite_id: bytes
    secret: bytes
    expires_at: int  # unix seconds
    address: str  # "host:port", or "" when the inviter gave none

    def __post_init__(self) -> None:
        if len(self.invite_id) != INVITE_ID_BYTES or len(self.secret) != SECRET_BYTES:
            raise ValueError("an invite id is 8 bytes and a secret 16")
        if len(self.address.encode("utf-8")) > _MAX_ADDRESS_BYTES:
            raise ValueError(f"an address hint is at most {_MAX_ADDRESS_BYTES} bytes")

    @property
    def verifier(self) -> bytes:
        return verifier_for(self.secret)


def verifier_for(secret: bytes) -> bytes:
    """What the inviter keeps of a secret, and the key of the join proof."""
    return hashlib.sha256(_VERIFIER_LABEL + secret).digest()


def _device_bytes(device_id: str) -> bytes:
    return base64.b32decode(device_id + "======")


def _device_text(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def encode_code(invite: InviteCode) -> str:
    w = Writer().raw(bytes([CODE_VERSION])).raw(_device_bytes(invite.device_id)).raw(invite.invite_id)
    body = w.raw(invite.secret).uvarint(invite.expires_at).str(invite.address).getvalue()
    checksum = hashlib.sha256(_CHECKSUM_LABEL + body).digest()[:_CHECKSUM_BYTES]
    text = base64.b32encode(body + checksum).decode("ascii").rstrip("=")
    return "-".join([CODE_PREFIX, *(text[i : i + 5] for i in range(0, len(text), 5))])


# People read 0 for O and 1 for I/L; base32 has none of 0, 1, 8, 9.
_LOOKALIKES = str.maketrans({"0": "O", "1": "I", "8": "B"})


def decode_code(code: str) -> InviteCode:
    """Parse a code; MistypedCode when any character is wrong (the checksum catches typos)."""
    text = re.sub(r"[\s\-]", "", code).upper()
    prefix = CODE_PREFIX.upper()
    if not text.startswith("PEER"):
        raise MistypedCode("this is not a peer invite code (it should start with PEER1-); copy it again")
    if not text.startswith(prefix):
        raise UnsupportedFormat("this invite code was made by a newer peer; upgrade peer on this device")
    text = text[len(prefix) :].translate(_LOOKALIKES)
    if not text or not re.fullmatch(r"[A-Z2-7]+", text):
        raise MistypedCode("this invite code is mistyped (it holds characters a code never has); copy it again")
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError as e:
        raise MistypedCode("this invite code is mistyped (wrong length); copy it again") from e
    # The last character may carry unused bits that the decoder ignores:
    # only the one spelling that encodes these bytes is a code.
    if base64.b32encode(raw).decode("ascii").rstrip("=") != text:
        raise MistypedCode("this invite code is mistyped (its last characters do not fit); copy it again")
    body, checksum = raw[:-_CHECKSUM_BYTES], raw[-_CHECKSUM_BYTES:]
    expected = hashlib.sha256(_CHECKSUM_LABEL + body).digest()[:_CHECKSUM_BYTES]
    if len(raw) <= _CHECKSUM_BYTES or not hmac.compare_digest(checksum, expected):
        raise MistypedCode("this invite code is mistyped (its checksum does not match); copy it again")
    try:
        r = Reader(body, "invite code")
        version = r.raw(1)[0]
        if version != CODE_VERSION:
            raise UnsupportedFormat("this invite code was made by a newer peer; upgrade peer on this device")
        device_id = _device_text(r.raw(_DEVICE_BYTES))
        invite_id = r.raw(INVITE_ID_BYTES)
        secret = r.raw(SECRET_BYTES)
        expires_at = r.uvarint(limit=1 << 40)
        address = r.str(limit=_MAX_ADDRESS_BYTES)
        r.end()
    except DecodeError as e:
        # The checksum matched, so this is a code made wrongly, not mistyped; say the same anyway.
        raise MistypedCode("this invite code is damaged; copy it again") from e
    return InviteCode(device_id, invite_id, secret, expires_at, address)

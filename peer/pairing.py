"""Pairing and membership: invite codes, the join exchange, devices, revoke, conflicts.

Theory of operation. ``peer invite`` makes a one-time invite: a random
invite id and a 128-bit secret, kept by the inviter as a *verifier* (a
one-way hash of the secret) with an expiry and a "used" mark, and printed
as a code that also names the inviter's device (so the joiner can pin its
SSH host key) and where its agent listens. ``peer join CODE`` connects to
that address as the SSH user ``peer-join`` with its own device key,
checks the host key against the device id in the code, and sends a
JOIN_REQUEST whose proof is an HMAC, keyed with the verifier, over the
invite id and the joiner's keys and name. The inviter checks, in one
transaction of its invite file, that the invite exists, has not expired,
was not used and that the proof matches, and marks it used; only then does
it admit the device (a Member record and the group keys sealed to it) and
answer with every membership record it holds. Any refusal is the same
JOIN_REJECT, whatever went wrong, so a wrong code teaches nothing.

Why the proof is keyed with the verifier and not the secret: the inviter
must be able to check the proof without keeping the secret that was
shown to a person. The verifier is enough to forge a proof, so it is a
secret too, kept like the group keys (0600 in a 0700 home): someone who
can read it can read the store and the device key beside it anyway. What
hashing buys is that the code itself (what a person copied, maybe into a
chat) is never written to disk.

Why invites live in their own small SQLite file (``invites.db``) rather
than in the store: they are local to one device, never replicated, short
lived, and written by ``peer invite`` while the agent (another process)
reads and claims them; SQLite gives the atomic "claim if unused" across
processes, and the store stays what it is, versions and membership.
The invite is marked used *before* the device is admitted (admission
writes the store, another file): a crash or a refusal in between (a
revoked device) spends the code, but one code can never admit two devices.

Code layout (before base32 and grouping)::

    u8 code version (1) | raw(16) inviter device id | raw(8) invite id
    | raw(16) secret | uvarint expiry (unix seconds) | str address hint
    | raw(4) checksum: SHA-256("peer/v1/invite-code\0" | everything before)

shown as ``PEER1-`` followed by the base32 text in groups of five.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from protocol.codec import Reader, Writer
from protocol.errors import (
    DecodeError,
    LocalProtocolError,
    NotAMember,
    PeerError,
    RemoteProtocolError,
    StoreError,
    TrustError,
    UnsupportedFormat,
)
from protocol.frames import (
    END_OF_STREAM,
    NEED_DATA,
    EndOfStream,
    ErrorCode,
    ErrorFrame,
    Frame,
    FrameDecoder,
    JoinAccept,
    JoinReject,
    JoinRequest,
    NeedData,
    encode_frame,
    frame_name,
)
from protocol.ids import device_id_for, format_device_id, normalize_device_id
from protocol.membership import MemberInfo, Membership

from .aio import DEFAULT_PORT, JOIN_SUBSYSTEM, Database, connect
from .home import Home, Identity
from .store import NowMs, Store, wall_clock_ms
from .sync import Syncer, parse_address

__all__ = [
    "CODE_PREFIX",
    "DEFAULT_PORT",
    "DEFAULT_TTL_S",
    "REFUSAL_MESSAGE",
    "ByteStream",
    "JoinStream",
    "admitted_membership",
    "join",
    "join_handler",
    "join_from_file",
    "make_invite_file",
    "Invite",
    "InviteCode",
    "InviteRefused",
    "Invites",
    "MistypedCode",
    "check_joinable",
    "conflicts",
    "decode_code",
    "devices",
    "encode_code",
    "find_device",
    "make_invite",
    "parse_ttl",
    "prepare_join",
    "accept_join",
    "request_join",
    "resolve",
    "revoke",
    "serve_join",
    "verifier_for",
]

log = logging.getLogger(__name__)

#: How long an invite stays valid unless ``--ttl`` says otherwise.
DEFAULT_TTL_S = 15 * 60
MAX_TTL_S = 7 * 24 * 3600
CODE_PREFIX = "PEER1"
CODE_VERSION = 1
INVITE_ID_BYTES = 8
SECRET_BYTES = 16
_CHECKSUM_BYTES = 4
_DEVICE_BYTES = 16
_MAX_ADDRESS_BYTES = 255
_VERIFIER_LABEL = b"peer/v1/invite-verifier\x00"
_CHECKSUM_LABEL = b"peer/v1/invite-code\x00"
INVITES_FILE = "invites.db"
#: A code that expired this long ago by this device's clock is refused before connecting.
_CLOCK_SLACK_MS = 5 * 60 * 1000
#: What the joiner reads for every refusal: it must not say which check failed.
REFUSAL_MESSAGE = "the invite was refused: the code is wrong, already used or expired; ask for a new one"


class MistypedCode(DecodeError):
    """This invite code is mistyped; copy it again exactly as `peer invite` printed it."""


class InviteRefused(TrustError):
    """The inviter refused the code: it is wrong, already used or expired; ask for a new one."""


# Invite codes -------------------------------------------------------------------


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


def parse_ttl(text: str) -> int:
    """``90s``, ``15m``, ``2h``, ``1d`` (or plain seconds) as seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text.lower())
    if not match:
        raise PeerError(f"{text!r} is not a duration; write it like 90s, 15m, 2h or 1d")
    seconds = int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if not 0 < seconds <= MAX_TTL_S:
        raise PeerError("an invite lasts between 1 second and 7 days")
    return seconds


# Pending invites ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Invite:
    """A pending or spent invite as the inviter keeps it (no secret)."""

    invite_id: bytes
    expires_at_ms: int
    created_at_ms: int
    used_at_ms: int | None
    used_by: str | None


_INVITES_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS invites (
        invite_id BLOB PRIMARY KEY,
        verifier BLOB NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        used_at_ms INTEGER,
        used_by TEXT
    ) STRICT""",
]


class Invites:
    """The invites this device handed out, in ``invites.db`` in its home (0600)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @classmethod
    async def open(cls, home: Home) -> Invites:
        path = home.path / INVITES_FILE
        if not path.exists():
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            except OSError as e:
                raise StoreError(f"cannot create {path}: {e.strerror or e}") from e
        db = await Database.open(path)
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            for statement in _INVITES_SCHEMA:
                await db.execute(statement)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> Invites:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def add(self, invite_id: bytes, verifier: bytes, *, created_at_ms: int, expires_at_ms: int) -> None:
        await self._db.execute(
            "INSERT INTO invites (invite_id, verifier, created_at_ms, expires_at_ms) VALUES (?, ?, ?, ?)",
            (invite_id, verifier, created_at_ms, expires_at_ms),
        )

    async def claim(self, request: JoinRequest, *, now_ms: int) -> bool:
        """Mark the request's invite used if it exists, is unexpired, unused and the proof matches.

        One transaction, so two joiners racing on one code cannot both win.
        """
        async with self._db.transaction():
            row = await self._db.fetchone(
                "SELECT verifier, expires_at_ms, used_at_ms FROM invites WHERE invite_id = ?", (request.invite_id,)
            )
            # The proof is checked even for an unknown or spent invite, so
            # that every refusal costs the same work.
            verifier = bytes(row[0]) if row is not None else bytes(32)
            proof_ok = request.proof_matches(verifier)
            if row is None or not proof_ok or row[2] is not None or now_ms >= int(row[1]):
                return False
            await self._db.execute(
                "UPDATE invites SET used_at_ms = ?, used_by = ? WHERE invite_id = ?",
                (now_ms, device_id_for(request.device_key), request.invite_id),
            )
        return True

    async def list(self) -> list[Invite]:
        rows = await self._db.fetchall(
            "SELECT invite_id, expires_at_ms, created_at_ms, used_at_ms, used_by FROM invites ORDER BY created_at_ms"
        )
        return [Invite(bytes(r[0]), int(r[1]), int(r[2]), r[3], r[4]) for r in rows]

    async def forget_expired(self, *, now_ms: int, keep_ms: int = 7 * 24 * 3600 * 1000) -> int:
        """Drop invites that expired long ago (a used one is kept as long, for the record)."""
        return await self._db.execute("DELETE FROM invites WHERE expires_at_ms < ?", (now_ms - keep_ms,))


async def make_invite(
    home: Home,
    store: Store,
    *,
    ttl_s: int = DEFAULT_TTL_S,
    address: str = "",
    now_ms: NowMs = wall_clock_ms,
) -> tuple[str, InviteCode]:
    """``peer invite``: a new one-time invite, remembered in ``invites.db``; returns (code text, code)."""
    if not store.membership.is_member(store.device_id):
        raise NotAMember("this device is no longer a member of its group; it cannot invite anyone")
    if address:
        host, port = parse_address(address)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    now = now_ms()
    invite = InviteCode(
        device_id=store.device_id,
        invite_id=os.urandom(INVITE_ID_BYTES),
        secret=os.urandom(SECRET_BYTES),
        expires_at=(now + ttl_s * 1000 + 999) // 1000,
        address=address,
    )
    async with await Invites.open(home) as invites:
        await invites.forget_expired(now_ms=now)
        await invites.add(
            invite.invite_id, invite.verifier, created_at_ms=now, expires_at_ms=invite.expires_at * 1000
        )
    return encode_code(invite), invite


# Air-gapped invites ---------------------------------------------------------------------
#
# With no network between the devices, the joiner cannot send its keys, so
# the inviter makes them: ``peer invite --file F`` creates a key pair for
# the new device, admits it at once, and writes its keys, the member
# records and the group keys to F, encrypted under a key derived from the
# code's secret. ``peer join CODE --file F`` on the new device opens F with
# the code and installs that identity. F alone reveals nothing; F with the
# code is the new device, so carry them apart (the file on the USB stick,
# the code read out or typed). The device is a member from the moment F is
# written: a file that is never used should be revoked by its name.

_FILE_MAGIC = b"peer-invite-file\x00v1\x00"
_FILE_KEY_LABEL = b"peer/v1/invite-file-key\x00"
_FILE_NONCE_BYTES = 12


def _file_key(secret: bytes, invite_id: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=invite_id, info=_FILE_KEY_LABEL).derive(secret)


async def make_invite_file(
    store: Store,
    identity: Identity,
    path: Path,
    *,
    name: str,
    ttl_s: int = DEFAULT_TTL_S,
    now_ms: NowMs = wall_clock_ms,
) -> tuple[str, InviteCode, str]:
    """``peer invite --file F``: admit a new device and write its sealed identity to ``path``.

    Returns (code text, code, the new device's id).
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

    if path.exists():
        raise PeerError(f"{path} already exists; give another file name")
    signing = Ed25519PrivateKey.generate()
    kex = X25519PrivateKey.generate()
    public = signing.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    await store.refresh()
    membership = Membership(store.group_id)
    membership.add_all(store.membership.records())
    records = membership.add_member(
        identity.signing_key,
        identity.kex_key,
        device_public_key=public,
        kex_public_key=kex.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
        name=name,
        now_ms=now_ms(),
        epoch_keys=store.group_keys,
    )
    now = now_ms()
    code = InviteCode(
        device_id=store.device_id,
        invite_id=os.urandom(INVITE_ID_BYTES),
        secret=os.urandom(SECRET_BYTES),
        expires_at=(now + ttl_s * 1000 + 999) // 1000,
        address="",
    )
    w = Writer().raw(store.group_id)
    w.bytes(signing.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
    w.bytes(kex.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
    all_records = membership.records()
    w.uvarint(len(all_records))
    for record in all_records:
        w.bytes(record)
    nonce = os.urandom(_FILE_NONCE_BYTES)
    header = _FILE_MAGIC + code.invite_id
    box = ChaCha20Poly1305(_file_key(code.secret, code.invite_id)).encrypt(nonce, w.getvalue(), header)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(header + nonce + box)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise PeerError(f"cannot write the invite file {path}: {e.strerror or e}") from e
    # Admitted only once the file is safely written.
    await store.apply_membership(records, strict=True)
    new_id = device_id_for(public)
    log.info("admitted device %s (%r) through invite file %s", new_id, name, path)
    return encode_code(code), code, new_id


async def join_from_file(home: Home, code_text: str, path: Path, *, now_ms: NowMs = wall_clock_ms) -> dict[str, Any]:
    """``peer join CODE --file F``: become the device the inviter made for this file."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    from .home import write_secret

    code = decode_code(code_text)
    if code.expires_at * 1000 < now_ms() - _CLOCK_SLACK_MS:
        raise InviteRefused(f"this invite expired {expires_text(code.expires_at, now_ms() / 1000)}; ask for a new one")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PeerError(f"cannot read the invite file {path}: {e.strerror or e}") from e
    header_len = len(_FILE_MAGIC) + INVITE_ID_BYTES
    if not data.startswith(_FILE_MAGIC) or len(data) < header_len + _FILE_NONCE_BYTES + 16:
        raise PeerError(f"{path} is not a peer invite file")
    if data[len(_FILE_MAGIC) : header_len] != code.invite_id:
        raise InviteRefused(f"{path} was written for another invite code; use the code printed with it")
    nonce = data[header_len : header_len + _FILE_NONCE_BYTES]
    try:
        plain = ChaCha20Poly1305(_file_key(code.secret, code.invite_id)).decrypt(
            nonce, data[header_len + _FILE_NONCE_BYTES :], data[:header_len]
        )
    except InvalidTag as e:
        raise InviteRefused(f"{path} does not open with this code (wrong code, or a damaged file)") from e
    r = Reader(plain, "invite file")
    group_id = r.raw(16)
    signing = Ed25519PrivateKey.from_private_bytes(r.bytes(limit=32))
    kex = X25519PrivateKey.from_private_bytes(r.bytes(limit=32))
    records = [r.bytes(limit=1 << 20) for _ in range(r.uvarint(limit=1 << 20))]
    r.end()
    if home.device_key_path.exists() or home.exists():
        raise StoreError(
            f"{home.path} already holds a device; an invite file makes a new device: use a new --home"
        )
    home.path.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_secret(home.device_key_path, signing.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))
    write_secret(home.kex_key_path, kex.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    identity = home.ensure_identity()
    membership = Membership(group_id)
    membership.add_all(records)
    if not membership.is_member(identity.device_id) or not membership.is_member(code.device_id):
        raise TrustError(f"{path} does not admit this device; ask for a new invite")
    keys = membership.epoch_keys(identity.device_id, identity.kex_key)
    await home.create_store(group_id=group_id, records=membership.records(), group_keys=keys, now_ms=now_ms)
    return {
        "group_id": group_id.hex(),
        "device_id": identity.device_id,
        "inviter": code.device_id,
        "members": sum(1 for m in membership.members() if not m.revoked),
    }


# The join exchange ----------------------------------------------------------------


class ByteStream(Protocol):
    """The part of a transport stream (an SSH channel, :class:`peer.aio.ByteStream`) pairing uses."""

    async def send_all(self, data: bytes) -> None: ...

    async def receive_some(self, max_bytes: int = 65536) -> bytes: ...


class JoinStream(ByteStream, Protocol):
    """A server-side join channel: it knows which key the client authenticated with."""

    @property
    def peer_device_id(self) -> str: ...


_JOIN_MAX_FRAME = 4 << 20


async def _receive_frame(stream: ByteStream, decoder: FrameDecoder) -> Frame:
    while True:
        frame = decoder.next_frame()
        if frame is END_OF_STREAM:
            raise RemoteProtocolError("the other device closed the connection during pairing")
        if frame is not NEED_DATA:
            assert not isinstance(frame, (NeedData, EndOfStream))
            return frame
        decoder.receive_data(bytes(await stream.receive_some(65536)))


async def accept_join(
    request: JoinRequest,
    *,
    store: Store,
    identity: Identity,
    invites: Invites,
    client_device_id: str,
    now_ms: NowMs = wall_clock_ms,
) -> JoinAccept | JoinReject:
    """The inviter's decision on one JOIN_REQUEST (no I/O but the two local databases).

    ``client_device_id`` is the device whose key authenticated the SSH
    connection: the request must be for that same key, so that nobody can
    join with a key whose private half it does not hold.
    """
    refused = JoinReject(ErrorCode.INVITE_REFUSED, REFUSAL_MESSAGE)
    joiner = device_id_for(request.device_key)
    if not hmac.compare_digest(joiner, client_device_id):
        log.warning(
            "refused a join: the request is for device %s but the connection authenticated as %s",
            format_device_id(joiner),
            format_device_id(client_device_id),
        )
        return refused
    if not await invites.claim(request, now_ms=now_ms()):
        log.warning(
            "refused a join by device %s: unknown, used or expired invite, or a wrong code", format_device_id(joiner)
        )
        return refused
    await store.refresh()
    # A copy: the store's own membership may be in use by a verifying batch.
    membership = Membership(store.group_id)
    membership.add_all(store.membership.records())
    try:
        records = membership.add_member(
            identity.signing_key,
            identity.kex_key,
            device_public_key=request.device_key,
            kex_public_key=request.exchange_key,
            name=request.name,
            now_ms=now_ms(),
            epoch_keys=store.group_keys,
        )
    except (LocalProtocolError, NotAMember) as e:
        # A revoked device, or an inviter revoked since it made the invite.
        log.warning("refused a join by device %s after claiming its invite: %s", format_device_id(joiner), e)
        return refused
    await store.apply_membership(records, strict=True)
    log.info("admitted device %s (%r) to the group", format_device_id(joiner), request.name)
    return JoinAccept(group_id=store.group_id, records=tuple(store.membership.records()))


async def serve_join(
    stream: JoinStream,
    *,
    store: Store,
    identity: Identity,
    invites: Invites,
    now_ms: NowMs = wall_clock_ms,
) -> bool:
    """The inviter's side of one join channel; True when a device was admitted."""
    refused = JoinReject(ErrorCode.INVITE_REFUSED, REFUSAL_MESSAGE)
    try:
        frame = await _receive_frame(stream, FrameDecoder(_JOIN_MAX_FRAME))
    except RemoteProtocolError as e:
        log.warning("refused a join attempt by device %s: %s", format_device_id(stream.peer_device_id), e)
        await stream.send_all(encode_frame(refused))
        return False
    if not isinstance(frame, JoinRequest):
        log.warning(
            "refused a join attempt by device %s: it began with %s",
            format_device_id(stream.peer_device_id),
            frame_name(frame),
        )
        await stream.send_all(encode_frame(refused))
        return False
    answer = await accept_join(
        frame, store=store, identity=identity, invites=invites, client_device_id=stream.peer_device_id, now_ms=now_ms
    )
    await stream.send_all(encode_frame(answer))
    return isinstance(answer, JoinAccept)


def join_handler(home: Home, store: Store, *, now_ms: NowMs = wall_clock_ms) -> Callable[[JoinStream], Awaitable[None]]:
    """The handler for the transport's join subsystem: ``serve(handlers={JOIN_SUBSYSTEM: join_handler(home, store)})``.

    Each join opens ``invites.db`` for its own short transaction, so that
    invites made by ``peer invite`` (another process) while the agent runs
    are seen at once.
    """
    identity = home.identity()

    async def handle(stream: JoinStream) -> None:
        async with await Invites.open(home) as invites:
            await serve_join(stream, store=store, identity=identity, invites=invites, now_ms=now_ms)

    return handle


def prepare_join(identity: Identity, code: InviteCode, name: str) -> JoinRequest:
    return JoinRequest.create(
        secret=code.verifier,
        invite_id=code.invite_id,
        device_key=identity.public_key,
        exchange_key=identity.kex_public_key,
        name=name,
    )


async def request_join(stream: ByteStream, request: JoinRequest) -> JoinAccept:
    """The joiner's side: send the request, return the JOIN_ACCEPT or raise InviteRefused."""
    await stream.send_all(encode_frame(request))
    frame = await _receive_frame(stream, FrameDecoder(_JOIN_MAX_FRAME))
    if isinstance(frame, JoinAccept):
        return frame
    if isinstance(frame, JoinReject):
        if frame.code == ErrorCode.INVITE_REFUSED:
            raise InviteRefused(REFUSAL_MESSAGE)
        raise TrustError(f"the inviter refused to pair: {frame.message}")
    if isinstance(frame, ErrorFrame):
        raise RemoteProtocolError(f"the inviter failed: {frame.message}")
    raise RemoteProtocolError(f"the inviter answered with {frame_name(frame)} instead of JOIN_ACCEPT")


def admitted_membership(
    identity: Identity, code: InviteCode, accept: JoinAccept
) -> tuple[list[bytes], dict[int, bytes]]:
    """Check a JOIN_ACCEPT: (records, epoch keys) to create the store with, or TrustError."""
    membership = Membership(accept.group_id)
    membership.add_all(accept.records)
    if not membership.is_member(identity.device_id):
        raise TrustError("the inviter's answer does not admit this device; ask for a new invite")
    if not membership.is_member(code.device_id):
        raise TrustError("the inviter is not a member of the group it invited to; ask for a new invite")
    keys = membership.epoch_keys(identity.device_id, identity.kex_key)
    if membership.current_epoch not in keys:
        raise TrustError("the inviter did not send the group key; ask for a new invite")
    return membership.records(), keys


async def check_joinable(home: Home) -> None:
    """Refuse before connecting if joining would leave this device's memories behind."""
    if not home.exists():
        return
    async with await home.open_store() as store:
        held = (await store.stats()).versions
        group = store.group_id.hex()
    if held:
        raise StoreError(
            f"this device already holds {held} versions of memories in group {group}; joining another group"
            " would leave them behind: use another --home for the new device"
        )


async def join(
    home: Home,
    code_text: str,
    *,
    host: str | None = None,
    name: str,
    now_ms: NowMs = wall_clock_ms,
    connect_timeout: float | None = None,
    first_sync: bool = True,
) -> dict[str, Any]:
    """``peer join``: pair this device with the inviter's group and create its store.

    Returns what ``--json`` prints: the group id, this device, the inviter
    and how many members the group has.
    """
    code = decode_code(code_text)
    address = host or code.address
    if not address:
        raise PeerError("this invite code carries no address; give the inviter's with --host HOST[:PORT]")
    target_host, target_port = parse_address(address)
    if code.expires_at * 1000 < now_ms() - _CLOCK_SLACK_MS:
        raise InviteRefused(
            f"this invite code expired {expires_text(code.expires_at, now_ms() / 1000)}; ask for a new one"
        )
    await check_joinable(home)
    identity = home.ensure_identity()
    if identity.device_id == code.device_id:
        raise PeerError("this invite was made on this device; run `peer join` on the device that should join")
    kwargs: dict[str, Any] = {} if connect_timeout is None else {"connect_timeout": connect_timeout}
    stream = await connect(
        target_host,
        target_port,
        identity.signing_key,
        trust_host=lambda device_id: device_id == code.device_id,
        subsystem=JOIN_SUBSYSTEM,
        **kwargs,
    )
    try:
        accept = await request_join(stream, prepare_join(identity, code, name))
    finally:
        await stream.aclose()
    records, keys = admitted_membership(identity, code, accept)
    await home.create_store(
        group_id=accept.group_id, records=records, group_keys=keys, now_ms=now_ms, replace_empty=True
    )
    log.info("joined group %s through device %s", accept.group_id.hex(), code.device_id)
    result: dict[str, Any] = {
        "group_id": accept.group_id.hex(),
        "device_id": identity.device_id,
        "inviter": code.device_id,
        "address": f"{target_host}:{target_port}",
        "members": sum(1 for m in _membership_of(accept).members() if not m.revoked),
    }
    if first_sync:
        # The store exists whatever happens now: a failed first sync is
        # reported, not raised, and `peer sync` (or the agent) catches up.
        async with await home.open_store(now_ms=now_ms) as store:
            try:
                summary = await Syncer(store, identity.signing_key, **kwargs).sync_with(target_host, target_port)
            except PeerError as e:
                log.warning("joined, but the first sync with %s failed: %s", result["address"], e)
                result["sync_error"] = e.message
            else:
                result["sync"] = summary.to_json()
    return result


def _membership_of(accept: JoinAccept) -> Membership:
    membership = Membership(accept.group_id)
    membership.add_all(accept.records)
    return membership


# Members ----------------------------------------------------------------------------


def _member_json(info: MemberInfo, this_device: str) -> dict[str, Any]:
    return {
        "device_id": info.device_id,
        "display_id": format_device_id(info.device_id),
        "name": info.name,
        "added_by": info.added_by,
        "added_at": info.added_at_ms / 1000,
        "founder": info.founder,
        "revoked": info.revoked,
        "this_device": info.device_id == this_device,
    }


async def devices(store: Store) -> list[dict[str, Any]]:
    """``peer devices``: current members and revoked devices."""
    await store.refresh()
    return [_member_json(m, store.device_id) for m in store.membership.members()]


def find_device(members: Sequence[MemberInfo], text: str) -> MemberInfo:
    """The member a person means: a unique device id prefix (any case, dashes allowed) or its name."""
    named = [m for m in members if m.name == text]
    if len(named) == 1:
        return named[0]
    prefix = normalize_device_id(text)
    matches = [m for m in members if prefix and m.device_id.startswith(prefix)] if not named else named
    if not matches:
        raise PeerError(f"no device of this group is called or starts with {text!r}; see `peer devices`")
    if len(matches) > 1:
        raise PeerError(f"{text!r} matches {len(matches)} devices; give more of the device id (see `peer devices`)")
    return matches[0]


async def revoke(store: Store, device: str, *, now_ms: NowMs = wall_clock_ms) -> dict[str, Any]:
    """``peer revoke``: revoke a member and move the group to a new key epoch it does not get.

    :meth:`Store.revoke` writes the records (with the cutoff of what the
    store holds from that device) in one transaction; the other members
    learn of it at their next sync.
    """
    await store.refresh()
    target = find_device(store.membership.members(), device)
    if target.revoked:
        raise PeerError(f"device {format_device_id(target.device_id)} ({target.name}) is already revoked")
    records = await store.revoke(target.device_id, now_ms=now_ms())
    epoch = store.membership.current_epoch
    log.info("revoked device %s; the group key moved to epoch %d", target.device_id, epoch)
    return {"device_id": target.device_id, "name": target.name, "epoch": epoch, "records": len(records)}


# Conflicts ----------------------------------------------------------------------------


async def conflicts(store: Store, preview: int = 200) -> list[dict[str, Any]]:
    """``peer conflicts``: each memory with siblings and all its live versions, the winner first."""
    out: list[dict[str, Any]] = []
    for versions in await store.conflicts():
        out.append(
            {
                "id": versions[0].memory_id,
                "versions": [
                    {
                        "version": v.version,
                        "winner": v.state == "winner",
                        "deleted": v.deleted,
                        "updated_at": v.updated_at,
                        "kind": v.kind,
                        "project": v.project,
                        "content": v.content[:preview],
                    }
                    for v in versions
                ],
            }
        )
    return out


async def resolve(store: Store, memory_id: str, keep: str) -> dict[str, Any]:
    """``peer resolve``: keep one version; the new version supersedes every sibling."""
    resolved = await store.resolve(memory_id, keep)
    memory = await store.get(resolved)
    return {"id": resolved, "version": memory.version, "kept": keep}


def expires_text(expires_at: int, now: float | None = None) -> str:
    """``in 15 min`` / ``at 2026-11-22 05:30 UTC``, for the person reading an invite."""
    left = expires_at - (time.time() if now is None else now)
    if left < 3600:
        return f"in {max(0, round(left / 60))} min"
    return time.strftime("at %Y-%m-%d %H:%M UTC", time.gmtime(expires_at))



# Command bodies (the CLI parses arguments and prints; these do the work) ---------------------


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def default_address(home: Home | None = None) -> str:
    """The address hint an invite carries when ``--address`` is not given.

    Where this device's running agent listens (its port; its address
    unless it listens on every interface, then this host's name); with no
    agent running, this host's name and the default port.
    """
    import socket

    from .agent import WILDCARDS, read_status

    status = read_status(home) if home is not None else None
    if status is not None and status.get("listen"):
        host, _, port = str(status["listen"]).rpartition(":")
        if host in WILDCARDS:
            host = socket.gethostname()
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{socket.gethostname()}:{DEFAULT_PORT}"


async def invite_command(
    home: Home,
    *,
    ttl: str | None = None,
    address: str | None = None,
    file: str | None = None,
    name: str | None = None,
    now_ms: NowMs = wall_clock_ms,
) -> tuple[dict[str, Any], str]:
    """``peer invite``: (JSON, text for a person)."""
    ttl_s = DEFAULT_TTL_S if ttl is None else parse_ttl(ttl)
    async with await home.open_store(now_ms=now_ms) as store:
        if file is not None:
            text, code, new_id = await make_invite_file(
                store, home.identity(), Path(file), name=name or "new device", ttl_s=ttl_s, now_ms=now_ms
            )
        else:
            new_id = None
            text, code = await make_invite(
                home, store, ttl_s=ttl_s, address=default_address(home) if address is None else address, now_ms=now_ms
            )
    out: dict[str, Any] = {"code": text, "device_id": code.device_id, "expires_at": code.expires_at}
    if file is not None:
        out.update(file=file, new_device_id=new_id)
        human = (
            f"{text}\n\n"
            f"Carry {file} to the new device and run there:  peer join {text} --file {file}\n"
            f"Keep the code apart from the file. Device {format_device_id(new_id or '')} is a member already;"
            f" if the file is never used, revoke it."
        )
        return out, human
    out["address"] = code.address
    human = (
        f"{text}\n\n"
        f"On the new device run:  peer join {text}\n"
        f"The code works once and expires {expires_text(code.expires_at, now_ms() / 1000)}."
        f" `peer agent` must be running here{' at ' + code.address if code.address else ''}."
    )
    return out, human


async def join_command(
    home: Home,
    code: str,
    *,
    host: str | None = None,
    name: str | None = None,
    file: str | None = None,
    now_ms: NowMs = wall_clock_ms,
) -> tuple[dict[str, Any], str]:
    import socket

    if file is not None:
        result = await join_from_file(home, code, Path(file), now_ms=now_ms)
    else:
        result = await join(home, code, host=host, name=name or socket.gethostname(), now_ms=now_ms)
    human = (
        f"joined group {result['group_id']} through device {format_device_id(result['inviter'])}"
        f" ({result['members']} members)\nthis device: {format_device_id(result['device_id'])}"
    )
    if "sync" in result:
        human += f"\nfirst sync: {result['sync'].get('received', 0)} versions received"
    elif "sync_error" in result:
        human += f"\nthe first sync failed ({result['sync_error']}); run `peer sync {result['address']}`"
    elif file is not None:
        human += (
            "\nnow bring the memories over: `peer bundle export FILE` on the inviter, `peer bundle import FILE`"
            " here (and bundles back the other way), or `peer sync HOST` once both devices share a network"
        )
    return result, human


def devices_text(listed: Sequence[dict[str, Any]]) -> str:
    names = {d["device_id"]: d["name"] for d in listed}
    lines = []
    for d in listed:
        mark = "*" if d["this_device"] else " "
        if d["revoked"]:
            state = "revoked"
        elif d["founder"]:
            state = "founder"
        else:
            state = f"added by {names.get(d['added_by'], d['added_by'][:8])}"
        lines.append(f"{mark} {d['display_id']}  {d['name']:<16}  {state:<22}  {_when(d['added_at'])}")
    return "\n".join(lines)


async def devices_command(home: Home) -> tuple[list[dict[str, Any]], str]:
    async with await home.open_store() as store:
        listed = await devices(store)
    return listed, devices_text(listed)


async def revoke_command(home: Home, device: str, *, now_ms: NowMs = wall_clock_ms) -> tuple[dict[str, Any], str]:
    async with await home.open_store(now_ms=now_ms) as store:
        result = await revoke(store, device, now_ms=now_ms)
    human = (
        f"revoked {format_device_id(result['device_id'])} ({result['name']}); the group key moved to epoch"
        f" {result['epoch']}. Other devices learn of it at their next sync."
    )
    return result, human


def conflicts_text(found: Sequence[dict[str, Any]]) -> str:
    if not found:
        return "no conflicts"
    lines: list[str] = []
    for memory in found:
        lines.append(f"{memory['id']}  ({len(memory['versions'])} live versions)")
        for v in memory["versions"]:
            what = "(forgotten)" if v["deleted"] else " ".join(v["content"].split())[:70]
            role = "winner " if v["winner"] else "sibling"
            lines.append(f"  {role}  {v['version']}  {_when(v['updated_at'])}  {what}")
        lines.append(f"  keep one with: peer resolve {memory['id']} --keep VERSION")
    return "\n".join(lines)


async def conflicts_command(home: Home) -> tuple[list[dict[str, Any]], str]:
    async with await home.open_store() as store:
        found = await conflicts(store)
    return found, conflicts_text(found)


async def resolve_command(
    home: Home, memory_id: str, keep: str, *, now_ms: NowMs = wall_clock_ms
) -> tuple[dict[str, Any], str]:
    async with await home.open_store(now_ms=now_ms) as store:
        result = await resolve(store, memory_id, keep)
    return result, f"resolved {result['id']}: kept {keep}, now version {result['version']}"

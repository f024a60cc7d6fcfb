"""Invites: a one-time code, kept by the inviter as a verifier until it is used or expires.

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
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from peer.aio import Database
from peer.home import Home
from peer.store import NowMs, Store, wall_clock_ms
from peer.sync import parse_address
from peer.units import parse_duration
from protocol import (
    INVITE_ID_BYTES,
    SECRET_BYTES,
    InviteCode,
    JoinRequest,
    NotAMember,
    PeerError,
    StoreError,
    device_id_for,
    encode_code,
)

from .results import InviteResult, duration_text

log = logging.getLogger(__name__)

#: How long an invite stays valid unless ``--ttl`` says otherwise.
DEFAULT_TTL_S = 15 * 60
MAX_TTL_S = 7 * 24 * 3600
INVITES_FILE = "invites.db"
#: A code that expired this long ago by this device's clock is refused before connecting.
_CLOCK_SLACK_MS = 5 * 60 * 1000
#: What the joiner reads for every refusal: it must not say which check failed.
REFUSAL_MESSAGE = "the invite was refused: the code is wrong, already used or expired; ask for a new one"


def parse_ttl(text: str) -> int:
    """An invite's lifetime, in the duration grammar of every option (``90s``, ``15m``, ``2h``, ``1d``, ``120``)."""
    try:
        seconds = round(parse_duration(text))
    except ValueError as e:
        raise PeerError(str(e)) from None
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
                "SELECT verifier, expires_at_ms, used_at_ms, created_at_ms FROM invites WHERE invite_id = ?",
                (request.invite_id,),
            )
            # The proof is checked even for an unknown or spent invite, so
            # that every refusal costs the same work.
            verifier = bytes(row[0]) if row is not None else bytes(32)
            proof_ok = request.proof_matches(verifier)
            if row is None or not proof_ok or row[2] is not None or now_ms >= int(row[1]):
                return False
            if now_ms < int(row[3]) - _CLOCK_SLACK_MS:
                # Made under a clock that was ahead and has been set back since: its age is
                # unknown, so it counts as expired rather than valid until that clock time comes.
                log.warning("refused an invite made at a clock time still %s ahead (the clock was set back)",
                            duration_text(int(row[3]) - now_ms))
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
) -> InviteResult:
    """``peer invite``: a new one-time invite, remembered in ``invites.db``."""
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
    return InviteResult(encode_code(invite), invite)

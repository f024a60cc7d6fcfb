"""Air-gapped invites: the new device's keys and the group's, sealed in a file under the code.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from peer.errors import InviteRefused
from peer.home import Home, Identity
from peer.store import NowMs, Store, wall_clock_ms
from protocol import (
    INVITE_ID_BYTES,
    SECRET_BYTES,
    InviteCode,
    Membership,
    PeerError,
    Reader,
    StoreError,
    TrustError,
    Writer,
    decode_code,
    device_id_for,
    encode_code,
    raw_public_key,
)

from .invites import _CLOCK_SLACK_MS, DEFAULT_TTL_S
from .results import InviteResult, JoinResult, expires_text

log = logging.getLogger(__name__)



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
    path: Path | str,
    *,
    name: str,
    ttl_s: int = DEFAULT_TTL_S,
    now_ms: NowMs = wall_clock_ms,
) -> InviteResult:
    """``peer invite --file F``: admit a new device and write its sealed identity to ``path``.

    The result names the file as it was given (a person reads it back).
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    given = os.fspath(path)
    path = Path(path)
    if path.exists():
        raise PeerError(f"{path} already exists; give another file name")
    signing = Ed25519PrivateKey.generate()
    kex = X25519PrivateKey.generate()
    public = raw_public_key(signing)
    await store.refresh()
    membership = Membership(store.group_id)
    membership.add_all(store.membership.records())
    records = membership.add_member(
        identity.signing_key,
        identity.kex_key,
        device_public_key=public,
        kex_public_key=raw_public_key(kex),
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
    return InviteResult(encode_code(code), code, file=given, new_device_id=new_id)


async def join_from_file(home: Home, code_text: str, path: Path, *, now_ms: NowMs = wall_clock_ms) -> JoinResult:
    """``peer join CODE --file F``: become the device the inviter made for this file."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    from peer.files import write_secret

    code = decode_code(code_text)
    if code.expires_at * 1000 < now_ms() - _CLOCK_SLACK_MS:
        raise InviteRefused(
            f"this invite expired {expires_text(code.expires_at, now_ms() / 1000)} by this device's clock;"
            " ask for a new one (or, if this device's clock is wrong, set it right)"
        )
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
    if home.exists():
        # As `peer join` does: a home holding memories is refused, a fresh one (`peer init`, nothing
        # written) is replaced by the device the file makes. The store goes first: keys without a
        # store are a device that never joined anything, which the next attempt may replace.
        async with await home.open_store() as old:
            held = (await old.stats()).versions
        if held:
            raise StoreError(
                f"{home.path} already holds a device with {held} versions of memories; an invite file makes a"
                " new device: use a new --home"
            )
        if Path(f"{home.store_path}-wal").exists():
            raise StoreError(f"the store at {home.store_path} is in use (is `peer agent` running?); stop it first")
        home.store_path.unlink()
        shutil.rmtree(home.index_dir, ignore_errors=True)
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
    return JoinResult(
        group_id=group_id.hex(),
        device_id=identity.device_id,
        inviter=code.device_id,
        members=sum(1 for m in membership.members() if not m.revoked),
    )

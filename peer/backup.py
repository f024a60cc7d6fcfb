"""Backups: ``peer backup create`` / ``peer backup restore``, and the scheduled backups the agent runs.

Theory of operation. A backup is a *full bundle* (every membership record
and every version this device holds, signed by it: see
:mod:`peer.bundles`) in a small container, optionally followed by the
device's identity sealed under a passphrase. Versions are sealed by their
authors, so without the identity a backup reveals no memory text; the
identity section holds what a fresh machine needs to *be* this device
again and read everything: the device's two private keys and every group
key it holds, encrypted with ChaCha20-Poly1305 under a key stretched from
the passphrase with scrypt. Its associated data binds it to the container
header and to the bundle's digest, so neither can be swapped. Layout in
docs/protocol.md section 14.

Restoring onto a fresh home recreates the identity and builds the store
under a temporary name: the membership records, a *new incarnation*
(docs/design-notes.md, "replicas and incarnations": the backup may be
older than versions the device wrote and synced before it was lost, and a
new replica id never reuses one of their dots), then the bundle imported
like any other, with the device's vector from the backup, so that its
peers resend what it wrote after the backup. Only then is the store
renamed into place: an interrupted restore leaves no store that could
write under the old replica. Onto an existing device of the same group a
restore merges (imports what is missing, like a bundle) or, with
``--strategy replace``, sets the current store aside and rebuilds it from
the backup (for a damaged store), also as a new incarnation.

Scheduled backups (``[backup]`` in config.toml) are written by
:func:`run_scheduled_backups`, a task of the agent: one file per run,
named ``peer-backup-<DEVICE ID>-<UTC time>.peerbackup``, written to a
temporary name and renamed, then retention deletes this device's older
ones (only names of exactly that pattern). A failure (a full disk) is
logged and retried later; nothing is deleted after a failed run. The
identity goes into scheduled backups only when the agent has a passphrase
(``$PEER_BACKUP_PASSPHRASE`` in its environment): the agent runs
unattended, so it cannot ask for one, and writing the identity unsealed
is never an option.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from peer.store import NowMs, Store, wall_clock_ms
from protocol import (
    BundleError,
    DecodeError,
    Membership,
    PeerError,
    Reader,
    StoreError,
    VersionVector,
    Writer,
    WrongGroup,
    device_id_of,
    format_device_id,
)

from .bundles import (
    BundleSource,
    Progress,
    Trust,
    apply_bundle,
    atomic_output,
    import_bundle,
    scan_bundle,
    write_bundle,
)
from .config import BackupConfig
from .errors import ConfigError
from .files import fsync_path, write_secret
from .home import Home, Identity
from .units import human_size

if TYPE_CHECKING:
    pass

__all__ = [
    "BACKUP_MAGIC",
    "BACKUP_FORMAT",
    "PASSPHRASE_ENV",
    "STRATEGIES",
    "BackupResult",
    "BackupInfo",
    "create_backup",
    "read_backup",
    "restore_backup",
    "RestoreResult",
    "backup_file_name",
    "scheduled_backups",
    "next_due",
    "prune_backups",
    "make_scheduled_backup",
    "run_scheduled_backups",
]

log = logging.getLogger(__name__)

BACKUP_MAGIC: Final = b"\x89PEER-BACKUP\r\n\x1a\n"
BACKUP_FORMAT: Final = 1
PASSPHRASE_ENV: Final = "PEER_BACKUP_PASSPHRASE"
STRATEGIES: Final = ("merge", "replace")
MIN_PASSPHRASE: Final = 8

_KDF_SCRYPT: Final = 1
#: scrypt cost for new backups: 2^17 x 8 x 128 B = 128 MiB, about half a second.
SCRYPT_LOG2_N: Final = 17
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
#: What a reader accepts (a backup cannot make restore allocate more than 1 GiB).
_MAX_SCRYPT_MEMORY: Final = 1 << 30
_SALT_BYTES: Final = 16
_NONCE_BYTES: Final = 12
_MAX_IDENTITY_SECTION: Final = 1 << 20
_MAX_GROUP_KEYS: Final = 1 << 16
_AAD_LABEL: Final = b"peer/v1/backup-identity\x00"
_DIGEST_AND_SIGNATURE: Final = 96
_LENGTH_BYTES: Final = 8


# The identity section -----------------------------------------------------------------


def _passphrase_bytes(passphrase: str) -> bytes:
    # The same passphrase typed on another system may arrive in another Unicode form.
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def _stretch(passphrase: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=1 << log2_n, r=r, p=p).derive(_passphrase_bytes(passphrase))


@dataclass(frozen=True, slots=True)
class SealedIdentity:
    """What the identity section holds, once opened."""

    group_id: bytes
    signing_key: Ed25519PrivateKey
    kex_key: X25519PrivateKey
    group_keys: Mapping[int, bytes]

    @property
    def device_id(self) -> str:
        return device_id_of(self.signing_key)


def _identity_plaintext(identity: Identity, group_id: bytes, group_keys: Mapping[int, bytes]) -> bytes:
    w = Writer().raw(group_id)
    w.raw(identity.signing_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
    w.raw(identity.kex_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
    w.uvarint(len(group_keys))
    for epoch, key in sorted(group_keys.items()):
        w.uvarint(epoch).raw(key)
    return w.getvalue()


def _aad(head: bytes, digest: bytes, params: bytes) -> bytes:
    return _AAD_LABEL + head + digest + params


async def _seal_identity(plaintext: bytes, passphrase: str, head: bytes, digest: bytes) -> bytes:
    salt = os.urandom(_SALT_BYTES)
    nonce = os.urandom(_NONCE_BYTES)
    params = (
        Writer().uvarint(_KDF_SCRYPT).raw(salt).uvarint(SCRYPT_LOG2_N).uvarint(SCRYPT_R).uvarint(SCRYPT_P).raw(nonce)
    ).getvalue()
    key = await trio.to_thread.run_sync(_stretch, passphrase, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
    return params + ChaCha20Poly1305(key).encrypt(nonce, plaintext, _aad(head, digest, params))


async def _open_identity(section: bytes, passphrase: str, head: bytes, digest: bytes) -> SealedIdentity:
    try:
        r = Reader(section, "backup identity")
        kdf = r.uvarint(limit=1 << 16)
        if kdf != _KDF_SCRYPT:
            raise BundleError(f"this backup seals its identity with an unknown method ({kdf}); upgrade peer")
        salt = r.raw(_SALT_BYTES)
        log2_n, r_, p = r.uvarint(limit=40), r.uvarint(limit=1 << 10), r.uvarint(limit=1 << 10)
        nonce = r.raw(_NONCE_BYTES)
        params = section[: r.position]
        box = section[r.position :]
    except DecodeError as e:
        raise BundleError(f"the backup's identity section is damaged ({e.message})") from None
    if not 10 <= log2_n <= 30 or r_ < 1 or p < 1 or 128 * r_ * p * (1 << log2_n) > _MAX_SCRYPT_MEMORY:
        raise BundleError("the backup's identity section asks for an unreasonable passphrase cost; it was altered")
    key = await trio.to_thread.run_sync(_stretch, passphrase, salt, log2_n, r_, p)
    try:
        plaintext = ChaCha20Poly1305(key).decrypt(nonce, box, _aad(head, digest, params))
    except InvalidTag:
        raise PeerError("wrong passphrase for this backup's identity (or the file was altered)") from None
    try:
        r = Reader(plaintext, "backup identity")
        group_id = r.raw(16)
        signing = Ed25519PrivateKey.from_private_bytes(r.raw(32))
        kex = X25519PrivateKey.from_private_bytes(r.raw(32))
        keys: dict[int, bytes] = {}
        for _ in range(r.uvarint(limit=_MAX_GROUP_KEYS)):
            epoch = r.uvarint(limit=(1 << 32) - 1)
            keys[epoch] = r.raw(32)
        r.end()
    except DecodeError as e:  # pragma: no cover - authenticated bytes that do not parse: a bug of the writer
        raise BundleError(f"the backup's identity does not parse ({e.message})") from None
    return SealedIdentity(group_id, signing, kex, keys)


# The container ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    versions: int
    members: int
    size: int
    identity: bool
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "versions": self.versions,
            "members": self.members,
            "bytes": self.size,
            "identity": self.identity,
            "seconds": round(self.seconds, 3),
        }

    def describe(self) -> str:
        what = "with this device's identity sealed under the passphrase" if self.identity else "without the identity"
        return (
            f"backed up {self.versions:,} versions and {self.members} member records ({human_size(self.size)}) to"
            f" {self.path}, {what}"
        )


async def create_backup(
    store: Store,
    identity: Identity,
    path: Path,
    *,
    passphrase: str | None = None,
    now_ms: NowMs = wall_clock_ms,
    progress: Progress | None = None,
    tmp_name: str | None = None,
) -> BackupResult:
    """Write a backup of everything ``store`` holds to ``path`` (identity sealed under ``passphrase`` if given)."""
    started = time.monotonic()
    if passphrase is not None and len(passphrase) < MIN_PASSPHRASE:
        raise PeerError(f"the passphrase is too short: use at least {MIN_PASSPHRASE} characters")
    if identity.device_id != store.device_id:
        raise StoreError("the identity given is not the store's device")  # pragma: no cover - a caller's bug
    path = Path(path)
    async with atomic_output(path, magic=BACKUP_MAGIC, what="backup", tmp_name=tmp_name) as out:
        prefix = Writer().raw(BACKUP_MAGIC).uvarint(BACKUP_FORMAT).uvarint(now_ms()).getvalue()
        out.write(prefix + bytes(_LENGTH_BYTES))
        written = await write_bundle(
            out, store, identity.signing_key, base=VersionVector(), now_ms=now_ms, progress=progress
        )
        head = prefix + written.size.to_bytes(_LENGTH_BYTES, "big")
        out.seek(len(prefix))
        out.write(head[len(prefix) :])
        out.seek(0, os.SEEK_END)
        section = b""
        if passphrase is not None:
            plaintext = _identity_plaintext(identity, store.group_id, store.group_keys)
            section = await _seal_identity(plaintext, passphrase, head, written.digest)
        out.write(Writer().bytes(section).getvalue())
        size = out.tell()
    log.info("backed up %d versions to %s (%d bytes)", written.versions, path, size)
    return BackupResult(path, written.versions, written.members, size, bool(section), time.monotonic() - started)


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """A backup file's container, read (not yet verified: the bundle is checked when it is read)."""

    path: Path
    created_ms: int
    head: bytes
    bundle: BundleSource
    digest: bytes
    identity_section: bytes

    @property
    def has_identity(self) -> bool:
        return bool(self.identity_section)


def read_backup(path: Path) -> BackupInfo:
    """Parse the container around the bundle; BundleError when it is not a (complete) backup."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            first = f.read(64)
            size = os.fstat(f.fileno()).st_size
            if not first.startswith(BACKUP_MAGIC):
                if first.startswith(b"\x89PEER-BUNDLE"):
                    raise BundleError(f"{path} is a bundle, not a backup: use `peer bundle import {path}`")
                raise BundleError(f"{path} is not a peer backup (it does not start with the backup marker)")
            r = Reader(first, "backup header")
            r.raw(len(BACKUP_MAGIC))
            version = r.uvarint(limit=1 << 16)
            if version != BACKUP_FORMAT:
                raise BundleError(f"this backup uses format {version}, and this peer reads {BACKUP_FORMAT}; upgrade peer")
            created_ms = r.uvarint(limit=(1 << 62) - 1)
            length = int.from_bytes(r.raw(_LENGTH_BYTES), "big")
            offset = r.position
            if length < _DIGEST_AND_SIGNATURE or offset + length > size:
                raise BundleError(f"the backup {path} is truncated or damaged; copy it again")
            f.seek(offset + length - _DIGEST_AND_SIGNATURE)
            digest = f.read(32)
            f.seek(offset + length)
            rest = f.read(_MAX_IDENTITY_SECTION + 16)
    except DecodeError:
        raise BundleError(f"the backup {path} is truncated or damaged; copy it again") from None
    except OSError as e:
        raise PeerError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        tail = Reader(rest, "backup identity section")
        section = tail.bytes(limit=_MAX_IDENTITY_SECTION)
        tail.end()
    except DecodeError:
        raise BundleError(f"the backup {path} is truncated, or has bytes after its end; copy it again") from None
    return BackupInfo(
        path=path,
        created_ms=created_ms,
        head=first[:offset],
        bundle=BundleSource(path, offset, length),
        digest=digest,
        identity_section=section,
    )


# Restoring ------------------------------------------------------------------------------------


PassphraseSource = Callable[[], str]

#: What a backup without the identity can and cannot do, said once for every path that meets one.
NO_IDENTITY_HELP: Final = (
    "this backup holds no device identity: it was made without the identity (no --with-identity), so it cannot"
    " rebuild a device by itself:"
    " its memories are sealed for its group. If another member of that group survives, pair an empty home with"
    " it (`peer invite` there, `peer join` here) and restore the backup into that home to add what it holds."
    " If the backed-up device was its group's only member, this backup cannot be restored; backups made with"
    " --with-identity (or scheduled ones with [backup] passphrase_file) can"
)


def _leftovers(path: Path) -> list[Path]:
    return [path, Path(f"{path}-wal"), Path(f"{path}-shm")]


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """``peer backup restore``: what the device holds now, and how it got there.

    ``mode`` is ``new`` (a device recreated on a fresh home), ``merge`` (what
    it lacked, added) or ``replace`` (its store rebuilt from the backup, the
    old one set aside at ``moved_aside``). ``warnings`` (an index that could
    not catch up) are for stderr, not part of the JSON.
    """

    mode: str
    backup_of: str  # the device the backup was made on
    device_id: str
    replica_id: str
    group_id: str  # hex
    versions: int
    added: int
    memories: int
    moved_aside: str | None = None
    file: str = ""
    identity: bool = False  # whether the backup holds a sealed identity
    created_at: float = 0.0  # when the backup was made, Unix seconds
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        counts: dict[str, Any] = {
            "backup_of": self.backup_of,
            "device_id": self.device_id,
            "replica_id": self.replica_id,
            "group_id": self.group_id,
            "versions": self.versions,
            "added": self.added,
            "memories": self.memories,
        }
        # The key order is what `peer backup restore --json` has always printed: mode first for a merge.
        head: dict[str, Any] = {"mode": self.mode, **counts} if self.mode == "merge" else {**counts, "mode": self.mode}
        return {
            **head,
            "moved_aside": self.moved_aside,
            "file": self.file,
            "identity": self.identity,
            "created_at": self.created_at,
            "seconds": self.seconds,
        }

    def describe(self) -> str:
        if self.mode == "merge":
            if not self.added:
                return f"nothing new in {self.file}: this device already holds all of its versions"
            return (
                f"imported {self.added:,} versions this device lacked from {self.file};"
                f" it now holds {self.memories:,} memories"
            )
        text = (
            f"restored device {format_device_id(self.device_id)} (group {self.group_id}) from {self.file}:"
            f" {self.memories:,} memories, {self.versions:,} versions.\nIt now writes as replica {self.replica_id}"
            " (a new incarnation: it can never reuse a version id of the old store). Sync with the other devices,"
            " or import their bundles, to get back what was written after the backup."
        )
        if self.moved_aside:
            text += f"\nThe previous store was kept as {self.moved_aside}."
        return text


async def _build_store(
    home: Home,
    info: BackupInfo,
    *,
    signing_key: Ed25519PrivateKey,
    kex_key: X25519PrivateKey,
    group_id: bytes,
    group_keys: Mapping[int, bytes],
    now_ms: NowMs,
    progress: Progress | None,
) -> tuple[Path, RestoreResult]:
    """A complete store from the backup under a temporary name in the home: records, new incarnation, bundle."""
    device_id = device_id_of(signing_key)
    scan = await scan_bundle(info.bundle, Trust(group_id, (), None), allow_own=True, progress=progress)
    membership = Membership(group_id)
    membership.add_all(scan.records)
    if not membership.is_member(device_id):
        raise StoreError(
            f"the backup does not make device {format_device_id(device_id)} a member of group {group_id.hex()};"
            " restore it onto a new home (--home DIR)"
        )
    tmp = home.path / f".peer.db.restore.{os.getpid()}.tmp"
    for leftover in _leftovers(tmp):
        leftover.unlink(missing_ok=True)
    try:
        store = await Store.create(
            tmp,
            signing_key=signing_key,
            kex_key=kex_key,
            group_id=group_id,
            records=membership.records(),
            group_keys=group_keys,
            now_ms=now_ms,
        )
        try:
            # First, so that not one version is ever written under the old replica id.
            replica = await store.start_new_incarnation()
            result, _, _ = await apply_bundle(store, info.bundle, scan, allow_own=True, progress=progress)
            stats = await store.stats()
        finally:
            await store.close()
        if Path(f"{tmp}-wal").exists():
            raise StoreError(f"the restored store at {tmp} kept its write-ahead log; try again")
    except BaseException:
        for leftover in _leftovers(tmp):
            leftover.unlink(missing_ok=True)
        raise
    return tmp, RestoreResult(
        mode="new",
        backup_of=scan.header.sender,
        device_id=device_id,
        replica_id=replica,
        group_id=group_id.hex(),
        versions=stats.versions,
        added=result.added,
        memories=stats.memories,
    )


def _write_keys(home: Home, restored: SealedIdentity) -> bool:
    """Write the restored keys into the home; False when it already held exactly these."""

    try:
        home.path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create the peer home at {home.path}: {e.strerror or e}") from e
    if home.device_key_path.exists() or home.kex_key_path.exists():
        existing = home.ensure_identity()
        if existing.device_id != restored.device_id:
            raise StoreError(
                f"{home.path} already holds the keys of device {format_device_id(existing.device_id)}, not the"
                f" backup's {format_device_id(restored.device_id)}; restore onto a new home (--home DIR)"
            )
        return False
    write_secret(
        home.device_key_path, restored.signing_key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
    )
    write_secret(
        home.kex_key_path, restored.kex_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    return True


def _install(home: Home, tmp: Path) -> None:

    os.replace(tmp, home.store_path)
    fsync_path(home.path)


async def _restore_new(
    home: Home, info: BackupInfo, passphrase: PassphraseSource | None, now_ms: NowMs, progress: Progress | None
) -> RestoreResult:
    if not info.has_identity:
        raise PeerError(NO_IDENTITY_HELP)
    if passphrase is None:
        raise PeerError(f"this backup's identity is sealed under a passphrase; give it (--passphrase-file or ${PASSPHRASE_ENV})")
    restored = await _open_identity(info.identity_section, passphrase(), info.head, info.digest)
    wrote_keys = _write_keys(home, restored)
    try:
        tmp, result = await _build_store(
            home,
            info,
            signing_key=restored.signing_key,
            kex_key=restored.kex_key,
            group_id=restored.group_id,
            group_keys=restored.group_keys,
            now_ms=now_ms,
            progress=progress,
        )
        if result.backup_of != restored.device_id:
            for leftover in _leftovers(tmp):
                leftover.unlink(missing_ok=True)
            raise BundleError("the backup's identity and its bundle are of different devices: it was altered")
        _install(home, tmp)
    except BaseException:
        if wrote_keys:
            # Leave the home as it was: no keys without their store.
            home.device_key_path.unlink(missing_ok=True)
            home.kex_key_path.unlink(missing_ok=True)
        raise
    return result


async def _restore_replace(
    home: Home, info: BackupInfo, now_ms: NowMs, progress: Progress | None
) -> RestoreResult:
    identity = home.identity()
    try:
        async with await home.open_store() as current:
            group_id = current.group_id
    except StoreError as e:
        # A damaged store is what replace is for: take the group from the backup.
        log.warning("the current store does not open (%s); replacing it anyway", e)
        group_id = None
    if Path(f"{home.store_path}-wal").exists() and group_id is not None:
        raise StoreError(f"the store at {home.store_path} is in use (is `peer agent` running?); stop it first")
    scan_group = await _bundle_group(info)
    if group_id is not None and group_id != scan_group:
        raise _wrong_group(info, scan_group, group_id, "")
    tmp, result = await _build_store(
        home,
        info,
        signing_key=identity.signing_key,
        kex_key=identity.kex_key,
        group_id=scan_group,
        group_keys={},
        now_ms=now_ms,
        progress=progress,
    )
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = home.path / f"{home.store_path.name}.before-restore-{stamp}"
    try:
        for old, new in zip(_leftovers(home.store_path), _leftovers(aside), strict=True):
            if old.exists():
                os.replace(old, new)
        # The index names rows of the old store.
        shutil.rmtree(home.index_dir, ignore_errors=True)
        _install(home, tmp)
    except BaseException:
        for leftover in _leftovers(tmp):
            leftover.unlink(missing_ok=True)
        raise
    return replace(result, mode="replace", moved_aside=str(aside))


async def _bundle_group(info: BackupInfo) -> bytes:
    """The group id in the bundle's header (not yet verified: the restore verifies the whole bundle)."""
    try:
        with info.bundle.path.open("rb") as f:
            f.seek(info.bundle.offset)
            start = f.read(4096)
        r = Reader(start, "bundle")
        r.raw(16)
        r.uvarint()
        r.uvarint()
        return r.raw(16)
    except (OSError, DecodeError) as e:
        raise BundleError(f"the backup {info.path} is damaged; copy it again") from e


async def restore_backup(
    home: Home,
    path: Path,
    *,
    strategy: str = "merge",
    passphrase: PassphraseSource | None = None,
    now_ms: NowMs = wall_clock_ms,
    progress: Progress | None = None,
) -> RestoreResult:
    """``peer backup restore``: onto a fresh home (recreate the device), or merge into / replace an existing one.

    ``passphrase`` is called only when the identity is needed (a fresh home).
    """
    if strategy not in STRATEGIES:
        raise PeerError(f"unknown strategy {strategy!r}: use {' or '.join(STRATEGIES)}")
    started = time.monotonic()
    info = read_backup(path)
    if not home.exists():
        result = await _restore_new(home, info, passphrase, now_ms, progress)
    elif strategy == "replace":
        result = await _restore_replace(home, info, now_ms, progress)
    else:
        result = await _restore_merge(home, info, progress)
    return replace(
        result,
        file=str(path),
        identity=info.has_identity,
        created_at=info.created_ms / 1000,
        seconds=round(time.monotonic() - started, 3),
    )


def _wrong_group(info: BackupInfo, backup_group: bytes, device_group: bytes, tail: str) -> WrongGroup:
    what = f"this backup is of group {backup_group.hex()}, and this device belongs to group {device_group.hex()}"
    if not info.has_identity:
        # "Restore it onto a new home" would only lead to NO_IDENTITY_HELP: a circle.
        return WrongGroup(
            f"{what}; the backup was made without the identity, so only a member of its own group can take it in:"
            f" pair another home with a surviving member of that group, then restore into it{tail}"
        )
    return WrongGroup(f"{what}; restore it onto a new home (--home DIR){tail}")


async def _restore_merge(home: Home, info: BackupInfo, progress: Progress | None) -> RestoreResult:
    from .device import Device

    async with await Device.open(home) as device:
        group_id = await _bundle_group(info)
        if group_id != device.store.group_id:
            raise _wrong_group(info, group_id, device.store.group_id, "; nothing was changed")
        imported = await import_bundle(device.store, info.bundle, allow_own=True, progress=progress)
        warnings: list[str] = []
        if imported.added:
            warning = await device.catch_up_index()
            if warning:
                warnings.append(warning)
        stats = await device.store.stats()
    return RestoreResult(
        mode="merge",
        backup_of=imported.header.sender,
        device_id=stats.device_id,
        replica_id=stats.replica_id,
        group_id=stats.group_id,
        versions=stats.versions,
        added=imported.added,
        memories=stats.memories,
        warnings=tuple(warnings),
    )


# Scheduled backups ------------------------------------------------------------------------------

BACKUP_SUFFIX: Final = ".peerbackup"
_NAME = re.compile(r"peer-backup-(?P<device>[A-Z2-7]{26})-(?P<stamp>\d{8}T\d{6}Z)\.peerbackup")
_TEMP = re.compile(r"\.peer-backup-(?P<device>[A-Z2-7]{26})-\d{8}T\d{6}Z\.peerbackup\.\d+\.tmp")
_STAMP = "%Y%m%dT%H%M%SZ"
#: Leftover temporary files of a killed run are removed once this old.
_STALE_TEMP_S: Final = 24 * 3600
#: A sleeping agent re-reads the clock at least this often (a suspended laptop's monotonic clock stops).
MAX_SLEEP_S: Final = 900.0
#: After a failed backup, try again this much later (or at the next slot, if sooner).
RETRY_S: Final = 600.0


def backup_file_name(device_id: str, when: datetime) -> str:
    return f"peer-backup-{device_id}-{when.astimezone(UTC).strftime(_STAMP)}{BACKUP_SUFFIX}"


def scheduled_backups(directory: Path, device_id: str) -> list[tuple[datetime, Path]]:
    """This device's scheduled backups in ``directory``, oldest first (only names of the exact pattern)."""
    found: list[tuple[datetime, Path]] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:  # missing or unusable: the next backup attempt reports why
        return []
    for entry in entries:
        m = _NAME.fullmatch(entry.name)
        if m is None or m["device"] != device_id or not entry.is_file(follow_symlinks=False):
            continue
        try:
            when = datetime.strptime(m["stamp"], _STAMP).replace(tzinfo=UTC)
        except ValueError:
            continue
        found.append((when, Path(entry.path)))
    return sorted(found)


def next_due(config: BackupConfig, last: datetime | None, now: datetime) -> datetime:
    """When the next scheduled backup is due, given the last one (None: none yet, so now).

    Hourly: the next ``:MM`` after the last backup (MM from ``time``).
    Daily: the next ``HH:MM`` after it. Weekly: the next ``HH:MM`` at
    least six days after it (so seven days when it ran on time). Times are
    local; a slot missed while the machine was off is made up at once.
    """
    if last is None:
        return now
    last = min(last.astimezone(now.tzinfo), now)  # a clock that went back must not stop backups
    hour, minute = config.hour_minute
    if config.frequency == "hourly":
        slot = last.replace(minute=minute, second=0, microsecond=0)
        while slot <= last:
            slot += timedelta(hours=1)
        return slot
    after = last + (timedelta(days=6) if config.frequency == "weekly" else timedelta(0))
    slot = after.replace(hour=hour, minute=minute, second=0, microsecond=0)
    while slot <= after:
        slot += timedelta(days=1)
    return slot


def prune_backups(directory: Path, device_id: str, config: BackupConfig, now: datetime) -> list[Path]:
    """Delete this device's scheduled backups beyond ``max_backups`` or older than ``retention_days``.

    The newest backup is always kept; 0 means no limit. Only files named
    exactly as :func:`backup_file_name` names them are ever touched, and
    stale temporary files of killed runs. Returns what was deleted.
    """
    backups = scheduled_backups(directory, device_id)
    doomed: list[Path] = []
    keep = backups[-1:]
    older = backups[:-1]
    # A gap longer than the retention period between two backups is a clock that jumped ahead
    # (or a machine left off that long): the backups before it are judged by their own time,
    # not by a clock that may be wrong, so age never deletes them and the last one is always kept.
    before_gap: list[tuple[datetime, Path]] = []
    if config.retention_days > 0:
        period = timedelta(days=config.retention_days)
        gaps = [i for i in range(1, len(backups)) if backups[i][0] - backups[i - 1][0] > period]
        if gaps:
            before_gap = backups[: gaps[-1]]
            older = [b for b in older if b not in before_gap]
            older = before_gap[:-1] + older  # the last one before the gap is kept, as the newest is
    if config.max_backups > 0:
        excess = max(0, len(backups) - config.max_backups)
        doomed += [p for _, p in older[:excess]]
        older = older[excess:]
    if config.retention_days > 0:
        horizon = now - timedelta(days=config.retention_days)
        doomed += [p for when, p in older if when < horizon and (when, p) not in before_gap]
    deleted: list[Path] = []
    for path in doomed:
        if keep and path == keep[0][1]:  # pragma: no cover - the newest is never in `older`
            continue
        try:
            path.unlink()
            deleted.append(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("could not delete the old backup %s (%s); retention tries again next time", path, e)
    cutoff = time.time() - _STALE_TEMP_S
    try:
        for entry in os.scandir(directory):
            m = _TEMP.fullmatch(entry.name)
            if m is not None and m["device"] == device_id and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                Path(entry.path).unlink(missing_ok=True)
    except OSError:
        pass
    return deleted


async def make_scheduled_backup(
    home: Home,
    store: Store,
    config: BackupConfig,
    *,
    when: datetime,
    passphrase: str | None = None,
    now_ms: NowMs = wall_clock_ms,
) -> BackupResult:
    """One scheduled backup into the configured directory, then retention."""
    directory = config.directory_in(home.path)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise PeerError(f"cannot create the backup directory {directory}: {e.strerror or e}") from e
    if passphrase is not None and len(passphrase) < MIN_PASSPHRASE:
        log.warning("$%s is shorter than %d characters: backing up without the identity", PASSPHRASE_ENV, MIN_PASSPHRASE)
        passphrase = None
    name = backup_file_name(store.device_id, when)
    result = await create_backup(
        store,
        home.identity(),
        directory / name,
        passphrase=passphrase,
        now_ms=now_ms,
        tmp_name=f".{name}.{os.getpid()}.tmp",
    )
    for deleted in prune_backups(directory, store.device_id, config, when):
        log.info("deleted the old backup %s (retention)", deleted.name)
    return result


def scheduled_passphrase(config: BackupConfig, home: Path) -> str | None:
    """The passphrase scheduled backups seal the identity under: ``[backup] passphrase_file``, else the environment.

    A configured file that cannot be read is an error at the agent's start
    (a ConfigError naming it), not a silent backup without the identity.
    """
    if config.passphrase_file:
        path = Path(os.path.expanduser(config.passphrase_file))
        if not path.is_absolute():
            path = home / path
        try:
            with path.open(encoding="utf-8") as f:
                text = f.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(
                f"[backup] passphrase_file {path} cannot be read ({getattr(e, 'strerror', None) or e});"
                " fix the path or remove the key"
            ) from None
        if len(text) < MIN_PASSPHRASE:
            raise ConfigError(
                f"[backup] passphrase_file {path}: the passphrase (its first line) must be at least"
                f" {MIN_PASSPHRASE} characters"
            )
        return text
    return os.environ.get(PASSPHRASE_ENV) or None


def _local_now() -> datetime:
    return datetime.now().astimezone()


async def run_scheduled_backups(
    home: Home,
    store: Store,
    config: BackupConfig,
    *,
    now: Callable[[], datetime] = _local_now,
    sleep: Callable[[float], Awaitable[None]] = trio.sleep,
    passphrase: str | None = None,
    retry_s: float = RETRY_S,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The agent's backup task (when ``[backup] enabled = true``): runs until cancelled.

    Backs up when due (:func:`next_due`, from the newest backup already in
    the directory, so a restarted agent does not back up again at once),
    then enforces retention. A failed run is logged and retried after
    ``retry_s``; it deletes nothing. The identity is
    included only with a passphrase: ``passphrase``, else
    ``$PEER_BACKUP_PASSPHRASE``. ``now`` and ``sleep`` are for tests.
    """
    directory = config.directory_in(home.path)
    secret = passphrase if passphrase is not None else scheduled_passphrase(config, home.path)
    task_status.started()
    if secret:
        log.info("scheduled backups: %s at %s into %s (with the identity)", config.frequency, config.time, directory)
    else:
        # Said at start, where the user sets things up, not after the disk died.
        log.warning(
            "scheduled backups: %s at %s into %s (without the identity: they can be merged into a surviving member"
            " of the group but cannot rebuild this device; set [backup] passphrase_file in config.toml, or $%s,"
            " to seal the identity into them)",
            config.frequency, config.time, directory, PASSPHRASE_ENV,
        )
    retry_at: datetime | None = None
    while True:
        current = now()
        backups = scheduled_backups(directory, store.device_id)
        due = next_due(config, backups[-1][0] if backups else None, current)
        if retry_at is not None:
            due = max(due, retry_at)
        wait = (due - current).total_seconds()
        if wait > 0:
            await sleep(min(wait, MAX_SLEEP_S))
            continue
        try:
            result = await make_scheduled_backup(home, store, config, when=current, passphrase=secret)
        except (PeerError, OSError) as e:
            retry_at = current + timedelta(seconds=retry_s)
            log.warning("the scheduled backup failed (%s); retrying in %d s", e, int(retry_s))
            await sleep(0)
            continue
        retry_at = None
        log.info("scheduled backup: %s", result.describe())

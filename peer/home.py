"""Where a device lives: its directory, its keys, its store.

Layout of a home directory (mode 0700)::

    device.key    Ed25519 private key, OpenSSH format, 0600: the device's
                  identity, SSH host and client key, version signing key
    kex.key       X25519 private key, PKCS#8 PEM, 0600: receives group keys
    peer.db       the store (0600: it holds the group keys)
    index/        the search index files
    config.toml   settings

The directory is, in order: ``--home DIR``, ``$PEER_HOME``, the platform's
user data directory for "peer".

Keys are written to a temporary file created with mode 0600 (never
readable by others, even for an instant), flushed, and renamed into place.
``init`` writes the store last, so an interrupted ``init`` leaves no store
and can simply be run again (it reuses keys it already wrote).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
    load_ssh_private_key,
)

from peer.store import NowMs, Store, wall_clock_ms
from protocol import device_id_for, found_group, raw_public_key

from .agent_client import HOME_ENV, home_directory
from .errors import StoreError
from .files import fsync_path, write_secret

__all__ = ["Home", "Identity", "InitResult", "HOME_ENV"]

DEVICE_KEY = "device.key"
KEX_KEY = "kex.key"
STORE_FILE = "peer.db"
INDEX_DIR = "index"
CONFIG_FILE = "config.toml"


@dataclass(frozen=True, slots=True)
class Identity:
    """A device's keys and the id derived from them."""

    device_id: str
    signing_key: Ed25519PrivateKey
    kex_key: X25519PrivateKey

    @property
    def public_key(self) -> bytes:
        return raw_public_key(self.signing_key)

    @property
    def kex_public_key(self) -> bytes:
        return raw_public_key(self.kex_key)


@dataclass(frozen=True, slots=True)
class InitResult:
    device_id: str
    group_id: str  # hex

    def to_json(self) -> dict[str, str]:
        return {"device_id": self.device_id, "group_id": self.group_id}


class Home:
    """A device's home directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @classmethod
    def locate(cls, home: str | os.PathLike[str] | None = None) -> Home:
        """``--home DIR`` if given, else ``$PEER_HOME``, else the platform's user data directory."""
        return cls(home_directory(home))

    def __repr__(self) -> str:
        return f"Home({str(self.path)!r})"

    @property
    def device_key_path(self) -> Path:
        return self.path / DEVICE_KEY

    @property
    def kex_key_path(self) -> Path:
        return self.path / KEX_KEY

    @property
    def store_path(self) -> Path:
        return self.path / STORE_FILE

    @property
    def index_dir(self) -> Path:
        return self.path / INDEX_DIR

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    def exists(self) -> bool:
        """True once ``init`` (or a join) has completed here."""
        return self.store_path.is_file()

    def _require(self) -> None:
        if not self.exists() or not self.device_key_path.is_file():
            raise StoreError(f"no peer home at {self.path}; run `peer init` (or pass --home)")

    # Keys -------------------------------------------------------------------
    def identity(self) -> Identity:
        """This device's keys (StoreError when the home is missing or its keys are unreadable)."""
        self._require()
        return self._load_identity()

    def _load_identity(self) -> Identity:
        try:
            signing = load_ssh_private_key(self.device_key_path.read_bytes(), password=None)
            kex = load_pem_private_key(self.kex_key_path.read_bytes(), password=None)
        except FileNotFoundError as e:
            raise StoreError(f"the peer home at {self.path} is missing {Path(e.filename).name}") from e
        except PermissionError as e:
            raise StoreError(f"cannot read the keys in {self.path}: permission denied") from e
        except ValueError as e:
            raise StoreError(f"the keys in {self.path} are damaged ({e}); restore them from a backup") from e
        if not isinstance(signing, Ed25519PrivateKey):
            raise StoreError(f"{self.device_key_path} is not an Ed25519 key")
        if not isinstance(kex, X25519PrivateKey):
            raise StoreError(f"{self.kex_key_path} is not an X25519 key")
        raw = raw_public_key(signing)
        return Identity(device_id=device_id_for(raw), signing_key=signing, kex_key=kex)

    def ensure_identity(self) -> Identity:
        """Create the directory and keys if they are missing; return the identity.

        ``peer join`` uses this before it has a store: the keys prove who
        the new device is to the inviter.
        """
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.device_key_path.exists():
                key = Ed25519PrivateKey.generate()
                write_secret(
                    self.device_key_path, key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
                )
            if not self.kex_key_path.exists():
                kex = X25519PrivateKey.generate()
                write_secret(self.kex_key_path, kex.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        except OSError as e:
            raise StoreError(f"cannot create the peer home at {self.path}: {e.strerror or e}") from e
        return self._load_identity()

    # Store ------------------------------------------------------------------
    async def init(self, name: str, *, now_ms: NowMs = wall_clock_ms) -> InitResult:
        """``peer init``: identity, an empty store and a new group with this device as its founder."""
        if self.exists():
            raise StoreError(
                f"{self.path} already holds a peer store; use it, or pass another --home to start a new device"
            )
        identity = self.ensure_identity()
        group_id, records, group_key = found_group(
            identity.signing_key, identity.kex_key, name=name, now_ms=now_ms()
        )
        await self.create_store(group_id=group_id, records=records, group_keys={0: group_key}, now_ms=now_ms)
        return InitResult(device_id=identity.device_id, group_id=group_id.hex())

    async def check_joinable(self, *, now_ms: NowMs = wall_clock_ms, inviter: str | None = None) -> None:
        """Refuse (before anything is sent or written) if joining a group would leave memories behind.

        A home with no store, or with a store that holds no versions (made by
        ``peer init`` and never used), may join; one that holds versions may not.
        """
        if not self.exists():
            return
        async with await self.open_store(now_ms=now_ms) as store:
            held = (await store.stats()).versions
            group = store.group_id.hex()
            same_group = inviter is not None and store.membership.is_member(inviter)
        if same_group:
            # Running the same `peer join` twice: the first one worked; say so rather than blame another group.
            raise StoreError(
                f"this device is already a member of group {group}, the inviter's group; nothing to do"
                " (to add another device, run `peer join` on it, or pass another --home)"
            )
        if held:
            raise StoreError(
                f"this device already holds {held} versions of memories in group {group}; joining another group"
                " would leave them behind: use another --home for the new device"
            )

    async def create_store(
        self,
        *,
        group_id: bytes,
        records: Sequence[bytes],
        group_keys: Mapping[int, bytes],
        now_ms: NowMs = wall_clock_ms,
        replace_empty: bool = False,
    ) -> None:
        """Create this device's store for a group (after ``init`` founded it, or ``join`` was admitted).

        The store is built under a temporary name and renamed into place, so
        a crash leaves either no store or a complete one. With
        ``replace_empty`` (``peer join`` after ``peer init``), an existing
        store that holds no memories is replaced, and the search index with it.
        """
        identity = self.ensure_identity()
        if self.exists():
            if not replace_empty:
                raise StoreError(f"{self.path} already holds a peer store")
            await self.check_joinable(now_ms=now_ms)
            if Path(f"{self.store_path}-wal").exists():
                raise StoreError(f"the store at {self.store_path} is in use (is `peer agent` running?); stop it first")
            shutil.rmtree(self.index_dir, ignore_errors=True)
        tmp = self.path / f".{STORE_FILE}.{os.getpid()}.tmp"
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
        try:
            store = await Store.create(
                tmp,
                signing_key=identity.signing_key,
                kex_key=identity.kex_key,
                group_id=group_id,
                records=records,
                group_keys=group_keys,
                now_ms=now_ms,
            )
            # Closing the last connection checkpoints the WAL into the file
            # and removes it, so the single file can be renamed.
            await store.close()
            if Path(f"{tmp}-wal").exists():
                raise StoreError(f"the new store at {tmp} kept its write-ahead log; try again")
            os.replace(tmp, self.store_path)
            fsync_path(self.path)
        except BaseException:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                leftover.unlink(missing_ok=True)
            raise

    async def open_store(self, *, now_ms: NowMs = wall_clock_ms) -> Store:
        """Open this device's store (close it, or use it as ``async with``)."""
        identity = self.identity()
        return await Store.open(
            self.store_path, signing_key=identity.signing_key, kex_key=identity.kex_key, now_ms=now_ms
        )

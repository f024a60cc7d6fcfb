"""Where a relay's files live: the small interface the exchange uses, and the folder backend.

A backend is rooted at one group's folder inside the relay (``peer-<group
id hex>/``). It only lists, reads, writes (under a temporary name, flushed,
then renamed: a reader, or a file-sync engine, never sees half a file),
removes and stats files. OS errors are translated here, once, into
:class:`RelayUnavailable` with a message that says what to do; a file that
vanished between listing and reading is :class:`RelayFileGone` (an engine
deleted it: the exchange skips it, nothing is lost).
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, TypeVar

import trio

from protocol import temporary_name

from ..errors import RelayFileGone, RelayUnavailable
from ..files import fsync_path

__all__ = ["RelayEntry", "RelayStore", "RelayUnavailable", "RelayFileGone", "FolderRelay", "os_error_message"]


@dataclass(frozen=True, slots=True)
class RelayEntry:
    name: str
    size: int
    mtime: float


class RelayStore(Protocol):
    """One group's folder on a relay; names are plain file names inside it."""

    @property
    def location(self) -> str:
        """Where the folder is, for messages (a path or an sftp:// URL)."""
        ...

    async def list(self) -> list[RelayEntry]:
        """Every file in the folder (an empty list when the folder does not exist yet)."""
        ...

    async def read(self, name: str) -> bytes: ...

    async def write(self, name: str, data: bytes) -> None:
        """Write under a temporary name, flush, rename to ``name`` (replacing it)."""
        ...

    async def remove(self, name: str) -> None:
        """Remove ``name``; a file already gone is fine."""
        ...

    async def stat(self, name: str) -> RelayEntry | None: ...


def os_error_message(error: OSError, location: str, doing: str) -> str:
    """What a person reads when the relay refused an operation."""
    code = error.errno
    if code == errno.ENOSPC or code == errno.EDQUOT:
        return (
            f"the relay {location} is full (no space left while {doing}); free some space there."
            " Nothing was lost: the next exchange writes it again"
        )
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (
            f"the relay {location} cannot be written ({error.strerror or error} while {doing}); make it writable"
            " for this user. Nothing was lost: the next exchange writes it again"
        )
    if code in (errno.ENOENT, errno.ENOTDIR):
        return f"the relay {location} does not exist or is not mounted; check the path (`peer relay list`)"
    return f"the relay {location} failed while {doing}: {error.strerror or error}; the next exchange tries again"


#: A folder operation that takes longer than this (a dead network mount) fails the exchange.
FOLDER_TIMEOUT_S: Final = 60.0

T = TypeVar("T")


class FolderRelay:
    """A relay that is a directory of this machine (a synced folder, a mount, a stick).

    Each operation runs in a worker thread under a deadline: a hung network
    mount fails the exchange with a clear error instead of stalling the agent
    (the thread is abandoned; the next exchange starts fresh).
    """

    def __init__(self, relay_root: Path, group_folder: str, *, timeout: float = FOLDER_TIMEOUT_S) -> None:
        self._root = Path(relay_root)
        self._dir = self._root / group_folder
        self._timeout = timeout

    async def _run(self, fn: Callable[[], T], doing: str) -> T:
        try:
            with trio.fail_after(self._timeout):
                return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)
        except trio.TooSlowError as e:
            raise RelayUnavailable(
                f"the relay {self.location} did not answer within {self._timeout:g} s while {doing} (a hung"
                " network mount?); the next exchange tries again"
            ) from e

    @property
    def location(self) -> str:
        return str(self._root)

    def _fail(self, error: OSError, doing: str) -> RelayUnavailable:
        return RelayUnavailable(os_error_message(error, self.location, doing))

    async def list(self) -> list[RelayEntry]:
        def scan() -> list[RelayEntry]:
            if not self._root.is_dir():
                raise FileNotFoundError(errno.ENOENT, "no such directory", str(self._root))
            entries = []
            try:
                with os.scandir(self._dir) as it:
                    for e in it:
                        try:
                            if e.is_file(follow_symlinks=False):
                                st = e.stat(follow_symlinks=False)
                                entries.append(RelayEntry(e.name, st.st_size, st.st_mtime))
                        except FileNotFoundError:
                            continue  # removed while listing
            except FileNotFoundError:
                return []
            return entries

        try:
            return await self._run(scan, "listing its files")
        except OSError as e:
            raise self._fail(e, "listing its files") from e

    async def read(self, name: str) -> bytes:
        try:
            return await self._run((self._dir / name).read_bytes, f"reading {name}")
        except FileNotFoundError as e:
            raise RelayFileGone(f"{name} was removed from the relay {self.location} before it was read") from e
        except OSError as e:
            raise self._fail(e, f"reading {name}") from e

    async def write(self, name: str, data: bytes) -> None:
        def put() -> None:
            self._dir.mkdir(parents=False, exist_ok=True)
            tmp = self._dir / temporary_name(name, secrets.token_hex(4))
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self._dir / name)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            fsync_path(self._dir)

        if not self._root.is_dir():
            raise self._fail(FileNotFoundError(errno.ENOENT, "missing"), f"writing {name}")
        try:
            await self._run(put, f"writing {name}")
        except OSError as e:
            raise self._fail(e, f"writing {name}") from e

    async def remove(self, name: str) -> None:
        try:
            await self._run(lambda: (self._dir / name).unlink(missing_ok=True), f"removing {name}")
        except OSError as e:
            raise self._fail(e, f"removing {name}") from e

    async def stat(self, name: str) -> RelayEntry | None:
        try:
            st = await self._run(lambda: os.stat(self._dir / name), f"reading {name}")
        except FileNotFoundError:
            return None
        except OSError as e:
            raise self._fail(e, f"reading {name}") from e
        return RelayEntry(name, st.st_size, st.st_mtime)

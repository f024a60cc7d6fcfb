"""Files that appear whole or not at all.

Every file peer writes outside SQLite (keys, the index's sidecar and arrays,
the agent's status, plaintext exports) is written under a temporary name
unique to this process and write, flushed, and renamed over the target; the
directory is then flushed so the rename itself survives a power cut. Readers
therefore see the old file or the new one, never a mix, and two processes
writing the same file at once cannot interleave: the last rename wins whole.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import BinaryIO

import trio

from protocol import StoreError

__all__ = [
    "atomic_output",
    "atomic_output_async",
    "fsync_path",
    "temporary_name",
    "write_atomic",
    "write_secret",
]


def fsync_path(path: Path) -> None:
    """Flush a file (one a library wrote by name) or a directory (a rename or new file in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(path: Path) -> Path:
    """A name beside ``path`` that no other process or write uses (hidden, ends in ``.tmp``)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_output(path: str | os.PathLike[str], *, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A file (``mode`` from creation, 0600 by default) that replaces ``path`` only once complete.

    Whatever fails, the temporary file is removed and ``path`` is left as it
    was. An OSError (a full disk, a missing directory) becomes a
    :class:`StoreError` naming the file.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as e:
        raise StoreError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    except OSError as e:
        raise StoreError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


@asynccontextmanager
async def atomic_output_async(
    path: str | os.PathLike[str], *, mode: int = 0o600, tmp_name: str | None = None
) -> AsyncIterator[BinaryIO]:
    """:func:`atomic_output` for trio code: the slow flushes to disk run in a worker thread.

    A big file (a bundle, a backup) written by the agent must not block its
    event loop while the disk catches up. ``tmp_name`` names the temporary
    file (a leftover of an earlier crash under that name is replaced), for a
    writer that cleans up after itself by name.
    """
    path = Path(path)
    tmp = temporary_name(path) if tmp_name is None else path.with_name(tmp_name)
    try:
        if tmp_name is not None:
            tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as e:
        raise StoreError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            await trio.to_thread.run_sync(os.fsync, f.fileno())
        os.replace(tmp, path)
        await trio.to_thread.run_sync(fsync_path, path.parent)
    except OSError as e:
        raise StoreError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` whole (see :func:`atomic_output`)."""
    with atomic_output(path, mode=mode) as f:
        f.write(data)


def write_secret(path: Path, data: bytes) -> None:
    """Write a file that only its owner can ever read, atomically."""
    write_atomic(path, data, mode=0o600)

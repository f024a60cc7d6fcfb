"""SFTP for relays: a directory on any SSH server, reached with the user's own SSH set-up.

Unlike :mod:`peer.aio.ssh` (device keys, peer's own trust rules), a relay
server is the user's: the connection uses ``~/.ssh/config``, the keys of
ssh-agent and ``~/.ssh/id_*``, and checks the server's host key against
``~/.ssh/known_hosts`` (an unknown or changed key is refused, never
learned). Nothing of peer runs on the server: plain OpenSSH's sftp-server.

Every asyncssh call runs on the asyncio side through ``aio_as_trio``, under
a trio deadline; failures become :class:`TransportError` (unreachable, full,
read-only, slow) or :class:`TrustError` (host key, login) with what to do.
A missing file is not an error here: ``read``/``stat`` return None.
"""

from __future__ import annotations

import posixpath
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final, TypeVar

import asyncssh
import trio
import trio_asyncio

from protocol import TransportError, TrustError, temporary_name

__all__ = ["SftpSession", "open_sftp", "SFTP_TIMEOUT_S"]

T = TypeVar("T")

#: Connecting, logging in, and each file operation must finish within this.
SFTP_TIMEOUT_S: Final = 30.0


class SftpSession:
    """One SFTP session rooted at a group's folder on the server."""

    def __init__(self, sftp: asyncssh.SFTPClient, directory: str, where: str) -> None:
        self._sftp = sftp
        self._dir = directory
        self.where = where

    def _path(self, name: str) -> str:
        return posixpath.join(self._dir, name)

    async def _call(self, doing: str, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            with trio.fail_after(SFTP_TIMEOUT_S):
                result: T = await trio_asyncio.aio_as_trio(fn)()
                return result
        except trio.TooSlowError as e:
            raise TransportError(
                f"the relay {self.where} did not answer within {SFTP_TIMEOUT_S:g} s while {doing}; the next exchange"
                " tries again"
            ) from e
        except asyncssh.SFTPPermissionDenied as e:
            raise TransportError(
                f"the relay {self.where} refused {doing} (permission denied); make that directory writable for"
                " your SSH user. Nothing was lost: the next exchange tries again"
            ) from e
        except asyncssh.SFTPError as e:
            raise TransportError(
                f"the relay {self.where} failed while {doing}: {e.reason or e} (is the disk full or read-only?)."
                " Nothing was lost: the next exchange tries again"
            ) from e
        except (asyncssh.Error, OSError) as e:
            raise TransportError(f"the connection to the relay {self.where} failed while {doing}: {e}") from e

    async def listdir(self) -> list[tuple[str, int, float]] | None:
        """(name, size, mtime) of every regular file; None when the folder does not exist yet."""

        async def run() -> list[tuple[str, int, float]] | None:
            try:
                names = await self._sftp.readdir(self._dir)
            except asyncssh.SFTPNoSuchFile:
                return None
            out = []
            for entry in names:
                attrs = entry.attrs
                if attrs.type == asyncssh.FILEXFER_TYPE_REGULAR and isinstance(entry.filename, str):
                    out.append((entry.filename, int(attrs.size or 0), float(attrs.mtime or 0)))
            return out

        return await self._call("listing its files", run)

    async def read(self, name: str) -> bytes | None:
        async def run() -> bytes | None:
            try:
                async with self._sftp.open(self._path(name), "rb") as f:
                    data = await f.read()
            except asyncssh.SFTPNoSuchFile:
                return None
            assert isinstance(data, bytes)
            return data

        return await self._call(f"reading {name}", run)

    async def write(self, name: str, data: bytes) -> None:
        """Under a temporary name, flushed to disk where the server allows, then renamed over ``name``."""
        tmp = self._path(temporary_name(name, secrets.token_hex(4)))

        async def run() -> None:
            try:
                await self._sftp.mkdir(self._dir)
            except asyncssh.SFTPFailure:
                pass  # it exists (OpenSSH reports that as a plain failure)
            try:
                async with self._sftp.open(tmp, "wb") as f:
                    await f.write(data)
                    try:
                        await f.fsync()
                    except asyncssh.SFTPOpUnsupported:
                        pass  # an old server: the rename still makes the file whole or absent
                await self._sftp.posix_rename(tmp, self._path(name))
            except BaseException:
                try:
                    await self._sftp.remove(tmp)
                except (asyncssh.Error, OSError):
                    pass
                raise

        await self._call(f"writing {name}", run)

    async def remove(self, name: str) -> None:
        async def run() -> None:
            try:
                await self._sftp.remove(self._path(name))
            except asyncssh.SFTPNoSuchFile:
                pass

        await self._call(f"removing {name}", run)

    async def stat(self, name: str) -> tuple[str, int, float] | None:
        async def run() -> tuple[str, int, float] | None:
            try:
                attrs = await self._sftp.stat(self._path(name))
            except asyncssh.SFTPNoSuchFile:
                return None
            return name, int(attrs.size or 0), float(attrs.mtime or 0)

        return await self._call(f"reading {name}", run)


@asynccontextmanager
async def open_sftp(
    host: str, *, port: int | None, username: str | None, path: str, folder: str
) -> AsyncIterator[SftpSession]:
    """An SFTP session to ``[username@]host[:port]`` rooted at ``path/folder``, closed on exit."""
    where = f"sftp://{username + '@' if username else ''}{host}{':' + str(port) if port else ''}/{path}"
    options: dict[str, object] = {"connect_timeout": SFTP_TIMEOUT_S, "login_timeout": SFTP_TIMEOUT_S}
    if port is not None:
        options["port"] = port
    if username is not None:
        options["username"] = username

    async def start() -> tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient]:
        # known_hosts, config, agent and client keys left to asyncssh's defaults: the user's ~/.ssh.
        conn = await asyncssh.connect(host, **options)
        try:
            return conn, await conn.start_sftp_client()
        except BaseException:
            conn.abort()
            raise

    try:
        with trio.fail_after(SFTP_TIMEOUT_S + 1):
            conn, sftp = await trio_asyncio.aio_as_trio(start)()
    except (TimeoutError, trio.TooSlowError) as e:
        raise TransportError(f"the relay {where} did not answer within {SFTP_TIMEOUT_S:g} s; the next exchange tries again") from e
    except asyncssh.HostKeyNotVerifiable as e:
        raise TrustError(
            f"the host key of {host} is not the one ~/.ssh/known_hosts holds for it (unknown or changed): refusing"
            f" to use the relay {where}. If the server really changed its key, check it and update known_hosts"
            " (ssh-keygen -R, then connect once with ssh)"
        ) from e
    except asyncssh.PermissionDenied as e:
        raise TrustError(
            f"{host} refused the SSH login for the relay {where}: load your key into ssh-agent or name it in"
            " ~/.ssh/config"
        ) from e
    except ConnectionRefusedError as e:
        raise TransportError(f"the relay {where} refused the connection (is its SSH server running?)") from e
    except socket.gaierror as e:
        raise TransportError(f"cannot resolve the relay's host name {host!r}: {e.strerror or e}") from e
    except (asyncssh.Error, OSError) as e:
        raise TransportError(f"cannot reach the relay {where}: {e}") from e
    directory = posixpath.join(path, folder)
    try:
        yield SftpSession(sftp, directory, where)
    finally:

        async def stop() -> None:
            sftp.exit()
            conn.close()
            await conn.wait_closed()

        with trio.move_on_after(5) as scope:
            scope.shield = True
            try:
                await trio_asyncio.aio_as_trio(stop)()
            except (asyncssh.Error, OSError):
                pass

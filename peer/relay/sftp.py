"""The SFTP backend of :class:`~peer.relay.store.RelayStore`, over :mod:`peer.aio.sftp`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from protocol import TransportError

from ..aio.sftp import SftpSession, open_sftp
from .store import RelayEntry, RelayFileGone, RelayUnavailable

__all__ = ["SftpRelay", "open_sftp_relay"]


class SftpRelay:
    def __init__(self, session: SftpSession) -> None:
        self._session = session

    @property
    def location(self) -> str:
        return self._session.where

    async def list(self) -> list[RelayEntry]:
        try:
            found = await self._session.listdir()
        except TransportError as e:
            raise RelayUnavailable(e.message) from e
        return [RelayEntry(*e) for e in found or ()]

    async def read(self, name: str) -> bytes:
        try:
            data = await self._session.read(name)
        except TransportError as e:
            raise RelayUnavailable(e.message) from e
        if data is None:
            raise RelayFileGone(f"{name} was removed from the relay {self.location} before it was read")
        return data

    async def write(self, name: str, data: bytes) -> None:
        try:
            await self._session.write(name, data)
        except TransportError as e:
            raise RelayUnavailable(e.message) from e

    async def remove(self, name: str) -> None:
        try:
            await self._session.remove(name)
        except TransportError as e:
            raise RelayUnavailable(e.message) from e

    async def stat(self, name: str) -> RelayEntry | None:
        try:
            found = await self._session.stat(name)
        except TransportError as e:
            raise RelayUnavailable(e.message) from e
        return None if found is None else RelayEntry(*found)


@asynccontextmanager
async def open_sftp_relay(
    host: str, *, port: int | None, username: str | None, path: str, folder: str
) -> AsyncIterator[SftpRelay]:
    async with AsyncExitStack() as stack:
        try:
            session = await stack.enter_async_context(
                open_sftp(host, port=port, username=username, path=path, folder=folder)
            )
        except TransportError as e:
            raise RelayUnavailable(e.message) from e
        yield SftpRelay(session)

"""Relays: sync through an untrusted folder or SFTP directory (docs/protocol.md section 15).

:func:`sync_relay` is one exchange with one configured relay, for ``peer
relay sync``, the agent and ``peer status``; :mod:`.exchange` holds the
rules, :mod:`.store` the file interface and the folder backend,
:mod:`peer.aio.sftp` the SFTP backend, :mod:`.config` what the home keeps.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import PeerError, format_device_id, group_folder

from ..store import NowMs, Store, wall_clock_ms
from ..units import human_size, plural
from .config import (
    RelayMemory,
    RelaySpec,
    add_relay,
    find_relay,
    load_memory,
    load_relays,
    remove_relay,
    save_memory,
)
from .exchange import ExchangeResult, exchange
from .store import FolderRelay, RelayEntry, RelayFileGone, RelayStore, RelayUnavailable

__all__ = [
    "RelaySpec", "RelayMemory", "RelayStore", "RelayEntry", "FolderRelay", "RelayUnavailable", "RelayFileGone",
    "ExchangeResult", "RelayStatus", "exchange", "open_relay", "sync_relay", "relay_status",
    "add_relay", "remove_relay", "find_relay", "load_relays", "load_memory", "save_memory",
]

SCRATCH_DIR = "relays/scratch"
#: How long an exchange waits for another process of this device (the agent, a command) to finish its own.
LOCK_WAIT_S = 120.0


@asynccontextmanager
async def _exclusive(home: Path, name: str) -> AsyncIterator[None]:
    """One exchange per relay per device at a time, across processes (the agent and `peer relay sync`).

    Two at once would each write a segment and a state record, and one
    record would hide the other's segment until the next exchange.
    """
    path = Path(home) / "relays" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with trio.move_on_after(LOCK_WAIT_S):
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await trio.sleep(0.2)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PeerError(
                f"another peer process of this device kept exchanging with relay {name} for {LOCK_WAIT_S:g} s;"
                " try again"
            ) from None
        yield
    finally:
        os.close(fd)


@asynccontextmanager
async def open_relay(spec: RelaySpec, group_id: bytes) -> AsyncIterator[RelayStore]:
    """The group's folder on ``spec``: a local directory, or an SFTP session for as long as this lasts."""
    if spec.is_sftp:
        # Imported here so commands that never use SFTP do not load asyncssh (as peer.aio does for SSH).
        from .sftp import open_sftp_relay

        user, host, port, path = spec.sftp_parts()
        async with open_sftp_relay(host, port=port, username=user, path=path, folder=group_folder(group_id)) as relay:
            yield relay
    else:
        yield FolderRelay(Path(spec.url), group_folder(group_id))


async def sync_relay(
    store: Store,
    signing_key: Ed25519PrivateKey,
    home: Path,
    spec: RelaySpec,
    *,
    now_ms: NowMs = wall_clock_ms,
) -> ExchangeResult:
    """One exchange with ``spec``; its outcome (or error) is remembered in the home for ``peer status``."""
    try:
        async with _exclusive(home, spec.name):
            return await _sync_relay(store, signing_key, home, spec, now_ms=now_ms)
    except OSError as e:
        raise _local_failure(spec, home, e) from e


def _local_failure(spec: RelaySpec, home: Path, error: OSError) -> PeerError:
    # The relay's own failures were translated by its backend: an OSError here is local (the home's disk).
    return PeerError(
        f"exchanging with relay {spec.name} failed on this device: {error.strerror or error}"
        f" ({error.filename or home}); check the home directory (free space?), then try again"
    )


async def _sync_relay(
    store: Store, signing_key: Ed25519PrivateKey, home: Path, spec: RelaySpec, *, now_ms: NowMs
) -> ExchangeResult:
    memory = load_memory(home, spec.name)
    try:
        async with open_relay(spec, store.group_id) as relay:
            result, memory = await exchange(
                store, signing_key, relay, memory, name=spec.name, scratch_dir=Path(home) / SCRATCH_DIR,
                now_ms=now_ms,
            )
    except PeerError as e:
        save_memory(home, spec.name, memory.with_(last_error=e.message, last_exchange=time.time()))
        raise
    except OSError as e:
        failure = _local_failure(spec, home, e)
        save_memory(home, spec.name, memory.with_(last_error=failure.message, last_exchange=time.time()))
        raise failure from e
    save_memory(home, spec.name, memory)
    return result


@dataclass(frozen=True, slots=True)
class RelayStatus:
    """One relay as ``peer status`` and ``peer relay list`` show it (from the last exchange; no I/O)."""

    spec: RelaySpec
    memory: RelayMemory

    def to_json(self) -> dict[str, Any]:
        m = self.memory
        return {
            **self.spec.to_json(),
            "reachable": None if m.last_exchange is None else m.last_error is None,
            "error": m.last_error,
            "last_exchange": m.last_exchange,
            "last_read": m.last_read,
            "last_write": m.last_write,
            "bytes_held": m.bytes_held,
            "problems": list(m.problems),
            "devices": {d: {"lacks": s.lacks, "state_written_ms": s.written_ms} for d, s in m.seen.items()},
        }

    def describe(self) -> str:
        m = self.memory

        def when(t: float | None) -> str:
            return "never" if t is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))

        if m.last_exchange is None:
            state = "not exchanged with yet"
        elif m.last_error is not None:
            state = f"unreachable at the last try ({when(m.last_exchange)}): {m.last_error}"
        else:
            state = f"reachable ({when(m.last_exchange)})"
        lines = [f"relay {self.spec.name} ({self.spec.url}): {state}"]
        if m.last_exchange is not None:
            held = "?" if m.bytes_held is None else human_size(m.bytes_held)
            lines.append(f"  last read {when(m.last_read)}, last write {when(m.last_write)}, holds {held}")
        for device, seen in sorted(m.seen.items()):
            lacks = f"lacks {plural(seen.lacks, 'version')}" if seen.lacks else "has everything this device holds"
            lines.append(f"  device {format_device_id(device)}: {lacks}")
        lines += [f"  warning: {p}" for p in m.problems]
        return "\n".join(lines)


def relay_status(home: Path) -> list[RelayStatus]:
    return [RelayStatus(spec, load_memory(home, spec.name)) for spec in load_relays(home)]

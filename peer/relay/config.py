"""Which relays a device uses, and what it remembers of each, stored in its home.

``<home>/relays.json`` lists the relays (``peer relay add`` / ``remove``
edit it; a person may too). ``<home>/relays/<name>.json`` is this device's
memory of one relay: the sequence and bytes of the last state record it
wrote there (its own chain of segments is what that record lists, so a
reverted or deleted copy on the relay is repaired from here), the highest
sequence seen from every other device (a lower one is a reverted copy), and
what ``peer status`` shows. Both files are replaced by rename.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError, PeerError

__all__ = ["RelaySpec", "RelayMemory", "DeviceSeen", "parse_target", "load_relays", "add_relay", "remove_relay",
           "find_relay", "load_memory", "save_memory", "RELAYS_FILE"]

RELAYS_FILE: Final = "relays.json"
MEMORY_DIR: Final = "relays"
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class RelaySpec:
    """One configured relay: a folder of this machine, or a directory on an SSH server (SFTP)."""

    name: str
    url: str  # an absolute path, or sftp://[user@]host[:port]/path
    added_at: float = 0.0

    @property
    def is_sftp(self) -> bool:
        return self.url.startswith("sftp://")

    def sftp_parts(self) -> tuple[str | None, str, int | None, str]:
        """(user, host, port, path) of an sftp:// URL.

        The path is absolute, as in curl: sftp://nas/srv/peer is /srv/peer;
        sftp://nas/~/peer is "peer" in the login directory.
        """
        parts = urlsplit(self.url)
        if parts.scheme != "sftp" or not parts.hostname:
            raise ConfigError(f"relay {self.name}: {self.url!r} is not an sftp://[user@]host[:port]/path URL")
        path = unquote(parts.path)
        if path in ("", "/~", "/~/"):
            path = "."
        elif path.startswith("/~/"):
            path = path[3:]
        return (unquote(parts.username) if parts.username else None, parts.hostname, parts.port, path)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "kind": "sftp" if self.is_sftp else "folder", "added_at": self.added_at}


def parse_target(target: str) -> tuple[str, str]:
    """(normalised URL, suggested name) for what a person typed after ``peer relay add``."""
    if target.startswith("sftp://"):
        try:
            parts = urlsplit(target)
            port = parts.port
        except ValueError as e:
            raise PeerError(f"{target!r} is not a valid sftp:// URL ({e}); write sftp://[user@]host[:port]/path") from e
        if not parts.hostname:
            raise PeerError(f"{target!r} names no host; write sftp://[user@]host[:port]/path")
        del port
        base = Path(unquote(parts.path)).name or parts.hostname
        return target, base
    if "://" in target:
        raise PeerError(f"{target!r}: a relay is a folder path or an sftp://[user@]host[:port]/path URL")
    path = Path(os.path.expanduser(target)).resolve()
    if not path.is_dir():
        raise PeerError(f"{path} is not a directory; create it (or mount the share) first")
    return str(path), path.name or "relay"


def _relays_path(home: Path) -> Path:
    return Path(home) / RELAYS_FILE


def _atomic_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise PeerError(f"cannot write {path}: {e.strerror or e}") from e


def load_relays(home: Path) -> list[RelaySpec]:
    path = _relays_path(home)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {e}; fix or remove it (it lists this device's relays)") from e
    try:
        relays = [RelaySpec(str(r["name"]), str(r["url"]), float(r.get("added_at", 0))) for r in raw["relays"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{path} is not a relay list ({e}); fix or remove it") from e
    return relays


def _save_relays(home: Path, relays: list[RelaySpec]) -> None:
    _atomic_json(_relays_path(home), {"relays": [{"name": r.name, "url": r.url, "added_at": r.added_at} for r in relays]})


def add_relay(home: Path, target: str, name: str | None = None) -> RelaySpec:
    url, suggested = parse_target(target)
    relays = load_relays(home)
    if any(r.url == url for r in relays):
        raise PeerError(f"{url} is already a relay of this device (see `peer relay list`)")
    if name is None:
        name = re.sub(r"[^A-Za-z0-9._-]", "-", suggested).strip("-.") or "relay"
        taken = {r.name for r in relays}
        base, n = name, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
    elif not _NAME_RE.fullmatch(name):
        raise PeerError(f"{name!r} cannot name a relay: use letters, digits, '.', '_' or '-' (64 at most)")
    elif any(r.name == name for r in relays):
        raise PeerError(f"a relay is already called {name!r}; choose another name with --name")
    spec = RelaySpec(name, url, time.time())
    _save_relays(home, [*relays, spec])
    return spec


def find_relay(home: Path, name: str) -> RelaySpec:
    relays = load_relays(home)
    for r in relays:
        if r.name == name:
            return r
    known = ", ".join(r.name for r in relays) or "none yet; add one with `peer relay add PATH`"
    raise PeerError(f"this device has no relay called {name!r} (relays: {known})")


def remove_relay(home: Path, name: str) -> RelaySpec:
    spec = find_relay(home, name)
    _save_relays(home, [r for r in load_relays(home) if r.name != name])
    (Path(home) / MEMORY_DIR / f"{name}.json").unlink(missing_ok=True)
    return spec


@dataclass(frozen=True, slots=True)
class DeviceSeen:
    """Another device as its last state record on the relay showed it."""

    sequence: int
    written_ms: int
    vector: dict[str, int]
    lacks: int  # versions this device holds that it lacks


@dataclass(frozen=True, slots=True)
class RelayMemory:
    """What this device remembers of one relay (see the module docstring)."""

    own_sequence: int = 0
    own_state: bytes = b""  # the last state record this device wrote there
    seen: dict[str, DeviceSeen] = field(default_factory=dict)
    last_exchange: float | None = None
    last_read: float | None = None
    last_write: float | None = None
    last_error: str | None = None
    bytes_held: int | None = None
    problems: tuple[str, ...] = ()

    def with_(self, **changes: Any) -> RelayMemory:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "own_sequence": self.own_sequence,
            "own_state": base64.b64encode(self.own_state).decode("ascii"),
            "seen": {d: {"sequence": s.sequence, "written_ms": s.written_ms, "vector": s.vector, "lacks": s.lacks}
                     for d, s in self.seen.items()},
            "last_exchange": self.last_exchange,
            "last_read": self.last_read,
            "last_write": self.last_write,
            "last_error": self.last_error,
            "bytes_held": self.bytes_held,
            "problems": list(self.problems),
        }


def _memory_path(home: Path, name: str) -> Path:
    return Path(home) / MEMORY_DIR / f"{name}.json"


def load_memory(home: Path, name: str) -> RelayMemory:
    path = _memory_path(home, name)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return RelayMemory(
            own_sequence=int(raw["own_sequence"]),
            own_state=base64.b64decode(raw["own_state"]),
            seen={d: DeviceSeen(int(s["sequence"]), int(s["written_ms"]), {k: int(v) for k, v in s["vector"].items()},
                                int(s["lacks"])) for d, s in raw["seen"].items()},
            last_exchange=raw.get("last_exchange"),
            last_read=raw.get("last_read"),
            last_write=raw.get("last_write"),
            last_error=raw.get("last_error"),
            bytes_held=raw.get("bytes_held"),
            problems=tuple(raw.get("problems", ())),
        )
    except FileNotFoundError:
        return RelayMemory()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        # A damaged memory costs one rewrite of the state record and of own segments, nothing else.
        return RelayMemory()


def save_memory(home: Path, name: str, memory: RelayMemory) -> None:
    _atomic_json(_memory_path(home, name), memory.to_json())

"""Settings: ``config.toml`` in the device's home directory.

Every key is optional; a missing file means every default. Command-line
options override the file (``peer agent --listen``, ``--interface``).
An unknown section or key, or a value of the wrong type, is an error that
names it: a typo must not silently fall back to a default. Example::

    [agent]
    listen = "0.0.0.0:7847"       # where the SSH listener binds
    interfaces = ["192.168.1.20"]   # mDNS on these addresses (default: every non-loopback one)
    discovery = true                # mDNS on or off
    peers = ["nas.local:7847"]      # also sync with these, mDNS or not
    sync_interval = 60              # seconds between anti-entropy rounds per peer
    debounce = 0.2                  # least seconds between two syncs driven by local changes
    backoff_max = 300               # the longest wait after repeated failures, seconds

    [backup]
    enabled = true
    frequency = "daily"             # "hourly", "daily" or "weekly"
    time = "03:00"                  # local time of day (daily and weekly)
    directory = "~/peer-backups"
    retention_days = 30             # delete backups older than this
    max_backups = 10                # and keep at most this many
    passphrase_file = "~/.config/peer/backup-passphrase"  # seal the identity in (first line)

Scheduled backups hold the device's identity only when the agent has a
passphrase (``passphrase_file``, else ``$PEER_BACKUP_PASSPHRASE``); without
it they can be merged into a surviving member of the group but cannot
rebuild a device, so a device that is its group's only member needs one.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

from .errors import ConfigError

__all__ = ["AgentConfig", "BackupConfig", "Config", "load_config", "FREQUENCIES"]

FREQUENCIES: Final = ("hourly", "daily", "weekly")


@dataclass(frozen=True, slots=True)
class AgentConfig:
    listen: str = "0.0.0.0:7847"
    interfaces: tuple[str, ...] = ()
    discovery: bool = True
    peers: tuple[str, ...] = ()
    sync_interval: float = 60.0
    debounce: float = 0.2
    backoff_max: float = 300.0


@dataclass(frozen=True, slots=True)
class BackupConfig:
    enabled: bool = False
    frequency: str = "daily"
    time: str = "03:00"
    directory: str = ""  # "" means <home>/backups
    retention_days: int = 30
    max_backups: int = 10
    passphrase_file: str = ""  # "" means $PEER_BACKUP_PASSPHRASE, else no identity

    def directory_in(self, home: Path) -> Path:
        return Path(os.path.expanduser(self.directory)) if self.directory else home / "backups"

    @property
    def hour_minute(self) -> tuple[int, int]:
        hour, minute = self.time.split(":")
        return int(hour), int(minute)


@dataclass(frozen=True, slots=True)
class Config:
    agent: AgentConfig = field(default_factory=AgentConfig)
    backup: BackupConfig = field(default_factory=BackupConfig)


def _section(path: Path, name: str, raw: Any, default: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    known = {f.name: f for f in fields(default)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown key {key!r} in [{name}] (known: {', '.join(known)})")
        expected = type(getattr(default, key))
        if expected is tuple:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: [{name}] {key} must be a list of strings")
            value = tuple(value)
        elif expected is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{path}: [{name}] {key} must be a number of seconds (0 or more)")
            value = float(value)
        elif expected is int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{path}: [{name}] {key} must be a whole number (0 or more)")
        elif not isinstance(value, expected):
            raise ConfigError(f"{path}: [{name}] {key} must be a {expected.__name__}")
        values[key] = value
    return replace(default, **values)


def load_config(path: Path) -> Config:
    """The settings in ``path`` (every default when it does not exist); raises ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from e
    config = Config()
    for name, value in raw.items():
        if name == "agent":
            config = replace(config, agent=_section(path, name, value, config.agent))
        elif name == "backup":
            config = replace(config, backup=_section(path, name, value, config.backup))
        else:
            raise ConfigError(f"{path}: unknown section [{name}] (known: agent, backup)")
    backup = config.backup
    if backup.frequency not in FREQUENCIES:
        raise ConfigError(f"{path}: [backup] frequency must be one of {', '.join(FREQUENCIES)}")
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", backup.time):
        raise ConfigError(f"{path}: [backup] time must be HH:MM (24-hour), not {backup.time!r}")
    if config.agent.sync_interval < 1:
        raise ConfigError(f"{path}: [agent] sync_interval must be at least 1 second")
    return config

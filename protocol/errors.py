"""The one error tree of peer.

Every error a user can see is a subclass of :class:`PeerError`. Its message
is written for the person reading it: what happened and what to do. Only
the CLI's entry point turns these into ``error: ...`` lines; anything that
is not a ``PeerError`` is a bug and keeps its traceback.

The tree lives in ``protocol/`` because ``peer/`` depends on ``protocol/``
and never the reverse; ``peer`` re-exports it.
"""

from __future__ import annotations

__all__ = [
    "PeerError",
    "RelayError",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "PeerBusy",
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
]


class PeerError(Exception):
    """Something went wrong; the message says what and what to do."""

    def __init__(self, message: str | None = None) -> None:
        if message is None:
            message = (self.__doc__ or type(self).__name__).strip().splitlines()[0]
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self.args[0])


class ProtocolError(PeerError):
    """The sync protocol was violated."""


class LocalProtocolError(ProtocolError):
    """This side tried to do something the protocol does not allow here.

    Frames and records validate when they are built, and raise this: a
    value built wrongly on this side is this side's bug. Decoders re-raise
    it with :meth:`as_remote` (as h11 does), because there the same value
    came from bytes someone else wrote.
    """

    def as_remote(self, what: str | None = None) -> DecodeError:
        """The same complaint about received data: ``malformed WHAT: message``."""
        return DecodeError(f"malformed {what}: {self.message}" if what else f"malformed {self.message}")


class RemoteProtocolError(ProtocolError):
    """The other side sent something the protocol does not allow."""


class DecodeError(RemoteProtocolError):
    """Malformed bytes: the data is truncated, corrupt or not peer data."""


class UnsupportedFormat(ProtocolError):
    """The data uses a format version this peer does not understand; upgrade peer."""


class TrustError(PeerError):
    """A key, signature or membership check failed."""


class WrongGroup(TrustError):
    """The data belongs to another group; use it on a member of that group."""


class UnknownEpochKey(TrustError):
    """The data is sealed under a group key epoch this device does not hold; sync with a member first."""


class DecryptionFailed(TrustError):
    """The data could not be decrypted: it was tampered with or sealed under another key."""


class BadSignature(TrustError):
    """A signature does not verify: the data was tampered with."""


class NotAMember(TrustError):
    """The author is not a current member of this group."""


class BundleError(PeerError):
    """The bundle file is damaged, incomplete or not meant for this device."""


class RelayError(PeerError):
    """A file on a relay is damaged or does not match what its device listed; it is skipped."""


class StoreError(PeerError):
    """The local store cannot be used as asked."""


class TransportError(PeerError):
    """The connection to the other device failed."""


class PeerBusy(TransportError):
    """The other device is already syncing with this one; try again in a moment."""

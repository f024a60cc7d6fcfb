"""peer's sync core, with no I/O: clocks, records, sealing, merge, frames, session, join, bundles.

Everything that travels between devices is defined here; ``peer/`` only
moves these bytes and stores them. This module is the package's one face:
``peer/`` imports ``from protocol import X``, never from the submodules,
and ``__all__`` below is the one list of what it may use.

Loading it lazily. Importing every module here costs tens of milliseconds,
which a one-shot ``peer search`` answered by the agent should not pay
before it knows it needs any of them. So only the error tree is imported
eagerly; any other name is imported from its module on first use
(:func:`__getattr__`, PEP 562), found in the import list below, which type
checkers and import-linter read as ordinary imports. Add new exports to
that list (and ``__all__``) as before; a new module also gets its branch in
:func:`_module` and a place in ``_MODULES`` (tests/protocol/test_lazy_face.py
fails until it has them).
"""

from types import ModuleType
from typing import TYPE_CHECKING, Any

from .errors import (
    BadSignature,
    BundleError,
    DecodeError,
    DecryptionFailed,
    LocalProtocolError,
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
    UnsupportedFormat,
    WrongGroup,
)

if TYPE_CHECKING:
    from .bundle import (
        BUNDLE_FORMAT,
        BUNDLE_MAGIC,
        BundleEnd,
        BundleEvent,
        BundleHeader,
        BundleMemberRecord,
        BundleReader,
        BundleVersion,
        BundleWriter,
        SenderKeyLookup,
    )
    from .clock import MAX_COUNTER, Dot, HybridLogicalClock, Ordering, VersionVector, hlc_pack, hlc_unpack, next_counter
    from .codec import Reader, Writer, decode_whole
    from .frames import (
        DEFAULT_MAX_FRAME_SIZE,
        END_OF_STREAM,
        FLAG_ORDERED,
        NEED_DATA,
        PROTOCOL_VERSION,
        Done,
        EndOfStream,
        ErrorCode,
        ErrorFrame,
        Frame,
        FrameDecoder,
        Hello,
        JoinAccept,
        JoinReject,
        JoinRequest,
        Members,
        NeedData,
        VersionsBatch,
        decode_frame,
        encode_frame,
        frame_name,
        join_proof,
    )
    from .ids import (
        MAX_INCARNATION,
        device_id_for,
        device_id_of,
        device_of,
        format_device_id,
        is_device_id,
        is_replica_id,
        normalize_device_id,
        raw_public_key,
        replica_id,
    )
    from .invite import (
        INVITE_ID_BYTES,
        SECRET_BYTES,
        InviteCode,
        MistypedCode,
        decode_code,
        encode_code,
        verifier_for,
    )
    from .join import (
        JOIN_MAX_FRAME_SIZE,
        JoinAccepted,
        JoinEvent,
        JoinRejected,
        JoinRequested,
        JoinRole,
        JoinSession,
        JoinState,
    )
    from .kinds import DEFAULT_KIND, KINDS, valid_kind
    from .membership import (
        KeyEpochRecord,
        MemberInfo,
        MemberRecord,
        Membership,
        MembershipRecord,
        RevocationRecord,
        UnknownSigner,
        decode_membership_record,
        found_group,
        group_id_for,
    )
    from .merge import MemoryState, VersionMeta, VersionState, context_for_new_version, state_of, winner_key
    from .records import (
        EMBEDDING_ROOM,
        FORMAT_VERSION,
        MAX_BODY_BYTES,
        MAX_CONTENT_BYTES,
        MAX_EMBEDDER_BYTES,
        MAX_EMBEDDING_BYTES,
        MAX_FIELD_BYTES,
        MAX_METADATA_BYTES,
        MAX_TAGS,
        MemoryBody,
        VersionHeader,
        canonical_json,
        check_body_size,
    )
    from .relay import (
        RELAY_FORMAT,
        RELAY_STATE_MAGIC,
        RelayName,
        RelayState,
        SegmentRef,
        check_segment,
        group_folder,
        next_sequence,
        open_state,
        parse_relay_name,
        prunable,
        relay_coverage,
        seal_state,
        segment_name,
        state_name,
        temporary_name,
        vector_meet,
    )
    from .sealing import (
        AuthorKeyLookup,
        MemberKeyLookup,
        SealedVersion,
        SignatureJob,
        bad_signature,
        open_version,
        seal,
        signature_job,
        signature_valid,
        stored_embedding,
        unseal_version,
        verify_version,
    )
    from .session import (
        DEFAULT_BATCH_BYTES,
        DEFAULT_BATCH_SIZE,
        PAUSED,
        ConnectionClosed,
        HelloReceived,
        MembersReceived,
        PeerDone,
        SessionComplete,
        SessionState,
        SyncSession,
        VersionSource,
        VersionsReceived,
        batches,
        error_frame_for,
        outgoing,
    )

__all__ = [
    "INVITE_ID_BYTES",
    "SECRET_BYTES",
    "InviteCode",
    "MistypedCode",
    "decode_code",
    "encode_code",
    "verifier_for",
    # bundle
    "BUNDLE_FORMAT",
    "BUNDLE_MAGIC",
    "BundleEnd",
    "BundleEvent",
    "BundleHeader",
    "BundleMemberRecord",
    "BundleReader",
    "BundleVersion",
    "BundleWriter",
    "SenderKeyLookup",
    # clock
    "MAX_COUNTER",
    "Dot",
    "HybridLogicalClock",
    "Ordering",
    "VersionVector",
    "hlc_pack",
    "hlc_unpack",
    "next_counter",
    # codec
    "Reader",
    "Writer",
    "decode_whole",
    # errors
    "BadSignature",
    "BundleError",
    "DecodeError",
    "DecryptionFailed",
    "LocalProtocolError",
    "NotAMember",
    "PeerBusy",
    "PeerError",
    "ProtocolError",
    "RemoteProtocolError",
    "StoreError",
    "TransportError",
    "TrustError",
    "UnknownEpochKey",
    "UnsupportedFormat",
    "WrongGroup",
    # frames
    "DEFAULT_MAX_FRAME_SIZE",
    "END_OF_STREAM",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "FLAG_ORDERED",
    "Done",
    "EndOfStream",
    "ErrorCode",
    "ErrorFrame",
    "Frame",
    "FrameDecoder",
    "Hello",
    "JoinAccept",
    "JoinReject",
    "JoinRequest",
    "Members",
    "NeedData",
    "VersionsBatch",
    "decode_frame",
    "encode_frame",
    "frame_name",
    "join_proof",
    # ids
    "MAX_INCARNATION",
    "device_id_for",
    "device_id_of",
    "device_of",
    "format_device_id",
    "is_device_id",
    "is_replica_id",
    "normalize_device_id",
    "raw_public_key",
    "replica_id",
    # join
    "JOIN_MAX_FRAME_SIZE",
    "JoinAccepted",
    "JoinEvent",
    "JoinRejected",
    "JoinRequested",
    "JoinRole",
    "JoinSession",
    "JoinState",
    # membership
    "KeyEpochRecord",
    "MemberInfo",
    "MemberRecord",
    "Membership",
    "MembershipRecord",
    "RevocationRecord",
    "UnknownSigner",
    "decode_membership_record",
    "found_group",
    "group_id_for",
    # merge
    "MemoryState",
    "VersionMeta",
    "VersionState",
    "context_for_new_version",
    "state_of",
    "winner_key",
    # kinds
    "DEFAULT_KIND",
    "KINDS",
    "valid_kind",
    # records
    "FORMAT_VERSION",
    "EMBEDDING_ROOM",
    "MAX_BODY_BYTES",
    "MAX_EMBEDDER_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_TAGS",
    "check_body_size",
    "MAX_CONTENT_BYTES",
    "MAX_EMBEDDING_BYTES",
    "MAX_FIELD_BYTES",
    "MemoryBody",
    "VersionHeader",
    "canonical_json",
    # sealing
    "AuthorKeyLookup",
    "MemberKeyLookup",
    "SealedVersion",
    "open_version",
    "unseal_version",
    "stored_embedding",
    "seal",
    "verify_version",
    "SignatureJob",
    "signature_job",
    "signature_valid",
    "bad_signature",
    # session
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_SIZE",
    "PAUSED",
    "ConnectionClosed",
    "HelloReceived",
    "MembersReceived",
    "PeerDone",
    "SessionComplete",
    "SessionState",
    "SyncSession",
    "VersionSource",
    "VersionsReceived",
    "batches",
    "error_frame_for",
    "outgoing",
    "RelayError",
    "RELAY_FORMAT",
    "RELAY_STATE_MAGIC",
    "RelayName",
    "RelayState",
    "SegmentRef",
    "check_segment",
    "group_folder",
    "next_sequence",
    "open_state",
    "parse_relay_name",
    "prunable",
    "relay_coverage",
    "seal_state",
    "segment_name",
    "state_name",
    "temporary_name",
    "vector_meet",
]


_SOURCES: dict[str, str] = {}


def _module(name: str) -> ModuleType:
    """The submodule ``name``, imported by a plain import statement (which the no-I/O checks read)."""
    if name == "bundle":
        from . import bundle

        return bundle
    if name == "clock":
        from . import clock

        return clock
    if name == "codec":
        from . import codec

        return codec
    if name == "errors":
        from . import errors

        return errors
    if name == "frames":
        from . import frames

        return frames
    if name == "kinds":
        from . import kinds

        return kinds
    if name == "ids":
        from . import ids

        return ids
    if name == "invite":
        from . import invite

        return invite
    if name == "join":
        from . import join

        return join
    if name == "membership":
        from . import membership

        return membership
    if name == "merge":
        from . import merge

        return merge
    if name == "records":
        from . import records

        return records
    if name == "relay":
        from . import relay

        return relay
    if name == "sealing":
        from . import sealing

        return sealing
    if name == "session":
        from . import session

        return session
    raise AttributeError(f"protocol has no module {name!r}")


def _source_of(name: str) -> str | None:
    """The module (relative to this package) that the import list above takes ``name`` from."""
    if not _SOURCES:
        import ast

        # The import system hands over this module's source (as it does to show a traceback):
        # the import list above is then the one table, for type checkers and for this lookup alike.
        get_source = getattr(getattr(__spec__, "loader", None), "get_source", None)
        source = get_source(__name__) if get_source is not None else None
        if source is None:  # installed without sources: every module, as the eager face did
            for module_name in _MODULES:
                for exported in getattr(_module(module_name), "__all__", ()):
                    _SOURCES.setdefault(exported, module_name)
        else:
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                    for alias in node.names:
                        _SOURCES[alias.asname or alias.name] = node.module
    return _SOURCES.get(name)


_MODULES = ("bundle", "clock", "codec", "errors", "frames", "ids", "invite", "join", "kinds", "membership", "merge", "records", "relay", "sealing", "session")

if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        source = _source_of(name) if name in __all__ else None
        if source is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(_module(source), name)
        globals()[name] = value  # once found, an ordinary attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})

"""peer's sync core, with no I/O: clocks, records, sealing, merge, frames, session, bundles.

Everything that travels between devices is defined here; ``peer/`` only
moves these bytes and stores them.
"""

from .clock import MAX_COUNTER, Dot, HybridLogicalClock, Ordering, VersionVector, hlc_pack, hlc_unpack, next_counter
from .codec import Reader, Writer
from .errors import (
    BadSignature,
    BundleError,
    DecodeError,
    DecryptionFailed,
    LocalProtocolError,
    NotAMember,
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
from .ids import (
    device_id_for,
    device_of,
    format_device_id,
    is_device_id,
    is_replica_id,
    normalize_device_id,
    replica_id,
)
from .merge import MemoryState, VersionMeta, VersionState, context_for_new_version, resolve, winner_key
from .records import DEFAULT_KIND, FORMAT_VERSION, KINDS, MemoryBody, VersionHeader, canonical_json, valid_kind
from .sealing import SealedVersion, open_version, seal, verify_version
from .sealing import AuthorKeyLookup, MemberKeyLookup

__all__ = [
    "MAX_COUNTER", "Dot", "HybridLogicalClock", "Ordering", "VersionVector", "hlc_pack", "hlc_unpack",
    "next_counter", "Reader", "Writer",
    "BadSignature", "BundleError", "DecodeError", "DecryptionFailed", "LocalProtocolError", "NotAMember",
    "PeerError", "ProtocolError", "RemoteProtocolError", "StoreError", "TransportError", "TrustError",
    "UnknownEpochKey", "UnsupportedFormat", "WrongGroup",
    "device_id_for", "device_of", "format_device_id", "is_device_id", "is_replica_id", "normalize_device_id",
    "replica_id",
    "MemoryState", "VersionMeta", "VersionState", "context_for_new_version", "resolve", "winner_key",
    "DEFAULT_KIND", "FORMAT_VERSION", "KINDS", "MemoryBody", "VersionHeader", "canonical_json", "valid_kind",
    "SealedVersion", "open_version", "seal", "verify_version",
    "AuthorKeyLookup", "MemberKeyLookup",
]

from .membership import (  # noqa: E402
    MemberInfo,
    MemberRecord,
    Membership,
    KeyEpochRecord,
    MembershipRecord,
    RevocationRecord,
    UnknownSigner,
    decode_membership_record,
    found_group,
    group_id_for,
)

__all__ += [
    "MemberInfo", "MemberRecord", "Membership", "KeyEpochRecord", "MembershipRecord", "RevocationRecord",
    "UnknownSigner", "decode_membership_record", "found_group", "group_id_for",
]

from .bundle import (  # noqa: E402
    BUNDLE_FORMAT,
    BundleEnd,
    BundleHeader,
    BundleMemberRecord,
    BundleReader,
    BundleVersion,
    BundleWriter,
)
from .frames import (  # noqa: E402
    DEFAULT_MAX_FRAME_SIZE,
    END_OF_STREAM,
    NEED_DATA,
    PROTOCOL_VERSION,
    Done,
    ErrorCode,
    ErrorFrame,
    Frame,
    FrameDecoder,
    Hello,
    JoinAccept,
    JoinReject,
    JoinRequest,
    Members,
    VersionsBatch,
    decode_frame,
    encode_frame,
    join_proof,
)
from .session import (  # noqa: E402
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

__all__ += [
    "BUNDLE_FORMAT", "BundleEnd", "BundleHeader", "BundleMemberRecord", "BundleReader", "BundleVersion",
    "BundleWriter",
    "DEFAULT_MAX_FRAME_SIZE", "END_OF_STREAM", "NEED_DATA", "PROTOCOL_VERSION", "Done", "ErrorCode", "ErrorFrame",
    "Frame", "FrameDecoder", "Hello", "JoinAccept", "JoinReject", "JoinRequest", "Members", "VersionsBatch",
    "decode_frame", "encode_frame", "join_proof",
    "PAUSED", "ConnectionClosed", "HelloReceived", "MembersReceived", "PeerDone", "SessionComplete", "SessionState",
    "SyncSession", "VersionSource", "VersionsReceived", "batches", "error_frame_for", "outgoing",
]

from .errors import RelayError  # noqa: E402
from .relay import (  # noqa: E402
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

__all__ += [
    "RelayError", "RELAY_FORMAT", "RELAY_STATE_MAGIC", "RelayName", "RelayState", "SegmentRef", "check_segment",
    "group_folder", "next_sequence", "open_state", "parse_relay_name", "prunable", "relay_coverage", "seal_state",
    "segment_name", "state_name", "temporary_name", "vector_meet",
]

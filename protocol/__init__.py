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
from .sealing import AuthorKeyLookup, MemberKeyLookup, SealedVersion, open_version, seal, verify_version

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

from .bundle import BUNDLE_MAGIC, BundleEvent, SenderKeyLookup  # noqa: E402
from .errors import PeerBusy  # noqa: E402
from .frames import EndOfStream, NeedData, frame_name  # noqa: E402
from .ids import MAX_INCARNATION  # noqa: E402
from .invite import (  # noqa: E402
    INVITE_ID_BYTES,
    SECRET_BYTES,
    InviteCode,
    MistypedCode,
    decode_code,
    encode_code,
    verifier_for,
)
from .records import MAX_CONTENT_BYTES, MAX_EMBEDDING_BYTES, MAX_FIELD_BYTES  # noqa: E402
from .session import DEFAULT_BATCH_BYTES, DEFAULT_BATCH_SIZE  # noqa: E402

__all__ += [
    "INVITE_ID_BYTES", "SECRET_BYTES", "InviteCode", "MistypedCode", "decode_code", "encode_code", "verifier_for",
    "BUNDLE_MAGIC", "BundleEvent", "SenderKeyLookup", "PeerBusy", "EndOfStream", "NeedData", "frame_name",
    "MAX_INCARNATION", "MAX_CONTENT_BYTES", "MAX_EMBEDDING_BYTES", "MAX_FIELD_BYTES",
    "DEFAULT_BATCH_BYTES", "DEFAULT_BATCH_SIZE",
]

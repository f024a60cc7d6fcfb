"""Sealing and opening versions: round trip, a pinned vector, every error, every flipped bit."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid

import nacl.bindings
import nacl.exceptions
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    BadSignature,
    DecodeError,
    DecryptionFailed,
    Dot,
    LocalProtocolError,
    MemoryBody,
    NotAMember,
    PeerError,
    SealedVersion,
    UnknownEpochKey,
    UnsupportedFormat,
    VersionHeader,
    WrongGroup,
    device_id_of,
    open_version,
    raw_public_key,
    seal,
    sealing,
    stored_embedding,
    unseal_version,
    verify_version,
)
from protocol.codec import Writer, encode_uvarint

from .test_records import bodies

AUTHOR = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
AUTHOR_ID = device_id_of(AUTHOR)
OTHER_ID = device_id_of(OTHER)
GROUP = bytes.fromhex("00112233445566778899aabbccddeeff")
GROUP_KEY = bytes(range(100, 132))
NONCE = bytes(range(12))
MEMORY = "6f1d2c3b-4a59-4687-9a0b-1c2d3e4f5a6b"


def members(*keys: Ed25519PrivateKey) -> dict[str, Ed25519PublicKey]:
    out = {}
    for k in keys:
        pub = k.public_key()
        out[device_id_of(pub)] = pub
    return out


MEMBERS = members(AUTHOR, OTHER)


def header(**changes: object) -> VersionHeader:
    h = VersionHeader(
        group_id=GROUP,
        epoch=3,
        memory_id=MEMORY,
        dot=Dot(AUTHOR_ID, 1_700_000_000_000),
        context=(Dot(OTHER_ID, 1_699_999_999_000),),
        hlc=1_700_000_000_000 << 16 | 2,
    )
    return dataclasses.replace(h, **changes)  # type: ignore[arg-type]


BODY = MemoryBody(
    content="Use trio nurseries for every long-lived task.",
    kind="decision",
    project="peer",
    tags=("style", "trio"),
    metadata='{"source":"review"}',
    created_at=1_700_000_000.0,
    updated_at=1_700_000_000.5,
    importance=0.75,
)


def sealed_vector() -> SealedVersion:
    return seal(header(), BODY, signing_key=AUTHOR, group_key=GROUP_KEY, nonce=NONCE)


def open_(sealed: SealedVersion, keys: dict[int, bytes] | None = None) -> MemoryBody:
    return open_version(
        sealed, group_id=GROUP, group_keys={3: GROUP_KEY} if keys is None else keys, member_key=MEMBERS.get
    )


def test_round_trip() -> None:
    sealed = seal(header(), BODY, signing_key=AUTHOR, group_key=GROUP_KEY)
    again = SealedVersion.decode(sealed.encode())
    assert again == sealed
    assert again.header == header()
    assert open_(again) == BODY


def test_two_seals_of_one_version_differ_only_by_nonce() -> None:
    a = seal(header(), BODY, signing_key=AUTHOR, group_key=GROUP_KEY)
    b = seal(header(), BODY, signing_key=AUTHOR, group_key=GROUP_KEY)
    assert a.box != b.box and open_(a) == open_(b) == BODY


def test_pinned_vector_follows_the_documented_layout() -> None:
    """Rebuild the sealed bytes from the primitives, as the module docstring describes them."""
    sealed = sealed_vector()
    header_bytes = header().encode()
    info = Writer().raw(b"peer/v1/version-key\x00").str(MEMORY)
    Dot(AUTHOR_ID, 1_700_000_000_000).encode_into(info)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=GROUP, info=info.getvalue()).derive(GROUP_KEY)
    box = NONCE + ChaCha20Poly1305(key).encrypt(NONCE, BODY.encode(), header_bytes)
    signed = Writer().raw(b"peer/v1/sealed-version\x00").bytes(header_bytes).bytes(box).getvalue()
    signature = AUTHOR.sign(signed)
    expected = encode_uvarint(len(header_bytes)) + header_bytes + encode_uvarint(len(box)) + box + signature
    assert sealed.encode() == expected


def test_pinned_vector_bytes() -> None:
    """The exact encoding: changing it breaks every stored and in-flight version, so it must be deliberate."""
    data = sealed_vector().encode()
    assert len(data) == 325
    assert hashlib.sha256(data).hexdigest() == PINNED_SHA256
    assert data[:24].hex() == PINNED_PREFIX


PINNED_SHA256 = "58304740fa48b745dfe88aabb4adbfaad15276c43353707eede388fc3f486de5"
PINNED_PREFIX = "6e0100112233445566778899aabbccddeeff036f1d2c3b4a"


def test_wrong_group() -> None:
    with pytest.raises(WrongGroup, match="another group|not this group"):
        open_version(sealed_vector(), group_id=bytes(16), group_keys={3: GROUP_KEY}, member_key=MEMBERS.get)


def test_unknown_epoch() -> None:
    with pytest.raises(UnknownEpochKey, match="epoch 3"):
        open_(sealed_vector(), {0: GROUP_KEY, 2: GROUP_KEY})


def test_wrong_key() -> None:
    with pytest.raises(DecryptionFailed):
        open_(sealed_vector(), {3: bytes(32)})


def test_bad_signature() -> None:
    sealed = sealed_vector()
    forged = dataclasses.replace(sealed, signature=OTHER.sign(b"something else"))
    with pytest.raises(BadSignature, match="tampered"):
        open_(forged)
    # Signed by a member, but not by the author the dot names.
    resigned = dataclasses.replace(
        sealed,
        signature=OTHER.sign(
            Writer().raw(b"peer/v1/sealed-version\x00").bytes(sealed.header_bytes).bytes(sealed.box).getvalue()
        ),
    )
    with pytest.raises(BadSignature):
        verify_version(resigned, group_id=GROUP, member_key=MEMBERS.get)


def test_author_not_a_member() -> None:
    with pytest.raises(NotAMember, match="not a member"):
        open_version(sealed_vector(), group_id=GROUP, group_keys={3: GROUP_KEY}, member_key=members(OTHER).get)


def test_unsupported_format() -> None:
    data = bytearray(sealed_vector().encode())
    assert data[1] == 1  # length of the header, then its format version
    data[1] = 2
    with pytest.raises(UnsupportedFormat, match="upgrade"):
        SealedVersion.decode(bytes(data))


def test_seal_refuses_to_author_someone_elses_dot() -> None:
    with pytest.raises(ValueError):
        seal(header(dot=Dot(OTHER_ID, 5), context=()), BODY, signing_key=AUTHOR, group_key=GROUP_KEY)


def test_every_flipped_bit_is_detected() -> None:
    small = seal(header(context=()), MemoryBody("x"), signing_key=AUTHOR, group_key=GROUP_KEY, nonce=NONCE).encode()
    assert len(small) < 256
    for i in range(len(small)):
        for bit in range(8):
            bad = bytearray(small)
            bad[i] ^= 1 << bit
            try:
                open_(SealedVersion.decode(bytes(bad)))
            except PeerError as e:
                assert isinstance(e, (DecodeError, UnsupportedFormat, WrongGroup, NotAMember, BadSignature))
                continue
            raise AssertionError(f"flipping bit {bit} of byte {i} went unnoticed")


def test_truncations_and_trailing_bytes_are_refused() -> None:
    data = sealed_vector().encode()
    for n in range(len(data)):
        with pytest.raises(DecodeError):
            SealedVersion.decode(data[:n])
    with pytest.raises(DecodeError):
        SealedVersion.decode(data + b"\x00")


def test_memory_ids_are_canonical() -> None:
    with pytest.raises(LocalProtocolError):
        header(memory_id=MEMORY.upper())
    assert str(uuid.UUID(MEMORY)) == MEMORY


# The receive path's shortcuts give the same answers as the library calls they replace -----------


@settings(max_examples=100)
@given(
    group_key=st.binary(min_size=32, max_size=32),
    group_id=st.binary(min_size=16, max_size=16),
    memory=st.uuids(),
    counter=st.integers(1, 2**40),
)
def test_version_key_is_cryptography_hkdf(group_key: bytes, group_id: bytes, memory: uuid.UUID, counter: int) -> None:
    header = VersionHeader(group_id, 0, str(memory), Dot(device_id_of(AUTHOR), counter), (), 1 << 16)
    info = Writer().raw(sealing._KDF_LABEL).str(header.memory_id)
    header.dot.encode_into(info)
    expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=group_id, info=info.getvalue()).derive(group_key)
    assert sealing._version_key(group_key, header) == expected


def test_signature_check_accepts_exactly_what_openssl_accepts() -> None:
    key = Ed25519PrivateKey.generate()
    message = b"a sealed version's signed bytes"
    signature = key.sign(message)
    assert sealing.signature_valid(raw_public_key(key), signature, message)
    assert not sealing.signature_valid(raw_public_key(key), signature, message + b"!")
    assert not sealing.signature_valid(raw_public_key(key), bytes(64), message)
    # A small-order key with a matching trivial signature: OpenSSL accepts it and
    # libsodium refuses it. Every device accepted it before libsodium was asked
    # first, so it must still be accepted (or devices would disagree on what to store).
    identity = bytes([1]) + bytes(31)
    weak = Ed25519PublicKey.from_public_bytes(identity)
    weak.verify(identity + bytes(32), message)  # OpenSSL's answer
    with pytest.raises(nacl.exceptions.BadSignatureError):
        nacl.bindings.crypto_sign_open(identity + bytes(32) + message, identity)
    assert sealing.signature_valid(identity, identity + bytes(32), message)


@settings(max_examples=200)
@given(body=bodies(), context=st.booleans(), epoch=st.integers(0, 2**32 - 1))
def test_stored_embedding_is_the_unsealed_bodys(body: MemoryBody, context: bool, epoch: int) -> None:
    """Building the index reads each vector this way: the same bytes as decrypting and decoding it all."""
    sealed = seal(
        header(epoch=epoch, context=header().context if context else ()), body, signing_key=AUTHOR, group_key=GROUP_KEY
    )
    keys = {epoch: GROUP_KEY}
    assert stored_embedding(sealed.encode(), keys) == unseal_version(sealed, keys).embedding == body.embedding


def test_stored_embedding_refuses_what_unsealing_refuses() -> None:
    body = dataclasses.replace(BODY, embedder="minilm-l6-v2-int8", embedding=bytes(range(16)))
    data = seal(header(), body, signing_key=AUTHOR, group_key=GROUP_KEY).encode()
    assert stored_embedding(data, {3: GROUP_KEY}) == bytes(range(16))
    with pytest.raises(UnknownEpochKey, match="epoch 3"):
        stored_embedding(data, {2: GROUP_KEY})
    with pytest.raises(DecryptionFailed):
        stored_embedding(data, {3: bytes(32)})
    for n in range(len(data)):
        with pytest.raises((DecodeError, DecryptionFailed)):
            stored_embedding(data[:n], {3: GROUP_KEY})
    with pytest.raises(DecodeError):
        stored_embedding(data + b"\x00", {3: GROUP_KEY})
    unsupported = bytearray(data)
    unsupported[1] = 2
    with pytest.raises(UnsupportedFormat):
        stored_embedding(bytes(unsupported), {3: GROUP_KEY})


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_stored_embedding_of_garbage_is_a_clean_error(data: bytes) -> None:
    with pytest.raises((DecodeError, DecryptionFailed, UnknownEpochKey, UnsupportedFormat)):
        stored_embedding(data, {3: GROUP_KEY})


@settings(max_examples=200)
@given(body=bodies())
def test_embedding_in_skips_to_the_last_field(body: MemoryBody) -> None:
    plaintext = body.encode()
    assert MemoryBody.embedding_in(plaintext) == body.embedding
    with pytest.raises(DecodeError):
        MemoryBody.embedding_in(plaintext + b"\x00")
    if plaintext:
        with pytest.raises(DecodeError):
            MemoryBody.embedding_in(plaintext[:-1])

"""Bundles: air-gapped sync through a file (``peer bundle export`` / ``peer bundle import``).

Theory of operation. A bundle is a sync session written to a file (the
format is :mod:`protocol.bundle`, docs/protocol.md section 11). Export
writes, for one recipient, every version that recipient lacks according
to what this device last learned of it: the vector it showed in the last
complete sync, or the sender vector of the last bundle it sent (the
store's ``peers`` table). That *known vector* becomes the bundle's base.
Every bundle carries its sender's vector, so a bundle carried back
acknowledges the ones before it and the next export starts from there;
with nothing new, a bundle still carries that acknowledgement. Every
bundle also carries the whole member list (a few hundred bytes per
member): the recipient may not know the devices whose versions it holds,
and revocations must travel too.

Import trusts nothing before the reader has seen the end of the file.
Pass one reads and verifies the whole file (entry count, digest, the
sender's signature, nothing after it) without touching the store. Pass
two reads it again (or takes what pass one parsed, for a small file) and
verifies and decrypts every new version (:meth:`Store.check_received`,
against the membership the bundle's own records would make), still
without writing, and checks the end again (the file may have changed in
between). So a bad bundle, or a bad version anywhere in one, changes
nothing. Only then does the import write, in short transactions, so that
other writers (``peer add``, the agent's syncs) are never kept waiting
past their busy timeout by a long import (hostile report B9): the
membership records, then one transaction per batch of versions
(:meth:`Store.store_checked`), then the vectors: the sender's vector is
merged only if the bundle *completes* what this device held (not
partial, and this device's vector dominated the base when the import
began), and recorded as what the sender holds, replacing what was known
of it (merging would keep claiming what a sender restored from a backup
has lost, and the next bundle to it would leave that out; an old bundle
imported again only makes the next one carry more than needed). A write
that fails part way (a full disk) keeps the batches written, which are
verified versions, as an interrupted sync does, and says so
(:class:`PartlyImported`); the vectors are not learnt, so importing the
bundle again brings the rest. The opened versions of a bundle up to
:data:`KEEP_CHECKED_BYTES` are held in memory between checking and
writing; a bigger one keeps them in an unnamed temporary file in the home
(:class:`_Spill`), read back batch by batch as it is written, so memory
stays bounded and no version is parsed or decrypted twice.

A bundle with nothing new (a replay, an acknowledgement) is not
read again: its header, verified by pass one, is all there is to use.
Versions the store's vector covers are not verified again either: the
store holds them.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, BinaryIO, Final, TypeVar

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from peer.signatures import WORKER_BATCH, SignatureWorker
from peer.store import BULK_WRITE_BYTES, BULK_WRITE_VERSIONS, ApplyResult, CheckedBatch, NowMs, Store, wall_clock_ms
from protocol import (
    BUNDLE_MAGIC,
    END_OF_STREAM,
    NEED_DATA,
    BundleEnd,
    BundleError,
    BundleEvent,
    BundleHeader,
    BundleMemberRecord,
    BundleReader,
    BundleVersion,
    BundleWriter,
    Dot,
    MemberInfo,
    Membership,
    MemoryBody,
    NotAMember,
    PeerError,
    SealedVersion,
    SenderKeyLookup,
    StoreError,
    VersionHeader,
    VersionVector,
    format_device_id,
    normalize_device_id,
)

from .files import atomic_output_async
from .units import human_size

__all__ = [
    "BundleSource",
    "BundleScan",
    "Trust",
    "Written",
    "ExportResult",
    "ImportResult",
    "Progress",
    "atomic_output",
    "choose_recipient",
    "write_bundle",
    "scan_bundle",
    "apply_bundle",
    "export_bundle",
    "import_bundle",
]

log = logging.getLogger(__name__)

#: ``progress(stage, done, total)``: stage "exporting" and "applying" count
#: versions, "verifying" counts bytes.
Progress = Callable[[str, int, int], None]

READ_CHUNK: Final = 1 << 20
#: Versions read from the store per query while exporting.
EXPORT_SLICE: Final = 1000
#: Bytes gathered before one write to the file.
WRITE_CHUNK: Final = 1 << 20
#: Versions (and bytes) per Store.apply call while importing.
APPLY_BATCH: Final = 500
APPLY_BATCH_BYTES: Final = 4 << 20
#: Pass one keeps the versions it parsed, up to this many bytes of them, so
#: pass two does not read and parse the same bytes again (parsing was a
#: quarter of an import's CPU). Larger bundles are read twice, as before.
KEEP_PARSED_BYTES: Final = 64 << 20
#: Bundles up to this size keep their opened (verified, decrypted) versions in
#: memory between checking and writing, about three times the file; bigger ones
#: keep them in a temporary file (_Spill).
KEEP_CHECKED_BYTES: Final = 128 << 20
#: Batches of a bundle checked at once (their signatures by the helper processes,
#: or else in a worker thread, while the file is read on).
CHECKS_AT_ONCE: Final = 2
#: Bundles from this size on start a signature helper process before pass one.
HELPER_BYTES: Final = 512 << 10
#: Exports restart when the member list changed meanwhile; this many tries.
_EXPORT_ATTEMPTS: Final = 3
_DIGEST_AND_SIGNATURE: Final = 96


# Where bundles live ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BundleSource:
    """Where a bundle's bytes are: a whole file, or a slice of one (a backup holds its bundle at an offset)."""

    path: Path
    offset: int = 0
    length: int | None = None  # None: to the end of the file

    def size(self) -> int:
        if self.length is not None:
            return self.length
        try:
            return max(0, os.stat(self.path).st_size - self.offset)
        except OSError as e:
            raise PeerError(f"cannot read {self.path}: {e.strerror or e}") from e


def _check_replaceable(path: Path, magic: bytes, what: str) -> None:
    """Refuse to overwrite anything but an earlier file of the same kind (or an empty one)."""
    try:
        if not path.exists():
            return
        if not path.is_file():
            raise PeerError(f"{path} exists and is not a file; give another file name")
        with path.open("rb") as f:
            start = f.read(len(magic))
    except OSError as e:
        raise PeerError(f"cannot write {path}: {e.strerror or e}") from e
    if start and start != magic:
        raise PeerError(f"{path} exists and is not a peer {what}; give another file name (it was left as it is)")


@asynccontextmanager
async def atomic_output(
    path: Path, *, magic: bytes, what: str, tmp_name: str | None = None
) -> AsyncIterator[BinaryIO]:
    """A file written under a temporary name (mode 0600) and renamed to ``path`` only once complete.

    An existing ``path`` is replaced only if it is an earlier file of the
    same kind (it starts with ``magic``). Whatever fails, the temporary
    file is removed and ``path`` is left as it was; an OSError (a full
    disk) becomes a PeerError naming the file.
    """
    path = Path(path)
    _check_replaceable(path, magic, what)
    async with atomic_output_async(path, tmp_name=tmp_name) as f:
        yield f


# Writing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Written:
    """What :func:`write_bundle` wrote."""

    header: BundleHeader
    members: int
    versions: int
    size: int  # bytes
    digest: bytes  # the trailer's SHA-256 (backups bind their identity section to it)


async def _write(out: BinaryIO, data: bytes | bytearray) -> None:
    if data:
        await trio.to_thread.run_sync(out.write, bytes(data))


async def write_bundle(
    out: BinaryIO,
    store: Store,
    signing_key: Ed25519PrivateKey,
    *,
    base: VersionVector,
    recipient: str | None = None,
    project: str | None = None,
    now_ms: NowMs = wall_clock_ms,
    progress: Progress | None = None,
) -> Written:
    """Write a bundle of every version ``base`` does not cover to ``out``, from its current position.

    The vector is read before the versions (versions only get added, so
    the bundle holds at least what the vector claims), the member list
    before and after them: if it changed meanwhile, a version may be
    signed by a member the records do not include yet, so the export
    starts over.
    """
    start = out.tell()
    for _ in range(_EXPORT_ATTEMPTS):
        await store.refresh()
        records = store.membership.records()
        vector = await store.vector()
        total = await store.count_missing_for(base)
        writer = BundleWriter(
            signing_key=signing_key,
            group_id=store.group_id,
            sender_vector=vector,
            created_ms=now_ms(),
            base_vector=base,
            recipient=recipient,
            partial=project is not None,
        )
        await trio.to_thread.run_sync(out.seek, start)
        await trio.to_thread.run_sync(out.truncate)
        buffer = bytearray(writer.header())
        for record in records:
            buffer += writer.add_member_record(record)
        versions = 0
        async for batch in store.missing_for(base, EXPORT_SLICE, project=project):
            for version in batch:
                buffer += writer.add_version(version)
            versions += len(batch)
            if len(buffer) >= WRITE_CHUNK:
                await _write(out, buffer)
                buffer = bytearray()
            if progress is not None:
                progress("exporting", versions, max(total, versions))
        await store.refresh()
        if set(store.membership.records()) != set(records):
            log.info("the member list changed while the bundle was written; writing it again")
            continue
        trailer = writer.finish()
        buffer += trailer
        await _write(out, buffer)
        size = out.tell() - start
        digest = trailer[-_DIGEST_AND_SIGNATURE : -_DIGEST_AND_SIGNATURE + 32]
        return Written(writer.header_info, len(records), versions, size, digest)
    raise StoreError("the member list kept changing while the bundle was being written; try again")


def _find_member(members: Sequence[MemberInfo], text: str) -> MemberInfo:
    """The member a person means, as ``peer revoke`` reads it: its name, or a unique prefix of its id.

    The same rule as :func:`peer.pairing.find_device`, repeated here because
    importing pairing loads the SSH transport, and ``peer bundle`` opens no
    connection (start-up time matters on every command).
    """
    named = [m for m in members if m.name == text]
    prefix = normalize_device_id(text)
    matches = named or [m for m in members if prefix and m.device_id.startswith(prefix)]
    if not matches:
        raise PeerError(f"no device of this group is called or starts with {text!r}; see `peer devices`")
    if len(matches) > 1:
        raise PeerError(f"{text!r} matches {len(matches)} devices; give more of the device id (see `peer devices`)")
    return matches[0]


def choose_recipient(store: Store, device: str | None, full: bool) -> str | None:
    """The device a bundle is for: ``--for DEVICE``, else the only other member, else None with ``--all``."""
    members = store.membership.members()
    if device is not None:
        target = _find_member(members, device)
        if target.device_id == store.device_id:
            raise PeerError(f"{device!r} is this device; a bundle is for another device of the group")
        if target.revoked:
            raise PeerError(
                f"device {format_device_id(target.device_id)} ({target.name}) was revoked; it cannot import this"
                " group's bundles"
            )
        return target.device_id
    if full:
        return None
    others = [m for m in members if not m.revoked and m.device_id != store.device_id]
    if len(others) == 1:
        return others[0].device_id
    if not others:
        raise PeerError(
            "this group has no other device yet: pair one first (`peer invite --file F`), or use --all to write"
            " a full bundle"
        )
    raise PeerError(
        f"this group has {len(others)} other devices; say which one the bundle is for with --for DEVICE"
        " (see `peer devices`), or use --all for a full bundle any of them can import"
    )


@dataclass(frozen=True, slots=True)
class ExportResult:
    path: Path
    written: Written
    recipient: str | None
    known_since: float | None  # when the recipient's vector was learned (None: never, a full bundle)
    known_via: str | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        header = self.written.header
        return {
            "file": str(self.path),
            "versions": self.written.versions,
            "members": self.written.members,
            "bytes": self.written.size,
            "recipient": self.recipient,
            "full": not header.base_vector,
            "partial": header.partial,
            "nothing_new": self.written.versions == 0,
            "base": header.base_vector.as_dict(),
            "known_since": self.known_since,
            "known_via": self.known_via,
            "seconds": round(self.seconds, 3),
        }

    def describe(self) -> str:
        w = self.written
        size = human_size(w.size)
        who = f"device {format_device_id(self.recipient)}" if self.recipient else "any device of the group"
        if w.versions == 0:
            return (
                f"nothing new for {who}: wrote a small acknowledgement bundle ({size}) to {self.path};"
                " importing it there tells that device what this one holds"
            )
        what = _count(w.versions, "version")
        if w.header.partial:
            scope = " of that project (a partial bundle)"
        elif not w.header.base_vector:
            scope = " (everything this device holds)"
        else:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.known_since or 0))
            scope = f" (what it lacks since its last {self.known_via or 'sync'}, {when})"
        return f"wrote {what}{scope} and {_count(w.members, 'member record')} ({size}) to {self.path} for {who}"


def _count(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else plural or word + 's'}"


async def export_bundle(
    store: Store,
    signing_key: Ed25519PrivateKey,
    path: Path,
    *,
    device: str | None = None,
    project: str | None = None,
    full: bool = False,
    now_ms: NowMs = wall_clock_ms,
    progress: Progress | None = None,
) -> ExportResult:
    """``peer bundle export``: write what the recipient lacks (everything with ``full``) to ``path``."""
    started = time.monotonic()
    await store.refresh()
    if project is not None and not project:
        raise PeerError("--project needs a project name")
    recipient = choose_recipient(store, device, full)
    known = None if full or recipient is None else await store.known_peer(recipient)
    base = VersionVector() if known is None else known.vector
    async with atomic_output(Path(path), magic=BUNDLE_MAGIC, what="bundle") as out:
        written = await write_bundle(
            out, store, signing_key, base=base, recipient=recipient, project=project, now_ms=now_ms, progress=progress
        )
    log.info("wrote a bundle of %d versions (%d bytes) to %s", written.versions, written.size, path)
    return ExportResult(
        Path(path),
        written,
        recipient,
        None if known is None else known.seen_at,
        None if known is None else known.via,
        time.monotonic() - started,
    )


# Reading -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trust:
    """What a bundle is checked against: the group, the membership records already trusted, this device."""

    group_id: bytes
    records: tuple[bytes, ...]
    device_id: str | None  # refuses bundles made for another device; None before a device exists

    @classmethod
    def of(cls, store: Store) -> Trust:
        return cls(store.group_id, tuple(store.membership.records()), store.device_id)

    def sender_lookup(self, records: Sequence[bytes]) -> SenderKeyLookup:
        """The sender's key among the members known here plus the records the bundle itself carried.

        Called once, at the trailer: by then ``records`` holds every record of
        the bundle. Records that do not verify from what is trusted are
        ignored (they chain to this group's founder, or they count for nothing).
        """

        def lookup(sender: str) -> Ed25519PublicKey | None:
            membership = Membership(self.group_id)
            membership.add_all(self.records)
            membership.add_all(records)
            return membership.member_key(sender)

        return lookup


@dataclass(frozen=True, slots=True)
class BundleScan:
    """A bundle verified whole (pass one): its header, its records, the dots of its versions."""

    header: BundleHeader
    records: tuple[bytes, ...]
    dots: tuple[Dot, ...]
    size: int  # bytes
    #: The trust pass one verified against, and the versions it parsed (None above KEEP_PARSED_BYTES).
    trust: Trust | None = None
    kept: tuple[SealedVersion, ...] | None = None

    @property
    def versions(self) -> int:
        return len(self.dots)

    @property
    def members(self) -> int:
        return len(self.records)


def _events(source: BundleSource, reader: BundleReader) -> Iterator[tuple[BundleEvent, int]]:
    """Feed the file to ``reader``; yields each event with the bytes read so far, up to BundleEnd."""
    try:
        f = open(source.path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as e:
        raise PeerError(f"cannot read {source.path}: {e.strerror or e}") from e
    with f:
        left = source.length
        done = 0
        try:
            f.seek(source.offset)
        except OSError as e:
            raise PeerError(f"cannot read {source.path}: {e.strerror or e}") from e
        while True:
            event = reader.next_event()
            if event is NEED_DATA:
                want = READ_CHUNK if left is None else min(READ_CHUNK, left)
                try:
                    data = f.read(want) if want else b""
                except OSError as e:
                    raise PeerError(f"cannot read {source.path}: {e.strerror or e}") from e
                if left is not None:
                    left -= len(data)
                done += len(data)
                reader.receive_data(data)  # b"" marks the end of the file
                continue
            if event is END_OF_STREAM:
                return
            yield event, done


def _check_sender(header: BundleHeader, trust: Trust, allow_own: bool) -> None:
    if header.sender == trust.device_id and not allow_own:
        raise BundleError(
            "this bundle was made by this device; carry it to the device it is for and import it there"
        )


async def scan_bundle(
    source: BundleSource,
    trust: Trust,
    *,
    allow_own: bool = False,
    progress: Progress | None = None,
    checks: _Checks | None = None,
) -> BundleScan:
    """Pass one: read and verify the whole bundle, change nothing. Raises what :class:`BundleReader` raises.

    With ``checks`` (running), every version read is also handed to them, so
    that the versions are opened while the rest of the file is read.
    """
    records: list[bytes] = []
    dots: list[Dot] = []
    reader = BundleReader(group_id=trust.group_id, sender_key=trust.sender_lookup(records), device_id=trust.device_id)
    total = source.size()
    end: BundleEnd | None = None
    done = 0
    sender: str | None = None
    kept: list[SealedVersion] | None = []
    kept_bytes = 0
    try:
        for count, (event, done) in enumerate(_events(source, reader)):
            if isinstance(event, BundleHeader):
                _check_sender(event, trust, allow_own)
                sender = event.sender
            elif isinstance(event, BundleMemberRecord):
                records.append(event.record)
                if checks is not None:
                    checks.records.append(event.record)
            elif isinstance(event, BundleVersion):
                dots.append(event.version.header.dot)
                if checks is not None:
                    await checks.add(event.version)
                if kept is not None:
                    kept_bytes += len(event.version.header_bytes) + len(event.version.box)
                    kept = kept if kept_bytes <= KEEP_PARSED_BYTES else None
                    if kept is not None:
                        kept.append(event.version)
            elif isinstance(event, BundleEnd):
                end = event
            if count % 512 == 0:
                if progress is not None:
                    progress("verifying", done, total)
                await trio.sleep(0)
    except NotAMember as e:
        revoked = _revocation_text(trust, sender)
        if revoked is None:
            raise
        raise NotAMember(f"this bundle was made by {revoked}; nothing more from it is accepted") from e
    assert end is not None  # _events stops only after BundleEnd, or raises
    if progress is not None:
        progress("verifying", total, total)
    return BundleScan(end.header, tuple(records), tuple(dots), done, trust, None if kept is None else tuple(kept))


def _pass_two(source: BundleSource, reader: BundleReader, scan: BundleScan, trust: Trust) -> Iterator[BundleEvent]:
    """Pass two's events: what pass one kept, when it verified them against this same trust; else a second read."""
    if scan.kept is None or scan.trust != trust:
        for event, _ in _events(source, reader):
            yield event
        return
    # The very objects pass one parsed and verified (the trailer's signature over all of them included).
    yield scan.header
    for record in scan.records:
        yield BundleMemberRecord(record)
    for version in scan.kept:
        yield BundleVersion(version)


def _revocation_text(trust: Trust, device_id: str | None) -> str | None:
    """``device X, which is not a member any more: it was revoked ... by Y on DATE``, if this device knows it."""
    if device_id is None:
        return None
    membership = Membership(trust.group_id)
    membership.add_all(trust.records)
    found = membership.revocation_of(device_id)
    if found is None:
        return None
    info = membership.member_info(found[0])
    by = f"{info.name} ({format_device_id(found[0])})" if info else format_device_id(found[0])
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(found[1] / 1000))
    return f"device {format_device_id(device_id)}, which is not a member any more: it was revoked from this group by {by} on {when}"


def _changed() -> BundleError:
    return BundleError("the bundle changed while it was being imported (is something still writing it?)")


class _Checks:
    """A bundle's new versions, checked batch by batch as they are read, before anything is written.

    Batches are checked CHECKS_AT_ONCE at a time (:meth:`Store.check_received`:
    the signatures by the helper processes, or else in a worker thread) while
    the caller goes on reading the file, against the membership the bundle's
    records would make (they come before the versions). The first failure
    cancels the rest and is raised as it is by :meth:`finish`.
    """

    def __init__(
        self,
        store: Store,
        start_vector: VersionVector,
        records: list[bytes],
        *,
        keep: bool,
        signatures: SignatureWorker | None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.start_vector = start_vector
        self.records = records  # filled by the reader as the records go by
        self.signatures = signatures
        self._leased = AsyncExitStack()  # the store's helpers, when none were given and a batch is big
        self.progress = progress
        #: With ``keep``, the checked batches in order; without, they go to :attr:`spill` as they are checked.
        self.checked: list[CheckedBatch | None] = []
        self.spill = None if keep else _Spill(store.path.parent)
        self.count = 0  # versions checked
        self.held = 0  # versions the store held already (not checked again)
        self.failure: list[BaseException] = []
        self._batch: list[SealedVersion] = []
        self._bytes = 0
        self._in_flight = trio.Semaphore(CHECKS_AT_ONCE)
        self._nursery: trio.Nursery | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[_Checks]:
        """Checks run inside; on the way out every check has ended (and the helpers this started too)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    yield self
                    await self._submit()
                except Exception as e:  # raised by finish() as it is, not wrapped in the nursery's group
                    self.failure.insert(0, e)
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            await self._leased.aclose()

    async def add(self, version: SealedVersion) -> None:
        if self.start_vector.covers(version.header.dot):
            # Held already (the vector covers only what the store holds):
            # not worth verifying again. Replays cost a read, not a minute.
            self.held += 1
            return
        self._batch.append(version)
        self._bytes += len(version.header_bytes) + len(version.box)
        if len(self._batch) >= APPLY_BATCH or self._bytes >= APPLY_BATCH_BYTES:
            await self._submit()

    async def _submit(self) -> None:
        if not self._batch or self.failure:
            return
        assert self._nursery is not None
        if self.signatures is None and len(self._batch) >= WORKER_BATCH and not self.checked:
            self.signatures = await self._leased.enter_async_context(self.store.signature_pool.lease())
        await self._in_flight.acquire()
        self.checked.append(None)
        self._nursery.start_soon(self._check, len(self.checked) - 1, self._batch)
        self._batch, self._bytes = [], 0

    async def _check(self, index: int, versions: list[SealedVersion]) -> None:
        assert self._nursery is not None
        try:
            opened = await self.store.check_received(versions, records=tuple(self.records), signatures=self.signatures)
        except Exception as e:
            self.failure.append(e)
            self._nursery.cancel_scope.cancel()
            return
        finally:
            self._in_flight.release()
        if self.spill is None:
            self.checked[index] = opened
        else:
            try:
                self.spill.add(opened)
            except BundleError as e:
                self.failure.append(e)
                self._nursery.cancel_scope.cancel()
                return
        self.count += len(versions)
        if self.progress is not None:
            self.progress(self.count + self.held)

    def finish(self) -> None:
        """Raise the first failure, if any (after :meth:`running` ended)."""
        if self.failure:
            raise self.failure[0]

    def close(self) -> None:
        """Free the spill file, if any (it has no name: a crash frees it too)."""
        if self.spill is not None:
            self.spill.close()


class _Spill:
    """The checked batches of a bundle too big to hold them in memory, in a temporary file until written.

    Pass one checks and opens every version before anything is written;
    holding the opened versions of a 200 MB bundle would take about three
    times that in memory, and reading the file again to write it would
    parse and decrypt every version a second time. So each checked batch is
    pickled to an unnamed temporary file in the home (on Linux, O_TMPFILE:
    nothing is left if the process dies) and read back, batch by batch, as
    it is written. The file holds only what this process checked and wrote
    itself, with the home's permissions; what comes back is exactly what
    was checked (so a bundle changed on disk after its checks changes
    nothing). About twice the bundle's size on disk while the import runs
    (each version sealed, and opened: its text, fields and vector).
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._file: BinaryIO | None = None
        self._memberships: list[Membership] = []  # each batch's, kept in memory (one object for most)
        self._read = 0

    def _fail(self, e: OSError) -> BundleError:
        return BundleError(
            f"cannot keep the checked versions in a temporary file in {self._directory} while they are"
            f" written ({e.strerror or e}); a bundle this big needs about twice its size in free space there"
        )

    def add(self, batch: CheckedBatch) -> None:
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile(dir=self._directory)
            opened = [_flat(sealed, body) for sealed, body in batch.opened.values()]
            pickle.dump((opened, batch.rejected, batch.in_batch_duplicates), self._file, pickle.HIGHEST_PROTOCOL)
        except OSError as e:
            raise self._fail(e) from e
        self._memberships.append(batch.membership)

    def next_batch(self) -> CheckedBatch | None:
        """The next batch written to the file (the first after :meth:`rewind`), or None after the last."""
        if self._file is None or self._read >= len(self._memberships):
            return None
        try:
            flat, rejected, duplicates = pickle.load(self._file)
        except OSError as e:
            raise self._fail(e) from e
        opened = dict(_unflat(item) for item in flat)
        membership = self._memberships[self._read]
        self._read += 1
        return CheckedBatch(opened, rejected, duplicates, membership)

    def rewind(self) -> None:
        if self._file is not None:
            self._file.flush()
            self._file.seek(0)
        self._read = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# A spilled version: its fields as plain tuples, which pickle writes and reads
# in about a third of the time the objects take (each object's fields go
# through its class's checks, and pickle's generic path, otherwise). Only
# what this process checked is flattened, so nothing needs checking again.
_Flat = tuple[tuple[Any, ...], bytes, bytes, bytes, tuple[Any, ...]]
_T = TypeVar("_T")
_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in (Dot, VersionHeader, SealedVersion, MemoryBody)
}


def _values(obj: object) -> tuple[Any, ...]:
    return tuple([getattr(obj, name) for name in _FIELDS[type(obj)]])


def _rebuilt(cls: type[_T], values: Sequence[Any]) -> _T:
    """An instance of a frozen dataclass with these field values, its checks skipped (they held when flattened)."""
    obj = object.__new__(cls)
    for name, value in zip(_FIELDS[cls], values, strict=True):
        object.__setattr__(obj, name, value)
    return obj


def _flat(sealed: SealedVersion, body: MemoryBody) -> _Flat:
    h = sealed.header
    header = (h.group_id, h.epoch, h.memory_id, _values(h.dot), tuple(map(_values, h.context)), h.hlc, h.format)
    return header, sealed.header_bytes, sealed.box, sealed.signature, _values(body)


def _unflat(item: _Flat) -> tuple[Dot, tuple[SealedVersion, MemoryBody]]:
    """``(dot, (sealed, body))`` back from :func:`_flat`."""
    (group_id, epoch, memory_id, dot, context, hlc, fmt), header_bytes, box, signature, body = item
    the_dot = _rebuilt(Dot, dot)
    header = _rebuilt(
        VersionHeader, (group_id, epoch, memory_id, the_dot, tuple(_rebuilt(Dot, d) for d in context), hlc, fmt)
    )
    return the_dot, (_rebuilt(SealedVersion, (header, header_bytes, box, signature)), _rebuilt(MemoryBody, body))


async def apply_bundle(
    store: Store,
    source: BundleSource,
    scan: BundleScan,
    *,
    allow_own: bool = False,
    progress: Progress | None = None,
    signatures: SignatureWorker | None = None,
    checks: _Checks | None = None,
) -> tuple[ApplyResult, int, bool]:
    """Pass two: verify and open every new version, then write records, versions and vectors in short transactions.

    Returns (what applying the versions did, new membership records,
    whether the sender's vector was merged). Raises, with nothing
    changed, if anything fails before the writing starts (a bad version,
    the file's end); a failure while writing (a full disk) raises
    :class:`PartlyImported`, which says what was kept.

    ``checks`` are those :func:`import_bundle` made while pass one read the
    file (every new version opened, kept in memory or in a spill file): then
    this only writes (the caller closes them).
    """
    await store.refresh()
    trust = Trust.of(store)
    if set(scan.records) <= set(trust.records):
        async with store.transaction():
            start_vector = await store.vector()
            if all(start_vector.covers(dot) for dot in scan.dots):
                # Nothing to read again (a replay, an acknowledgement): pass one
                # verified the header, which is all that is left to use.
                return ApplyResult(duplicates=scan.versions), 0, await _learn(store, scan.header, start_vector)
    if checks is not None:
        return await _apply_checked(store, scan, checks, progress)
    records: list[bytes] = []

    def checked_progress(done: int) -> None:
        if progress is not None:
            progress("applying", done // 2, scan.versions)

    checks = _Checks(
        store,
        await store.vector(),
        records,
        keep=scan.size <= KEEP_CHECKED_BYTES,
        signatures=signatures,
        progress=checked_progress,
    )
    try:
        reader = BundleReader(group_id=trust.group_id, sender_key=trust.sender_lookup(records), device_id=trust.device_id)
        async with checks.running():
            for event in _pass_two(source, reader, scan, trust):
                if isinstance(event, BundleHeader):
                    _check_sender(event, trust, allow_own)
                    if event != scan.header:
                        raise _changed()
                elif isinstance(event, BundleMemberRecord):
                    records.append(event.record)
                elif isinstance(event, BundleVersion):
                    await checks.add(event.version)
                elif isinstance(event, BundleEnd):
                    if (event.members, event.versions) != (scan.members, scan.versions):
                        raise _changed()
        return await _apply_checked(store, scan, checks, progress)
    finally:
        checks.close()


async def _apply_checked(
    store: Store, scan: BundleScan, checks: _Checks, progress: Progress | None
) -> tuple[ApplyResult, int, bool]:
    """Every version of the bundle checked: write the records, then the versions batch by batch, then learn its vector."""
    header = scan.header
    checks.finish()
    start_vector, held = checks.start_vector, checks.held

    # Everything verified: now short write transactions, the records first.
    async with store.transaction():
        new_records = await store.apply_membership(checks.records)
    result = ApplyResult(duplicates=held)
    try:
        async with store.bulk_writes():
            if checks.spill is None:
                for group in _joined(part for part in checks.checked if part is not None):
                    result = await _write_checked(store, group, result, checks, scan, progress)
            else:
                result = await _write_spilled(store, checks.spill, result, checks, scan, progress)
    except PeerError as e:
        raise PartlyImported(
            f"{e.message}; {result.added:,} new {'version was' if result.added == 1 else 'versions were'} imported"
            " before that and are kept (all verified); import the bundle again for the rest"
        ) from e
    if progress is not None:
        progress("applying", scan.versions, scan.versions)
    async with store.transaction():
        merged = await _learn(store, header, start_vector)
    return result, len(new_records), merged


def _joined(parts: Iterable[CheckedBatch]) -> Iterator[CheckedBatch]:
    """Consecutive checked batches joined up to BULK_WRITE_VERSIONS and BULK_WRITE_BYTES, a transaction each."""
    group: list[CheckedBatch] = []
    size = held = 0
    for part in parts:
        versions, sealed = part.versions, part.sealed_bytes
        if group and (
            part.membership is not group[0].membership
            or size + versions > BULK_WRITE_VERSIONS
            or held + sealed > BULK_WRITE_BYTES
        ):
            yield CheckedBatch.joined(group)
            group, size, held = [], 0, 0
        group.append(part)
        size, held = size + versions, held + sealed
    if group:
        yield CheckedBatch.joined(group)


async def _write_checked(
    store: Store, part: CheckedBatch, result: ApplyResult, checks: _Checks, scan: BundleScan, progress: Progress | None
) -> ApplyResult:
    result += await store.store_checked(part)
    if progress is not None:
        progress("applying", (checks.count + checks.held + result.added + result.duplicates) // 2, scan.versions)
    return result


async def _write_spilled(
    store: Store, spill: _Spill, result: ApplyResult, checks: _Checks, scan: BundleScan, progress: Progress | None
) -> ApplyResult:
    """Write the spilled batches in order, joined as :func:`_joined` joins them; the next group is read back meanwhile."""
    spill.rewind()
    groups = _joined(iter(spill.next_batch, None))  # advanced in a worker thread, one call at a time
    following = await trio.to_thread.run_sync(next, groups, None)
    failed: list[Exception] = []
    while following is not None and not failed:
        part = following

        async def read_next() -> None:
            nonlocal following
            try:
                following = await trio.to_thread.run_sync(next, groups, None)
            except Exception as e:  # carried out by hand: trio would wrap it in an ExceptionGroup
                failed.append(e)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_next)
            try:
                result = await _write_checked(store, part, result, checks, scan, progress)
            except Exception as e:
                failed.append(e)
                nursery.cancel_scope.cancel()
    if failed:
        raise failed[0]
    return result


class PartlyImported(BundleError):
    """A bundle import failed part way through writing verified versions; those written are kept."""


async def _learn(store: Store, header: BundleHeader, start_vector: VersionVector) -> bool:
    """Inside the import's transaction: this device's vector (if the bundle completes it), the sender's vector."""
    merged = header.completes(start_vector)
    if merged:
        await store.merge_vector(header.sender_vector)
    if header.sender != store.device_id:
        # What the sender held when it made the bundle, replacing what was known: a
        # restored sender holds less than before, and must be sent what it lost.
        await store.remember_peer(header.sender, header.sender_vector, via="bundle", replace=True)
    return merged


async def _count_new(store: Store, dots: Sequence[Dot]) -> int:
    """How many of these versions the store does not hold (what an import would add, at most)."""
    vector = await store.vector()
    candidates = list(dict.fromkeys(d for d in dots if not vector.covers(d)))
    held: set[Dot] = set()
    for at in range(0, len(candidates), 1000):
        held.update(s.header.dot for s in await store.sealed(candidates[at : at + 1000]))
    return len(candidates) - len(held)


@dataclass(frozen=True, slots=True)
class ImportResult:
    path: Path
    header: BundleHeader
    versions: int  # in the bundle
    members: int  # membership records in the bundle
    added: int  # versions new to this store (dry run: that would be)
    new_members: int  # membership records new to this store
    duplicates: int
    rejected: int  # versions of revoked devices, dropped
    memories: int  # memories whose versions grew
    vector_merged: bool
    dry_run: bool
    size: int  # bytes
    seconds: float
    warnings: tuple[str, ...] = field(default=())

    @property
    def nothing_new(self) -> bool:
        return self.added == 0 and self.new_members == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "sender": self.header.sender,
            "created_at": self.header.created_ms / 1000,
            "versions": self.versions,
            "members": self.members,
            "added": self.added,
            "new_members": self.new_members,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "memories": self.memories,
            "vector_merged": self.vector_merged,
            "nothing_new": self.nothing_new,
            "partial": self.header.partial,
            "dry_run": self.dry_run,
            "bytes": self.size,
            "seconds": round(self.seconds, 3),
        }

    def describe(self) -> str:
        sender = format_device_id(self.header.sender)
        made = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.header.created_ms / 1000))
        source = f"{self.path} (from device {sender}, made {made})"
        if self.dry_run:
            if self.nothing_new:
                return f"{source} is intact; importing it would add nothing new (nothing was changed)"
            return (
                f"{source} is intact; importing it would add {self.added:,} of its"
                f" {_count(self.versions, 'version')} and {_count(self.new_members, 'member record')}"
                " (nothing was changed)"
            )
        if self.nothing_new and not self.versions:
            text = f"nothing new in {source}: it holds no versions, only what that device holds (noted here)"
        elif self.nothing_new:
            held = "its only version" if self.versions == 1 else f"all {self.versions:,} of its versions"
            text = f"nothing new in {source}: this device already holds {held}"
        else:
            text = (
                f"imported {_count(self.added, 'new version')} ({_count(self.memories, 'memory', 'memories')})"
                f" and {_count(self.new_members, 'member record')} from {source}"
            )
        if self.rejected:
            text += f"; dropped {self.rejected} versions of revoked devices"
        if not self.vector_merged and not self.header.partial:
            text += (
                f"\nnote: device {sender} made this bundle for a state this device does not fully hold;"
                f" ask it for a full bundle (`peer bundle export --all`) to be sure nothing is missing"
            )
        return text


def _unchanged(error: PeerError, what: str) -> PeerError:
    """The same error, saying that nothing changed."""
    try:
        return type(error)(f"{error.message}; {what}")
    except TypeError:  # pragma: no cover - every PeerError takes a message
        return error


async def import_bundle(
    store: Store,
    source: BundleSource | Path,
    *,
    dry_run: bool = False,
    allow_own: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """``peer bundle import``: verify the whole file, then apply it in short transactions (or only report, dry run)."""
    if not isinstance(source, BundleSource):
        source = BundleSource(Path(source))
    await store.refresh()
    # A big import's signatures are checked by the store's helper processes,
    # leased now so that they are ready (their imports done) when the versions come.
    try:
        big = not dry_run and source.size() >= HELPER_BYTES
    except PeerError:
        big = False  # pass one says what is wrong with the file
    async with store.signature_pool.lease() if big else nullcontext() as helper:
        return await _import(store, source, dry_run=dry_run, allow_own=allow_own, progress=progress, helper=helper)


async def _import(
    store: Store,
    source: BundleSource,
    *,
    dry_run: bool,
    allow_own: bool,
    progress: Progress | None,
    helper: SignatureWorker | None,
) -> ImportResult:
    started = time.monotonic()
    try:
        checks: _Checks | None = None
        if dry_run:
            scan = await scan_bundle(source, Trust.of(store), allow_own=allow_own, progress=progress)
        else:
            # Versions are opened while pass one reads on (nothing is written
            # before the whole file and every version in it checked out). A
            # bundle too big to hold them keeps them in a temporary file (_Spill).
            keep = source.size() <= KEEP_CHECKED_BYTES
            checks = _Checks(store, await store.vector(), [], keep=keep, signatures=helper)
            async with checks.running():
                scan = await scan_bundle(source, Trust.of(store), allow_own=allow_own, progress=progress, checks=checks)
            checks.finish()
        if dry_run:
            known = set(store.membership.records())
            return ImportResult(
                path=source.path,
                header=scan.header,
                versions=scan.versions,
                members=scan.members,
                added=await _count_new(store, scan.dots),
                new_members=sum(1 for r in set(scan.records) if r not in known),
                duplicates=0,
                rejected=0,
                memories=0,
                vector_merged=scan.header.completes(await store.vector()),
                dry_run=True,
                size=scan.size,
                seconds=time.monotonic() - started,
            )
        result, new_members, merged = await apply_bundle(
            store, source, scan, allow_own=allow_own, progress=progress, signatures=helper, checks=checks
        )
    except PartlyImported:
        raise  # it says what was kept
    except PeerError as e:
        raise _unchanged(e, "nothing was changed" if dry_run else "nothing was imported") from None
    finally:
        if checks is not None:
            checks.close()
    return ImportResult(
        path=source.path,
        header=scan.header,
        versions=scan.versions,
        members=scan.members,
        added=result.added,
        new_members=new_members,
        duplicates=result.duplicates,
        rejected=len(result.rejected),
        memories=result.memories,
        vector_merged=merged,
        dry_run=False,
        size=scan.size,
        seconds=time.monotonic() - started,
    )


# Command bodies (the CLI parses and prints; these do the work) ----------------------------

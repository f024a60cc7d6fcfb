"""The join exchange over SSH: a new device proves the code and receives the group.

Anyone may open the join subsystem (the invite is checked inside it), so the
inviter's side spends little on a stranger: a JOIN_REQUEST frame may be
:data:`JOIN_REQUEST_MAX_FRAME` bytes (a real one is under 1 KB), the whole
exchange must be done within :data:`JOIN_EXCHANGE_S`, and at most
:data:`MAX_CONCURRENT_JOINS` run at once (each opens ``invites.db``); the SSH
layer adds one join channel per login and a short login (:mod:`peer.aio.ssh`).
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from peer.aio import JOIN_SUBSYSTEM, ssh_transport
from peer.errors import InviteRefused
from peer.home import Home, Identity
from peer.store import NowMs, Store, wall_clock_ms
from peer.sync import Syncer, parse_address
from protocol import (
    END_OF_STREAM,
    NEED_DATA,
    EndOfStream,
    ErrorCode,
    InviteCode,
    JoinAccept,
    JoinAccepted,
    JoinEvent,
    JoinReject,
    JoinRejected,
    JoinRequest,
    JoinRequested,
    JoinRole,
    JoinSession,
    LocalProtocolError,
    Membership,
    NeedData,
    NotAMember,
    PeerError,
    RemoteProtocolError,
    TrustError,
    decode_code,
    device_id_for,
    format_device_id,
)

from .invites import _CLOCK_SLACK_MS, REFUSAL_MESSAGE, Invites
from .results import JoinResult, expires_text

log = logging.getLogger(__name__)



# The join exchange ----------------------------------------------------------------


class ByteStream(Protocol):
    """The part of a transport stream (an SSH channel, :class:`peer.aio.ByteStream`) pairing uses."""

    async def send_all(self, data: bytes) -> None: ...

    async def receive_some(self, max_bytes: int = 65536) -> bytes: ...


class JoinStream(ByteStream, Protocol):
    """A server-side join channel: it knows which key the client authenticated with."""

    @property
    def peer_device_id(self) -> str: ...


#: What the inviter accepts from anyone: a JOIN_REQUEST is under 1 KB (protocol.md section 12).
JOIN_REQUEST_MAX_FRAME = 8 << 10
#: How long one join channel may take, from opening to the answer.
JOIN_EXCHANGE_S = 30.0
#: Join exchanges served at once; more are refused at once (a real join is rare and quick).
MAX_CONCURRENT_JOINS = 8


async def _next_join_event(stream: ByteStream, join: JoinSession) -> JoinEvent:
    """Feed the stream's bytes to ``join`` until it has an event (the rules are in :mod:`protocol.join`)."""
    while True:
        event = join.next_event()
        if event is NEED_DATA:
            join.receive_data(bytes(await stream.receive_some(65536)))
        elif event is END_OF_STREAM:
            raise RemoteProtocolError("the other device closed the connection during pairing")
        else:
            assert not isinstance(event, (NeedData, EndOfStream))
            return event


async def accept_join(
    request: JoinRequest,
    *,
    store: Store,
    identity: Identity,
    invites: Invites,
    client_device_id: str,
    now_ms: NowMs = wall_clock_ms,
) -> JoinAccept | JoinReject:
    """The inviter's decision on one JOIN_REQUEST (no I/O but the two local databases).

    ``client_device_id`` is the device whose key authenticated the SSH
    connection: the request must be for that same key, so that nobody can
    join with a key whose private half it does not hold.
    """
    refused = JoinReject(ErrorCode.INVITE_REFUSED, REFUSAL_MESSAGE)
    joiner = device_id_for(request.device_key)
    if not hmac.compare_digest(joiner, client_device_id):
        log.warning(
            "refused a join: the request is for device %s but the connection authenticated as %s",
            format_device_id(joiner),
            format_device_id(client_device_id),
        )
        return refused
    if not await invites.claim(request, now_ms=now_ms()):
        log.warning(
            "refused a join by device %s: unknown, used or expired invite, or a wrong code", format_device_id(joiner)
        )
        return refused
    await store.refresh()
    # A copy: the store's own membership may be in use by a verifying batch.
    membership = Membership(store.group_id)
    membership.add_all(store.membership.records())
    try:
        records = membership.add_member(
            identity.signing_key,
            identity.kex_key,
            device_public_key=request.device_key,
            kex_public_key=request.exchange_key,
            name=request.name,
            now_ms=now_ms(),
            epoch_keys=store.group_keys,
        )
    except (LocalProtocolError, NotAMember) as e:
        # A revoked device, or an inviter revoked since it made the invite.
        log.warning("refused a join by device %s after claiming its invite: %s", format_device_id(joiner), e)
        return refused
    await store.apply_membership(records, strict=True)
    log.info("admitted device %s (%r) to the group", format_device_id(joiner), request.name)
    return JoinAccept(group_id=store.group_id, records=tuple(store.membership.records()))


async def serve_join(
    stream: JoinStream,
    *,
    store: Store,
    identity: Identity,
    invites: Invites,
    now_ms: NowMs = wall_clock_ms,
) -> bool:
    """The inviter's side of one join channel; True when a device was admitted."""
    join = JoinSession(JoinRole.INVITER, peer_device_id=stream.peer_device_id, max_frame_size=JOIN_REQUEST_MAX_FRAME)
    try:
        event = await _next_join_event(stream, join)
    except (RemoteProtocolError, TrustError) as e:
        # A bad opening, garbage, an early close, or a request for another key than the one that logged in:
        # the same refusal as a wrong code, so that nothing is learnt from it.
        log.warning("refused a join attempt by device %s: %s", format_device_id(stream.peer_device_id), e)
        await stream.send_all(join.refuse(REFUSAL_MESSAGE))
        return False
    assert isinstance(event, JoinRequested)
    answer = await accept_join(
        event.request,
        store=store,
        identity=identity,
        invites=invites,
        client_device_id=stream.peer_device_id,
        now_ms=now_ms,
    )
    await stream.send_all(join.send(answer))
    return isinstance(answer, JoinAccept)


def join_handler(home: Home, store: Store, *, now_ms: NowMs = wall_clock_ms) -> Callable[[JoinStream], Awaitable[None]]:
    """The handler for the transport's join subsystem: ``serve(handlers={JOIN_SUBSYSTEM: join_handler(home, store)})``.

    Each join opens ``invites.db`` for its own short transaction, so that
    invites made by ``peer invite`` (another process) while the agent runs
    are seen at once.
    """
    identity = home.identity()
    running = 0

    async def handle(stream: JoinStream) -> None:
        nonlocal running
        who = format_device_id(stream.peer_device_id)
        if running >= MAX_CONCURRENT_JOINS:
            log.warning("refused a join attempt by device %s: %d joins are already running", who, running)
            with trio.move_on_after(JOIN_EXCHANGE_S):
                await stream.send_all(JoinSession(JoinRole.INVITER).refuse(REFUSAL_MESSAGE))
            return
        running += 1
        try:
            with trio.move_on_after(JOIN_EXCHANGE_S) as scope:
                async with await Invites.open(home) as invites:
                    await serve_join(stream, store=store, identity=identity, invites=invites, now_ms=now_ms)
            if scope.cancelled_caught:
                log.warning("closed the join channel of device %s: no request within %g s", who, JOIN_EXCHANGE_S)
        finally:
            running -= 1

    return handle


def prepare_join(identity: Identity, code: InviteCode, name: str) -> JoinRequest:
    return JoinRequest.create(
        secret=code.verifier,
        invite_id=code.invite_id,
        device_key=identity.public_key,
        exchange_key=identity.kex_public_key,
        name=name,
    )


async def request_join(stream: ByteStream, request: JoinRequest) -> JoinAccept:
    """The joiner's side: send the request, return the JOIN_ACCEPT or raise InviteRefused."""
    join = JoinSession(JoinRole.JOINER)
    await stream.send_all(join.send(request))
    event = await _next_join_event(stream, join)  # an ERROR frame, a wrong frame or an early close raise
    if isinstance(event, JoinAccepted):
        return event.accept
    assert isinstance(event, JoinRejected)
    if event.code == ErrorCode.INVITE_REFUSED:
        raise InviteRefused(REFUSAL_MESSAGE)
    raise TrustError(f"the inviter refused to pair: {event.message}")


def admitted_membership(
    identity: Identity, code: InviteCode, accept: JoinAccept
) -> tuple[list[bytes], dict[int, bytes]]:
    """Check a JOIN_ACCEPT: (records, epoch keys) to create the store with, or TrustError."""
    membership = Membership(accept.group_id)
    membership.add_all(accept.records)
    if not membership.is_member(identity.device_id):
        raise TrustError("the inviter's answer does not admit this device; ask for a new invite")
    if not membership.is_member(code.device_id):
        raise TrustError("the inviter is not a member of the group it invited to; ask for a new invite")
    keys = membership.epoch_keys(identity.device_id, identity.kex_key)
    if membership.current_epoch not in keys:
        raise TrustError("the inviter did not send the group key; ask for a new invite")
    return membership.records(), keys


async def join(
    home: Home,
    code_text: str,
    *,
    host: str | None = None,
    name: str,
    now_ms: NowMs = wall_clock_ms,
    connect_timeout: float | None = None,
    first_sync: bool = True,
) -> JoinResult:
    """``peer join``: pair this device with the inviter's group and create its store, then sync with the inviter."""
    code = decode_code(code_text)
    address = host or code.address
    if not address:
        raise PeerError("this invite code carries no address; give the inviter's with --host HOST[:PORT]")
    target_host, target_port = parse_address(address)
    if code.expires_at * 1000 < now_ms() - _CLOCK_SLACK_MS:
        raise InviteRefused(
            f"this invite code expired {expires_text(code.expires_at, now_ms() / 1000)} by this device's clock;"
            " ask for a new one (or, if this device's clock is wrong, set it right)"
        )
    await home.check_joinable(inviter=code.device_id)
    identity = home.ensure_identity()
    if identity.device_id == code.device_id:
        raise PeerError("this invite was made on this device; run `peer join` on the device that should join")
    kwargs: dict[str, Any] = {} if connect_timeout is None else {"connect_timeout": connect_timeout}
    stream = await ssh_transport().connect(
        target_host,
        target_port,
        identity.signing_key,
        trust_host=lambda device_id: device_id == code.device_id,
        subsystem=JOIN_SUBSYSTEM,
        **kwargs,
    )
    try:
        accept = await request_join(stream, prepare_join(identity, code, name))
    finally:
        await stream.aclose()
    records, keys = admitted_membership(identity, code, accept)
    await home.create_store(
        group_id=accept.group_id, records=records, group_keys=keys, now_ms=now_ms, replace_empty=True
    )
    log.info("joined group %s through device %s", accept.group_id.hex(), code.device_id)
    address = f"{target_host}:{target_port}"
    result = JoinResult(
        group_id=accept.group_id.hex(),
        device_id=identity.device_id,
        inviter=code.device_id,
        members=sum(1 for m in _membership_of(accept).members() if not m.revoked),
        address=address,
    )
    if not first_sync:
        return result
    # The store exists whatever happens now: a failed first sync is
    # reported, not raised, and `peer sync` (or the agent) catches up.
    async with await home.open_store(now_ms=now_ms) as store:
        try:
            summary = await Syncer(store, identity.signing_key, **kwargs).sync_with(target_host, target_port)
        except PeerError as e:
            log.warning("joined, but the first sync with %s failed: %s", address, e)
            return dataclasses.replace(result, sync_error=e.message)
    return dataclasses.replace(result, sync=summary)


def _membership_of(accept: JoinAccept) -> Membership:
    membership = Membership(accept.group_id)
    membership.add_all(accept.records)
    return membership

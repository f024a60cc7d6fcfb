"""The group's devices: who is a member, and revoking one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from peer.store import NowMs, Store, wall_clock_ms
from protocol import (
    MemberInfo,
    PeerError,
    format_device_id,
    normalize_device_id,
)

log = logging.getLogger(__name__)



# Members ----------------------------------------------------------------------------


def _member_json(info: MemberInfo, this_device: str, revocation: tuple[str, int] | None = None) -> dict[str, Any]:
    return {
        "device_id": info.device_id,
        "display_id": format_device_id(info.device_id),
        "name": info.name,
        "added_by": info.added_by,
        "added_at": info.added_at_ms / 1000,
        "founder": info.founder,
        "revoked": info.revoked,
        "revoked_by": revocation[0] if revocation else None,
        "revoked_at": revocation[1] / 1000 if revocation else None,
        "this_device": info.device_id == this_device,
    }


async def devices(store: Store) -> list[dict[str, Any]]:
    """``peer devices``: current members and revoked devices."""
    await store.refresh()
    membership = store.membership
    return [_member_json(m, store.device_id, membership.revocation_of(m.device_id)) for m in membership.members()]


def find_device(members: Sequence[MemberInfo], text: str) -> MemberInfo:
    """The member a person means: a unique device id prefix (any case, dashes allowed) or its name."""
    named = [m for m in members if m.name == text]
    if len(named) == 1:
        return named[0]
    prefix = normalize_device_id(text)
    matches = [m for m in members if prefix and m.device_id.startswith(prefix)] if not named else named
    if not matches:
        raise PeerError(f"no device of this group is called or starts with {text!r}; see `peer devices`")
    if len(matches) > 1:
        raise PeerError(f"{text!r} matches {len(matches)} devices; give more of the device id (see `peer devices`)")
    return matches[0]


async def revoke(store: Store, device: str, *, now_ms: NowMs = wall_clock_ms) -> dict[str, Any]:
    """``peer revoke``: revoke a member and move the group to a new key epoch it does not get.

    :meth:`Store.revoke` writes the records (with the cutoff of what the
    store holds from that device) in one transaction; the other members
    learn of it at their next sync.
    """
    await store.refresh()
    target = find_device(store.membership.members(), device)
    if target.revoked:
        raise PeerError(f"device {format_device_id(target.device_id)} ({target.name}) is already revoked")
    records = await store.revoke(target.device_id, now_ms=now_ms())
    epoch = store.membership.current_epoch
    log.info("revoked device %s; the group key moved to epoch %d", target.device_id, epoch)
    return {"device_id": target.device_id, "name": target.name, "epoch": epoch, "records": len(records)}

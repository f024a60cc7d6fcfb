"""The group's devices: who is a member, and revoking one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from peer.store import NowMs, Store, wall_clock_ms
from peer.units import local_minute
from protocol import (
    MemberInfo,
    PeerError,
    format_device_id,
    normalize_device_id,
)

log = logging.getLogger(__name__)


# Members ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """One device of the group as ``peer devices`` shows it."""

    device_id: str
    name: str
    added_by: str
    added_at: float  # Unix seconds
    founder: bool
    revoked: bool
    this_device: bool
    revoked_by: str | None = None  # the member that revoked it
    revoked_at: float | None = None  # Unix seconds

    @property
    def display_id(self) -> str:
        return format_device_id(self.device_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "display_id": self.display_id,
            "name": self.name,
            "added_by": self.added_by,
            "added_at": self.added_at,
            "founder": self.founder,
            "revoked": self.revoked,
            "revoked_by": self.revoked_by,
            "revoked_at": self.revoked_at,
            "this_device": self.this_device,
        }


@dataclass(frozen=True, slots=True)
class MemberList:
    """``peer devices``: current members and revoked devices, in the membership's order."""

    members: tuple[Member, ...]

    def __iter__(self) -> Iterator[Member]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def to_json(self) -> list[dict[str, Any]]:
        return [m.to_json() for m in self.members]

    def describe(self) -> str:
        names = {m.device_id: m.name for m in self.members}
        lines = []
        for m in self.members:
            mark = "*" if m.this_device else " "
            stamp = m.added_at
            if m.revoked:
                by = m.revoked_by
                state = f"revoked by {names.get(by, by[:8])}" if by else "revoked"
                stamp = m.revoked_at or stamp  # when it was revoked, not when it was added
            elif m.founder:
                state = "founder"
            else:
                state = f"added by {names.get(m.added_by, m.added_by[:8])}"
            lines.append(f"{mark} {m.display_id}  {m.name:<16}  {state:<22}  {local_minute(stamp)}")
        return "\n".join(lines)


def _member(info: MemberInfo, this_device: str, revocation: tuple[str, int] | None = None) -> Member:
    return Member(
        device_id=info.device_id,
        name=info.name,
        added_by=info.added_by,
        added_at=info.added_at_ms / 1000,
        founder=info.founder,
        revoked=info.revoked,
        this_device=info.device_id == this_device,
        revoked_by=revocation[0] if revocation else None,
        revoked_at=revocation[1] / 1000 if revocation else None,
    )


async def devices(store: Store) -> MemberList:
    """``peer devices``: current members and revoked devices."""
    await store.refresh()
    membership = store.membership
    return MemberList(
        tuple(_member(m, store.device_id, membership.revocation_of(m.device_id)) for m in membership.members())
    )


@dataclass(frozen=True, slots=True)
class RevokeResult:
    """``peer revoke``: the device revoked and the key epoch the group moved to."""

    device_id: str
    name: str
    epoch: int
    records: int  # membership records written

    def to_json(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "name": self.name, "epoch": self.epoch, "records": self.records}

    def describe(self) -> str:
        return (
            f"revoked {format_device_id(self.device_id)} ({self.name}); the group key moved to epoch"
            f" {self.epoch}. Other devices learn of it at their next sync."
        )


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


async def revoke(store: Store, device: str, *, now_ms: NowMs = wall_clock_ms) -> RevokeResult:
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
    return RevokeResult(target.device_id, target.name, epoch, len(records))

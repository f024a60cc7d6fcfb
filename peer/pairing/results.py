"""What ``peer invite`` and ``peer join`` return: the JSON they print and the text a person reads."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from protocol import InviteCode, format_device_id

if TYPE_CHECKING:
    from peer.sync import SyncSummary

__all__ = ["InviteResult", "JoinResult", "expires_text"]


def expires_text(expires_at: int, now: float | None = None) -> str:
    """``in 15 min`` / ``at 2026-11-22 05:30 UTC`` / ``3 min ago``, for the person reading an invite."""
    left = expires_at - (time.time() if now is None else now)
    if left < 0:
        return f"{duration_text(-left * 1000)} ago"
    if left < 3600:
        return f"in {round(left / 60)} min"
    return time.strftime("at %Y-%m-%d %H:%M UTC", time.gmtime(expires_at))


def duration_text(ms: float) -> str:
    """``12 min``, ``3 h``, ``2 days``: a length of time in milliseconds, rounded for a person."""
    minutes = max(1, round(ms / 60_000))
    if minutes <= 90:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{round(minutes / 60)} h"
    return f"{round(minutes / 1440)} days"


@dataclass(frozen=True, slots=True)
class InviteResult:
    """A new invite: the code to show, and for an air-gapped invite the file and the device it admitted."""

    text: str  # the code as a person types it
    code: InviteCode
    file: str | None = None  # ``peer invite --file``: where the sealed identity was written, as given
    new_device_id: str | None = None  # ``peer invite --file``: the device admitted for that file

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.text, "device_id": self.code.device_id, "expires_at": self.code.expires_at}
        if self.file is not None:
            out.update(file=self.file, new_device_id=self.new_device_id)
        else:
            out["address"] = self.code.address
        return out

    def describe(self) -> str:
        text = self.text
        if self.file is not None:
            return (
                f"{text}\n\n"
                f"Carry {self.file} to the new device and run there:  peer join {text} --file {self.file}\n"
                f"Keep the code apart from the file. Device {format_device_id(self.new_device_id or '')} is a member"
                " already; if the file is never used, revoke it."
            )
        address = self.code.address
        return (
            f"{text}\n\n"
            f"On the new device run:  peer join {text}\n"
            f"The code works once and expires {expires_text(self.code.expires_at)}."
            f" `peer agent` must be running here{' at ' + address if address else ''}."
        )


@dataclass(frozen=True, slots=True)
class JoinResult:
    """This device joined a group: through whom, how big the group is, and how the first sync went.

    ``address`` is None for a join with an invite file (no network); a
    network join has ``sync`` (the first sync ran), ``sync_error`` (it
    failed; the store exists anyway) or neither (it was not asked for).
    """

    group_id: str  # hex
    device_id: str  # this device
    inviter: str
    members: int  # current (not revoked) members
    address: str | None = None
    sync: SyncSummary | None = None
    sync_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"group_id": self.group_id, "device_id": self.device_id, "inviter": self.inviter}
        if self.address is not None:
            out["address"] = self.address
        out["members"] = self.members
        if self.sync_error is not None:
            out["sync_error"] = self.sync_error
        if self.sync is not None:
            out["sync"] = self.sync.to_json()
        return out

    def describe(self) -> str:
        text = (
            f"joined group {self.group_id} through device {format_device_id(self.inviter)}"
            f" ({self.members} members)\nthis device: {format_device_id(self.device_id)}"
        )
        if self.sync is not None:
            text += f"\nfirst sync: {self.sync.received} versions received"
        elif self.sync_error is not None:
            text += f"\nthe first sync failed ({self.sync_error}); run `peer sync {self.address}`"
        elif self.address is None:
            text += (
                "\nnow bring the memories over: `peer bundle export FILE` on the inviter, `peer bundle import FILE`"
                " here (and bundles back the other way), or `peer sync HOST` once both devices share a network"
            )
        return text

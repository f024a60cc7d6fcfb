"""``peer status``: the agent and the group's other devices, read from another process.

Two sources, joined by device id: the store (every member, and for each
device that ever synced or sent a bundle, its vector as of then, hence
exactly how many versions it lacks from this store) and the running
agent's ``agent.json`` (addresses it found, its last attempt and its
result). Without a running agent the store's half is still shown. Each
relay (``peer relay list``) is shown from what the home remembers of the
last exchange with it, with what each device lacks counted now.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from peer.home import Home
from peer.relay import relay_status
from peer.sync.status_file import read_status
from peer.units import plural
from protocol import VersionVector, format_device_id

__all__ = ["PeerStatus", "StatusReport", "status_report"]


def _ago(timestamp: float | None, now: float) -> str:
    if timestamp is None:
        return "never"
    seconds = max(0.0, now - timestamp)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """Another device as ``peer status`` shows it: what the store knows of it and what the agent saw.

    A device the agent found but that never said who it is has no
    ``device_id`` and is named by its addresses.
    """

    device_id: str | None
    name: str
    member: bool  # a current member (not revoked)
    revoked: bool
    addresses: tuple[str, ...]
    source: str | None  # "config" or "mdns": where the agent learned the addresses
    present: bool  # still announced on the LAN
    last_sync: float | None  # Unix seconds
    via: str | None  # "sync" or "bundle": how this store last heard of it
    last_attempt: float | None
    last_result: str | None
    failures: int
    lacks: int | None  # versions of this store it lacks; None when it never synced
    ahead: bool  # it holds versions this store lacks

    def to_json(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "name": self.name,
            "member": self.member,
            "revoked": self.revoked,
            "addresses": list(self.addresses),
            "source": self.source,
            "present": self.present,
            "last_sync": self.last_sync,
            "via": self.via,
            "last_attempt": self.last_attempt,
            "last_result": self.last_result,
            "failures": self.failures,
            "lacks": self.lacks,
            "ahead": self.ahead,
        }


@dataclass(frozen=True, slots=True)
class StatusReport:
    device_id: str
    agent: dict[str, Any] | None  # the running agent's status file as it wrote it, or None
    peers: tuple[PeerStatus, ...]
    #: Each relay as the home remembers its last exchange, with what each device lacks counted now.
    relays: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "agent": self.agent,
            "peers": [p.to_json() for p in self.peers],
            "relays": list(self.relays),
        }

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        lines = [f"device {format_device_id(self.device_id)}"]
        if self.agent is None:
            lines.append("agent: not running (start it with `peer agent`)")
        else:
            discovery = "mDNS on " + (", ".join(self.agent["interfaces"]) or "every interface") if self.agent["discovery"] else "mDNS off"
            lines.append(
                f"agent: running (pid {self.agent['pid']}), listening on {self.agent['listen']}, {discovery},"
                f" up since {_ago(self.agent['started_at'], now)}"
            )
        if not self.peers:
            lines.append("no other devices in this group yet (`peer invite` on this one, `peer join` on the other)")
        for p in self.peers:
            name = f"{p.name} ({format_device_id(p.device_id)})" if p.device_id else p.name
            flags = " [revoked]" if p.revoked else ""
            lines.append(f"{name}{flags}")
            if p.addresses:
                if p.source == "config":
                    state = "configured"
                else:
                    state = "on the LAN" if p.present else "gone from the LAN"
                lines.append(f"  at {', '.join(p.addresses)} ({state})")
            lines.append(f"  last sync: {_ago(p.last_sync, now)}" + (f" (by {p.via})" if p.via else ""))
            if p.last_result:
                lines.append(f"  last attempt: {_ago(p.last_attempt, now)}: {p.last_result}")
            if p.revoked:
                lines.append("  revoked: no longer synced with")
            elif p.lacks is None:
                lines.append("  lacks: unknown (never synced)")
            else:
                lines.append(f"  lacks: {plural(p.lacks, 'version')} of this device's store" + (
                    "; it has versions this device lacks" if p.ahead else ""))
        for r in self.relays:
            if r["reachable"] is None:
                state = "not exchanged with yet"
            elif r["reachable"]:
                state = f"reachable ({_ago(r['last_exchange'], now)})"
            else:
                state = f"unreachable ({_ago(r['last_exchange'], now)}): {r['error']}"
            lines.append(f"relay {r['name']} ({r['url']}): {state}")
            if r["last_exchange"] is not None:
                held = "?" if r["bytes_held"] is None else f"{r['bytes_held']:,} bytes"
                lines.append(f"  last read {_ago(r['last_read'], now)}, last write {_ago(r['last_write'], now)},"
                             f" holds {held}")
            for device_id, d in sorted(r["devices"].items()):
                lines.append(f"  {format_device_id(device_id)} lacks {d['lacks']:,} versions of this device's store"
                             " (as its last state record there says)")
            lines += [f"  warning: {w}" for w in r["problems"]]
        return "\n".join(lines)


async def status_report(home: Home) -> StatusReport:
    """``peer status``: this device's store joined with the running agent's status file, by device id."""
    agent = read_status(home)
    async with await home.open_store() as store:
        vector = await store.vector()
        known = {k.device_id: k for k in await store.known_peers()}
        members = {m.device_id: m for m in store.membership.members()}
        by_agent: dict[str, dict[str, Any]] = {}
        unnamed: list[dict[str, Any]] = []
        for p in (agent or {}).get("peers", []):
            if p.get("device_id"):
                by_agent[p["device_id"]] = p
            else:
                unnamed.append(p)
        peers: list[PeerStatus] = []
        for device_id in sorted(set(members) | set(known) | set(by_agent), key=lambda d: (
            members[d].name if d in members else "~", d)):
            if device_id == store.device_id:
                continue
            member = members.get(device_id)
            revoked = bool(member and member.revoked)
            seen = known.get(device_id)
            live = by_agent.get(device_id, {})
            peers.append(PeerStatus(
                device_id=device_id,
                name=member.name if member else "(not a member)",
                member=member is not None and not member.revoked,
                revoked=bool(member and member.revoked),
                addresses=tuple(live.get("addresses", [])),
                source=live.get("source"),
                present=bool(live.get("present")),
                last_sync=seen.seen_at if seen else None,
                via=seen.via if seen else None,
                last_attempt=live.get("last_attempt"),
                last_result=live.get("last_result"),
                failures=live.get("failures", 0),
                # A revoked device is owed nothing: it lacks nothing it will ever get.
                lacks=await store.count_missing_for(seen.vector) if seen and not revoked else None,
                ahead=bool(seen and not revoked and vector.merge(seen.vector) != vector),
            ))
        for p in unnamed:
            peers.append(PeerStatus(
                device_id=None, name=", ".join(p["addresses"]) or "?", member=False, revoked=False,
                addresses=tuple(p["addresses"]), source=p.get("source"), present=bool(p.get("present")),
                last_sync=None, via=None,
                last_attempt=p.get("last_attempt"), last_result=p.get("last_result"),
                failures=p.get("failures", 0), lacks=None, ahead=False,
            ))
        relays = []
        for relay in relay_status(home.path):
            shown = relay.to_json()
            for device_id, remembered in relay.memory.seen.items():
                shown["devices"][device_id]["lacks"] = await store.count_missing_for(VersionVector(remembered.vector))
            relays.append(shown)
        return StatusReport(store.device_id, agent, tuple(peers), tuple(relays))

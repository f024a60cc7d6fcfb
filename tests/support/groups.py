"""Test helpers: devices of one group (and strangers) in temporary homes, without pairing over the network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peer.home import Home
from protocol.membership import Membership


async def found(path: Path, name: str = "first") -> Home:
    """A new device that founds its own group (what `peer init` does)."""
    home = Home(path)
    await home.init(name)
    return home


async def admit(inviter: Home, path: Path, name: str = "second") -> Home:
    """A new device admitted into ``inviter``'s group: the records pairing would exchange, written directly."""
    home = Home(path)
    newcomer = home.ensure_identity()
    sponsor = inviter.identity()
    async with await inviter.open_store() as store:
        membership = Membership(store.group_id)
        membership.add_all(store.membership.records())
        added = membership.add_member(
            sponsor.signing_key,
            sponsor.kex_key,
            device_public_key=newcomer.public_key,
            kex_public_key=newcomer.kex_public_key,
            name=name,
            now_ms=membership_time(),
            epoch_keys=store.group_keys,
        )
        await store.apply_membership(added)
        group_id = store.group_id
        records = membership.records()
    keys = membership.epoch_keys(newcomer.device_id, newcomer.kex_key)
    await home.create_store(group_id=group_id, records=records, group_keys=keys)
    return home


def membership_time() -> int:
    import time

    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Devices:
    """Two members of one group and a stranger (a device of another group), each in its own home."""

    first: Home
    second: Home
    stranger: Home


async def three_devices(root: Path) -> Devices:
    """``first`` founds a group and admits ``second``; ``stranger`` founds a group of its own."""
    first = await found(root / "first")
    second = await admit(first, root / "second")
    stranger = await found(root / "stranger", "stranger")
    return Devices(first, second, stranger)

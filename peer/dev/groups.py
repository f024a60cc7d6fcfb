"""Devices of one group in temporary homes, without pairing over the network (tests, benchmarks, demos).

:func:`admit` writes the membership records that ``peer invite`` / ``peer join``
would exchange, directly into both stores: what a test or a benchmark needs when
the pairing itself is not what it measures.
"""

from __future__ import annotations

import time
from pathlib import Path

from peer.home import Home
from protocol import Membership

__all__ = ["admit", "found", "membership_time"]


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
    return time.time_ns() // 1_000_000

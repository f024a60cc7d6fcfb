"""Test helpers: devices of one group (and strangers) in temporary homes, without pairing over the network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peer.dev.groups import admit, found, membership_time
from peer.home import Home

__all__ = ["Devices", "admit", "found", "membership_time", "three_devices"]


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

"""A relay that fails or is tampered with: nothing unverified applied, nothing lost, the next exchange repairs.

Each test damages the real files of a folder relay the way an engine or a
person would (deletes, truncates, flips a bit, restores an old copy, leaves
conflict copies), or makes the folder fail (gone, full, read-only), then
checks what a user would: what each store holds, and that a later exchange
converges.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from peer.home import Home
from peer.memory import Draft
from peer.relay import FolderRelay, RelaySpec, RelayUnavailable, add_relay, exchange, load_memory, save_memory
from peer.relay.store import os_error_message
from protocol import PeerError, group_folder
from tests.support.cli_runner import PEER, assert_error, env, ok_json
from tests.support.groups import admit, found

from .harness import turn, view


async def setup(tmp_path: Path) -> tuple[Home, Home, RelaySpec, Path]:
    root = tmp_path / "share"
    root.mkdir()
    a = await found(tmp_path / "a", "a")
    b = await admit(a, tmp_path / "b", "b")
    spec = add_relay(a.path, str(root), name="share")
    add_relay(b.path, str(root), name="share")
    return a, b, spec, root


async def add(home: Home, text: str) -> str:
    async with await home.open_store() as store:
        return await store.add(Draft(text))


async def contents(home: Home) -> list[str]:
    return sorted(c for _, c in (await view(home))["memories"])


def folder(root: Path, home: Home) -> Path:
    return next(root.glob("peer-*"))


def own_segments(root: Path, home: Home) -> list[Path]:
    return sorted(folder(root, home).glob(f"{home.identity().device_id}-*.seg"))


async def test_deleted_and_truncated_segments_are_written_again_by_their_author(tmp_path: Path, aio_loop: object) -> None:
    a, b, spec, root = await setup(tmp_path)
    await turn(b, spec)
    await add(a, "first note")
    await turn(a, spec)
    (segment,) = own_segments(root, a)
    segment.unlink()  # an engine, or a person, deleted it
    await turn(b, spec)
    assert await contents(b) == []
    await add(a, "second note")
    repaired = await turn(a, spec)
    assert repaired.segment_written == 2 and repaired.problems
    (segment,) = own_segments(root, a)
    with segment.open("r+b") as f:  # then the new one arrives truncated
        f.truncate(segment.stat().st_size // 2)
    await turn(b, spec)
    assert await contents(b) == []
    await turn(a, spec)
    await turn(b, spec)
    assert await contents(b) == ["first note", "second note"]


async def test_a_bit_flipped_segment_is_refused_reported_and_replaced(tmp_path: Path, aio_loop: object) -> None:
    a, b, spec, root = await setup(tmp_path)
    await turn(b, spec)
    await add(a, "precious note")
    await turn(a, spec)
    (segment,) = own_segments(root, a)
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x10
    segment.write_bytes(bytes(data))
    refused = await turn(b, spec)
    assert refused.versions_added == 0 and refused.damaged == (segment.name,)
    assert await contents(b) == []
    again = await turn(b, spec)  # reported, not read again
    assert again.segments_read == 0 and again.bytes_read < 2000
    await turn(a, spec)  # sees b's report, writes the versions again
    assert segment.name not in [p.name for p in own_segments(root, a)]
    await turn(b, spec)
    assert await contents(b) == ["precious note"]


async def test_conflict_copies_duplicates_and_partial_files_are_ignored(tmp_path: Path, aio_loop: object) -> None:
    a, b, spec, root = await setup(tmp_path)
    await turn(b, spec)
    await add(a, "one")
    await turn(a, spec)
    group = folder(root, a)
    (segment,) = own_segments(root, a)
    state = group / f"{a.identity().device_id}.state"
    old_state = state.read_bytes()
    await add(a, "two")
    await turn(a, spec)
    # What engines leave behind: conflict copies (one holding an older state record), duplicates, partial files.
    stem = segment.name[: -len(".seg")]
    (group / f"{stem}.sync-conflict-20260101-101010-ABCDEFG.seg").write_bytes(b"garbage")
    (group / f"{a.identity().device_id} (conflicted copy 2026-01-01).state").write_bytes(old_state)
    (group / f"{stem} (1).seg").write_bytes(segment.read_bytes()[:10])
    (group / f"~${stem}.seg").write_bytes(b"")
    (group / f".{segment.name}.abcd.tmp").write_bytes(b"half a file")
    result = await turn(b, spec)
    assert result.problems == ()
    assert await contents(b) == ["one", "two"]


async def test_a_reverted_state_record_is_detected_and_rewritten(tmp_path: Path, aio_loop: object) -> None:
    a, b, spec, root = await setup(tmp_path)
    await turn(b, spec)
    await add(a, "one")
    await turn(a, spec)
    state = folder(root, a) / f"{a.identity().device_id}.state"
    old = state.read_bytes()
    await turn(b, spec)
    await add(a, "two")
    await turn(a, spec)
    await turn(b, spec)
    state.write_bytes(old)  # the engine restored an old version of the file
    seen = await turn(b, spec)
    assert any("older copy" in p for p in seen.problems)
    assert await contents(b) == ["one", "two"]
    fixed = await turn(a, spec)
    assert fixed.state_written and state.read_bytes() != old
    assert (await turn(b, spec)).problems == ()


async def test_an_unreachable_folder_is_reported_and_the_next_exchange_catches_up(tmp_path: Path, aio_loop: object) -> None:
    a, b, spec, root = await setup(tmp_path)
    await turn(b, spec)
    await add(a, "written while the share was away")
    away = tmp_path / "away"
    root.rename(away)
    with pytest.raises(RelayUnavailable, match="not mounted"):
        await turn(a, spec)
    assert load_memory(a.path, "share").last_error is not None
    away.rename(root)
    await turn(a, spec)
    assert load_memory(a.path, "share").last_error is None
    await turn(b, spec)
    assert await contents(b) == ["written while the share was away"]


class FailingFolder(FolderRelay):
    """A real folder whose writes fail as a full or read-only disk does (through the same translation)."""

    def __init__(self, root: Path, group: str, code: int) -> None:
        super().__init__(root, group)
        self.code = code

    async def write(self, name: str, data: bytes) -> None:
        raise RelayUnavailable(os_error_message(OSError(self.code, "injected"), self.location, f"writing {name}"))


@pytest.mark.parametrize(("code", "words"), [(errno.ENOSPC, "full"), (errno.EROFS, "cannot be written")])
async def test_a_full_or_read_only_relay_loses_nothing(
    tmp_path: Path, aio_loop: object, code: int, words: str
) -> None:
    a, b, spec, root = await setup(tmp_path)
    await add(b, "from b")
    await turn(b, spec)
    await add(a, "from a")
    before = sorted(p.name for p in folder(root, a).iterdir())
    async with await a.open_store() as store:
        memory = load_memory(a.path, "share")
        relay = FailingFolder(root, group_folder(store.group_id), code)
        with pytest.raises(RelayUnavailable, match=words):
            await exchange(store, a.identity().signing_key, relay, memory, name="share", scratch_dir=a.path / "scratch")
        save_memory(a.path, "share", memory)
    # Reading still happened and committed; nothing was written; nothing local was lost.
    assert await contents(a) == ["from a", "from b"]
    assert sorted(p.name for p in folder(root, a).iterdir()) == before
    await turn(a, spec)
    await turn(b, spec)
    assert await contents(b) == ["from a", "from b"]


async def test_a_revoked_device_is_refused_and_never_gets_the_next_key(tmp_path: Path, aio_loop: object) -> None:
    a, b, spec, root = await setup(tmp_path)
    c = await admit(a, tmp_path / "c", "c")
    add_relay(c.path, str(root), name="share")
    for home in (a, b, c, a):
        await turn(home, spec)
    async with await a.open_store() as store:
        await store.revoke(c.identity().device_id)
        old_epochs = set(store.group_keys)
    await add(a, "after the revocation")
    await turn(a, spec)
    await turn(b, spec)  # b learns the revocation and the new key from a's segment
    await add(c, "written by c once revoked")  # c does not know yet
    await turn(c, spec)
    result = await turn(b, spec)
    assert "written by c once revoked" not in await contents(b)
    assert any("not a current member" in p for p in result.problems)
    assert "after the revocation" in await contents(b)
    async with await c.open_store() as store:
        assert set(store.group_keys) <= old_epochs
    assert "after the revocation" not in await contents(c)


def _private_mount_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "a real full or read-only filesystem needs root (a tmpfs in a private mount namespace)"
    if shutil.which("unshare") is None:
        return "a real full or read-only filesystem needs util-linux's unshare"
    return None


@pytest.mark.parametrize(("remount", "words"), [("", "is full"), ("mount -o remount,ro \"$R\" && ", "cannot be written")])
async def test_peer_relay_sync_on_a_really_full_or_read_only_filesystem(
    tmp_path: Path, aio_loop: object, remount: str, words: str
) -> None:
    reason = _private_mount_unavailable()
    if reason is not None:
        print(f"skipping: {reason}")
        pytest.skip(reason)
    a, b, spec, root = await setup(tmp_path)
    await turn(b, spec)
    async with await a.open_store() as store:
        for n in range(12):
            await store.add(Draft(f"note {n}: " + "words that take room on the relay " * 40))
    snapshot = tmp_path / "snapshot"
    shutil.copytree(root, snapshot)
    # The relay folder, seen by this one `peer` process only, is an 8 kB tmpfs holding what the relay held.
    script = f'R="{root}"; mount -t tmpfs -o size=8k tmpfs "$R" && cp -a "{snapshot}/." "$R/" && {remount}exec "$@"'
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *PEER, "--home", str(a.path),
         "relay", "sync", "share"],
        capture_output=True, text=True, env=env(), timeout=120,
    )
    assert_error(done, 1, words, "nothing was lost")
    listed = ok_json(a.path, "relay", "list")["relays"][0]
    assert listed["reachable"] is False and words in listed["error"]
    assert len(await contents(a)) == 12
    await turn(a, spec)  # the filesystem has room again
    await turn(b, spec)
    assert len(await contents(b)) == 12


async def test_a_hung_folder_fails_the_exchange_instead_of_stalling(tmp_path: Path) -> None:
    # A FIFO nobody writes blocks its reader as a dead network mount would.
    group = tmp_path / "relay" / "peer-00"
    group.mkdir(parents=True)
    os.mkfifo(group / "stuck")
    relay = FolderRelay(tmp_path / "relay", "peer-00", timeout=0.5)
    with pytest.raises(RelayUnavailable, match="did not answer within 0.5 s"):
        await relay.read("stuck")
    # Unblock the abandoned thread so it does not outlive the test.
    fd = os.open(group / "stuck", os.O_WRONLY | os.O_NONBLOCK)
    os.close(fd)


async def test_a_local_failure_is_an_error_that_says_so_not_a_crash(tmp_path: Path, aio_loop: object) -> None:
    a, b, spec, root = await setup(tmp_path)
    await turn(b, spec)
    await add(a, "kept through a local failure")
    scratch = a.path / "relays" / "scratch"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    scratch.write_text("a file where the exchange needs a directory")
    with pytest.raises(PeerError, match="failed on this device"):
        await turn(a, spec)
    assert "failed on this device" in (load_memory(a.path, "share").last_error or "")
    scratch.unlink()
    await turn(a, spec)
    await turn(b, spec)
    assert await contents(b) == ["kept through a local failure"]

"""Backups: create and restore (a new machine, merge, replace), damage, and the scheduled backups' clock and retention."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

import peer.backup as backup_module
from peer.backup import (
    PASSPHRASE_ENV,
    backup_file_name,
    create_backup,
    make_scheduled_backup,
    next_due,
    prune_backups,
    read_backup,
    restore_backup,
    run_scheduled_backups,
    scheduled_backups,
)
from peer.bundles import export_bundle, import_bundle
from peer.config import BackupConfig
from peer.home import Home
from peer.memory import Draft
from peer.store import Store
from protocol.errors import PeerError, WrongGroup
from tests.support.cli_runner import assert_error, ok, ok_json, peer
from tests.support.groups import admit, found

PASSPHRASE = "correct horse battery staple"


class Clock:
    """Injected wall-clock time for stores, in ms."""

    def __init__(self, start_ms: int = 1_800_000_000_000) -> None:
        self.now = start_ms

    def __call__(self) -> int:
        return self.now


# A new machine, through the real command ------------------------------------------------------------



def _answer(text: str) -> Callable[[], str]:
    """A passphrase prompt that answers ``text``."""
    return lambda: text

def test_a_backup_shows_no_text_and_restores_a_new_machine_where_search_works(tmp_path: Path) -> None:
    a, restored = tmp_path / "desk", tmp_path / "new-machine"
    ok(a, "init", "--name", "desk")
    texts = [
        "The kestrel hovers above the motorway verge before it dives onto a vole.",
        "Sourdough starter needs feeding twice a day when the kitchen is warm.",
        "The staging database password rotates every ninety days; ask the platform team.",
        "Quarterly invoices go to the accounts department by the fifth working day.",
    ]
    ok(a, "add", "--file", "-", input="\n".join(texts) + "\n")
    listed = ok_json(a, "list")
    secret = tmp_path / "passphrase.txt"
    secret.write_text(PASSPHRASE + "\n")
    file = tmp_path / "desk.peerbackup"
    made = ok_json(a, "backup", "create", "--output", str(file), "--with-identity", "--passphrase-file", str(secret))
    assert made["identity"] and made["versions"] == 4 and file.stat().st_size == made["bytes"]
    assert file.stat().st_mode & 0o077 == 0

    data = file.read_bytes()
    for text in texts:
        for word in text.replace(";", "").replace(".", "").split():
            if len(word) >= 6:
                assert word.encode() not in data, word
    assert PASSPHRASE.encode() not in data
    device_key = Home(a).identity().signing_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    assert device_key not in data

    result = ok_json(restored, "backup", "restore", "--file", str(file), "--passphrase-file", str(secret))
    device_id = Home(a).identity().device_id
    assert result["mode"] == "new" and result["memories"] == 4 and result["device_id"] == device_id
    assert result["replica_id"].startswith(device_id + ".")  # a new incarnation
    assert ok_json(restored, "list") == listed
    hits = ok_json(restored, "search", "a bird of prey hunting above the road", "-k", "1")
    assert hits[0]["content"] == texts[0]
    assert_error(peer(restored, "backup", "restore", "--file", str(file), "--strategy", "sideways"), 2, "sideways")


# Incarnations ---------------------------------------------------------------------------------------


async def test_a_restored_device_never_reuses_a_dot_and_gets_back_what_it_wrote_after_the_backup(
    tmp_path: Path, aio_loop: object
) -> None:
    clock = Clock()
    a_home = await found(tmp_path / "a", "desk")
    b_home = await admit(a_home, tmp_path / "b", "laptop")
    device_id = a_home.identity().device_id
    async with await a_home.open_store(now_ms=clock) as a, await b_home.open_store(now_ms=clock) as b:
        kept = await a.add(Draft("written before the backup"))
        clock.now += 1000
        await create_backup(a, a_home.identity(), tmp_path / "a.backup", passphrase=PASSPHRASE, now_ms=clock)
        clock.now += 1000
        lost_at = clock.now
        lost = await a.add(Draft("written after the backup, then the disk died"))
        await export_bundle(a, a_home.identity().signing_key, tmp_path / "ab.bundle")
        assert (await import_bundle(b, tmp_path / "ab.bundle")).added == 2
        (lost_version,) = await b.versions(lost)
    shutil.rmtree(a_home.path)

    # The new machine's clock reads what the old one did when it wrote the lost version.
    clock.now = lost_at
    new_home = Home(tmp_path / "a-again")
    result = await restore_backup(new_home, tmp_path / "a.backup", passphrase=lambda: PASSPHRASE, now_ms=clock)
    replica = result.replica_id
    assert result.mode == "new" and result.memories == 1 and replica.startswith(device_id + ".")
    async with await new_home.open_store(now_ms=clock) as a2, await b_home.open_store(now_ms=clock) as b:
        fresh = await a2.add(Draft("written on the restored device"))
        (fresh_version,) = await a2.versions(fresh)
        # Same counter as the lost version, another replica: two different dots.
        assert fresh_version.version == f"{replica}:{lost_at}"
        assert lost_version.version == f"{device_id}:{lost_at}"
        # Bundles both ways: the restored device gets back what it lost, the laptop gets the new memory.
        await export_bundle(a2, new_home.identity().signing_key, tmp_path / "a2b.bundle")
        assert (await import_bundle(b, tmp_path / "a2b.bundle")).added == 1
        await export_bundle(b, b_home.identity().signing_key, tmp_path / "ba2.bundle")
        back = await import_bundle(a2, tmp_path / "ba2.bundle")
        assert back.added == 1 and back.vector_merged
        for store in (a2, b):
            assert {m.id for m in await store.list()} == {kept, lost, fresh}
            assert (await store.get(lost)).content == "written after the backup, then the disk died"
        assert await a2.vector() == await b.vector()
    # Restoring the same backup again makes yet another replica.
    again = await restore_backup(Home(tmp_path / "a-third"), tmp_path / "a.backup", passphrase=lambda: PASSPHRASE)
    assert again.replica_id not in (replica, device_id)


# Onto an existing device ----------------------------------------------------------------------------


async def test_restore_merges_into_a_device_of_the_group_or_replaces_its_store(tmp_path: Path, aio_loop: object) -> None:
    a_home = await found(tmp_path / "a", "desk")
    b_home = await admit(a_home, tmp_path / "b", "laptop")
    async with await a_home.open_store() as a:
        ids = await a.add_many([(Draft(f"desk memory {i}"), None) for i in range(3)])
        await create_backup(a, a_home.identity(), tmp_path / "desk.backup")  # no identity: no passphrase needed
    async with await b_home.open_store() as b:
        mine = await b.add(Draft("only on the laptop"))

    merged = await restore_backup(b_home, tmp_path / "desk.backup")
    assert merged.mode == "merge" and merged.added == 3 and merged.backup_of == a_home.identity().device_id
    again = await restore_backup(b_home, tmp_path / "desk.backup")
    assert again.added == 0 and "nothing new" in again.describe()

    # Replace: the laptop's store is set aside and rebuilt from the desk's backup, as a new incarnation.
    (b_home.index_dir / "stale").mkdir(parents=True)
    replaced = await restore_backup(b_home, tmp_path / "desk.backup", strategy="replace")
    assert replaced.mode == "replace" and replaced.memories == 3
    assert replaced.replica_id.startswith(b_home.identity().device_id + ".")
    assert replaced.moved_aside is not None
    aside = Path(replaced.moved_aside)
    assert not b_home.index_dir.exists()
    async with await b_home.open_store() as b:
        assert sorted(m.id for m in await b.list()) == sorted(ids)
    # The old store is intact beside it.
    keys = b_home.identity()
    async with await Store.open(aside, signing_key=keys.signing_key, kex_key=keys.kex_key) as old:
        assert mine in {m.id for m in await old.list()}

    stranger = await found(tmp_path / "s", "stranger")
    before = await _memories(stranger)
    with pytest.raises(WrongGroup, match="another|group"):
        await restore_backup(stranger, tmp_path / "desk.backup")
    with pytest.raises(WrongGroup, match="group"):
        await restore_backup(stranger, tmp_path / "desk.backup", strategy="replace")
    assert await _memories(stranger) == before
    with pytest.raises(PeerError, match="no device identity"):
        await restore_backup(Home(tmp_path / "fresh"), tmp_path / "desk.backup")
    assert not (tmp_path / "fresh").exists()


async def _memories(home: Home) -> list[Any]:
    async with await home.open_store() as store:
        return [m.to_json() for m in await store.list()]


async def test_damaged_backups_are_refused_and_leave_the_new_home_empty(tmp_path: Path, aio_loop: object) -> None:
    a_home = await found(tmp_path / "a", "desk")
    async with await a_home.open_store() as a:
        await a.add(Draft("in the backup"))
        good = await create_backup(a, a_home.identity(), tmp_path / "good.backup", passphrase=PASSPHRASE)
        with pytest.raises(PeerError, match="too short"):
            await create_backup(a, a_home.identity(), tmp_path / "weak.backup", passphrase="short")
        await export_bundle(a, a_home.identity().signing_key, tmp_path / "a.bundle", full=True)
    data = good.path.read_bytes()
    info = read_backup(good.path)
    bundle_start = info.bundle.offset
    cases = {
        "in the bundle": (data[: bundle_start + 40] + bytes([data[bundle_start + 40] ^ 1]) + data[bundle_start + 41 :], "damaged"),
        "in the identity": (data[:-5] + bytes([data[-5] ^ 1]) + data[-4:], "wrong passphrase"),
        "in the header": (data[:20] + bytes([data[20] ^ 0x80]) + data[21:], "truncated|damaged|wrong passphrase"),
        "truncated": (data[:-30], "truncated"),
        "appended": (data + b"!", "truncated|after its end"),
        "a bundle": ((tmp_path / "a.bundle").read_bytes(), "is a bundle"),
        "empty": (b"", "not a peer backup"),
        "with the wrong passphrase": (data, "wrong passphrase"),
    }
    for name, (content, message) in cases.items():
        bad = tmp_path / "bad.backup"
        bad.write_bytes(content)
        home = Home(tmp_path / name.replace(" ", "-"))
        typed = "not the passphrase" if "wrong passphrase" in name else PASSPHRASE
        with pytest.raises(PeerError, match=message):
            await restore_backup(home, bad, passphrase=_answer(typed))
        assert not home.path.exists() or not any(home.path.iterdir()), name
    restored = await restore_backup(Home(tmp_path / "ok"), good.path, passphrase=lambda: PASSPHRASE)
    assert restored.memories == 1


# Scheduled backups ---------------------------------------------------------------------------------------


def test_when_scheduled_backups_are_due() -> None:
    tz = timezone(timedelta(hours=2))
    now = datetime(2026, 3, 4, 14, 23, tzinfo=tz)
    daily = BackupConfig(enabled=True, frequency="daily", time="03:30")
    assert next_due(daily, None, now) == now
    assert next_due(daily, datetime(2026, 3, 4, 3, 30, tzinfo=tz), now) == datetime(2026, 3, 5, 3, 30, tzinfo=tz)
    assert next_due(daily, datetime(2026, 3, 4, 14, 0, tzinfo=tz), now) == datetime(2026, 3, 5, 3, 30, tzinfo=tz)
    # Missed while the machine was off: due at once.
    assert next_due(daily, datetime(2026, 3, 1, 3, 30, tzinfo=tz), now) < now
    hourly = BackupConfig(frequency="hourly", time="00:15")
    assert next_due(hourly, datetime(2026, 3, 4, 14, 15, tzinfo=tz), now) == datetime(2026, 3, 4, 15, 15, tzinfo=tz)
    weekly = BackupConfig(frequency="weekly", time="03:30")
    assert next_due(weekly, datetime(2026, 3, 4, 3, 30, tzinfo=tz), now) == datetime(2026, 3, 11, 3, 30, tzinfo=tz)
    # The last backup in the "future" (the clock went back): the next slot after now, not after it.
    assert next_due(daily, datetime(2027, 1, 1, tzinfo=tz), now) == datetime(2026, 3, 5, 3, 30, tzinfo=tz)
    assert backup_file_name("A" * 26, now) == f"peer-backup-{'A' * 26}-20260304T122300Z.peerbackup"


class FakeTime:
    """A wall clock that moves only when the code under test sleeps; stops the loop at ``until``."""

    def __init__(self, start: datetime, until: datetime) -> None:
        self.now = start
        self.until = until
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)
        if self.now >= self.until:
            raise _Stop
        await trio.sleep(0)


class _Stop(Exception):
    pass


async def test_scheduled_backups_run_on_time_keep_only_what_retention_allows_and_survive_a_full_disk(
    tmp_path: Path, aio_loop: object, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    home = await found(tmp_path / "a", "desk")
    directory = tmp_path / "backups"
    directory.mkdir()
    config = BackupConfig(
        enabled=True, frequency="hourly", time="00:00", directory=str(directory), retention_days=1, max_backups=30
    )
    device_id = home.identity().device_id
    # Files that are not this device's scheduled backups: never touched.
    other = "B" * 26
    foreign = [
        directory / backup_file_name(other, datetime(2020, 1, 1, tzinfo=UTC)),
        directory / "peer-backup-notes.txt",
        directory / f"peer-backup-{device_id}-20200101T000000Z.peerbackup.old",
    ]
    for path in foreign:
        path.write_text("keep me")

    real_create = backup_module.create_backup
    failures = {"left": 1}

    async def flaky_create(*args: Any, **kwargs: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise PeerError(f"cannot write {args[2]}: {os.strerror(errno.ENOSPC)}")
        return await real_create(*args, **kwargs)

    monkeypatch.setattr(backup_module, "create_backup", flaky_create)
    start = datetime(2026, 3, 4, 10, 20, tzinfo=UTC)
    clock = FakeTime(start, start + timedelta(hours=40))
    caplog.set_level(logging.INFO, logger="peer.backup")
    async with await home.open_store() as store:
        with pytest.raises(_Stop):
            await run_scheduled_backups(home, store, config, now=clock, sleep=clock.sleep, retry_s=600)
        await store.add(Draft("changed after the last scheduled backup"))

    made = scheduled_backups(directory, device_id)
    times = [when for when, _ in made]
    # The first attempt failed (disk full) and was retried 10 minutes later; then every hour on the hour.
    assert "retrying in 600 s" in caplog.text and "No space left" in caplog.text
    assert times[-1] == datetime(2026, 3, 6, 2, 0, tzinfo=UTC)
    assert all(t.minute == 0 for t in times[1:])
    # Retention: nothing older than a day (except that the newest is always kept).
    assert times[0] >= times[-1] - timedelta(days=1) and len(times) == 25
    assert all(p.read_text() == "keep me" for p in foreign)
    assert not [p for p in directory.iterdir() if p.name.startswith(".")]
    assert all(not read_backup(p).has_identity for _, p in made)
    assert max(clock.slept) <= backup_module.MAX_SLEEP_S

    # max_backups, then one backup with the identity when a passphrase is configured.
    monkeypatch.setattr(backup_module, "create_backup", real_create)
    fewer = BackupConfig(frequency="hourly", directory=str(directory), retention_days=0, max_backups=3)
    async with await home.open_store() as store:
        await make_scheduled_backup(home, store, fewer, when=start + timedelta(days=3), passphrase=PASSPHRASE)
    made = scheduled_backups(directory, device_id)
    assert len(made) == 3 and read_backup(made[-1][1]).has_identity
    assert prune_backups(directory, device_id, fewer, start + timedelta(days=3)) == []
    restored = await restore_backup(Home(tmp_path / "from-scheduled"), made[-1][1], passphrase=lambda: PASSPHRASE)
    assert restored.memories == 1


async def test_a_scheduled_backup_into_an_unusable_directory_is_logged_and_retried(
    tmp_path: Path, aio_loop: object, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    home = await found(tmp_path / "a", "desk")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the backup directory should be")
    config = BackupConfig(enabled=True, frequency="daily", directory=str(blocker / "backups"))
    start = datetime(2026, 3, 4, 10, 20, tzinfo=UTC)
    clock = FakeTime(start, start + timedelta(minutes=25))
    caplog.set_level(logging.WARNING, logger="peer.backup")
    async with await home.open_store() as store:
        with pytest.raises(_Stop):
            await run_scheduled_backups(home, store, config, now=clock, sleep=clock.sleep, retry_s=600)
    assert caplog.text.count("the scheduled backup failed") == 3  # at 10:20, 10:30, 10:40
    assert blocker.read_text().startswith("a file")


def test_retention_never_deletes_the_backups_made_before_the_clock_jumped_ahead(tmp_path: Path) -> None:
    """Hostile report B8: at +365 days, retention deleted every earlier backup."""
    device_id = "K" * 26
    directory = tmp_path / "backups"
    directory.mkdir()
    config = BackupConfig(frequency="hourly", directory=str(directory), retention_days=30, max_backups=10)
    sane = [datetime(2026, 12, 4, h, 47, tzinfo=UTC) for h in (2, 3, 4)]
    for when in sane:
        (directory / backup_file_name(device_id, when)).write_text("a restore point")
    jumped = datetime(2027, 12, 4, 5, 47, tzinfo=UTC)
    (directory / backup_file_name(device_id, jumped)).write_text("made while the clock was a year ahead")
    assert prune_backups(directory, device_id, config, jumped) == []
    # The clock stays ahead and the hourly backups go on: the count limit rotates the oldest out,
    # but the last backup made before the jump stays.
    for hour in range(6, 18):
        when = jumped.replace(hour=hour)
        (directory / backup_file_name(device_id, when)).write_text("made while the clock was a year ahead")
        prune_backups(directory, device_id, config, when)
    left = [when for when, _ in scheduled_backups(directory, device_id)]
    assert sane[-1] in left
    assert len(left) == config.max_backups

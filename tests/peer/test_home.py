"""The home directory: where it is, what init creates, and the errors people see."""

from __future__ import annotations

import stat
from pathlib import Path

import platformdirs
import pytest

from peer.errors import StoreError
from peer.home import HOME_ENV, Home
from peer.memory import Draft
from protocol import is_device_id


def test_home_comes_from_the_flag_then_the_environment_then_the_platform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "env"))
    assert Home.locate(tmp_path / "flag").path == tmp_path / "flag"
    assert Home.locate(None).path == tmp_path / "env"
    monkeypatch.delenv(HOME_ENV)
    assert Home.locate(None).path == Path(platformdirs.user_data_dir("peer")).absolute()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_init_creates_private_keys_and_a_store(aio_loop: object, tmp_path: Path) -> None:
    home = Home(tmp_path / "device")
    result = await home.init("laptop")
    assert is_device_id(result.device_id) and len(bytes.fromhex(result.group_id)) == 16
    assert result.to_json() == {"device_id": result.device_id, "group_id": result.group_id}
    assert _mode(home.path) == 0o700
    for secret in (home.device_key_path, home.kex_key_path, home.store_path):
        assert _mode(secret) == 0o600, secret
    assert home.device_key_path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert home.identity().device_id == result.device_id
    async with await home.open_store() as store:
        assert store.device_id == result.device_id
        assert store.group_id.hex() == result.group_id
        assert store.membership.is_member(result.device_id)
        assert [m.name for m in store.membership.members()] == ["laptop"]
        await store.add(Draft("works"))
    # Nothing but the final files is left behind.
    assert sorted(p.name for p in home.path.iterdir()) == ["device.key", "kex.key", "peer.db"]


async def test_init_twice_is_refused(aio_loop: object, tmp_path: Path) -> None:
    home = Home(tmp_path / "device")
    first = await home.init("laptop")
    with pytest.raises(StoreError, match="already holds a peer store"):
        await home.init("laptop")
    assert home.identity().device_id == first.device_id


async def test_a_missing_home_says_to_run_init(aio_loop: object, tmp_path: Path) -> None:
    home = Home(tmp_path / "nowhere")
    with pytest.raises(StoreError, match=r"no peer home at .*nowhere; run `peer init` \(or pass --home\)"):
        await home.open_store()
    with pytest.raises(StoreError, match="no peer home"):
        home.identity()
    assert not home.path.exists()


async def test_an_interrupted_init_can_be_run_again(aio_loop: object, tmp_path: Path) -> None:
    home = Home(tmp_path / "device")
    # A crash after the keys were written, before the store was renamed in.
    identity = home.ensure_identity()
    (home.path / ".peer.db.123.tmp").write_bytes(b"half a store")
    assert not home.exists()
    result = await home.init("laptop")
    assert result.device_id == identity.device_id


async def test_damaged_keys_give_a_clear_error(aio_loop: object, tmp_path: Path) -> None:
    home = Home(tmp_path / "device")
    await home.init("laptop")
    home.device_key_path.write_bytes(b"garbage")
    with pytest.raises(StoreError, match="keys .* are damaged"):
        await home.open_store()


async def test_a_store_opened_with_another_devices_key_is_refused(aio_loop: object, tmp_path: Path) -> None:
    one, two = Home(tmp_path / "one"), Home(tmp_path / "two")
    await one.init("one")
    await two.init("two")
    two.store_path.unlink()
    one.store_path.rename(two.store_path)
    with pytest.raises(StoreError, match="belongs to device"):
        await two.open_store()


async def test_joining_replaces_an_empty_store_only(aio_loop: object, tmp_path: Path) -> None:
    inviter, joiner = Home(tmp_path / "inviter"), Home(tmp_path / "joiner")
    await inviter.init("inviter")
    await joiner.init("joiner")  # someone ran `peer init` before `peer join`
    (joiner.index_dir).mkdir()
    (joiner.index_dir / "stale").write_bytes(b"labels of the old store")
    me = joiner.identity()
    async with await inviter.open_store() as store:
        ident = inviter.identity()
        records = store.membership.add_member(
            ident.signing_key,
            ident.kex_key,
            device_public_key=me.public_key,
            kex_public_key=me.kex_public_key,
            name="joiner",
            now_ms=1_700_000_000_000,
            epoch_keys=store.group_keys,
        )
        await store.apply_membership(records)
        group_id, all_records = store.group_id, store.membership.records()
    await joiner.create_store(group_id=group_id, records=all_records, group_keys={}, replace_empty=True)
    assert not joiner.index_dir.exists()
    async with await joiner.open_store() as store:
        assert store.group_id == group_id
        await store.add(Draft("now in the inviter's group"))
    with pytest.raises(StoreError, match="already holds 1 versions"):
        await joiner.create_store(group_id=group_id, records=all_records, group_keys={}, replace_empty=True)

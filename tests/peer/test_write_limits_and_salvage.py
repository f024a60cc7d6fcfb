"""Storage hardening (issue 11, items 1 and 7): limits enforced on write, a damaged store diagnosed and salvaged.

Each test guards one finding of ``hostile-test-report.md`` or
``new-user-audit.md`` (named in its docstring) and failed on the code
before the fix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from peer.device import Device
from peer.home import Home
from peer.memory import Draft
from peer.search.embedder import HashEmbedder
from peer.store import Store
from protocol import SealedVersion, StoreError
from tests.support.cli_runner import assert_error, peer
from tests.support.stores import make_pair, sync

HASH = HashEmbedder(384)


class RecordingEmbedder:
    """The hash embedder, recording how many texts the model was asked to embed."""

    def __init__(self) -> None:
        self.texts = 0

    @property
    def id(self) -> str:
        return HASH.id

    @property
    def dim(self) -> int:
        return HASH.dim

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.texts += len(texts)
        return HASH.embed(texts)


@pytest.fixture
async def pair(aio_loop: object, tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    a, b = await make_pair(tmp_path)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


# Item 1 (hostile B1, B14; audit B3): what one device writes, every member can read --------

_OVERSIZED = {
    "a 70 kB tag": Draft("a memory with a long tag", tags=("x" * 70_000,)),
    "a 70 kB project": Draft("a memory with a long project", project="p" * 70_000),
    "4,097 tags": Draft("a memory with many tags", tags=tuple(f"t{i}" for i in range(4097))),
    "1.5 MiB of metadata": Draft("a memory with big metadata", metadata={"blob": "m" * (3 << 19)}),
    # Every field within its own limit, the whole above the sealed box's 4 MiB.
    "a body over 4 MiB": Draft(
        "a memory with 4,090 tags of 1.1 kB", tags=tuple(f"{i:04}" + "t" * 1100 for i in range(4090))
    ),
}


@pytest.mark.parametrize("case", list(_OVERSIZED))
async def test_a_value_over_a_receive_limit_is_refused_when_written(pair: tuple[Store, Store], case: str) -> None:
    """B1: `peer add` accepted values no other member can decode, cutting the device off from its group."""
    a, b = pair
    await a.add(Draft("before: an ordinary memory"))
    with pytest.raises(StoreError, match="limited to|at most"):
        await a.add(_OVERSIZED[case])
    await a.add(Draft("after: an ordinary memory"))
    # Nothing unreadable was written, so the other member still syncs everything.
    await sync(a, b)
    assert sorted(m.content for m in await b.list()) == ["after: an ordinary memory", "before: an ordinary memory"]
    for sealed in await a.sealed(await _all_dots(a)):
        assert len(SealedVersion.decode(sealed.encode()).box) <= 4 << 20  # the sealed box limit every reader enforces


async def _all_dots(store: Store) -> list[Any]:
    from protocol import Dot

    rows = await store._db.fetchall("SELECT origin, counter FROM versions")
    return [Dot(r[0], r[1]) for r in rows]


async def test_edits_and_resolves_are_held_to_the_same_limits(pair: tuple[Store, Store]) -> None:
    """B1: edit is a write too."""
    a, _ = pair
    memory_id = await a.add(Draft("a memory"))
    with pytest.raises(StoreError, match="a tag is limited to 65,536 bytes"):
        await a.edit(memory_id, tags=["y" * 70_000])
    with pytest.raises(StoreError, match="limited to"):
        await a.edit(memory_id, metadata={"blob": "m" * (3 << 19)})
    assert (await a.get(memory_id)).tags == ()


async def test_a_huge_text_is_refused_before_the_model_runs(aio_loop: object, tmp_path: Path) -> None:
    """B14 / audit B3: a 5 MB text was embedded for minutes, then refused by the 1 MiB limit."""
    home = Home(tmp_path / "h")
    await home.init("laptop")
    embedder = RecordingEmbedder()
    async with Device(home, await home.open_store(), embedder=embedder) as device:
        with pytest.raises(StoreError, match="limited to 1048576 bytes"):
            await device.add([Draft("x" * 5_000_000)])
        with pytest.raises(StoreError, match="a tag is limited"):
            await device.add([Draft("short text", tags=("t" * 70_000,))])
        memory_id = (await device.add([Draft("short text")]))[0]
        assert embedder.texts == 1
        with pytest.raises(StoreError, match="limited to 1048576 bytes"):
            await device.edit(memory_id, content="y" * 5_000_000)
        assert embedder.texts == 1  # the model never saw the refused texts


def test_cli_refuses_an_oversized_tag_with_one_error_line(tmp_path: Path) -> None:
    """B1: one clear `error:` line, exit 1, and nothing written."""
    home = tmp_path / "h"
    assert peer(home, "init", "--name", "laptop").returncode == 0
    done = peer(home, "add", "a memory with a long tag", "--tag", "x" * 70_000)
    assert_error(done, 1, "tag", "65,536")
    assert "long tag" not in peer(home, "list").stdout




# Item 7 (audit B4): a damaged store is diagnosed and salvaged --------------------------------


async def test_doctor_diagnoses_a_damaged_store_and_salvage_recovers_what_is_readable(
    aio_loop: object, tmp_path: Path
) -> None:
    """Audit B4: doctor printed only "damaged; run `peer doctor`", no findings, no JSON, no way out."""
    import json
    import random

    home = Home(tmp_path / "h")
    await home.init("laptop")
    texts = {}
    async with await home.open_store() as store:
        drafts = [Draft(f"memory {i}: " + "lorem ipsum dolor sit amet " * 20, tags=(f"t{i % 7}",)) for i in range(300)]
        for memory_id, draft in zip(await store.add_many([(d, None) for d in drafts]), drafts, strict=True):
            texts[memory_id] = draft.content
    # 8 KB of random bytes in the middle of the file, as the audit did.
    data = bytearray(home.store_path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8192] = random.Random(11).randbytes(8192)
    home.store_path.write_bytes(bytes(data))

    done = peer(home.path, "doctor")
    assert done.returncode == 1, done.stderr
    assert "FAIL  store integrity" in done.stdout and "--salvage" in done.stdout, done.stdout
    assert "readable memories" in done.stdout
    report = json.loads(peer(home.path, "--json", "doctor").stdout)
    assert report["healthy"] is False
    assert [c["name"] for c in report["checks"]] == ["store integrity", "readable memories"]

    target = tmp_path / "salvaged"
    done = peer(home.path, "--json", "doctor", "--salvage", str(target))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    listed = json.loads(peer(target, "--json", "list", "--limit", "1000").stdout)
    recovered = {m["id"]: m["content"] for m in (listed["memories"] if isinstance(listed, dict) else listed)}
    assert len(recovered) == result["recovered"]
    # Most of the store survives 8 KB of damage, and every recovered memory is exactly what was written.
    assert len(recovered) > 200
    assert all(texts[memory_id] == content for memory_id, content in recovered.items())




def test_cli_refuses_a_5_mb_text_without_running_the_model(tmp_path: Path) -> None:
    """B14 / audit B3: the refusal comes from the length check, before the model is even loaded."""
    home = tmp_path / "h"
    assert peer(home, "init", "--name", "laptop").returncode == 0
    done = peer(home, "add", "-", input="x" * 5_000_000, timeout=120)
    assert_error(done, 1, "limited to 1048576 bytes")



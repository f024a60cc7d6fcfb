"""The import-linter contracts hold today, and each one fails when its rule is broken.

Each case copies the tree to a scratch directory, adds one import that the
contract forbids, and runs ``lint-imports`` there: the contract must be
reported broken, naming the offending module. A contract that silently
stopped checking anything (a renamed package, a typo in a module list)
would pass the first test and fail its case here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("peer", "protocol"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_every_contract_is_kept() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("peer/store/store.py", "import peer.device", "peer layers"),
        ("peer/members.py", "import peer.conflicts", "peer layers"),
        ("peer/device.py", "import asyncssh", "asyncio and its libraries only in peer.aio"),
        ("peer/agent.py", "import rich", "click and rich only in peer.cli"),
        ("peer/home.py", "import protocol.clock", "peer uses protocol's public face"),
        ("protocol/clock.py", "import socket", "protocol/ is sans-I/O"),
    ],
    ids=["upward", "siblings", "asyncio", "rich", "protocol-module", "protocol-io"],
)
def test_each_contract_can_fail(scratch: Path, module: str, line: str, contract: str) -> None:
    path = scratch / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # added by the test\n", encoding="utf-8")
    result = _lint(scratch)
    assert result.returncode != 0, result.stdout
    broken = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(row.startswith(contract) for row in broken), result.stdout
    assert len(broken) == 1, broken

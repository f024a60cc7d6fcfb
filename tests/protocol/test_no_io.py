"""protocol/ is sans-I/O: it imports no I/O library and touches no file.

Three independent checks, because each misses something the others catch:
importing every module in a clean interpreter (what actually gets loaded),
an AST scan of the source (imports inside functions, ``open`` calls), and
the import-linter contract in pyproject.toml (what CI runs).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import protocol

PACKAGE = Path(protocol.__file__).parent
ROOT = PACKAGE.parent
SOURCES = sorted(PACKAGE.glob("*.py"))

FORBIDDEN = {
    "peer",
    "trio",
    "asyncio",
    "asyncssh",
    "aiosqlite",
    "zeroconf",
    "hnswlib",
    "sqlite3",
    "socket",
    "pathlib",
    "subprocess",
    "selectors",
    "shutil",
    "tempfile",
}
# Calls that reach the filesystem (or spawn processes) from otherwise allowed modules.
FORBIDDEN_CALLS = {
    "open",
    "io.open",
    "os.open",
    "os.fdopen",
    "os.remove",
    "os.unlink",
    "os.rename",
    "os.replace",
    "os.mkdir",
    "os.makedirs",
    "os.listdir",
    "os.scandir",
    "os.walk",
    "os.stat",
    "os.system",
    "os.popen",
    "os.fork",
    "os.chdir",
}

# Run with -S: site-packages' .pth files import pathlib before any of our code.
_PROBE = r"""
import sys, json
baseline = set(sys.modules)
sys.path[:0] = json.loads(sys.argv[1])
import importlib, pkgutil
import protocol
names = [m.name for m in pkgutil.walk_packages(protocol.__path__, "protocol.")]
for name in names + json.loads(sys.argv[2]):
    importlib.import_module(name)
loaded = sorted(set(sys.modules) - baseline)
print(json.dumps({"modules": names, "loaded": loaded}))
"""


def probe(extra: tuple[str, ...] = ()) -> dict[str, list[str]]:
    paths = [str(ROOT)] + [p for p in sys.path if p]
    out = subprocess.run(
        [sys.executable, "-S", "-c", _PROBE, json.dumps(paths), json.dumps(list(extra))],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, list[str]] = json.loads(out.stdout)
    return result


def forbidden_in(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)


def test_importing_every_protocol_module_loads_no_io_library() -> None:
    result = probe()
    # Every module of the package was imported, not just the ones __init__ pulls in.
    assert {f"protocol.{p.stem}" for p in SOURCES if p.stem != "__init__"} <= set(result["modules"])
    assert forbidden_in(result["loaded"]) == []


def test_the_import_probe_can_fail() -> None:
    assert "socket" in forbidden_in(probe(("socket",))["loaded"])


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def violations(source: str, filename: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN:
                    found.append(f"{filename}:{node.lineno} imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in FORBIDDEN:
                found.append(f"{filename}:{node.lineno} imports from {node.module}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in FORBIDDEN_CALLS or name in {"__import__", "importlib.import_module"}:
                found.append(f"{filename}:{node.lineno} calls {name}()")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=[p.name for p in SOURCES])
def test_source_has_no_io(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8"), path.name) == []


def test_the_source_scan_can_fail() -> None:
    bad = "def f():\n    import socket\n    with open('x') as fh:\n        return os.listdir('.')\n"
    assert len(violations(bad, "bad.py")) == 3


def test_import_linter_contract() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    # import-linter is a test dependency (pyproject's [test] extra): missing is a broken set-up, not a skip.
    assert lint_imports.exists(), f"import-linter is not installed next to {sys.executable}; run `make test-deps`"
    out = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "protocol/ is sans-I/O KEPT" in out.stdout

"""The package face: protocol/__init__.py is the one list of what peer/ may use."""

from __future__ import annotations

import ast
from pathlib import Path

import protocol

ROOT = Path(__file__).resolve().parents[2]


def test_the_face_is_one_list_without_duplicates() -> None:
    assert len(protocol.__all__) == len(set(protocol.__all__))
    assert all(hasattr(protocol, name) for name in protocol.__all__)
    source = (ROOT / "protocol" / "__init__.py").read_text()
    assert "__all__ +=" not in source and "noqa" not in source


def test_every_name_peer_imports_from_protocol_is_on_the_face() -> None:
    imported: dict[str, set[str]] = {}
    for folder in ("peer", "bench", "tests/peer"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
                    if node.module == "protocol" or node.module.startswith("protocol."):
                        for alias in node.names:
                            imported.setdefault(alias.name, set()).add(f"{path.relative_to(ROOT)}")
    assert imported, "found no imports of protocol at all: the scan is broken"
    missing = {name: sorted(where) for name, where in imported.items() if name not in protocol.__all__}
    assert not missing, f"add these to protocol.__all__: {missing}"

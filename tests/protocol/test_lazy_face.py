"""protocol's face loads its modules on first use, and every name it lists is there."""

from __future__ import annotations

import subprocess
import sys

import pytest

import protocol


def test_every_exported_name_resolves_and_is_listed_by_dir() -> None:
    for name in protocol.__all__:
        assert getattr(protocol, name) is not None, name
    assert set(protocol.__all__) <= set(dir(protocol))


def test_a_name_it_does_not_export_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'NotThere'"):
        getattr(protocol, "NotThere")  # noqa: B009 - the lookup by name is the test
    with pytest.raises(ImportError):
        exec("from protocol import NotThere")


def test_importing_the_face_loads_the_error_tree_only() -> None:
    probe = (
        "import sys, protocol\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('protocol.'))\n"
        "from protocol import valid_kind\n"
        "print(' '.join(loaded)); print('protocol.kinds' in sys.modules, 'protocol.records' in sys.modules,"
        " 'cryptography' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "protocol.errors"
    # valid_kind loaded its module, and only what that module needs: `--kind` is checked
    # before the CLI knows whether the agent answers, and must not load the cryptography.
    assert out[1] == "True False False"

"""peer: a local-first memory store for AI assistants, synced peer-to-peer.

The package face is kept import-free, so that ``peer`` commands start fast;
import what you use from its packages (:mod:`peer.device`, :mod:`peer.home`,
:mod:`peer.store`, ...).
"""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # Read from the installed distribution on first use: importlib.metadata costs
    # about 40 ms to import, which every short command would otherwise pay.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("peer-memory")
        except PackageNotFoundError:  # a checkout that was never installed
            return "0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

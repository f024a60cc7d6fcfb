"""peer: a local-first memory store for AI assistants, synced peer-to-peer.

The package face is kept import-free beyond the version, so that ``peer``
commands start fast; import what you use from its packages
(:mod:`peer.device`, :mod:`peer.home`, :mod:`peer.store`, ...).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("peer-memory")
except PackageNotFoundError:  # a checkout that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]

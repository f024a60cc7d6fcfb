"""peer: a local-first memory store for AI assistants, synced peer-to-peer."""

__version__ = "0.1.0"

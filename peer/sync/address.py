"""Addresses: how a person writes where a device listens, and what "every interface" means."""

from __future__ import annotations

from typing import Final

from peer.aio import DEFAULT_PORT
from protocol import TransportError

__all__ = ["DEFAULT_LISTEN", "WILDCARDS", "parse_address"]

#: Where the agent listens unless told otherwise: every interface, the default port.
DEFAULT_LISTEN: Final = ("0.0.0.0", DEFAULT_PORT)
#: Listening addresses that mean "every interface".
WILDCARDS: Final = frozenset({"0.0.0.0", "::", ""})


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[IPv6]:PORT`` or a bare IPv6 address -> (host, port)."""
    text = text.strip()
    if not text:
        raise TransportError("no address given; use HOST or HOST:PORT")
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise TransportError(f"{text!r} is not an address: a [ has no matching ]")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise TransportError(f"{text!r} is not an address; use [IPv6]:PORT")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise TransportError(f"{text!r} has no host name; use HOST or HOST:PORT")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise TransportError(f"{port_text!r} is not a port number (0 to 65535)")
    return host, int(port_text)

"""Pairing: invites, air-gapped invite files and the join exchange.

The invite code itself (its format and checksum) is pure and lives in
:mod:`protocol.invite`; the theory of operation is in :mod:`peer.pairing.invites`.
"""

from .invite_file import join_from_file, make_invite_file
from .invites import (
    DEFAULT_TTL_S,
    INVITES_FILE,
    MAX_TTL_S,
    REFUSAL_MESSAGE,
    Invite,
    Invites,
    make_invite,
    parse_ttl,
)
from .join import (
    accept_join,
    admitted_membership,
    join,
    join_handler,
    prepare_join,
    request_join,
    serve_join,
)
from .results import InviteResult, JoinResult, expires_text

__all__ = [
    "DEFAULT_TTL_S",
    "INVITES_FILE",
    "MAX_TTL_S",
    "REFUSAL_MESSAGE",
    "Invite",
    "InviteResult",
    "Invites",
    "JoinResult",
    "accept_join",
    "admitted_membership",
    "expires_text",
    "join",
    "join_from_file",
    "join_handler",
    "make_invite",
    "make_invite_file",
    "parse_ttl",
    "prepare_join",
    "request_join",
    "serve_join",
]

"""What comes in from outside the process, checked where it enters: argv, stdin, bulk files, Ctrl-C.

Theory of operation. Python hands bytes that are not UTF-8 to the program as
lone surrogates (``surrogateescape``) in argv, and in stdin under some
locales; JSON can spell one too (``"\\ud800"``). Nothing downstream can
store such a string, and the place it finally fails (the tokenizer, SQLite,
the sealing code) reports it as a traceback. So every text is checked
here, at the boundary, and turned into one :class:`InputError` naming where
it came from (argument N, stdin, FILE line N). Reading is done in bytes and
decoded strictly for the same reason.

Ctrl-C raises ``KeyboardInterrupt`` inside ``trio.run``, often wrapped in an
exception group by a nursery. :func:`interrupted` recognises it however it
is wrapped, and commands turn it into :class:`Interrupted`, whose message
says what was kept; :func:`peer.cli.main` prints it and exits 130 like any
other program stopped by SIGINT.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from protocol import PeerError

if TYPE_CHECKING:
    from peer.memory import Draft

__all__ = [
    "InputError",
    "Interrupted",
    "interrupted",
    "check_argv",
    "check_text",
    "decode_text",
    "read_stdin_text",
    "BULK_FORMATS",
    "read_bulk",
    "file_argument",
]


class InputError(PeerError):
    """Input peer cannot use as text (not UTF-8, a lone surrogate, JSON nested too deeply)."""


class Interrupted(PeerError):
    """The user pressed Ctrl-C; the message says what was kept. Exit status 130."""

    exit_code = 130


def interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is a Ctrl-C, bare or inside exception groups (with nothing but cancellations beside it)."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        import trio

        found = False
        for inner in exc.exceptions:
            if interrupted(inner):
                found = True
            elif not isinstance(inner, trio.Cancelled):
                return False
        return found
    return False


def _shown(text: str) -> str:
    # The offending value as the user typed it, bytes spelled out, kept short.
    try:
        raw = text.encode("utf-8", "surrogateescape")  # argv: the bytes as given
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "backslashreplace")  # a JSON "\\ud800"
    shown = repr(raw[:40])[1:]
    return shown + ("..." if len(raw) > 40 else "")


def check_argv(argv: Sequence[str]) -> None:
    """Refuse an argument that is not UTF-8 (a surrogate escape) before click or the model sees it."""
    for number, arg in enumerate(argv, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(
                f"argument {number} ({_shown(arg)}) is not UTF-8 text; peer stores UTF-8 only "
                "(convert it first, e.g. with `iconv -f latin1 -t utf-8`); nothing was changed"
            ) from None


def check_text(value: Any, where: str) -> None:
    """Every string in ``value`` (nested lists and dicts, keys too) must be encodable as UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InputError(
                    f"{where}: holds an unpaired surrogate ({_shown(item)}), which is not text"
                ) from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def decode_text(data: bytes, where: str, *, first: bool = True) -> str:
    """Strict UTF-8 (a leading byte-order mark is dropped when ``first``); one line of error otherwise."""
    try:
        return data.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{where}: not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); "
            "convert it first, e.g. with `iconv -f latin1 -t utf-8`"
        ) from None


def read_stdin_text() -> str:
    """All of stdin as text, decoded strictly whatever the locale says."""
    import sys

    return decode_text(sys.stdin.buffer.read(), "stdin")


# Bulk files (`peer add --file`) -------------------------------------------------------------

#: `auto`: a line starting with `{` is a JSON object, any other is plain text;
#: `text`: every line is plain text; `ndjson`: every line is a JSON object.
BULK_FORMATS = ("auto", "text", "ndjson")

_BULK_FIELDS = {"content", "text", "kind", "project", "tags", "metadata", "importance", "id", "created_at"}


def _draft_from_json(text: str, number: int, defaults: Draft) -> Draft:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            f"line {number}: not valid JSON ({e.msg}); for a plain note that starts with {{, pass --format text"
        ) from None
    except RecursionError:
        raise InputError(f"line {number}: JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise InputError(f"line {number}: expected a JSON object")
    check_text(obj, f"line {number}")
    unknown = set(obj) - _BULK_FIELDS
    if unknown:
        raise InputError(f"line {number}: unknown field(s) {', '.join(sorted(unknown))}")
    content = obj.get("content", obj.get("text"))
    if not isinstance(content, str) or not content.strip():
        raise InputError(f"line {number}: \"content\" must be a non-empty string")
    tags = obj.get("tags", defaults.tags)
    if not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags):
        raise InputError(f"line {number}: \"tags\" must be a list of strings")
    metadata = obj.get("metadata", defaults.metadata)
    if not isinstance(metadata, dict):
        raise InputError(f"line {number}: \"metadata\" must be an object")
    for name, types in (("kind", str), ("project", str), ("id", str), ("importance", (int, float)), ("created_at", (int, float))):
        if obj.get(name) is not None and not isinstance(obj[name], types):
            raise InputError(f"line {number}: \"{name}\" has the wrong type")
    kind = (obj.get("kind") or defaults.kind).lower()
    from protocol import valid_kind  # here, not at the top: it loads the records module (start-up time)

    if not valid_kind(kind):
        raise InputError(f"line {number}: {kind!r} is not a kind")
    try:
        # What the store will do with it: a structure json can write back
        # (deep nesting fails here, not in the middle of a transaction).
        json.dumps(metadata)
    except RecursionError:
        raise InputError(f"line {number}: the metadata is nested too deeply") from None
    return dataclasses.replace(
        defaults,
        content=content,
        kind=kind,
        project=obj.get("project", defaults.project),
        tags=tuple(tags),
        metadata=metadata,
        importance=obj.get("importance", defaults.importance),
        id=obj.get("id"),
        created_at=obj.get("created_at"),
    )


def read_bulk(file: IO[bytes], name: str, defaults: Draft, fmt: str = "auto") -> list[tuple[int, Draft]]:
    """(line number, draft) for every non-blank line, all checked before anything is added."""
    out: list[tuple[int, Draft]] = []
    for number, raw in enumerate(file, start=1):
        try:
            stripped = decode_text(raw, f"line {number}", first=number == 1).strip()
            if not stripped:
                continue
            if fmt == "text" or (fmt == "auto" and not stripped.startswith("{")):
                out.append((number, dataclasses.replace(defaults, content=stripped)))
            else:
                out.append((number, _draft_from_json(stripped, number, defaults)))
        except PeerError as e:
            raise InputError(f"{name} {e.message}; nothing was added") from None
    return out


# File arguments -----------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def file_argument(f: F) -> F:
    """FILE as an argument or as ``--file/-f FILE``: one spelling for every command that takes a file.

    Replaces ``@click.argument("file")``; the command still receives ``file``.
    """

    @functools.wraps(f)
    def wrapper(*args: Any, file: str | None = None, file_option: str | None = None, **kwargs: Any) -> Any:
        if file is not None and file_option is not None:
            raise click.UsageError("give FILE or --file FILE, not both")
        if file is None and file_option is None:
            raise click.UsageError("missing FILE (give it as an argument or with --file FILE)")
        return f(*args, file=file if file is not None else file_option, **kwargs)

    decorated = click.option(
        "--file", "-f", "file_option", metavar="FILE", default=None, help="The file (the same as giving FILE)."
    )(wrapper)
    decorated = click.argument("file", metavar="FILE", required=False)(decorated)
    return decorated  # type: ignore[return-value]

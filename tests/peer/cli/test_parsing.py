"""Parsing of `--meta` and `--since` (in-process: no store, no model)."""

from __future__ import annotations

import datetime as dt

import click
import pytest

from peer.cli import parse_meta, parse_since


def test_meta_values_are_typed_only_when_they_read_as_json_scalars() -> None:
    assert parse_meta(["n=3", "f=-2.5e3", "t=true", "z=null", "s=hello", "v=1.2.3", "e=", "eq=a=b", "lead=007"]) == {
        "n": 3, "f": -2500.0, "t": True, "z": None, "s": "hello", "v": "1.2.3", "e": "", "eq": "a=b", "lead": "007",
    }


@pytest.mark.parametrize("bad", ["novalue", "=x", " =x"])
def test_meta_without_a_key_is_a_usage_error(bad: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_meta([bad])


def test_since_durations_count_back_from_now() -> None:
    now = 1_000_000.0
    assert parse_since("90m", now=now) == now - 5400
    assert parse_since("1d12h", now=now) == now - 129600
    assert parse_since("2w", now=now) == now - 2 * 604800
    assert parse_since("1.5h", now=now) == now - 5400


def test_since_dates_are_local_time() -> None:
    assert parse_since("2026-01-31") == dt.datetime(2026, 1, 31).timestamp()
    assert parse_since("2026-01-31T09:30") == dt.datetime(2026, 1, 31, 9, 30).timestamp()


@pytest.mark.parametrize("bad", ["yesterday", "12x", "h", "", "1d-2h"])
def test_since_rejects_what_it_cannot_read(bad: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_since(bad)

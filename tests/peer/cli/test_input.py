"""Hostile and careless input (issue 11 item 6): every input error is one line; Ctrl-C says what was kept.

Real ``peer`` processes on real homes. Bytes that are not UTF-8 are passed as
bytes (argv, stdin, files), as a shell would pass them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli_runner import PEER, assert_error, env, ok, ok_json, peer

LATIN1 = b"caf\xe9 latin-1 line\nsecond line ok\n"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("input") / "home"
    ok(path, "init", "--name", "input")
    ok(path, "add", "a first memory about kafka")
    return path


def live(home: Path) -> int:
    return len(ok_json(home, "list"))


def run_bytes(home: Path, *args: bytes | str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    """Like `peer` but argv items and stdin may be raw bytes; output decoded leniently."""
    argv = [os.fsencode(a) if isinstance(a, str) else a for a in [*PEER, "--home", str(home), *args]]
    done = subprocess.run(argv, input=stdin, capture_output=True, env=env(), timeout=300)
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")
    )


# Not UTF-8 ----------------------------------------------------------------------------------


def test_a_latin1_bulk_file_is_one_error_line_with_its_line_number(home: Path, tmp_path: Path) -> None:
    before = live(home)
    path = tmp_path / "latin1.txt"
    path.write_bytes(LATIN1)
    message = assert_error(peer(home, "add", "--file", str(path)), 1, "line 1", "UTF-8", "nothing was added")
    assert "latin1.txt" in message
    path.write_bytes(os.urandom(4000) + b"\xff\xfe")
    assert_error(peer(home, "add", "--file", str(path)), 1, "UTF-8")
    assert live(home) == before


def test_latin1_on_stdin_is_one_error_line(home: Path) -> None:
    before = live(home)
    assert_error(run_bytes(home, "add", "-", stdin=LATIN1), 1, "stdin", "UTF-8")
    assert_error(run_bytes(home, "add", "--file", "-", stdin=LATIN1), 1, "line 1", "UTF-8")
    memory_id = ok_json(home, "list")[0]["id"]
    assert_error(run_bytes(home, "edit", memory_id, "--text", "-", stdin=LATIN1), 1, "stdin", "UTF-8")
    assert live(home) == before


@pytest.mark.parametrize(
    "args",
    [
        [b"add", b"caf\xe9"],
        [b"add", b"ok text", b"--tag", b"\xff"],
        [b"add", b"ok text", b"--meta", b"k=\xff"],
        [b"add", b"ok text", b"--project", b"\xffproj"],
        [b"search", b"caf\xe9"],
    ],
)
def test_arguments_that_are_not_utf8_are_one_error_line(home: Path, args: list[bytes]) -> None:
    before = live(home)
    assert_error(run_bytes(home, *args), 1, "not UTF-8", "argument")
    assert live(home) == before


def test_a_lone_surrogate_in_a_bulk_line_is_one_error_line(home: Path, tmp_path: Path) -> None:
    before = live(home)
    path = tmp_path / "surrogate.ndjson"
    path.write_text('{"content": "fine"}\n{"content": "bad \\ud800 here"}\n', encoding="utf-8")
    assert_error(peer(home, "add", "--file", str(path)), 1, "line 2", "surrogate")
    path.write_text('{"content": "fine", "tags": ["\\udfff"]}\n', encoding="utf-8")
    assert_error(peer(home, "add", "--file", str(path)), 1, "line 1", "surrogate")
    path.write_text('{"content": "fine", "metadata": {"\\ud800": 1}}\n', encoding="utf-8")
    assert_error(peer(home, "add", "--file", str(path)), 1, "line 1", "surrogate")
    assert live(home) == before


def test_deeply_nested_metadata_is_one_error_line(home: Path, tmp_path: Path) -> None:
    before = live(home)
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    path = tmp_path / "deep.ndjson"
    path.write_text('{"content": "deep", "metadata": ' + deep + "}\n", encoding="utf-8")
    assert_error(peer(home, "add", "--file", str(path)), 1, "line 1", "nested")
    assert live(home) == before


# Ctrl-C -------------------------------------------------------------------------------------


def test_ctrl_c_during_a_bulk_add_says_what_was_kept_and_exits_130(home: Path, tmp_path: Path) -> None:
    before = live(home)
    # Far more than the add gets through before the signal (it lands after the first 256-memory
    # batch, within a fraction of a second), so the check never depends on the machine's speed.
    total = 20_000
    path = tmp_path / "bulk.txt"
    path.write_text("".join(f"bulk line {n} about topic {n % 17}\n" for n in range(total)), encoding="utf-8")
    process = subprocess.Popen(
        [*PEER, "--home", str(home), "add", "--file", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
    )
    try:
        # Wait until at least one batch is committed, then press Ctrl-C.
        deadline = time.monotonic() + 240
        while live(home) == before:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no batch was committed in 240 s"
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    added = live(home) - before
    assert 0 < added < total, f"Ctrl-C did not interrupt the bulk add ({added} of {total} added)"
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines() == [
        f"interrupted: {added:,} of {total:,} added; the rest starts at line {added + 1}"
    ], stderr
    assert 0 < added < total and added % 256 == 0


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback TCP listener that accepts and never says a word (a stuck peer)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def test_ctrl_c_during_a_sync_is_one_line_and_exits_130(home: Path, silent_server: int) -> None:
    process = subprocess.Popen(
        [*PEER, "--home", str(home), "sync", f"127.0.0.1:{silent_server}", "--timeout", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
    )
    try:
        time.sleep(3)  # importing trio and asyncssh, then stuck waiting for the server's banner
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted:"), stderr
    assert "kept" in lines[0]


def test_plain_json_error_lines_still_name_the_line(home: Path, tmp_path: Path) -> None:
    # Guard for the rewrite of the bulk reader: the old messages keep their numbers.
    path = tmp_path / "bad.ndjson"
    path.write_text('{"content": "ok"}\n{"content": 3}\n', encoding="utf-8")
    assert_error(peer(home, "add", "--file", str(path)), 1, "line 2", "content")

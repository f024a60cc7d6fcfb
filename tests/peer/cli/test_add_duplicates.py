"""Duplicates at the door for many memories: `peer add --file` and `peer import`, like one `peer add`."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli_runner import ndjson, ok, ok_json, peer

PYTEST = "Run the test suite with pytest -q from the repository root."
REWORDED = "From the repository root, run the test suite with pytest -q."
WIFI = "The office wifi password rotates every Monday."
DEPLOY = "Deploys go out from the release branch on Thursdays."


def _home(tmp_path: Path) -> tuple[Path, str, str]:
    home = tmp_path / "home"
    ok(home, "init")
    pytest_id = ok_json(home, "add", PYTEST, "--project", "app")["id"]
    wifi_id = ok_json(home, "add", WIFI, "--project", "ops")["id"]
    ok(home, "search", "warm the index")  # a device that has searched has an index: look-alikes are checked
    return home, pytest_id, wifi_id


def test_bulk_add_skips_exact_re_adds_and_lists_look_alikes(tmp_path: Path) -> None:
    home, pytest_id, wifi_id = _home(tmp_path)
    versions = ok_json(home, "stats")["versions"]
    lines = [
        "  run the test suite WITH pytest -q from the repository root. ",  # the same text, folded: a repeat
        REWORDED,  # new, and a look-alike of the pytest memory
        WIFI,  # the same text, but that memory is in project ops: new here
        DEPLOY,
        DEPLOY,  # an earlier line again
    ]
    out = ok_json(home, "add", "--file", "-", "--project", "app", input="\n".join(lines) + "\n")
    assert out["added"] == 3
    ids = out["ids"]
    assert len(ids) == 5 and ids[0] == pytest_id and ids[4] == ids[3] and ids[2] != wifi_id
    assert out["duplicates"] == [{"line": 1, "id": pytest_id}, {"line": 5, "id": ids[3]}]
    assert [s["id"] for s in out["similar"][ids[1]]] == [pytest_id]
    assert ids[3] not in out["similar"]  # the deploy note looks like nothing held
    assert ok_json(home, "stats")["versions"] == versions + 3
    # The person's view: one line for the repeats, one for the look-alikes.
    again = peer(home, "add", "--file", "-", "--project", "app", input=PYTEST + "\n" + DEPLOY + "\n")
    assert again.returncode == 0 and "added 0 memories" in again.stdout
    assert "2 lines repeated a memory" in again.stderr
    assert ok_json(home, "stats")["versions"] == versions + 3
    # --allow-duplicate adds them all the same.
    forced = ok_json(home, "add", "--file", "-", "--project", "app", "--allow-duplicate", input=PYTEST + "\n")
    assert forced["added"] == 1 and forced["ids"][0] != pytest_id and "duplicates" not in forced


def test_import_skips_new_records_that_repeat_a_memory(tmp_path: Path) -> None:
    home, pytest_id, _ = _home(tmp_path)
    first, second, third = (f"5b0f0a4e-7c1e-4a55-9d0e-0c7c2f1e9a0{n}" for n in (1, 2, 3))
    file = tmp_path / "notes.ndjson"
    file.write_text(ndjson([
        {"id": first, "content": PYTEST.upper(), "project": "app"},  # repeats the held memory
        {"id": second, "content": REWORDED, "project": "app"},  # new, looks like it
        {"id": third, "content": DEPLOY, "project": "app"},
    ]))
    dry = ok_json(home, "import", str(file), "--dry-run")
    assert (dry["new"], dry["repeated"]) == (2, 1)
    report = ok_json(home, "import", str(file))
    assert (report["new"], report["repeated"]) == (2, 1)
    assert report["repeats"] == {first: pytest_id}
    assert [s["id"] for s in report["similar"][second]] == [pytest_id]
    listed = {m["id"] for m in ok_json(home, "list")}
    assert first not in listed and {second, third} <= listed
    text = ok(home, "import", str(file), "--allow-duplicate")
    assert "1 new" in text and first in {m["id"] for m in ok_json(home, "list")}
    assert ok_json(home, "show", first)["content"] == PYTEST.upper()

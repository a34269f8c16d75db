"""`ciphergrad pool ...` and `ciphergrad contribute`: parsing, schema checks, screens and one-line errors
(no server needed here; tests/test_pool_story.py runs the whole story against a server)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ciphergrad.client.cli.contribute import schema_columns
from ciphergrad.client.cli.pool import parse_duration, status_lines
from ciphergrad.client.table import CsvTable, TableError, read_csv

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The entry point's code as a child process: exit code and streams as a user sees them."""
    command = [sys.executable, "-m", "ciphergrad.client.cli", *args]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(cwd), **(env or {})}
    environment.pop("CIPHERGRAD_KEY_DIR", None)
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd, env=environment)


def test_durations() -> None:
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration(" 30m ") == 1800 and parse_duration("90s") == 90 and parse_duration("2W") == 14 * 86400
    assert parse_duration("never") is None and parse_duration("0") is None
    for bad in ("7", "d", "-1d", "0d", "1.5h", "7 days"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"e\.g\. 7d, 12h"):
            parse_duration(bad)


def _table(*columns: str) -> CsvTable:
    return CsvTable("part.csv", columns, (tuple("1" for _ in columns),), (2,))


def test_schema_check_names_missing_columns_and_leaves_out_extras() -> None:
    assert schema_columns(_table("a", "b", "y"), ["a", "b"], "y") == []
    assert schema_columns(_table("y", "b", "a"), ["a", "b"], "y") == [], "order in the file does not matter"
    (notice,) = schema_columns(_table("a", "b", "y", "name"), ["a", "b"], "y")
    assert "['name'] are not in the pool's schema: left out (never encrypted, never sent)" in notice
    with pytest.raises(TableError) as error:
        schema_columns(_table("a", "y"), ["a", "b"], "y")
    message = str(error.value)
    assert "needs column(s) ['b']" in message and "features are ['a', 'b']" in message and "target 'y'" in message


def _invitation(**fields: object) -> SimpleNamespace:
    base = {
        "invitation_id": "inv-1", "label": "north", "revoked": False, "expire_time": 0.0,
        "max_rows": 0, "rows": 0, "contributions": 0,
    }  # fmt: skip
    return SimpleNamespace(**{**base, **fields})


def test_status_screen_shows_each_invitation_and_its_state() -> None:
    now = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.UTC)
    pool = SimpleNamespace(
        pool_id="p-1", rows=300, contributions=3, contributors=2, size_bytes=1_250_000,
        feature_names=["a", "b"], target_name="y", classes=(), sealed=0.0, min_contributors=3, min_rows=10,
        mechanism="none: the analyst learns exact aggregates", noise_std=0.0,
        invitations=[
            _invitation(rows=200, contributions=2, max_rows=500),
            _invitation(invitation_id="inv-2", label="south", revoked=True, rows=100, contributions=1),
            _invitation(invitation_id="inv-3", label="", expire_time=(now - dt.timedelta(hours=1)).timestamp()),
            _invitation(invitation_id="inv-4", expire_time=(now + dt.timedelta(days=7)).timestamp()),
        ],
    )  # fmt: skip
    lines = status_lines("houses", pool, now)
    assert lines[0] == ("pool 'houses' (p-1), open: 300 rows in 3 contributions from 2 contributors, 1.25 MB "
                        "encrypted statistics")
    assert "features: a, b; target: y" in lines[1]
    assert "at least 3 contributors, 10 rows per contribution" in lines[2]
    assert lines[3].endswith("differential privacy: none: the analyst learns exact aggregates")
    rows = {line.split()[0]: line.split() for line in lines[6:]}
    assert rows["inv-1"][1:6] == ["north", "active", "200", "2", "500"] and rows["inv-1"][-1] == "never"
    assert rows["inv-2"][2:4] == ["revoked", "100"]
    assert rows["inv-3"][1:3] == ["-", "expired"]
    assert rows["inv-4"][2] == "active" and " ".join(rows["inv-4"][-3:]) == "2026-01-17 12:00 UTC"


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    checks = [
        (["pool", "status", "houses"], f"no key directory at {tmp_path}/.ciphergrad/keys/houses"),
        (["pool", "create", "houses", "--columns", "a,b", "--target", "c"], "name the server with --server"),
        (["pool", "create", "houses", "--columns", "c", "--target", "c", "--server", "x:1"], "no feature besides"),
        (["pool", "create", "../up", "--columns", "a", "--target", "c", "--server", "x:1"], "cannot name a directory"),
        (["contribute", "absent.csv", "--invitation", "cgi1.x"], "absent.csv: no such file"),
        (["contribute", "absent.csv"], "no invitation: pass --invitation CODE"),
        (["contribute", "absent.csv", "--invitation", "@nofile"], "cannot read the file"),
    ]
    for args, expected in checks:
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stdout == "" and "Traceback" not in result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith("ciphergrad: error: ") and expected in line, (args, line)
    from_env = run_cli("contribute", "absent.csv", cwd=tmp_path, env={"CIPHERGRAD_INVITATION": "cgi1.x"})
    assert from_env.returncode == 2 and "absent.csv: no such file" in from_env.stderr, "the code came from the env"
    parse = run_cli("pool", "invite", "houses", "--expires", "7 days", cwd=tmp_path)
    assert parse.returncode == 2 and "argument --expires: '7 days' is not a duration" in parse.stderr


def test_contributor_csv_is_read_with_table_validation(tmp_path: Path) -> None:
    path = tmp_path / "part.csv"
    path.write_text("a,b,y\n1,2,3\n4,,6\n")
    table = read_csv(path)
    assert schema_columns(table, ["a", "b"], "y") == []

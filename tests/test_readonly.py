"""Read-only commands stay read-only: `status`, `doctor`, `recommend`, `report`,
`catalog stats` and `config check/show` create no folder and no database and migrate
nothing. They run as other users (pi, monitoring over SSH) and beside the daemon: a state
dir they made would have the wrong owner, and a migration would race the daemon's."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, cli_settings

from appliance.store.database import DB_NAME, MIGRATIONS, open_database

LATEST = MIGRATIONS[-1][0]

READ_ONLY_COMMANDS = [
    ["status"],
    ["status", "--json"],
    ["doctor", "--no-camera", "--json"],
    ["recommend", "--valence", "0.5", "--arousal", "0.1"],
    ["report", "--out", "{tmp}/day.png"],
    ["catalog", "stats"],
    ["catalog", "stats", "--json"],
    ["config", "check"],
    ["config", "show"],
]
NEEDS_DATABASE = ("recommend", "report", "catalog")


def cli(tmp_path: Path, *args: str, pairs: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The command with its state and runtime dirs in tmp_path (`pairs`: more settings)."""
    words = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    settings = cli_settings(tmp_path, "music.enabled=true", *pairs)
    return subprocess.run(
        [sys.executable, "-m", "appliance", *words, *settings],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def v2_database(state_dir: Path) -> Path:
    """A database as the second release left it: no catalog tables yet."""
    state_dir.mkdir(parents=True)
    conn = sqlite3.connect(state_dir / DB_NAME)
    for number, sql in MIGRATIONS[:2]:
        conn.executescript(sql + f"; PRAGMA user_version = {number};")
    conn.commit()
    conn.close()
    return state_dir / DB_NAME


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.parametrize("args", READ_ONLY_COMMANDS, ids=" ".join)
def test_nothing_appears_where_nothing_was(tmp_path, args):
    result = cli(tmp_path, *args)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state").exists(), result.stderr
    assert not (tmp_path / "run").exists(), result.stderr
    assert files_under(tmp_path) == {"config.toml"}
    if args[0] in NEEDS_DATABASE:
        assert result.returncode == 1
        assert str(tmp_path / "state" / DB_NAME) in result.stderr
        assert "the daemon creates it on its first run" in result.stderr


@pytest.mark.parametrize("args", READ_ONLY_COMMANDS, ids=" ".join)
def test_an_empty_state_dir_gets_no_database(tmp_path, args):
    (tmp_path / "state").mkdir()
    (tmp_path / "run").mkdir()
    cli(tmp_path, *args)
    assert files_under(tmp_path / "state") == set()
    assert files_under(tmp_path / "run") == set()


@pytest.mark.parametrize(
    "args", [a for a in READ_ONLY_COMMANDS if a[0] in (*NEEDS_DATABASE, "doctor")], ids=" ".join
)
def test_an_older_schema_is_reported_never_migrated(tmp_path, args):
    path = v2_database(tmp_path / "state")
    before = path.read_bytes()
    result = cli(tmp_path, *args)
    assert "Traceback" not in result.stderr
    assert user_version(path) == 2 and path.read_bytes() == before
    assert result.returncode == 1
    if args[0] == "doctor":
        checks = {c["name"]: c for c in json.loads(result.stdout)}
        database = checks["database"]
        assert database["status"] == "fail"
        assert f"v2 is older than this software's v{LATEST}" in database["detail"]
        assert "restart" in database["hint"]
    else:
        assert f"schema v2 is older than this software's v{LATEST}" in result.stderr
        assert "never migrate" in result.stderr


def test_doctor_reports_missing_dirs_and_database_without_making_them(tmp_path):
    result = cli(tmp_path, "doctor", "--no-camera", "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    state, run = tmp_path / "state", tmp_path / "run"
    assert checks["state dir"]["status"] == "pass"
    assert checks["state dir"]["detail"].startswith(f"{state}: absent; the daemon creates it")
    assert checks["runtime dir"]["detail"].startswith(f"{run}: absent")
    assert checks["database"]["detail"].startswith(f"{state / DB_NAME}: absent")
    assert checks["catalog"]["status"] == "fail" and "catalog import" in checks["catalog"]["hint"]
    assert not state.exists() and not run.exists()


def test_doctor_fails_a_state_dir_nobody_can_create_with_a_fix_line(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    pairs = (f"storage.state_dir={blocker / 'state'}",)
    result = cli(tmp_path, "doctor", "--no-camera", pairs=pairs)
    lines = result.stdout.splitlines()
    [state] = [i for i, line in enumerate(lines) if " state dir " in f" {line}"]
    assert lines[state].startswith("FAIL ") and "not a folder" in lines[state]
    assert lines[state + 1].strip().startswith("fix: sudo install -d")
    assert result.returncode == 1
    assert blocker.read_text() == "a file where a folder should be"


def test_catalog_import_still_creates_and_migrates(tmp_path):
    rows = [f"spotify:track:{i:022d},Song {i},Artist,0.{i},0.{9 - i}" for i in range(1, 9)]
    (tmp_path / "t.csv").write_text("\n".join(["uri,name,artist,valence,energy", *rows]))
    result = cli(tmp_path, "catalog", "import", str(tmp_path / "t.csv"))
    assert result.returncode == 0, result.stderr
    assert user_version(tmp_path / "state" / DB_NAME) == LATEST
    stats = json.loads(cli(tmp_path, "catalog", "stats", "--json").stdout)
    assert stats["tracks"] == 8


def test_catalog_import_migrates_an_older_database(tmp_path):
    path = v2_database(tmp_path / "state")
    rows = [f"spotify:track:{i:022d},Song {i},Artist,0.{i},0.{9 - i}" for i in range(1, 9)]
    (tmp_path / "t.csv").write_text("\n".join(["uri,name,artist,valence,energy", *rows]))
    assert cli(tmp_path, "catalog", "import", str(tmp_path / "t.csv")).returncode == 0
    assert user_version(path) == LATEST
    db = open_database(tmp_path / "state", readonly=True)
    try:
        assert db["tracks"].count == 8
    finally:
        db.conn.close()

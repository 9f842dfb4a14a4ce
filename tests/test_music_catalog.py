"""Catalog import edge cases: odd rows and headers, and what a failed import leaves."""

from __future__ import annotations

import pytest

from appliance.music.catalog import catalog_stats, import_catalog
from appliance.store.database import open_database

SPOTIFY_HEADER = ",track_id,artists,album_name,track_name,popularity,energy,valence"


def spotify_id(i: int) -> str:
    return f"{i:022d}"


@pytest.fixture
def db(tmp_path):
    database = open_database(tmp_path / "state")
    yield database
    database.conn.close()


def write_spotify(path, rows: list[tuple[str, str]]) -> None:
    """rows: (artists, popularity) per track; the rest is fixed and valid."""
    lines = [SPOTIFY_HEADER] + [
        f"{i},{spotify_id(i)},{artists},Album,Song {i},{pop},0.{i % 9 + 1},0.{(i * 7) % 9 + 1}"
        for i, (artists, pop) in enumerate(rows)
    ]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("artists", "popularity", "reason"),
    [
        (";", "50", "names no artist"),
        (" ; ;", "50", "names no artist"),
        ("A", "inf", "not a finite number"),
        ("A", "1e400", "not a finite number"),
        ("A", "-inf", "not a finite number"),
        ("A", "nan", "not a finite number"),
    ],
)
def test_a_bad_spotify_row_is_skipped_with_its_line_not_an_aborted_import(
    db, tmp_path, artists, popularity, reason
):
    rows = [("A;B", "10"), (artists, popularity), ("C", "20"), ("D", ""), ("E", "30")]
    write_spotify(tmp_path / "s.csv", rows)
    report = import_catalog(db, tmp_path / "s.csv")
    assert len(report.skipped) == 1
    line, why = report.skipped[0]
    assert line == 3 and reason in why
    assert report.added == 4 and catalog_stats(db)["tracks"] == 4


def test_excel_csv_utf8_with_a_byte_order_mark_imports(db, tmp_path):
    """Excel's "CSV UTF-8" starts the file with U+FEFF."""
    lines = ["uri,name,artist,valence,energy"] + [
        f"spotify:track:{spotify_id(i)},Sång {i},Artist,0.{i + 1},0.{9 - i}" for i in range(5)
    ]
    (tmp_path / "excel.csv").write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    report = import_catalog(db, tmp_path / "excel.csv")
    assert (report.added, report.skipped) == (5, [])
    assert db["tracks"].get(f"spotify:track:{spotify_id(0)}")["name"] == "Sång 0"


def test_header_names_with_spaces_are_read_by_their_stripped_names(db, tmp_path):
    lines = [" uri, name, artist , valence,energy "] + [
        f"spotify:track:{spotify_id(i)},Song {i},Artist {i},0.{i + 1},0.{9 - i}" for i in range(5)
    ]
    (tmp_path / "spaced.csv").write_text("\n".join(lines) + "\n")
    report = import_catalog(db, tmp_path / "spaced.csv")
    assert (report.added, report.skipped) == (5, [])
    track = db["tracks"].get(f"spotify:track:{spotify_id(3)}")
    assert (track["name"], track["artist"], track["valence"]) == ("Song 3", "Artist 3", 0.4)


def test_an_unforeseen_error_in_one_row_skips_that_row_only(db, tmp_path, monkeypatch):
    """The per-row guard: a parsing slip (here a KeyError) costs one row, not the file."""
    from appliance.music import catalog as catalog_module

    real = catalog_module.parse_row

    def flaky(row: dict, spotify_layout: bool, now: float) -> dict:
        if row["track_name"] == "Song 2":
            raise KeyError("surprise")
        return real(row, spotify_layout, now)

    monkeypatch.setattr(catalog_module, "parse_row", flaky)
    write_spotify(tmp_path / "s.csv", [("A", "1"), ("B", "2"), ("C", "3"), ("D", "4"), ("E", "")])
    report = import_catalog(db, tmp_path / "s.csv")
    assert report.skipped == [(4, "unreadable row (KeyError: 'surprise')")]
    assert report.added == 4


def write_minimal(path, n: int, offset: int = 0) -> None:
    """n tracks spread over the four corners of the valence/energy plane."""
    corners = [(0.9, 0.9), (0.1, 0.9), (0.9, 0.1), (0.1, 0.1)]
    lines = ["uri,name,artist,valence,energy"] + [
        f"spotify:track:{spotify_id(offset + i)},Song {offset + i},Artist {i % 7},"
        f"{corners[i % 4][0] + (i % 5) / 100},{corners[i % 4][1] - (i % 3) / 100}"
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")


def snapshot(db) -> tuple[list, list]:
    tracks = db.execute("SELECT uri, name, mood FROM tracks ORDER BY uri").fetchall()
    moods = db.execute("SELECT name, valence, energy, tracks FROM moods ORDER BY name").fetchall()
    return tracks, moods


def test_an_import_cut_short_leaves_the_previous_catalog(db, tmp_path, monkeypatch):
    """Upsert and refit are one transaction: before, the new tracks were committed (in
    chunks, with mood NULL) before the refit, so a crash there left a half catalog."""
    from appliance.music import catalog as catalog_module

    write_minimal(tmp_path / "first.csv", 40)
    import_catalog(db, tmp_path / "first.csv")
    before = snapshot(db)
    assert len(before[0]) == 40 and all(mood for _, _, mood in before[0])

    def power_cut(*args, **kwargs):
        raise RuntimeError("power cut during the refit")

    monkeypatch.setattr(catalog_module.MoodMap, "fit", power_cut)
    write_minimal(tmp_path / "second.csv", 250, offset=20)  # 20 updates, 230 new: 3 chunks
    with pytest.raises(RuntimeError, match="power cut"):
        import_catalog(db, tmp_path / "second.csv")
    assert not db.conn.in_transaction
    assert snapshot(db) == before
    other = open_database(tmp_path / "state")  # what another process sees
    try:
        assert snapshot(other) == before
    finally:
        other.conn.close()


def test_the_daemon_refits_when_a_track_has_no_mood(db, tmp_path):
    """A catalog an older version left half-imported: moods stored, some tracks NULL."""
    from appliance.music.catalog import load_moods

    write_minimal(tmp_path / "t.csv", 40)
    import_catalog(db, tmp_path / "t.csv")
    db.execute("UPDATE tracks SET mood = NULL WHERE name IN ('Song 1', 'Song 2')")
    assert load_moods(db, k=4) is not None  # read-only: fine as it is, nothing written
    assert db.execute("SELECT count(*) FROM tracks WHERE mood IS NULL").fetchone()[0] == 2
    assert len(load_moods(db, k=4, save=True).moods) == 4
    assert db.execute("SELECT count(*) FROM tracks WHERE mood IS NULL").fetchone()[0] == 0


def test_read_only_callers_fit_another_k_in_memory_without_saving(db, tmp_path):
    """`recommend --set music.moods=5` (or `report`) beside a daemon using 4 moods: before,
    it refitted and saved 5 moods, renaming them under the running daemon."""
    from appliance.config.schema import MusicConfig
    from appliance.music.catalog import load_moods
    from appliance.music.recommender import Recommender

    write_minimal(tmp_path / "t.csv", 60)
    import_catalog(db, tmp_path / "t.csv")
    before = snapshot(db)
    five = load_moods(db, k=5)
    assert len(five.moods) == 5 and snapshot(db) == before
    picks = Recommender(db, five, MusicConfig()).recommend(0.8, 0.8, user="u", n=3)
    assert {p.mood for p in picks} <= set(five.names)  # moods of the fit it ranked with
    assert len(load_moods(db, k=5, save=True).moods) == 5  # the daemon's own refit saves
    assert len(snapshot(db)[1]) == 5


def test_cli_recommend_with_another_k_leaves_the_stored_moods(db, tmp_path, capsys):
    import json

    from appliance.cli import main

    write_minimal(tmp_path / "t.csv", 60)
    import_catalog(db, tmp_path / "t.csv")
    before = snapshot(db)
    state = f"storage.state_dir={tmp_path / 'state'}"
    args = ["--valence", "0.8", "--arousal", "0.8", "--json"]
    code = main(["recommend", *args, "--set", state, "--set", "music.moods=5"])
    assert code == 0
    assert len(json.loads(capsys.readouterr().out)) == 5
    assert snapshot(db) == before


def test_a_catalog_smaller_than_k_is_kept_without_moods(db, tmp_path):
    """Fewer tracks than moods: the tracks are stored (a later import may add more) and
    the bad rows reported, instead of the whole import failing on the refit."""
    from appliance.music.catalog import load_moods

    write_minimal(tmp_path / "few.csv", 3)
    with (tmp_path / "few.csv").open("a") as fh:
        fh.write("spotify:track:bad,Bad,X,0.5,0.5\n")
    report = import_catalog(db, tmp_path / "few.csv", k=4)
    assert report.added == 3 and [line for line, _ in report.skipped] == [5]
    assert catalog_stats(db) == {"tracks": 3, "moods": []}
    assert load_moods(db, k=4, save=True) is None
    write_minimal(tmp_path / "more.csv", 5, offset=3)
    import_catalog(db, tmp_path / "more.csv", k=4)
    assert len(catalog_stats(db)["moods"]) == 4


def test_a_stream_without_newlines_is_refused_in_bounded_memory(tmp_path):
    """`catalog import /dev/zero` (any stream without newlines) grew memory without
    bound: 3.6 GB in 15 s. Run under a 1.5 GB address-space limit, it now ends at once
    with a clear error, and the database keeps what it had."""
    import resource
    import subprocess
    import sys

    from support import ROOT

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))

    result = subprocess.run(
        [sys.executable, "-m", "appliance", "catalog", "import", "/dev/zero",
         "--set", f"storage.state_dir={tmp_path / 'state'}"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, preexec_fn=limit, check=False,
        env={"OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "longer than" in result.stderr and "not a catalog CSV" in result.stderr
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr


def test_a_line_longer_than_any_catalog_line_is_a_catalog_error(tmp_path):
    from appliance.music.catalog import MAX_LINE_CHARS, CatalogError, read_catalog_csv

    path = tmp_path / "one-line.csv"
    path.write_text("uri,name,artist,valence,energy\n" + "x" * (MAX_LINE_CHARS + 5))
    with pytest.raises(CatalogError, match="line 2 is longer than"):
        read_catalog_csv(path)

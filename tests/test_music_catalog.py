"""Catalog import edge cases: odd rows and headers, and what a failed import leaves."""

from __future__ import annotations

import pytest

from appliance.music.catalog import catalog_stats, import_catalog

SPOTIFY_HEADER = ",track_id,artists,album_name,track_name,popularity,energy,valence"


def spotify_id(i: int) -> str:
    return f"{i:022d}"


@pytest.fixture
def db(tmp_path):
    from appliance.store.database import open_database

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

"""Moods, catalog import, recommender and the local queue, on real SQLite."""

from __future__ import annotations

import math
import random
import string

import numpy as np
import pytest
from support import SHARED_DATA

from appliance.config.schema import MusicConfig
from appliance.music.catalog import (
    CatalogError,
    catalog_stats,
    fit_moods,
    import_catalog,
    load_moods,
)
from appliance.music.moods import MoodMap, MoodTracker, kmeans, name_clusters, va_to_plane
from appliance.music.outbox import Outbox
from appliance.music.recommender import Recommender
from appliance.store.database import StoreError, open_database

CATALOG_CSV = SHARED_DATA / "catalog" / "spotify_tracks_sample.csv"


def track_id(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(22))


def write_minimal(path, n: int = 200, seed: int = 0) -> list[dict]:
    """Four blobs of tracks near the corners of the valence/energy plane."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        cx, cy = [(0.85, 0.85), (0.15, 0.85), (0.85, 0.15), (0.15, 0.15)][i % 4]
        rows.append(
            {
                "uri": f"spotify:track:{track_id(rng)}",
                "name": f"Song {i}",
                "artist": f"Artist {i % 25}",
                "valence": round(min(1, max(0, rng.gauss(cx, 0.06))), 3),
                "energy": round(min(1, max(0, rng.gauss(cy, 0.06))), 3),
            }
        )
    lines = ["uri,name,artist,valence,energy"] + [
        f"{r['uri']},{r['name']},{r['artist']},{r['valence']},{r['energy']}" for r in rows
    ]
    path.write_text("\n".join(lines) + "\n")
    return rows


@pytest.fixture
def db(tmp_path):
    database = open_database(tmp_path / "state")
    yield database
    database.conn.close()


@pytest.fixture
def catalog(db, tmp_path):
    rows = write_minimal(tmp_path / "tracks.csv")
    import_catalog(db, tmp_path / "tracks.csv")
    return rows


# ----------------------------------------------------------------------------- moods


def test_va_to_plane_is_the_documented_linear_map():
    assert va_to_plane(0, 0) == (0.5, 0.5)
    assert va_to_plane(-1, 1) == (0.0, 1.0)
    assert va_to_plane(0.81, 0.51) == pytest.approx((0.905, 0.755))
    assert va_to_plane(5, -5) == (1.0, 0.0)  # clipped


def test_kmeans_finds_separated_blobs_and_is_deterministic():
    rng = np.random.default_rng(1)
    centres = np.array([[0.2, 0.2], [0.8, 0.2], [0.5, 0.9]])
    points = np.concatenate([c + rng.normal(0, 0.03, (100, 2)) for c in centres])
    found, labels = kmeans(points, 3, seed=7)
    assert sorted(map(tuple, np.round(found, 1))) == sorted(map(tuple, centres))
    assert len(set(labels[:100])) == 1 and len(set(labels)) == 3
    again, _ = kmeans(points, 3, seed=7)
    assert np.array_equal(found, again)
    with pytest.raises(ValueError):
        kmeans(points[:2], 3)


def test_clusters_are_named_by_their_corner():
    centroids = np.array([[0.2, 0.8], [0.8, 0.7], [0.3, 0.2], [0.7, 0.3]])
    assert name_clusters(centroids) == ["energetic", "happy", "sad", "calm"]
    three = name_clusters(np.array([[0.9, 0.9], [0.8, 0.8], [0.1, 0.1]]))
    assert three == ["happy-1", "happy-2", "sad"]


def test_mood_tracker_hysteresis():
    moods = MoodMap.fit(np.array([[0.85, 0.85], [0.15, 0.85], [0.85, 0.15], [0.15, 0.15]] * 5), k=4)
    tracker = MoodTracker(moods, hold_s=5.0, margin=0.05)
    assert tracker.update(0, 0.8, 0.8) == "happy"  # first sample sets the mood at once
    assert tracker.update(1, -0.8, -0.8) == "happy"  # a glimpse of sadness: held
    assert tracker.update(3, 0.8, 0.8) == "happy"
    for t in (4, 6, 8):
        mood = tracker.update(t, -0.8, -0.8)
    assert mood == "happy"  # 4 s of sad so far
    assert tracker.update(9, -0.8, -0.8) == "sad"  # 5 s: changed
    # on the boundary, within the margin: no flapping
    for t in range(10, 40):
        mood = tracker.update(t, 0.001 if t % 2 else -0.001, -0.7)
    assert mood == "sad"


# ----------------------------------------------------------------------------- catalog


def test_minimal_import_is_idempotent_and_fits_four_moods(db, tmp_path):
    write_minimal(tmp_path / "t.csv")
    first = import_catalog(db, tmp_path / "t.csv")
    assert (first.rows, first.added, first.updated, len(first.skipped)) == (200, 200, 0, 0)
    again = import_catalog(db, tmp_path / "t.csv")
    assert (again.added, again.updated) == (0, 200)
    stats = catalog_stats(db)
    assert stats["tracks"] == 200
    assert {m["mood"]: m["tracks"] for m in stats["moods"]} == {
        "happy": 50,
        "energetic": 50,
        "calm": 50,
        "sad": 50,
    }
    happy = next(m for m in stats["moods"] if m["mood"] == "happy")
    assert happy["valence"] > 0.7 and happy["energy"] > 0.7


def test_bad_rows_are_reported_by_line_and_good_rows_kept(db, tmp_path):
    good = "spotify:track:" + "a" * 22
    lines = [
        "uri,name,artist,valence,energy",
        f"{good},Fine,Someone,0.5,0.5",
        "spotify:track:short,Bad id,X,0.5,0.5",
        f"spotify:track:{'b' * 22},No energy,X,0.5,",
        f"spotify:track:{'c' * 22},Too bright,X,1.5,0.5",
        f"spotify:track:{'d' * 22},,X,0.5,0.5",
        f"spotify:track:{'e' * 22},Nan,X,nan,0.5",
        f"spotify:track:{'f' * 22},Extra,X,0.5,0.5,surprise",
        f"spotify:track:{'g' * 22},Also fine,Y,0.1,0.9",
        f"spotify:track:{'h' * 22},Third,Z,0.9,0.1",
        f"spotify:track:{'i' * 22},Fourth,W,0.1,0.1",
    ]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    report = import_catalog(db, tmp_path / "t.csv")
    assert [line for line, _ in report.skipped] == [3, 4, 5, 6, 7, 8]
    reasons = dict(report.skipped)
    assert "not spotify:track" in reasons[3] and "energy" in reasons[4]
    assert "outside 0..1" in reasons[5] and "empty name" in reasons[6]
    assert "more fields" in reasons[8]
    assert report.added == 4 and catalog_stats(db)["tracks"] == 4


def test_unknown_columns_and_missing_file_are_clear_errors(db, tmp_path):
    (tmp_path / "x.csv").write_text("title,singer\na,b\n")
    with pytest.raises(CatalogError, match="unknown columns"):
        import_catalog(db, tmp_path / "x.csv")
    with pytest.raises(CatalogError, match="no such file"):
        import_catalog(db, tmp_path / "missing.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CatalogError):
        import_catalog(db, tmp_path / "bin.csv")


def test_spotify_dataset_layout(db, tmp_path):
    header = (
        ",track_id,artists,album_name,track_name,popularity,duration_ms,explicit,"
        "danceability,energy,key,loudness,mode,speechiness,acousticness,instrumentalness,"
        "liveness,valence,tempo,time_signature,track_genre"
    )
    row = "0,{id},A;B,Album,{name},{pop},1000,False,0.5,{e},1,-5,1,0.1,0.1,0,0.1,{v},120,4,{g}"
    rows = [
        row.format(id="5SuOikwiRyPMVoIQDJUgSV", name="One", pop=73, e=0.46, v=0.72, g="pop"),
        row.format(id="4qPNDBW1i3p13qLCt0Ki3A", name="Two", pop=55, e=0.17, v=0.27, g="sad"),
        row.format(id="1iJBSr7s7jYXzM8EGcbK5b", name="Three", pop=57, e=0.36, v=0.12, g="x"),
        row.format(id="6lfxq3CG4xtTiEg7opyCyx", name="Four", pop=71, e=0.06, v=0.14, g="y"),
        # the same track under another genre: kept once
        row.format(id="5SuOikwiRyPMVoIQDJUgSV", name="One", pop=73, e=0.46, v=0.72, g="rock"),
    ]
    (tmp_path / "s.csv").write_text("\n".join([header, *rows]) + "\n")
    report = import_catalog(db, tmp_path / "s.csv")
    assert (report.added, report.duplicates) == (4, 1)
    track = db["tracks"].get("spotify:track:5SuOikwiRyPMVoIQDJUgSV")
    assert track["artist"] == "A, B" and track["main_artist"] == "A"
    assert track["popularity"] == 73 and track["genre"] == "rock"


@pytest.mark.skipif(not CATALOG_CSV.is_file(), reason=f"shared catalog absent at {CATALOG_CSV}")
def test_the_shared_catalog_imports_cleanly(db):
    report = import_catalog(db, CATALOG_CSV)
    assert report.rows == 2938 and not report.skipped
    stats = catalog_stats(db)
    assert {m["mood"] for m in stats["moods"]} == {"happy", "energetic", "calm", "sad"}
    assert sum(m["tracks"] for m in stats["moods"]) == stats["tracks"]
    centre = {m["mood"]: (m["valence"], m["energy"]) for m in stats["moods"]}
    assert max(centre, key=lambda m: centre[m][0]) == "happy"  # most positive
    assert min(centre, key=lambda m: centre[m][0]) == "sad"  # least positive ...
    assert min(centre, key=lambda m: centre[m][1]) == "sad"  # ... and least energetic
    assert max(centre, key=lambda m: centre[m][1]) in ("energetic", "happy")
    assert centre["energetic"][1] > centre["calm"][1] and centre["calm"][0] > centre["sad"][0]
    rec = Recommender(db, load_moods(db, k=4), MusicConfig())
    high = rec.recommend(0.8, 0.7, user="u", n=20)
    low = rec.recommend(-0.7, -0.6, user="u", n=20)
    assert np.mean([p.valence for p in high]) > np.mean([p.valence for p in low]) + 0.3
    assert np.mean([p.energy for p in high]) > np.mean([p.energy for p in low]) + 0.3


def test_moods_refit_when_k_changes(db, catalog):
    assert len(load_moods(db, k=4).moods) == 4
    assert len(load_moods(db, k=3).moods) == 3
    assert len(fit_moods(db, k=4).moods) == 4


# ----------------------------------------------------------------------------- recommender


def recommender(db, **changes) -> Recommender:
    return Recommender(db, load_moods(db, k=4), MusicConfig(**changes))


def test_recommendations_fit_the_mood_best_first(db, catalog):
    picks = recommender(db).recommend(0.8, 0.6, user="ana", n=5)
    assert len(picks) == 5 and all(p.mood == "happy" for p in picks)
    assert [p.score for p in picks] == sorted((p.score for p in picks), reverse=True)
    sad = recommender(db).recommend(-0.7, -0.6, user="ana", n=3)
    assert all(p.mood == "sad" for p in sad)
    best = picks[0]
    distance = math.dist((best.valence, best.energy), va_to_plane(0.8, 0.6))
    assert best.score == pytest.approx(
        0.7 * (0.5 + 0.5 * (1 - distance / math.sqrt(2))) + 0.15, abs=1e-3
    )


def test_likes_and_skips_shape_later_picks_per_user(db, catalog):
    rec = recommender(db)
    first = rec.recommend(0.8, 0.6, user="ana", n=3)
    now = 1_000_000.0
    db["feedback"].insert_all(
        [
            {"user": "ana", "uri": first[0].uri, "artist": first[0].artist, "action": "skip",
             "t": now, "source": "test"},
            {"user": "ana", "uri": first[2].uri, "artist": first[2].artist, "action": "like",
             "t": now, "source": "test"},
        ]
    )  # fmt: skip
    after = rec.recommend(0.8, 0.6, user="ana", n=3, now=now)
    assert after[0].uri == first[2].uri  # the liked one comes first
    assert first[0].uri not in [p.uri for p in after]
    other = rec.recommend(0.8, 0.6, user="ben", n=3, now=now)
    assert [p.uri for p in other] == [p.uri for p in first]  # ben's profile is untouched
    years_later = rec.recommend(0.8, 0.6, user="ana", n=1, now=now + 10 * 365 * 86400)
    assert years_later[0].uri == first[0].uri  # feedback decays with time


def test_no_repeats_within_the_window(db, catalog):
    rec = recommender(db, no_repeat_hours=1.0)
    outbox = Outbox(db)
    now = 2_000_000.0
    first = rec.recommend(0.8, 0.6, user="ana", n=1, now=now)[0]
    outbox.add(first, "ana", now=now)
    second = rec.recommend(0.8, 0.6, user="ana", n=1, now=now + 60)[0]
    assert second.uri != first.uri
    # still waiting to play after the window: never a second copy of it
    assert rec.recommend(0.8, 0.6, user="ana", n=1, now=now + 7200)[0].uri != first.uri
    db.execute("UPDATE queue SET state = 'played'")
    db.conn.commit()
    assert rec.recommend(0.8, 0.6, user="ana", n=1, now=now + 7200)[0].uri == first.uri


def test_a_song_still_waiting_is_never_picked_again_even_when_all_played_lately(db, tmp_path):
    """With every track recommended within the window, repeats beat silence; but a
    repeat of a song still queued put a second copy in Spotify's queue, and two rows of
    one song the sync worker could not tell apart."""
    write_minimal(tmp_path / "four.csv", n=4)
    import_catalog(db, tmp_path / "four.csv", k=2)
    rec = Recommender(db, load_moods(db, k=2), MusicConfig(moods=2, no_repeat_hours=6.0))
    outbox = Outbox(db)
    picked = []
    for _ in range(6):
        picks = rec.recommend(0.5, 0.5, user="ana", n=1)
        if not picks:
            break
        picked.append(picks[0].uri)
        outbox.add(picks[0], "ana")
    assert len(picked) == 4 and len(set(picked)) == 4  # then nothing: all four wait
    db.execute("UPDATE queue SET state = 'played' WHERE uri = ?", [picked[0]])
    db.conn.commit()
    assert [p.uri for p in rec.recommend(0.5, 0.5, user="ana", n=3)] == [picked[0]]


def test_high_va_gets_brighter_songs_than_low_va(db, catalog):
    rec = recommender(db)
    high = rec.recommend(0.7, 0.7, user="u", n=10)
    low = rec.recommend(-0.7, -0.7, user="u", n=10)
    assert np.mean([p.valence for p in high]) > np.mean([p.valence for p in low])
    assert np.mean([p.energy for p in high]) > np.mean([p.energy for p in low])


def test_empty_catalog_recommends_nothing(db):
    assert load_moods(db, k=4) is None


# ----------------------------------------------------------------------------- outbox


def test_outbox_states_are_committed_one_by_one(db, catalog, tmp_path):
    outbox = Outbox(db)
    picks = recommender(db).recommend(0.0, 0.0, user="ana", n=3)
    ids = [outbox.add(p, "ana") for p in picks]
    assert outbox.waiting("ana") == 3 and [r["id"] for r in outbox.due()] == ids
    outbox.set_state(ids[0], "sending", attempt=True)
    outbox.set_state(ids[0], "sent")
    outbox.set_state(ids[1], "sending", attempt=True)
    outbox.set_state(ids[1], "sent")
    other = open_database(tmp_path / "state")  # another connection sees every change
    try:
        assert Outbox(other).counts() == {"sent": 2, "recommended": 1}
    finally:
        other.conn.close()
    assert outbox.mark_played(picks[1].uri) == 2  # the player is on the 2nd: both played
    assert outbox.counts() == {"played": 2, "recommended": 1}
    assert outbox.last_sent("ana")["uri"] in {picks[0].uri, picks[1].uri}
    assert outbox.waiting("ana") == 1


def test_offline_feedback_means_the_song_last_seen_playing(db, catalog):
    """The newest `sent` song usually waits behind the one playing: a press offline
    meant a song not yet heard. A song seen playing wins; one that went from the player
    unseen (mark_gone) was never seen, so it is no better than a sent one."""
    outbox = Outbox(db)
    a, b, c = (outbox.add(p, "ana") for p in recommender(db).recommend(0, 0, user="ana", n=3))
    outbox.set_state(a, "sent")
    outbox.mark_played(outbox.in_state("sent")[0]["uri"])  # the player was seen on A
    outbox.set_state(b, "sent")
    outbox.set_state(c, "sent")
    outbox.mark_gone([b])
    assert outbox.last_sent("ana")["id"] == a
    outbox.set_state(a, "skipped")
    assert outbox.last_sent("ana")["id"] == c  # nothing seen playing: the newest sent


def test_outbox_read_failures_are_store_errors(db):
    """The sync worker and director reopen the store on StoreError; a raw sqlite3 error
    would loop tracebacks on a broken connection instead."""
    outbox = Outbox(db)
    db.conn.close()
    for read in (outbox.due, outbox.counts, lambda: outbox.waiting("ana")):
        with pytest.raises(StoreError, match="cannot read the song queue"):
            read()


def test_director_recovers_when_the_store_is_locked_while_it_opens(
    db, catalog, tmp_path, monkeypatch
):
    import sqlite3

    from appliance.music import director as director_module

    real_load_moods = director_module.load_moods
    calls = []

    def locked_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # a `catalog import` holds the write lock during the refit
            raise sqlite3.OperationalError("database is locked")
        return real_load_moods(*args, **kwargs)

    monkeypatch.setattr(director_module, "load_moods", locked_once)
    now = [0.0]
    director = director_module.MusicDirector(
        str(tmp_path / "state"), MusicConfig(), clock=lambda: now[0]
    )
    try:
        director.update(1.0, 0.6, 0.6)
        assert director.state == "storage error" and "locked" in director.error
        now[0] = 31.0  # the retry delay has passed
        director.update(2.0, 0.6, 0.6)
        assert director.state == "ready" and director.error is None
        assert director.last_song is not None  # the queue was low: a song was queued
    finally:
        director.close()


def test_director_serves_a_mood_change_that_came_inside_min_interval(db, catalog, tmp_path):
    """A change within min_interval_s of the last song is delayed, not dropped: the
    listener who turns sad 9 s after a happy song gets a sad song 30 s after it."""
    from appliance.music.director import MusicDirector

    settings = MusicConfig(mood_hold_s=0.0, min_interval_s=30.0, queue_low=1)
    director = MusicDirector(str(tmp_path / "state"), settings)
    try:
        director.update(0.0, 0.8, 0.8)  # happy; the queue is empty (low): a song
        assert director.mood == "happy" and director.last_song["mood"] == "happy"
        director.update(9.0, -0.8, -0.8)  # sad, but only 9 s after that song
        assert director.mood == "sad" and director.queue_depth == 1
        for t in range(10, 30):
            director.update(float(t), -0.8, -0.8)
        assert director.last_song["mood"] == "happy"  # min_interval_s still holds
        director.update(30.0, -0.8, -0.8)
        assert director.last_song["mood"] == "sad" and director.queue_depth == 2
        for t in range(31, 120):  # served once: the queue is not low, no more songs
            director.update(float(t), -0.8, -0.8)
        assert director.queue_depth == 2
    finally:
        director.close()


def test_director_drops_a_pending_change_when_the_mood_returns(db, catalog, tmp_path):
    """happy -> sad -> happy inside min_interval_s: the queued happy song still fits."""
    from appliance.music.director import MusicDirector

    settings = MusicConfig(mood_hold_s=0.0, min_interval_s=30.0, queue_low=1)
    director = MusicDirector(str(tmp_path / "state"), settings)
    try:
        director.update(0.0, 0.8, 0.8)
        director.update(5.0, -0.8, -0.8)
        director.update(10.0, 0.8, 0.8)
        for t in range(11, 90):
            director.update(float(t), 0.8, 0.8)
        assert director.mood == "happy" and director.queue_depth == 1
    finally:
        director.close()


def test_music_off_stops_queuing_and_on_resumes(db, catalog, tmp_path):
    """The switch behind `music on/off` (MQTT, Home Assistant): moods go on, songs wait."""
    from appliance.music.director import MusicDirector

    settings = MusicConfig(mood_hold_s=0.0, min_interval_s=0.0, queue_low=1)
    director = MusicDirector(str(tmp_path / "state"), settings)
    try:
        director.paused = True
        for t in range(40):
            director.update(float(t), 0.8, 0.8)
        assert director.snapshot()["music"] == "off" and director.mood == "happy"
        assert director.queue_depth == 0 and director.last_song is None
        director.paused = False
        director.update(41.0, 0.8, 0.8)
        assert director.queue_depth == 1 and director.last_song["mood"] == "happy"
    finally:
        director.close()

"""The project store: migrations, reopen, constraints, concurrent openers."""
import sqlite3
import threading

import pytest

from mikupal import store


def test_migrates_empty_file_and_reopens(tmp_path):
    path = tmp_path / "project.db"
    db = store.connect(path)
    assert store.schema_version(db) == store.CURRENT_VERSION
    for t in ("videos", "runs", "segments", "tracks", "annotations", "raters", "reviews", "errors", "stage_state", "exports"):
        assert t in db.table_names()
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    db.conn.close()
    db2 = store.connect(path)
    assert store.apply_migrations(db2) == 0  # nothing left to do on re-open
    assert db2.conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == store.CURRENT_VERSION
    assert store.integrity_ok(db2)


def test_public_columns_exist(tmp_path):
    db = store.connect(tmp_path / "p.db")
    want = {
        "videos": "id sha256 path duration_s fps width height has_audio added_at",
        "runs": "id started_at finished_at status config_json",
        "segments": "id video_id start_s end_s text language snr_db speaker_track_id speaker_bbox_json asd_score status",
        "tracks": "id video_id start_s end_s boxes_json",
        "annotations": "id segment_id run_id backend model prompt_sha run_index label_set primary_emotion intensities_json"
        " rationale visual_analysis audio_analysis text_analysis raw_response input_tokens output_tokens cost_usd latency_s created_at",
        "raters": "id name",
        "reviews": "id annotation_id rater_id verdict corrected_label comment created_at",
        "errors": "id run_id video_id segment_id stage message created_at",
    }
    for table, cols in want.items():
        have = set(db[table].columns_dict)
        assert set(cols.split()) <= have, (table, set(cols.split()) - have)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "p.db"
    db = store.connect(path)
    db.conn.execute("INSERT INTO schema_version VALUES (?, ?)", (store.CURRENT_VERSION + 5, store.now()))
    db.conn.close()
    with pytest.raises(RuntimeError, match="newer than this MIKU-PAL"):
        store.connect(path)


def test_foreign_keys_and_unique_annotation(tmp_path):
    db = store.connect(tmp_path / "p.db")
    with pytest.raises(sqlite3.IntegrityError):
        db.conn.execute("INSERT INTO segments (video_id, start_s, end_s) VALUES (999, 0, 1)")
    db.conn.execute("INSERT INTO videos (sha256, path, added_at) VALUES ('a', 'x', 'now')")
    db.conn.execute("INSERT INTO segments (video_id, start_s, end_s) VALUES (1, 0, 1)")
    ann = ("INSERT INTO annotations (segment_id, backend, model, prompt_sha, run_index, label_set, primary_emotion,"
           " intensities_json, created_at) VALUES (1, 'baseline', 'm', 'p', 0, 'cowen26', 'Joy', '{}', 'now')")
    db.conn.execute(ann)
    with pytest.raises(sqlite3.IntegrityError):
        db.conn.execute(ann)
    db.conn.execute("INSERT INTO raters (name) VALUES ('a')")
    with pytest.raises(sqlite3.IntegrityError):  # verdict must be accept/reject/skip
        db.conn.execute("INSERT INTO reviews (annotation_id, rater_id, verdict, created_at) VALUES (1, 1, 'maybe', 'now')")


def test_transaction_rolls_back(tmp_path):
    db = store.connect(tmp_path / "p.db")
    with pytest.raises(ZeroDivisionError):
        with store.transaction(db):
            db.conn.execute("INSERT INTO videos (sha256, path, added_at) VALUES ('a', 'x', 'now')")
            1 / 0
    assert db.conn.execute("SELECT COUNT(*) FROM videos").fetchone()[0] == 0


def test_two_processes_open_fresh_file_at_once(tmp_path):
    path = tmp_path / "p.db"
    errors = []

    def opener():
        try:
            store.connect(path).conn.close()
        except Exception as e:  # pragma: no cover - the assertion reports it
            errors.append(e)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    db = store.connect(path)
    assert db.conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == store.CURRENT_VERSION


def test_a_newer_schema_is_one_line_and_untouched(tmp_path):
    # A project written by a newer MIKU-PAL: every command says so in one line, changes nothing.
    import subprocess
    import sys

    from mikupal.project import Project

    p = Project.create(tmp_path / "p")
    db = p.db()
    db.conn.execute("INSERT INTO schema_version VALUES (?, ?)", (store.CURRENT_VERSION + 1, store.now()))
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.conn.close()
    before = (p.root / "project.db").read_bytes()
    r = subprocess.run([sys.executable, "-m", "mikupal.cli", "status", str(p.root)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "newer than this MIKU-PAL" in lines[0] and "upgrade" in lines[0]
    assert (p.root / "project.db").read_bytes() == before

"""The product's own stages end to end on the demo clip, through `mikupal run`.

Offline settings as in `mikupal demo`: no separation model, subtitles, Haar faces, AV-sync
active speaker, the baseline annotator (and the real google-genai client against the local
Gemini test server for the kill test).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mikupal import store
from mikupal.cli import app
from mikupal.demo_project import DEMO_SETTINGS, _apply_settings
from mikupal.ingest import add_videos
from mikupal.project import Project
from mikupal.runner import Runner
from mikupal.stage import STAGE_ORDER
from mikupal.status import project_status

from gemini_server import GeminiServer
from waiting import wait_until

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
VIDEO_STAGES = tuple(s for s in STAGE_ORDER if s != "emotion")  # every stage that keeps a video state


def _offline(project: Project) -> Project:
    _apply_settings(project.root / "mikupal.toml", DEMO_SETTINGS)
    return Project.open(project.root)


def _per_item_counts(db):
    return db.conn.execute(
        "SELECT segment_id, run_index, COUNT(*) FROM annotations GROUP BY segment_id, run_index ORDER BY 1, 2"
    ).fetchall()


def test_mikupal_run_labels_the_demo_clip_and_isolates_a_corrupt_video(project, demo_clip, tmp_path):
    project = _offline(project)
    good, bad = tmp_path / "talk.mp4", tmp_path / "broken.mp4"
    good.write_bytes(demo_clip.path.read_bytes())
    good.with_suffix(".srt").write_bytes(demo_clip.srt_path.read_bytes())
    bad.write_bytes(demo_clip.path.read_bytes() + b"\0")
    db = project.db()
    add_videos(db, [good, bad])
    bad.write_bytes(random.Random(0).randbytes(20000))  # corrupted after it was added
    good_id, bad_id = (db.conn.execute("SELECT id FROM videos WHERE path LIKE ?", (f"%{n}",)).fetchone()[0]
                       for n in ("talk.mp4", "broken.mp4"))

    res = CliRunner().invoke(app, ["run", str(project.root), "-q"])
    assert res.exit_code == 1, res.output
    assert "1 item(s) failed" in res.output and f"mikupal status {project.root}" in res.output

    # The good video went through every stage; each kept segment has exactly one answer.
    for stage in VIDEO_STAGES:
        assert store.get_stage_state(db, good_id, stage)["status"] == "done", stage
    kept = [r[0] for r in db.conn.execute("SELECT id FROM segments WHERE video_id=? AND status='ok'", (good_id,))]
    assert len(kept) >= 3  # the demo clip has four subtitle cues, spoken by a visible face
    assert _per_item_counts(db) == [(sid, 0, 1) for sid in kept]
    # The corrupt one failed its first stage, with one line naming it, and went no further.
    states = dict(db.conn.execute("SELECT stage, status FROM stage_state WHERE video_id=?", (bad_id,)).fetchall())
    assert states == {"separate": "failed"}
    errs = store.rows(db, "SELECT * FROM errors WHERE video_id=?", (bad_id,))
    assert len(errs) == 1 and "broken.mp4" in errs[0]["message"] and "\n" not in errs[0]["message"]
    run = store.rows(db, "SELECT * FROM runs ORDER BY id DESC LIMIT 1")[0]
    assert run["status"] == "finished" and Path(run["log_path"]).is_file()
    assert db.conn.execute("SELECT DISTINCT run_id FROM annotations").fetchall() == [(run["id"],)]
    assert db.conn.execute("SELECT DISTINCT run_id FROM stage_state").fetchall() == [(run["id"],)]

    # Rerun: finished work is skipped, the corrupt video is retried (and fails again).
    again = Runner(project).run()
    assert again.stages["separate"].total == 1 and again.stages["separate"].failed == 1
    assert all(again.stages[s].total == 0 for s in STAGE_ORDER[1:])
    assert _per_item_counts(db) == [(sid, 0, 1) for sid in kept]
    st = project_status(project, db)
    assert st["stages"]["emotion"]["done"] == len(kept) and st["stages"]["separate"]["failed"] == 1
    # Pending is what the next run will do: the corrupt video for separate, nothing else.
    assert st["stages"]["separate"]["pending"] == 1 and st["stages"]["emotion"]["pending"] == 0
    # Another label set makes every kept segment pending again (the run's own cache keys).
    changed = type(project).open(project.root, ['emotion.label_set="ekman6"'])
    assert project_status(changed, db)["stages"]["emotion"]["pending"] == len(kept)


def test_sigkill_during_emotion_then_resume_annotates_each_segment_once_per_run(project, demo_clip, tmp_path):
    project = _offline(project)
    clip = tmp_path / "talk.mp4"
    clip.write_bytes(demo_clip.path.read_bytes())
    clip.with_suffix(".srt").write_bytes(demo_clip.srt_path.read_bytes())
    db = project.db()
    add_videos(db, [clip])
    assert Runner(project, list(VIDEO_STAGES)).run().ok
    kept = [r[0] for r in db.conn.execute("SELECT id FROM segments WHERE status='ok' ORDER BY id")]
    runs = 3
    total = len(kept) * runs

    server = GeminiServer()
    server.hold_after = 2  # two answers go out; the rest wait until released (after the kill)
    env = {**os.environ, "GEMINI_API_KEY": "AIzaSy-test-key-for-the-local-server", "MIKUPAL_GEMINI_BASE_URL": server.url}
    args = ["--stages", "emotion", "--backend", "gemini", "--model", "gemini-test-flash", "--runs", str(runs),
            "--set", "emotion.concurrency=2", "-q"]
    try:
        proc = subprocess.Popen([sys.executable, "-m", "mikupal.cli", "run", str(project.root), *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: db.conn.execute("SELECT COUNT(*) FROM annotations").fetchone()[0] >= 2
                       or proc.poll() is not None, timeout=180, what="two answers stored by the child run")
            assert proc.poll() is None, "the run ended although its later answers were held"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        n_killed = db.conn.execute("SELECT COUNT(*) FROM annotations").fetchone()[0]
        assert n_killed == 2  # exactly the answers the server gave before the kill
        assert store.integrity_ok(db)
        assert project_status(project, db)["recent_runs"][0]["status"] == "interrupted"
        server.answers_released.set()

        # Resume in this process with the same settings.
        for k, v in (("GEMINI_API_KEY", env["GEMINI_API_KEY"]), ("MIKUPAL_GEMINI_BASE_URL", server.url)):
            os.environ[k] = v
        try:
            resumed = Project.open(project.root, ['emotion.backend="gemini"', 'emotion.model="gemini-test-flash"',
                                                  f"emotion.runs={runs}", "emotion.concurrency=2"])
            summary = Runner(resumed, ["emotion"]).run()
        finally:
            for k in ("GEMINI_API_KEY", "MIKUPAL_GEMINI_BASE_URL"):
                os.environ.pop(k, None)
        assert summary.ok and summary.stages["emotion"].ok == total - n_killed
        assert _per_item_counts(db) == [(sid, i, 1) for sid in kept for i in range(runs)]
        assert store.integrity_ok(db)
        # Only the requests in flight at the kill were paid twice.
        n_requests = sum(1 for r in server.requests if r["path"].endswith(":generateContent"))
        assert total <= n_requests <= total + 2
    finally:
        server.close()


def test_run_bad_usage_exits_2_with_one_line(project):
    r = CliRunner().invoke(app, ["run", str(project.root), "--stages", "asr,facez"])
    assert r.exit_code == 2 and "unknown stage 'facez'" in r.output
    r = CliRunner().invoke(app, ["run", str(project.root), "--workers", "faces=two"])
    assert r.exit_code == 2 and "whole number" in r.output
    r = CliRunner().invoke(app, ["run", str(project.root), "--devices", "gpu7"])
    assert r.exit_code == 2 and "not a device" in r.output
    r = CliRunner().invoke(app, ["run", str(project.root)])
    assert r.exit_code == 2 and "no videos yet" in r.output

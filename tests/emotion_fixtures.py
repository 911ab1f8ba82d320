"""Helpers for the emotion tests: a project with the demo video and its utterances as segments,
and a small driver loop that runs the emotion stage's prepare/process/commit like the runner."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gemini_server import GeminiServer
from mikupal import store
from mikupal.ingest import add_videos
from mikupal.project import Project

API_KEY = "AIzaSy-TEST-KEY-must-never-leak-0123456789"


def project_with_segments(project: Project, demo_clip, statuses=None) -> list[int]:
    """Add the demo video; one segment per cue, speaker box = the speaking face."""
    db = project.db()
    add_videos(db, [demo_clip.path])
    vid = db.conn.execute("SELECT id FROM videos").fetchone()[0]
    box = demo_clip.face_boxes[demo_clip.speaker_side]
    ids = []
    with store.transaction(db) as conn:
        for i, (a, b, text) in enumerate(demo_clip.cues):
            st = (statuses or {}).get(i, "ok")
            cur = conn.execute("INSERT INTO segments (video_id, start_s, end_s, text, language, speaker_bbox_json, status)"
                               " VALUES (?,?,?,?,?,?,?)", (vid, a, b, text, "en", json.dumps(list(box)), st))
            ids.append(int(cur.lastrowid))
        for dep in ("segments", "asd"):  # what the runner checks before offering the video to emotion
            store.set_stage_state(db, vid, dep, "done", cache_key="test")
    db.conn.close()
    return ids


def set_cfg(project: Project, **kw) -> None:
    """set_cfg(project, emotion__backend="gemini", clips__inline_max_mb=0.001)"""
    for k, v in kw.items():
        sec, key = k.split("__")
        project.config[sec][key] = v


def _stage_and_tasks(project: Project):
    """The emotion stage over `project`, its db, and every pending item prepared in order."""
    from mikupal.emotion.stage import EmotionStage

    stage = EmotionStage(project)
    db = project.db()
    return stage, db, [stage.prepare(db, it) for it in stage.pending(db)]


def _record_outcomes(stage, db, failures: list[str]):
    """on_outcome(task, result) as the runner does it: a StageError becomes an errors row with
    its detail and path (and its message in `failures`), a result is committed in a transaction."""
    from mikupal.stage import StageError

    def on_outcome(t, r):
        if isinstance(r, StageError):
            failures.append(str(r))
            store.record_error(db, "emotion", str(r), segment_id=t["segment_id"], video_id=t["video_id"],
                               detail=getattr(r, "detail", None), path=getattr(r, "path", None))
        else:
            with store.transaction(db):
                stage.commit(db, t, r)

    return on_outcome


def run_emotion(project: Project, in_flight: int | None = None):
    """Driver loop shaped like the runner's asyncio executor: pending -> prepare on the driver,
    ``process_async`` fanned out (``in_flight`` items at once, default the stage's concurrency()),
    outcomes handled as the runner does. Returns (stage, db, failure messages)."""
    import asyncio

    from mikupal.stage import StageError

    stage, db, tasks = _stage_and_tasks(project)
    failures: list[str] = []
    on_outcome = _record_outcomes(stage, db, failures)

    async def main():
        stage.load()
        sem = asyncio.Semaphore(in_flight or stage.concurrency())

        async def one(t):
            async with sem:
                try:
                    return t, await stage.process_async(t)
                except StageError as e:
                    return t, e

        try:
            started = [asyncio.ensure_future(one(t)) for t in tasks]  # in order, like the runner's queue
            for fut in asyncio.as_completed(started):
                on_outcome(*await fut)
        finally:
            await stage.aclose()

    asyncio.run(main())
    return stage, db, failures


def run_emotion_batch(project: Project, **driver_kw):
    """The batch executor's loop (mikupal.emotion.batch.run_batch) over the stage's pending items,
    outcomes committed / recorded like the runner does. Returns (stage, db, failures, driver)."""
    import asyncio

    from mikupal.emotion.batch import BatchDriver, run_batch

    project.config["emotion"]["batch"] = True
    stage, db, tasks = _stage_and_tasks(project)
    failures: list[str] = []
    drv = BatchDriver(stage, db, **driver_kw)
    asyncio.run(run_batch(stage, db, tasks, _record_outcomes(stage, db, failures), driver=drv))
    return stage, db, failures, drv


def paid(err_row: dict) -> dict:
    """The paid-answer record in an emotion errors row's detail."""
    return json.loads(err_row["detail"])


def annotations(db) -> list[dict]:
    return store.rows(db, "SELECT * FROM annotations ORDER BY segment_id, run_index")


def errors(db) -> list[dict]:
    return store.rows(db, "SELECT * FROM errors WHERE stage='emotion' ORDER BY id")


def db_bytes(project: Project) -> bytes:
    """The database file plus its WAL, as stored on disk."""
    out = b""
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(project.db_path) + suffix)
        if p.exists():
            out += p.read_bytes()
    return out


def espeak_wav(text: str, out: Path, *, amplitude: int, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    import wave

    subprocess.run(["espeak-ng", "-a", str(amplitude), "-s", str(speed), "-p", str(pitch), "-w", str(out), text],
                   check=True, capture_output=True)
    with wave.open(str(out)) as w:  # espeak-ng writes 16-bit mono PCM
        sr, pcm = w.getframerate(), w.readframes(w.getnframes())
    return np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0, sr


def env_for_gemini(monkeypatch, url: str) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("MIKUPAL_GEMINI_BASE_URL", url)


@pytest.fixture()
def gemini_server():
    """The Gemini protocol server (tests/gemini_server.py) for one test; a module imports it
    under the name its tests use (``from emotion_fixtures import gemini_server as server``)."""
    s = GeminiServer(processing_polls=1)
    yield s
    s.close()


# The emotion stage on the Gemini backend as the tests drive it. The timeout is far above what a
# local answer takes on a loaded machine (a timeout would send a request again and change every
# count); the timeout tests lower it against stalls that never answer. Concurrency 1: scripted
# replies go to items in order (tests of concurrency raise it).
GEMINI_SETTINGS = dict(emotion__backend="gemini", emotion__model="gemini-2.5-flash-test", emotion__backoff_s=0.01,
                       emotion__max_backoff_s=0.05, emotion__timeout_s=60.0, emotion__concurrency=1)


def gemini_project(project: Project, demo_clip, server, monkeypatch, **settings) -> Project:
    """`project` with the demo clip's segments (the 4th has status no_face, which emotion skips:
    ``project.seg_ids``) and the emotion stage at `server` with the test key; `settings` as
    for set_cfg, over GEMINI_SETTINGS."""
    env_for_gemini(monkeypatch, server.url)
    project.seg_ids = project_with_segments(project, demo_clip, statuses={3: "no_face"})
    set_cfg(project, **{**GEMINI_SETTINGS, **settings})
    return project


def assert_no_key(project: Project, *texts: str, key: str = API_KEY) -> None:
    """The key is in no DB page (file + WAL), no given message/log text, no project text file."""
    assert key.encode() not in db_bytes(project), "the API key reached project.db"
    for t in texts:
        assert key not in (t or ""), "the API key reached a message/log"
    for p in Path(project.root).rglob("*"):
        if p.is_file() and p.suffix in (".log", ".json", ".jsonl", ".txt"):
            assert key not in p.read_text(errors="ignore"), f"the API key reached {p}"

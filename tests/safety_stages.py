"""A test build of the stages for the app's child runs (registered with $MIKUPAL_TEST_STAGES,
e.g. "segments=safety_stages:Segments,emotion=safety_stages:Emotion", and PYTHONPATH=tests).

They keep the real names, so the run panel's own checkboxes select them, and they follow
the stage contract (results only; the runner writes stage_state, errors and run ids):

- Segments: N fixed segments per video (MIKUPAL_TEST_SEGMENTS, default 3).
- Emotion: one annotation per (segment, run index) for emotion.runs, stamped with the
  backend and model of the run's settings, so a test can see what the panel's controls
  sent; a segment whose text holds "poison" fails with a StageError. With MIKUPAL_TEST_BARRIER=N every item waits until N items are in flight at once:
  the run only finishes when N workers really run side by side (no timing involved).
- Aborting: the emotion stage whose worker process dies in native code (os.abort()).
"""
from __future__ import annotations

import json
import os
import threading
import time

from mikupal import store
from mikupal.stage import Stage, StageError

_barrier: threading.Barrier | None = None
_barrier_guard = threading.Lock()


def _wait_for_peers() -> None:
    global _barrier
    n = int(os.environ.get("MIKUPAL_TEST_BARRIER", "0") or 0)
    if n <= 1:
        return
    with _barrier_guard:
        if _barrier is None:
            _barrier = threading.Barrier(n)
    try:
        _barrier.wait(timeout=120)
    except threading.BrokenBarrierError:
        raise StageError(f"fewer than {n} workers ran at once; raise --workers emotion") from None


class Segments(Stage):
    name = "segments"
    scope = "video"

    def prepare(self, db, item_id):
        dur = db.conn.execute("SELECT COALESCE(duration_s, 6) FROM videos WHERE id=?", (item_id,)).fetchone()[0]
        return {"video_id": item_id, "duration_s": dur, "n": int(os.environ.get("MIKUPAL_TEST_SEGMENTS", "3")),
                "cache_key": self.cache_key(db, item_id)}

    def process(self, task):
        step = task["duration_s"] / task["n"]
        return {"segments": [(i * step, (i + 1) * step) for i in range(task["n"])]}

    def commit(self, db, task, result):
        vid = task["video_id"]
        db.conn.execute("DELETE FROM segments WHERE video_id=?", (vid,))
        for a, b in result["segments"]:
            db.conn.execute("INSERT INTO segments (video_id, start_s, end_s, text) VALUES (?,?,?,?)",
                            (vid, a, b, f"words {a:.2f}"))
        return {"n": len(result["segments"])}


class Emotion(Stage):
    name = "emotion"
    scope = "segment"
    requires = ("segments",)
    config_sections = ("emotion",)

    def _runs(self) -> int:
        return int(self.cfg["emotion"]["runs"])

    def pending(self, db, video_ids=None):
        vids = list(video_ids) if video_ids is not None else [r[0] for r in db.conn.execute("SELECT id FROM videos")]
        e = self.cfg["emotion"]
        out = []
        for vid in vids:
            for (sid,) in db.conn.execute("SELECT id FROM segments WHERE video_id=? ORDER BY id", (vid,)):
                have = {r[0] for r in db.conn.execute(
                    "SELECT run_index FROM annotations WHERE segment_id=? AND backend=? AND model=?",
                    (sid, e["backend"], e["model"]))}
                out += [(sid, i) for i in range(self._runs()) if i not in have]
        return out

    def prepare(self, db, item):
        sid, run_index = item
        text = db.conn.execute("SELECT text FROM segments WHERE id=?", (sid,)).fetchone()[0]
        return {"segment_id": sid, "run_index": run_index, "text": text}

    def process(self, task):
        time.sleep(float(os.environ.get("MIKUPAL_TEST_EMOTION_SLEEP", "0") or 0))
        _wait_for_peers()
        if "poison" in (task["text"] or ""):
            raise StageError(f"segment {task['segment_id']}: the text is poisoned; edit it and rerun")
        return {"primary": "Joy" if task["segment_id"] % 2 else "Calmness"}

    def commit(self, db, task, result):
        e = self.cfg["emotion"]
        db.conn.execute(
            "INSERT INTO annotations (segment_id, run_id, backend, model, prompt_sha, run_index, label_set,"
            " primary_emotion, intensities_json, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (task["segment_id"], getattr(self, "run_id", None), e["backend"], e["model"], "test", task["run_index"],
             "t", result["primary"], json.dumps({result["primary"]: 1.0}), store.now()),
        )


class Aborting(Emotion):
    """A native crash in the middle of the run (as a segfault in a model library would be)."""

    def process(self, task):
        os.abort()

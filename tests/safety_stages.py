"""A test build of the stages for the app's child runs (registered with $MIKUPAL_TEST_STAGES,
e.g. "segments=safety_stages:Segments,emotion=safety_stages:Emotion", and PYTHONPATH=tests).

They are runner_stages' SplitStage and LabelStage under the real names, so the run panel's own
checkboxes select them, and they follow the stage contract (results only; the runner writes
stage_state, errors and run ids):

- Segments: N fixed segments per video (MIKUPAL_TEST_SEGMENTS, default 4).
- Emotion: one annotation per (segment, run index) for emotion.runs, stamped with the
  backend and model of the run's settings, so a test can see what the panel's controls
  sent; a segment whose text holds "poison" fails with a StageError. LabelStage's hold
  applies (MIKUPAL_TEST_LABEL_HOLD_AFTER=N: items after the N-th wait until the file
  MIKUPAL_TEST_LABEL_RELEASE exists). With MIKUPAL_TEST_BARRIER=N every item waits until N
  items are in flight at once: the run only finishes when N workers really run side by side.
  No timing is involved in either.
- Aborting: the emotion stage whose worker process dies in native code (os.abort()).
"""
from __future__ import annotations

import json
import os
import threading

from mikupal import store
from mikupal.stage import StageError

from runner_stages import LabelStage, SplitStage

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


class Segments(SplitStage):
    name = "segments"


class Emotion(LabelStage):
    name = "emotion"
    requires = ("segments",)
    config_sections = ("emotion",)

    @property
    def runs(self) -> int:
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
                out += [(sid, i) for i in range(self.runs) if i not in have]
        return out

    def process(self, task):
        _wait_for_peers()
        return super().process(task)

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

"""Small real-code stages for the runner's scheduling tests and benchmark.

They follow the Stage contract exactly (driver-side pending/prepare/commit writing real rows
into project.db, worker-side process) but do cheap, controllable work, so the tests can
steer timing (a slow segment stage to kill in the middle of) and failures without models.
Timing knobs come from environment variables so a subprocess run picks them up too.
"""
from __future__ import annotations

import hashlib
import json
import itertools
import os
import time

from mikupal import media, store
from mikupal.stage import Stage, StageError


def _sleep_s(name: str) -> float:
    return float(os.environ.get(f"MIKUPAL_TEST_{name.upper()}_SLEEP", "0") or 0)


_held = itertools.count(1)  # next() is atomic under the GIL (and, unlike a Lock, Ray can ship it)


def _hold() -> None:
    """With MIKUPAL_TEST_LABEL_HOLD_AFTER=N, items after the N-th wait (at most 120 s) until the
    file MIKUPAL_TEST_LABEL_RELEASE exists: a subprocess run that cannot finish before it is killed."""
    after = os.environ.get("MIKUPAL_TEST_LABEL_HOLD_AFTER")
    if not after:
        return
    if next(_held) <= int(after):
        return
    release = os.environ.get("MIKUPAL_TEST_LABEL_RELEASE", "")
    deadline = time.monotonic() + 120
    while not (release and os.path.exists(release)) and time.monotonic() < deadline:
        time.sleep(0.05)


class ProbeStage(Stage):
    """Video scope: re-reads the container with the real prober; a broken file is a StageError."""

    name = "probe"
    scope = "video"

    def prepare(self, db, item_id):
        path = db.conn.execute("SELECT path FROM videos WHERE id=?", (item_id,)).fetchone()[0]
        return {"video_id": item_id, "path": path}

    def process(self, task):
        time.sleep(_sleep_s(self.name))
        try:
            info = media.probe(task["path"])
        except media.MediaError as e:
            raise StageError(f"{task['path']}: cannot be decoded ({e}); re-encode it or remove it from the project") from None
        return {"duration_s": info.duration_s}

    def commit(self, db, task, result):
        return result


class SplitStage(Stage):
    """Video scope: cuts each video into N fixed segments (N from MIKUPAL_TEST_SEGMENTS, default 4)."""

    name = "split"
    scope = "video"

    def prepare(self, db, item_id):
        dur = db.conn.execute("SELECT COALESCE(duration_s, 8) FROM videos WHERE id=?", (item_id,)).fetchone()[0]
        return {"video_id": item_id, "duration_s": dur, "n": int(os.environ.get("MIKUPAL_TEST_SEGMENTS", "4"))}

    def process(self, task):
        time.sleep(_sleep_s(self.name))
        step = task["duration_s"] / task["n"]
        return {"segments": [(i * step, (i + 1) * step) for i in range(task["n"])]}

    def commit(self, db, task, result):
        vid = task["video_id"]
        db.conn.execute("DELETE FROM segments WHERE video_id=?", (vid,))
        for a, b in result["segments"]:
            db.conn.execute("INSERT INTO segments (video_id, start_s, end_s, text) VALUES (?,?,?,?)",
                            (vid, a, b, f"words {a:.2f}"))
        return {"n": len(result["segments"])}


class LabelStage(Stage):
    """Segment scope, like the emotion stage: one annotation per (segment, run index)."""

    name = "label"
    scope = "segment"
    requires = ("split",)
    runs = 2

    def pending(self, db, video_ids=None):
        vids = list(video_ids) if video_ids is not None else [r[0] for r in db.conn.execute("SELECT id FROM videos")]
        out = []
        for vid in vids:
            for (sid,) in db.conn.execute("SELECT id FROM segments WHERE video_id=? ORDER BY id", (vid,)):
                have = {r[0] for r in db.conn.execute(
                    "SELECT run_index FROM annotations WHERE segment_id=? AND backend='test'", (sid,))}
                out += [(sid, i) for i in range(self.runs) if i not in have]
        return out

    def prepare(self, db, item):
        sid, run_index = item
        text = db.conn.execute("SELECT text FROM segments WHERE id=?", (sid,)).fetchone()[0]
        return {"segment_id": sid, "run_index": run_index, "text": text}

    def process(self, task):
        time.sleep(_sleep_s(self.name))
        _hold()
        if "poison" in (task["text"] or ""):
            raise StageError(f"segment {task['segment_id']}: the text is poisoned; edit it and rerun")
        digest = hashlib.sha256(f"{task['text']}|{task['run_index']}".encode()).hexdigest()
        return {"primary": "Joy" if int(digest, 16) % 2 else "Calmness", "digest": digest}

    def commit(self, db, task, result):
        # A plain INSERT: the UNIQUE index turns a duplicate into an error, never a second row.
        db.conn.execute(
            "INSERT INTO annotations (segment_id, backend, model, prompt_sha, run_index, label_set, primary_emotion,"
            " intensities_json, rationale, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (task["segment_id"], "test", "m", "p", task["run_index"], "t", result["primary"],
             json.dumps({result["primary"]: 1.0}), result["digest"], store.now()),
        )


class TagStage(LabelStage):
    """Segment scope after `label`: one 'tag' answer per segment that has a label answer (the
    runner streams segments from `label` into it)."""

    name = "tag"
    requires = ("label",)
    runs = 1

    def pending(self, db, video_ids=None):
        return [(sid, 0) for (sid,) in db.conn.execute(
            "SELECT DISTINCT a.segment_id FROM annotations a WHERE a.backend='test' AND a.segment_id NOT IN"
            " (SELECT segment_id FROM annotations WHERE backend='tag') ORDER BY 1")]

    def process(self, task):
        return {}

    def commit(self, db, task, result):
        db.conn.execute(
            "INSERT INTO annotations (segment_id, backend, model, prompt_sha, run_index, label_set,"
            " primary_emotion, intensities_json, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (task["segment_id"], "tag", "m", "p", 0, "t", "Interest", "{}", store.now()))


class AsyncLabelStage(LabelStage):
    """LabelStage as an API-style stage: `process_async` on the executor's event loop. The
    first `concurrency()` items wait for each other, so a run only finishes when that many
    are in flight at once (an executor that ran them one by one times out)."""

    name = "label"

    def load(self):
        self.arrived, self.gate = 0, None

    def concurrency(self):
        return 4

    async def process_async(self, task):
        import asyncio

        if self.gate is None:
            self.gate = asyncio.Event()
        self.arrived += 1
        if self.arrived >= self.concurrency():
            self.gate.set()
        await asyncio.wait_for(self.gate.wait(), timeout=60)
        return LabelStage.process(self, task)


class NoopStage(Stage):
    """Video scope, no work: measures the orchestration itself."""

    name = "noop"
    scope = "video"

    def prepare(self, db, item_id):
        return {"video_id": item_id}

    def process(self, task):
        return {}

    def commit(self, db, task, result):
        return None


class BrokenLoadStage(NoopStage):
    """A stage whose model cannot load (as with missing weights)."""

    name = "broken"

    def load(self):
        from mikupal.stage import ModelMissingError

        raise ModelMissingError("broken.onnx is missing; put it in the models dir")


class CrashStage(NoopStage):
    """Raises an unexpected exception whose message contains the API key (it must be masked)."""

    name = "crash"

    def process(self, task):
        raise RuntimeError(f"boom with key {os.environ.get('GEMINI_API_KEY', '')}")


def add_fake_videos(db, n: int, duration_s: float = 8.0, prefix: str = "v") -> list[int]:
    """Video rows without files, for scheduling tests of stages that never open them."""
    ids = []
    with store.transaction(db):
        for i in range(n):
            cur = db.conn.execute(
                "INSERT INTO videos (sha256, path, duration_s, added_at) VALUES (?,?,?,?)",
                (hashlib.sha256(f"{prefix}{i}".encode()).hexdigest(), f"/nonexistent/{prefix}{i}.mp4", duration_s, store.now()),
            )
            ids.append(int(cur.lastrowid))
    return ids

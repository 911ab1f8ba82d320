"""The runner's scheduling, resume, failure isolation, cancellation and events.

These use the small real-code stages in runner_stages.py (real rows in a real project.db);
test_runner_e2e.py runs the product's own stages on the demo clip.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mikupal import store
from mikupal.runner import Runner, RunnerError, parse_workers, resolve_devices
from mikupal.stages import STAGE_ORDER, UnknownStageError, parse_stages
from mikupal.status import project_status

from runner_stages import (AsyncLabelStage, BrokenLoadStage, CrashStage, LabelStage, NoopStage, ProbeStage, SplitStage,
                           TagStage, add_fake_videos)

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _annotation_counts(db):
    return db.conn.execute(
        "SELECT segment_id, run_index, COUNT(*) FROM annotations GROUP BY segment_id, run_index"
    ).fetchall()


def test_streaming_run_annotates_every_segment_once_and_rerun_skips(project):
    db = project.db()
    add_fake_videos(db, 5)
    events = []
    summary = Runner(project, [SplitStage, LabelStage], workers={"emotion": 1}, on_event=events.append).run()
    assert summary.status == "finished" and summary.ok
    counts = _annotation_counts(db)
    assert len(counts) == 5 * 4 * LabelStage.runs
    assert all(c == 1 for _, _, c in counts)
    assert summary.stages["split"].ok == 5 and summary.stages["label"].ok == 40

    kinds = [e.kind for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert events[-1].status == "finished" and events[-1].errors == 0
    finished = [e for e in events if e.kind == "stage_finished"]
    assert [e.stage for e in finished] == ["split", "label"]
    assert finished[1].done == finished[1].total == 40
    # The label stage's total grows as videos come out of split (streaming, not a barrier).
    label_totals = [e.total for e in events if e.kind == "stage_progress" and e.stage == "label"]
    assert label_totals[0] < 40 and label_totals == sorted(label_totals)

    run = store.rows(db, "SELECT * FROM runs WHERE id=?", (summary.run_id,))[0]
    assert run["status"] == "finished" and run["finished_at"] and run["pid"] == os.getpid()
    assert run["stages"] == "split,label"
    assert db.conn.execute("SELECT DISTINCT run_id FROM stage_state").fetchall() == [(summary.run_id,)]
    log_text = Path(run["log_path"]).read_text()
    assert f"run {summary.run_id} finished" in log_text
    assert Path(run["log_path"]).parent == project.logs_dir

    again = Runner(project, [SplitStage, LabelStage]).run()
    assert again.status == "finished"
    assert again.stages["split"].total == 0 and again.stages["label"].total == 0
    assert len(_annotation_counts(db)) == 40


def test_bad_item_is_isolated_and_recorded(project):
    db = project.db()
    add_fake_videos(db, 3)
    Runner(project, [SplitStage]).run()
    sid = db.conn.execute("SELECT id FROM segments ORDER BY id LIMIT 1").fetchone()[0]
    db.conn.execute("UPDATE segments SET text='poison pill' WHERE id=?", (sid,))
    errors = []
    summary = Runner(project, [SplitStage, LabelStage], on_event=lambda e: e.kind == "item_error" and errors.append(e)).run()
    assert summary.status == "finished" and not summary.ok
    assert summary.stages["label"].failed == 2  # both run indexes of the poisoned segment
    assert summary.stages["label"].ok == 3 * 4 * 2 - 2
    rows = store.rows(db, "SELECT * FROM errors WHERE run_id=?", (summary.run_id,))
    assert len(rows) == 2 and {r["segment_id"] for r in rows} == {sid}
    assert all("edit it and rerun" in r["message"] and "\n" not in r["message"] for r in rows)
    assert errors and errors[0].segment_id == sid and errors[0].stage == "label"


def test_a_video_failing_a_stage_goes_no_further(project, demo_clip, tmp_path):
    from mikupal.ingest import add_videos

    good = tmp_path / "good.mp4"
    bad = tmp_path / "bad.mp4"
    good.write_bytes(demo_clip.path.read_bytes())
    bad.write_bytes(demo_clip.path.read_bytes() + b"x")  # another hash, valid when added
    db = project.db()
    add_videos(db, [good, bad])
    bad.write_bytes(random.Random(0).randbytes(4096))  # ... corrupted afterwards (a failing disk, a partial copy)
    summary = Runner(project, [ProbeStage, SplitStage]).run()
    assert summary.stages["probe"].ok == 1 and summary.stages["probe"].failed == 1
    assert summary.stages["split"].ok == 1 and summary.stages["split"].total == 1
    bad_id = db.conn.execute("SELECT id FROM videos WHERE path LIKE '%bad.mp4'").fetchone()[0]
    assert store.get_stage_state(db, bad_id, "probe")["status"] == "failed"
    assert store.get_stage_state(db, bad_id, "split") is None
    err = store.rows(db, "SELECT * FROM errors WHERE video_id=?", (bad_id,))
    assert len(err) == 1 and "bad.mp4" in err[0]["message"] and "re-encode" in err[0]["message"]
    # `status` reports the product's stages, each with its counts; a test stage is not one of them.
    st = project_status(project, db)
    assert list(st["stages"]) == list(STAGE_ORDER) and "probe" not in st["stages"]


def test_cancel_stops_between_items(project, monkeypatch):
    monkeypatch.setenv("MIKUPAL_TEST_LABEL_SLEEP", "0.15")
    db = project.db()
    add_fake_videos(db, 10)
    runner = Runner(project, [SplitStage, LabelStage], workers={})
    seen = threading.Event()
    at_cancel = {}

    def on_event(e):
        if e.kind == "stage_progress" and e.stage == "label" and e.done >= 3 and not seen.is_set():
            seen.set()
            at_cancel["n"] = len(_annotation_counts(db))
            runner.cancel()

    runner.on_event = on_event
    summary = runner.run()
    assert summary.status == "cancelled"
    n = len(_annotation_counts(db))
    # Only the items already in flight at the cancel may still finish (one worker here).
    assert at_cancel["n"] <= n <= at_cancel["n"] + 1 < 80
    assert store.rows(db, "SELECT status FROM runs WHERE id=?", (summary.run_id,))[0]["status"] == "cancelled"
    # A rerun finishes the rest, exactly once each.
    monkeypatch.setenv("MIKUPAL_TEST_LABEL_SLEEP", "0")
    assert Runner(project, [SplitStage, LabelStage]).run().ok
    counts = _annotation_counts(db)
    assert len(counts) == 80 and all(c == 1 for _, _, c in counts)


def test_model_that_cannot_load_fails_its_stage_once(project):
    db = project.db()
    add_fake_videos(db, 4)
    summary = Runner(project, [BrokenLoadStage, NoopStage]).run()
    assert summary.status == "finished"
    assert summary.stages["broken"].failed == 4 and summary.stages["noop"].total == 0
    errs = store.rows(db, "SELECT * FROM errors WHERE run_id=?", (summary.run_id,))
    assert len(errs) == 1 and "broken.onnx is missing" in errs[0]["message"]
    assert db.conn.execute("SELECT COUNT(*) FROM stage_state WHERE stage='broken' AND status='failed'").fetchone()[0] == 4


def test_unexpected_exception_keeps_traceback_but_never_the_key(project, monkeypatch):
    key = "AIzaSyTEST-not-a-real-key-0123456789"
    monkeypatch.setenv("GEMINI_API_KEY", key)
    db = project.db()
    add_fake_videos(db, 2)
    summary = Runner(project, [CrashStage]).run()
    assert summary.stages["crash"].failed == 2
    errs = store.rows(db, "SELECT * FROM errors WHERE run_id=?", (summary.run_id,))
    assert len(errs) == 2
    for e in errs:
        assert key not in e["message"] and key not in e["detail"]
        assert "RuntimeError" in e["message"] and "Traceback" in e["detail"]
        assert f"run-{summary.run_id}.log" in e["message"]
    log_text = Path(summary.log_path).read_text()
    assert "RuntimeError" in log_text and key not in log_text
    cfg = store.rows(db, "SELECT config_json FROM runs WHERE id=?", (summary.run_id,))[0]["config_json"]
    assert key not in cfg


def test_missing_upstream_is_reported_once_with_the_fix(project):
    db = project.db()
    add_fake_videos(db, 3)
    summary = Runner(project, [LabelStage]).run()
    assert summary.stages["label"].skipped == 3 and not summary.ok
    errs = store.rows(db, "SELECT message FROM errors WHERE run_id=?", (summary.run_id,))
    assert len(errs) == 1 and "--stages split,label" in errs[0]["message"]


def test_sigkill_mid_stage_then_resume_annotates_exactly_once(project):
    db = project.db()
    add_fake_videos(db, 6)
    # Items after the 12th wait for a file that never comes: the run is still going when killed.
    env = {**os.environ, "MIKUPAL_TEST_LABEL_HOLD_AFTER": "12", "MIKUPAL_TEST_LABEL_RELEASE": str(project.root / "never"),
           "PYTHONPATH": f"{TESTS}{os.pathsep}{REPO}"}
    script = (
        "import sys; from mikupal.project import Project; from mikupal.runner import Runner;"
        "from runner_stages import SplitStage, LabelStage;"
        f"Runner(Project.open({str(project.root)!r}), [SplitStage, LabelStage], workers={{'label': 3}}).run()"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    total = 6 * 4 * LabelStage.runs
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            n = db.conn.execute("SELECT COUNT(*) FROM annotations").fetchone()[0]
            if n >= 10 or proc.poll() is not None:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the held pipeline ended by itself"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    n_killed = db.conn.execute("SELECT COUNT(*) FROM annotations").fetchone()[0]
    assert 10 <= n_killed < total
    assert store.integrity_ok(db)
    st = project_status(project, db)
    assert st["recent_runs"][0]["status"] == "interrupted"

    summary = Runner(project, [SplitStage, LabelStage]).run()
    assert summary.ok
    assert summary.stages["label"].ok == total - n_killed
    counts = _annotation_counts(db)
    assert len(counts) == total and all(c == 1 for _, _, c in counts)
    assert store.integrity_ok(db)


def test_workers_run_items_concurrently(project):
    # Three label threads: the first three items meet at a barrier, which only works when three
    # items are inside process() at once (one thread would wait there until the timeout).
    db = project.db()
    add_fake_videos(db, 2)
    barrier = threading.Barrier(3, timeout=60)
    met = []

    class Watched(LabelStage):
        def process(self, task):
            if (task["segment_id"], task["run_index"]) in FIRST:
                barrier.wait()
                met.append(task["segment_id"])
            return super().process(task)

    Runner(project, [SplitStage]).run()
    FIRST = [(sid, 0) for (sid,) in db.conn.execute("SELECT id FROM segments ORDER BY id LIMIT 3")]
    summary = Runner(project, [SplitStage, Watched], workers={"label": 3}).run()
    assert summary.ok and summary.stages["label"].ok == 16
    assert len(met) == 3


def test_async_stage_fans_out_on_the_executors_loop(project):
    # An API-style stage (process_async): the executor keeps concurrency() items in flight on
    # its own event loop; the stage owns no thread. The first four items meet at a gate.
    import asyncio

    db = project.db()
    add_fake_videos(db, 2)
    threads, loops = set(), set()

    class Watched(AsyncLabelStage):
        async def process_async(self, task):
            threads.add(threading.current_thread().name)
            loops.add(id(asyncio.get_running_loop()))
            return await super().process_async(task)

    summary = Runner(project, [SplitStage, Watched]).run()
    assert summary.ok and summary.stages["label"].ok == 16
    assert len(loops) == 1 and len(threads) == 1 and next(iter(threads)).startswith("label-")


def test_parsers_give_one_clear_line():
    assert parse_stages("asd, asr") == ["asr", "asd"]
    assert parse_stages(None) == list(STAGE_ORDER)
    with pytest.raises(UnknownStageError, match="choose from separate,vad"):
        parse_stages("asr,facez")
    assert parse_workers(["faces=2", "emotion=8"]) == {"faces": 2, "emotion": 8}
    with pytest.raises(RunnerError, match="unknown stage"):
        parse_workers(["face=2"])
    with pytest.raises(RunnerError, match="whole number"):
        parse_workers(["faces=two"])
    assert resolve_devices("cuda:0,cuda:1") == ["cuda:0", "cuda:1"]
    assert resolve_devices("cpu") == ["cpu"]
    with pytest.raises(RunnerError, match="not a device"):
        resolve_devices("gpu0")


def test_devices_give_one_instance_per_device_per_worker(project):
    from mikupal.runner.plan import plan_stage

    class GpuSplit(SplitStage):
        num_gpus = 1.0

    devices, workers = ["cuda:0", "cuda:1"], {"split": 2}
    plan = plan_stage("split", GpuSplit, GpuSplit(project), workers, devices)
    assert sorted(plan.instances) == [("cuda:0", 1), ("cuda:0", 1), ("cuda:1", 1), ("cuda:1", 1)]
    assert plan_stage("label", LabelStage, LabelStage(project), workers, devices).instances == [("cpu", 1)]


def test_segment_workers_share_the_cores_and_the_value_reaches_load(project, monkeypatch):
    """Stages that stream side by side inside a video (sync, segment scope) split the cores;
    video-scope stages keep their libraries' default; [runner] cpu_threads overrides both."""
    from mikupal.runner.plan import StagePlan, assign_cpu_threads

    split, label = StagePlan("split", SplitStage, [("cpu", 1)]), StagePlan("label", LabelStage, [("cpu", 1), ("cpu", 1)])
    gpu = StagePlan("label", LabelStage, [("cuda:0", 1)])
    assign_cpu_threads([split, label], 0, 16)
    assert (split.cpu_threads, label.cpu_threads) == (None, 8)  # 16 cores / 2 CPU instances
    assign_cpu_threads([split, label, gpu], 0, 2)
    assert label.cpu_threads == 1 and gpu.cpu_threads == 1  # a GPU instance takes no CPU share
    assign_cpu_threads([label], 0, 1)
    assert label.cpu_threads == 1  # never below one
    assign_cpu_threads([split, label], 3, 16)
    assert (split.cpu_threads, label.cpu_threads) == (3, 3)

    seen = []

    class Counting(LabelStage):
        def load(self):
            seen.append(self.cpu_threads)

    add_fake_videos(project.db(), 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert Runner(project, [SplitStage, Counting], workers={"label": 3}).run().ok
    assert seen == [2, 2, 2]  # 6 cores over the three label workers


def test_a_failed_item_keeps_its_detail_in_the_errors_row(project):
    # Like the emotion stage with an invalid model answer: the stage raises StageError with the
    # raw text as detail; the runner (not the stage) writes one errors row per item with it.
    from mikupal.stage import StageError

    class Picky(LabelStage):
        def process(self, task):
            if task["run_index"] == 1:
                raise StageError(f"segment {task['segment_id']}: invalid answer; rerun to retry",
                                 detail=f"raw answer {task['segment_id']}", path=f"clip-{task['segment_id']}.mp4")
            return super().process(task)

    db = project.db()
    add_fake_videos(db, 2)
    events = []
    summary = Runner(project, [SplitStage, Picky], on_event=events.append).run()
    assert summary.stages["label"].ok == 8 and summary.stages["label"].failed == 8 and not summary.ok
    errs = store.rows(db, "SELECT * FROM errors WHERE run_id=? ORDER BY segment_id", (summary.run_id,))
    assert len(errs) == 8
    assert all(e["detail"] == f"raw answer {e['segment_id']}" and e["path"] == f"clip-{e['segment_id']}.mp4"
               for e in errs)
    assert sum(1 for e in events if e.kind == "item_error") == 8
    # The successful answers are there; the failed ones are pending for the next run.
    assert db.conn.execute("SELECT COUNT(*) FROM annotations WHERE run_index=1").fetchone()[0] == 0


def test_commit_failure_rolls_back_the_whole_item(project):
    # A commit that writes some rows and then fails leaves nothing behind, and the video's
    # stage_state is failed (written by the runner in its own transaction).
    from mikupal.stage import StageError

    class HalfSplit(SplitStage):
        def commit(self, db, task, result):
            super().commit(db, task, result)
            raise StageError(f"video {task['video_id']}: disk full while saving; free space and rerun")

    db = project.db()
    (vid,) = add_fake_videos(db, 1)
    summary = Runner(project, [HalfSplit]).run()
    assert summary.stages["split"].failed == 1
    assert db.conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0] == 0
    assert store.get_stage_state(db, vid, "split")["status"] == "failed"
    assert "disk full" in store.rows(db, "SELECT message FROM errors")[0]["message"]


def test_cancel_does_not_wait_for_a_long_item(project):
    # An item that outlasts the cancel grace (a slow LLM call): run() returns while it is still
    # inside process(), and its late result is never committed.
    db = project.db()
    add_fake_videos(db, 1)
    Runner(project, [SplitStage]).run()
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    workers = []

    class Slow(LabelStage):
        def process(self, task):
            workers.append(threading.current_thread())
            started.set()
            try:
                release.wait(120)  # held until run() has returned
                return super().process(task)
            finally:
                finished.set()

    runner = Runner(project, [SplitStage, Slow])
    threading.Thread(target=lambda: started.wait(60) and runner.cancel(), daemon=True).start()
    summary = runner.run()
    assert summary.status == "cancelled"
    assert started.is_set() and not finished.is_set()
    release.set()
    assert finished.wait(60)
    for t in workers:  # the worker hands its result over and stops; nobody commits it
        t.join(timeout=60)
        assert not t.is_alive()
    assert db.conn.execute("SELECT COUNT(*) FROM annotations").fetchone()[0] == 0


def test_video_ids_limit_the_run(project):
    db = project.db()
    ids = add_fake_videos(db, 3)
    summary = Runner(project, [SplitStage, LabelStage], video_ids=[ids[1]]).run()
    assert summary.ok and summary.stages["split"].ok == 1
    assert db.conn.execute("SELECT DISTINCT video_id FROM segments").fetchall() == [(ids[1],)]


def test_a_stage_that_cannot_go_on_stops_and_leaves_the_rest_pending(project):
    # Like a per-day quota: the third answer says the stage cannot go on this run. One error
    # line; nothing more of the stage starts; the unanswered items stay pending (no error
    # rows for them), and the next run finishes them.
    from mikupal.stage import StageError

    calls = []

    class Quota(LabelStage):
        def process(self, task):
            calls.append(task["segment_id"])
            if len(calls) >= 3:
                raise StageError("quota GenerateRequestsPerDay exhausted; try again after midnight UTC",
                                 stops_stage=True)
            return super().process(task)

    db = project.db()
    add_fake_videos(db, 2)
    Runner(project, [SplitStage]).run()
    total = 2 * 4 * LabelStage.runs
    summary = Runner(project, [SplitStage, Quota], workers={"label": 1}).run()
    assert summary.stages["label"].ok == 2 and summary.stages["label"].failed == 1
    assert summary.stages["label"].skipped == total - 3 and not summary.ok
    errs = store.rows(db, "SELECT message FROM errors WHERE stage='label'")
    assert len(errs) == 1 and "GenerateRequestsPerDay" in errs[0]["message"]
    again = Runner(project, [SplitStage, LabelStage]).run()
    assert again.ok and again.stages["label"].ok == total - 2
    assert len(_annotation_counts(db)) == total


def test_segments_stream_between_segment_stages(project):
    # split (video) -> label (segment) -> tag (segment): a segment that finished `label` goes
    # to `tag` while its video's later segments are still in `label`. The last label item
    # waits until `tag` has worked on an earlier segment; without streaming it would time out.
    from mikupal.stage import StageError

    tagged = threading.Event()

    class FirstLabel(LabelStage):
        runs = 1

        def process(self, task):
            last = db.conn.execute("SELECT MAX(id) FROM segments").fetchone()[0]
            if task["segment_id"] == last and not tagged.wait(timeout=60):
                raise StageError("tag never started before label finished the video")
            return super().process(task)

    class Tag(TagStage):
        def process(self, task):
            tagged.set()
            return {}

    db = project.db()
    add_fake_videos(db, 1)
    summary = Runner(project, [SplitStage, FirstLabel, Tag]).run()
    assert summary.ok, [(s.name, s.ok, s.failed) for s in summary.stages.values()]
    assert summary.stages["label"].ok == 4 and summary.stages["tag"].ok == 4
    # Each segment went to `tag` exactly once although it was offered early and again at the end.
    assert db.conn.execute("SELECT COUNT(*) FROM annotations WHERE backend='tag'").fetchone()[0] == 4


def test_a_failed_segment_does_not_stream_on(project):
    # The segment that fails `label` never reaches `tag`; the others do.
    from mikupal.stage import StageError

    class Picky(LabelStage):
        runs = 1

        def process(self, task):
            if task["segment_id"] == first:
                raise StageError(f"segment {first}: unreadable; fix it and rerun")
            return super().process(task)

    db = project.db()
    add_fake_videos(db, 1)
    Runner(project, [SplitStage]).run()
    first = db.conn.execute("SELECT MIN(id) FROM segments").fetchone()[0]
    summary = Runner(project, [SplitStage, Picky, TagStage]).run()
    assert summary.stages["label"].failed == 1 and summary.stages["label"].ok == 3
    tagged = [r[0] for r in db.conn.execute("SELECT segment_id FROM annotations WHERE backend='tag' ORDER BY 1")]
    assert tagged == [r[0] for r in db.conn.execute("SELECT id FROM segments WHERE id != ? ORDER BY 1", (first,))]

"""The Gemini Batch API path: the real google-genai client against the local protocol server's
Batch API (inline and file input, job states, per-request errors), jobs recorded in project.db,
and a run killed with SIGKILL while its job is pending resumes without a second submission."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from emotion_fixtures import (annotations, assert_no_key, errors, gemini_project, paid,  # noqa: E402
                              run_emotion, run_emotion_batch, set_cfg)
from emotion_fixtures import gemini_server as server  # noqa: E402,F401 - the `server` fixture
from gemini_server import Reply, g  # noqa: E402
from waiting import wait_until  # noqa: E402

from mikupal import store  # noqa: E402
from mikupal.emotion.prices import Usage, load_prices  # noqa: E402

HERE = Path(__file__).parent


@pytest.fixture()
def bproject(project, demo_clip, server, monkeypatch):
    return gemini_project(project, demo_clip, server, monkeypatch, emotion__batch_poll_s=0.05)


def creates(server) -> list[dict]:
    return [r for r in server.requests if r["path"].endswith(":batchGenerateContent")]


def uploads(server) -> int:  # resumable starts (one per uploaded file)
    return sum(1 for r in server.requests if r["path"] == "/upload/v1/files")


def jobs(db) -> list[dict]:
    return store.rows(db, "SELECT * FROM batch_jobs ORDER BY id")


def test_inline_job_answers_every_item_at_half_price_with_clips_uploaded_once(bproject, server):
    set_cfg(bproject, emotion__runs=2, emotion__concurrency=4)  # uploads in parallel, each clip once
    server.thoughts, server.cached = 100, 50
    stage, db, failures, drv = run_emotion_batch(bproject)
    rows = annotations(db)
    assert failures == [] and len(rows) == 6 and stage.pending(db) == []
    assert len(creates(server)) == 1 and drv.submitted_jobs == 1
    assert not [r for r in server.requests if r["path"].endswith(":generateContent")]  # nothing interactive
    body = creates(server)[0]["json"]["batch"]
    reqs = body["inputConfig"]["requests"]["requests"]
    assert len(reqs) == 6 and body["displayName"].startswith("mikupal-emotion-")
    # The interactive request's settings, the clip by Files API URI (uploaded once for its 2 run indices).
    gc = reqs[0]["request"]["generationConfig"]
    assert gc["responseMimeType"] == "application/json" and "emotions" in gc["responseSchema"]["properties"]
    assert sorted(r["request"]["generationConfig"]["seed"] for r in reqs) == [1234] * 3 + [1235] * 3
    assert all(g(r["request"]["contents"][0]["parts"][0], "fileData") for r in reqs)
    assert uploads(server) == 3 and len(store.rows(db, "SELECT * FROM uploaded_files")) == 3
    (job,) = jobs(db)
    assert job["state"] == "collected" and job["mode"] == "inline" and job["name"].startswith("batches/")
    price = load_prices().get("gemini-2.5-flash")
    for r in rows:
        assert r["batch_job"] == job["name"] and r["thought_tokens"] == 100 and r["cached_tokens"] == 50
        u = Usage.from_dict(json.loads(r["usage_json"]))
        full = ((u.prompt["text"] - 50) * 0.30 + 50 * 0.03 + u.prompt["video"] * 0.30 + u.prompt["audio"] * 1.00
                + (u.candidates + 100) * 2.50) / 1e6  # hand-computed interactive price
        assert r["cost_usd"] == pytest.approx(full / 2) and price.batch_factor == 0.5
    assert_no_key(bproject)
    # Another run index later: the clips are still in the Files API, nothing is uploaded again.
    set_cfg(bproject, emotion__runs=3)
    run_emotion_batch(bproject)
    assert len(annotations(db)) == 9 and uploads(server) == 3 and len(creates(server)) == 2
    # The service lost the clips (another key, early expiry): the request fails, the clip goes up again.
    server.files.clear()
    set_cfg(bproject, emotion__runs=4)
    _, _, failures2, _ = run_emotion_batch(bproject)
    assert failures2 == [] and len(annotations(db)) == 12 and uploads(server) == 6 and len(creates(server)) == 4


def test_large_job_goes_as_an_uploaded_jsonl_file(bproject, server):
    stage, db, failures, drv = run_emotion_batch(bproject, inline_max_bytes=100)
    assert failures == [] and len(annotations(db)) == 3
    (job,) = jobs(db)
    assert job["mode"] == "file" and job["input_file"].startswith("files/") and job["output_file"].startswith("files/")
    batch = creates(server)[0]["json"]["batch"]
    assert g(batch["inputConfig"], "fileName") == job["input_file"]
    fid = job["input_file"].split("/")[-1]
    lines = [json.loads(x) for x in server.files[fid]["data"].decode().splitlines()]
    assert [x["key"] for x in lines] == [f"s{s}-r0-a0" for s in bproject.seg_ids[:3]]
    assert all("generationConfig" in x["request"] and "systemInstruction" in x["request"] for x in lines)
    assert any(":download" in r["path"] for r in server.requests)  # results read from the responses file
    assert list((Path(bproject.root) / "cache" / "emotion" / "batches").glob("*.jsonl"))
    assert_no_key(bproject)  # not in the JSONL, the job rows or the answers


def test_per_request_failures_are_sent_again_and_answers_validated_like_interactive(bproject, server):
    # In job 1: request 1 gets a 503, request 2 an invalid answer, request 3 a valid one.
    server.script += [Reply(503), Reply(text="not json at all"), Reply()]
    stage, db, failures, drv = run_emotion_batch(bproject)
    assert failures == [] and len(annotations(db)) == 3 and errors(db) == []
    assert len(creates(server)) == 2  # one job, then one job with the two requests to ask again
    again = creates(server)[1]["json"]["batch"]["inputConfig"]["requests"]["requests"]
    keys = [r["metadata"]["key"] for r in again]
    s1, s2 = bproject.seg_ids[:2]
    assert keys == [f"s{s1}-r0-a1", f"s{s2}-r0-a1"]
    seeds = [r["request"]["generationConfig"]["seed"] for r in again]
    assert seeds[0] == 1234 and seeds[1] != 1234  # the invalid one is a new draw, the failed one the same
    states = dict(db.conn.execute("SELECT key, state FROM batch_requests").fetchall())
    assert states[f"s{s1}-r0-a0"] == "retry" and states[f"s{s2}-r0-a0"] == "retry"
    assert states[f"s{s1}-r0-a1"] == "answered"
    # The invalid first answer was paid too: its tokens are in the stored answer's cost.
    row = next(r for r in annotations(db) if r["segment_id"] == s2)
    one = next(r for r in annotations(db) if r["segment_id"] == s1)
    assert row["input_tokens"] == 2 * one["input_tokens"]


def test_twice_invalid_and_hard_errors_are_per_item_errors(bproject, server):
    set_cfg(bproject, emotion__max_retries=1)
    server.script += [Reply(text="nope"), Reply(400), Reply(503), Reply(text="nope again"), Reply(503)]
    stage, db, failures, drv = run_emotion_batch(bproject)
    assert len(annotations(db)) == 0 and len(failures) == 3
    by_seg = {e["segment_id"]: e for e in errors(db)}
    s1, s2, s3 = bproject.seg_ids[:3]
    assert "invalid answer after one retry" in by_seg[s1]["message"] and paid(by_seg[s1])["batch"] is True
    assert paid(by_seg[s1])["answer"] == "nope again" and paid(by_seg[s1])["cost_usd"] > 0
    assert "400" in by_seg[s2]["message"] and "after" not in by_seg[s2]["message"]  # a 400 is not retried
    assert "after 1 retries" in by_seg[s3]["message"] and "503" in by_seg[s3]["message"]
    assert all("\n" not in f for f in failures)
    # A resumed run handing the same paid answer out again is one receipt in the spend.
    from mikupal.status import project_status

    once = project_status(bproject)["spend"]["failed_answers_usd"]
    dup = by_seg[s1]
    store.record_error(db, "emotion", dup["message"], segment_id=s1, detail=dup["detail"])
    assert once == pytest.approx(paid(dup)["cost_usd"]) and paid(dup)["request"].startswith("batches/")
    assert project_status(bproject)["spend"]["failed_answers_usd"] == pytest.approx(once)


def test_expired_job_is_sent_again(bproject, server):
    server.batch_final = "BATCH_STATE_EXPIRED"
    orig = server._batch_finish

    def once(b):  # the first job expires, the next succeeds
        orig(b)
        server.batch_final = "BATCH_STATE_SUCCEEDED"

    server._batch_finish = once
    stage, db, failures, drv = run_emotion_batch(bproject)
    assert failures == [] and len(annotations(db)) == 3 and len(creates(server)) == 2
    assert [j["state"] for j in jobs(db)] == ["collected", "collected"]


CHILD = """
import asyncio, sys
sys.path.insert(0, {tests!r})
from emotion_fixtures import run_emotion_batch
from mikupal.project import Project
p = Project.open({root!r})
p.config["emotion"].update(backend="gemini", model="gemini-2.5-flash-test", batch_poll_s=0.05, runs=2,
                           timeout_s=30.0, backoff_s=0.01, max_backoff_s=0.05)
print("child started", flush=True)
run_emotion_batch(p)
print("child finished", flush=True)
"""


def _child(bproject, server, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(HERE), root=str(bproject.root)))
    return subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _child_said(child, what: str) -> str:
    """`what`, and the child's output if it has ended (a child still running may say nothing yet)."""
    return f"{what}; the child exited: {child.stdout.read().decode()}" if child.poll() is not None else what


def _job_rows(bproject):
    db = bproject.db()
    try:
        return jobs(db)
    finally:
        db.conn.close()


@pytest.mark.parametrize("when", ["pending", "while_submitting"])
def test_kill_9_then_resume_never_submits_twice(bproject, server, tmp_path, when):
    server.batch_hold = True  # the job stays PENDING until released
    if when == "while_submitting":
        server.batch_create_answer.clear()  # the service has the job; the child dies before hearing so
    child = _child(bproject, server, tmp_path)
    try:
        if when == "pending":
            recorded = lambda: any(j["name"] and j["state"] == "pending" for j in _job_rows(bproject))  # noqa: E731
        else:
            recorded = lambda: len(server.batches) == 1 and any(j["state"] == "submitting" for j in _job_rows(bproject))  # noqa: E731
        wait_until(recorded, what=lambda: _child_said(child, "the child to record its job"))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert len(server.batches) == 1 and annotations(bproject.db()) == []
    from mikupal.status import project_status

    (shown,) = project_status(bproject)["batch_jobs"]  # `mikupal status` shows the job still out
    assert shown["state"] == ("pending" if when == "pending" else "submitting") and shown["waiting"] == 6
    server.release_batches()
    set_cfg(bproject, emotion__runs=2)
    stage, db, failures, drv = run_emotion_batch(bproject)  # a later run: resumes polling the recorded job
    rows = annotations(db)
    assert failures == [] and drv.submitted_jobs == 0
    assert len(creates(server)) == 1 and len(server.batches) == 1  # no second submission
    pairs = sorted((r["segment_id"], r["run_index"]) for r in rows)
    assert pairs == sorted((s, i) for s in bproject.seg_ids[:3] for i in range(2))  # each answered once
    assert server.answered == 6 and jobs(db)[0]["state"] == "collected"
    assert stage.pending(db) == []


def test_interactive_executor_refuses_batch_mode_with_one_line(bproject, server):
    set_cfg(bproject, emotion__batch=True)
    stage, db, failures = run_emotion(bproject)
    assert len(failures) == 3 and all("batch = true" in f and "\n" not in f for f in failures)
    assert server.requests == []  # nothing paid at the full price by mistake


def _cli_sets(poll="0.05"):
    return ["--set", 'emotion.backend="gemini"', "--set", 'emotion.model="gemini-2.5-flash-test"', "--set",
            f"emotion.batch_poll_s={poll}", "--set", "emotion.timeout_s=30.0", "--set", "emotion.runs=2"]


def test_mikupal_run_batch_killed_then_resumed_through_the_runner(bproject, server, tmp_path):
    """`mikupal run --batch` (the real runner and its batch executor), SIGKILL while the job is pending,
    then the same command again: it polls the recorded job, submits nothing, stores every answer once."""
    server.batch_hold = True
    cmd = [sys.executable, "-m", "mikupal.cli", "run", str(bproject.root), "--stages", "emotion", "--batch", "--quiet",
           *_cli_sets()]
    child = subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: any(j["name"] and j["state"] == "pending" for j in _job_rows(bproject)),
                   what=lambda: _child_said(child, "the run to record its job"))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    server.release_batches()
    done = subprocess.run(cmd, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    db = bproject.db()
    pairs = sorted((r["segment_id"], r["run_index"]) for r in annotations(db))
    assert pairs == sorted((s, i) for s in bproject.seg_ids[:3] for i in range(2))
    assert len(creates(server)) == 1 and server.answered == 6
    assert {r["batch_job"] for r in annotations(db)} == {jobs(db)[0]["name"]}
    assert {r["run_id"] for r in annotations(db)} == {db.conn.execute("SELECT MAX(id) FROM runs").fetchone()[0]}


def test_answers_for_a_changed_prompt_are_not_stored_under_the_new_one(bproject, server):
    server.batch_hold = True
    import asyncio

    from mikupal.emotion.batch import BatchDriver
    from mikupal.emotion.stage import EmotionStage

    bproject.config["emotion"]["batch"] = True
    stage = EmotionStage(bproject)
    db = bproject.db()
    tasks = [stage.prepare(db, it) for it in stage.pending(db)]

    async def submit_only():
        drv = BatchDriver(stage, db)
        await drv.submit(tasks)
        await drv.aclose()

    asyncio.run(submit_only())  # a run that stopped while its job was out
    server.release_batches()
    set_cfg(bproject, emotion__label_set="meld7")  # the next run asks another question
    stage2, db2, failures, drv = run_emotion_batch(bproject)
    rows = annotations(db2)
    assert failures == [] and len(rows) == 3 and {r["label_set"] for r in rows} == {"meld7"}
    assert len(creates(server)) == 2  # the old job was not taken as an answer to the new prompt
    states = [r[0] for r in db2.conn.execute("SELECT state FROM batch_requests ORDER BY job_id, rowid")]
    assert states == ["stale"] * 3 + ["answered"] * 3


def test_batch_run_without_a_key_is_one_clear_line(bproject, server, monkeypatch):
    from mikupal.runner import Runner

    monkeypatch.delenv("GEMINI_API_KEY")
    set_cfg(bproject, emotion__batch=True)
    summary = Runner(bproject, "emotion").run()
    errs = errors(bproject.db())
    assert summary.stages["emotion"].failed == 3 and len(errs) == 1
    assert "set GEMINI_API_KEY" in errs[0]["message"] and "\n" not in errs[0]["message"]
    assert server.requests == []


def test_vision_segments_reach_a_batch_job_together_one_job_per_video(bproject, server):
    """faces and asd stream segments into emotion one by one; in Batch API mode they wait for
    the video instead, so the whole video goes in one job, not one job per segment."""
    set_cfg(bproject, faces__detector="haar", asd__model="sync", emotion__batch=True)
    from mikupal.runner import Runner

    summary = Runner(bproject, ["faces", "asd", "emotion"], devices="cpu").run()
    db = bproject.db()
    assert summary.ok, errors(db)
    kept = [r[0] for r in db.conn.execute("SELECT id FROM segments WHERE status='ok'")]
    runs = int(bproject.config["emotion"]["runs"])
    assert len(kept) >= 3 and len(annotations(db)) == len(kept) * runs
    assert len(creates(server)) == 1 and len(jobs(db)) == 1
    assert len(creates(server)[0]["json"]["batch"]["inputConfig"]["requests"]["requests"]) == len(kept) * runs

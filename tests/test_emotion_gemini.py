"""The emotion stage with the Gemini backend: the real google-genai client against a local
server that speaks the Gemini REST protocol (tests/gemini_server.py)."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from emotion_fixtures import (API_KEY, annotations, assert_no_key, errors, gemini_project,  # noqa: E402
                              paid, run_emotion, set_cfg)
from emotion_fixtures import gemini_server as server  # noqa: E402,F401 - the `server` fixture
from gemini_server import DAILY_QUOTA, MINUTE_QUOTA, Reply, g, rate_limit_body  # noqa: E402

from mikupal.taxonomy import load_label_set  # noqa: E402

COWEN = load_label_set("cowen26").names


@pytest.fixture()
def gproject(project, demo_clip, server, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    return gemini_project(project, demo_clip, server, monkeypatch, emotion__max_retries=6)


def gen_requests(server):
    return [r for r in server.requests if r["path"].endswith(":generateContent")]


def test_success_stores_full_answer(gproject, server, caplog):
    stage, db, failures = run_emotion(gproject)
    rows = annotations(db)
    kept = gproject.seg_ids[:3]  # the 4th has status no_face ([segments] drop_statuses)
    assert failures == [] and [r["segment_id"] for r in rows] == kept
    assert len(gen_requests(server)) == 3
    for r in rows:
        emo = json.loads(r["intensities_json"])
        assert list(emo) == COWEN and all(0 <= v <= 1 for v in emo.values())
        assert r["primary_emotion"] in COWEN and emo[r["primary_emotion"]] == 0.8
        assert r["backend"] == "gemini" and r["model"] == "gemini-2.5-flash-test" and r["label_set"] == "cowen26"
        assert r["prompt_sha"] == stage.prompt.sha and r["rationale"] and r["visual_analysis"]
        assert json.loads(r["raw_response"])["candidates"][0]["content"]["parts"][0]["text"]
        assert r["input_tokens"] > 300 and r["output_tokens"] > 0 and r["cost_usd"] > 0
        assert r["clip_sha"] and (Path(gproject.root) / "cache" / "clips" / f"{r['clip_sha']}.mp4").exists()
    seg = db.conn.execute("SELECT clip_sha, clip_path FROM segments WHERE id=?", (kept[0],)).fetchone()
    assert seg[0] == rows[0]["clip_sha"] and seg[1].startswith("cache/clips/")
    # What went over the wire: system prompt with every category, clip inline, schema, fixed sampling.
    body = gen_requests(server)[0]["json"]
    system = body["systemInstruction"]["parts"][0]["text"]
    assert all(f"- {n}:" in system for n in COWEN)
    parts = body["contents"][0]["parts"]
    assert g(g(parts[0], "inlineData"), "mimeType") == "video/mp4" and "Transcript" in parts[1]["text"]
    gc = body["generationConfig"]
    assert gc["temperature"] == 0.0 and gc["seed"] == 1234 and gc["responseMimeType"] == "application/json"
    assert sorted(gc["responseSchema"]["properties"]["emotions"]["properties"]) == sorted(COWEN)
    assert gen_requests(server)[0]["headers"].get("x-goog-api-key") == API_KEY  # sent as a header only
    assert_no_key(gproject, caplog.text)
    # Resume: nothing left to do, and re-committing the same result stores no duplicate.
    assert stage.pending(db) == []


def test_commit_is_idempotent(gproject, server):
    import asyncio

    from mikupal.emotion.stage import EmotionStage

    stage = EmotionStage(gproject)
    db = gproject.db()
    task = stage.prepare(db, stage.pending(db)[0])

    async def one():
        try:
            return await stage.process_async(task)
        finally:
            await stage.aclose()

    result = asyncio.run(one())
    stage.commit(db, task, result)
    stage.commit(db, task, result)
    assert len(annotations(db)) == 1 and stage.concurrency() == 1


def test_rate_limit_and_unavailable_storm_then_success(gproject, server, caplog):
    server.script += [Reply(429)] * 3 + [Reply(503), Reply(500), Reply(502)]
    stage, db, failures = run_emotion(gproject)
    assert failures == [] and len(annotations(db)) == 3
    assert len(gen_requests(server)) == 3 + 6
    assert "retry" in caplog.text


def test_retry_after_is_honoured(gproject, server):
    set_cfg(gproject, emotion__backoff_s=0.001, emotion__max_backoff_s=0.002)
    server.script += [Reply(429, headers={"Retry-After": "1"})]
    stamps = server.stamp_requests()
    stage, db, failures = run_emotion(gproject)
    assert failures == [] and len(annotations(db)) == 3
    # Our own backoff would wait ~1 ms; the server asked for 1 s and got at least that.
    assert stamps[1] - stamps[0] >= 0.95


def test_timeouts_are_retried(gproject, server):
    # The stalls never answer in time (60 s against a 4 s timeout); a normal answer takes
    # milliseconds, far inside the timeout however loaded the machine is.
    set_cfg(gproject, emotion__timeout_s=4.0)
    server.script += [Reply(delay_s=60.0), Reply(delay_s=60.0)]
    stage, db, failures = run_emotion(gproject)
    assert failures == [] and len(annotations(db)) == 3
    assert len(gen_requests(server)) == 5


def test_exhausted_retries_give_one_clear_line(gproject, server, caplog):
    set_cfg(gproject, emotion__max_retries=2)
    server.script += [Reply(503)] * 3
    stage, db, failures = run_emotion(gproject)
    assert len(failures) == 1 and len(annotations(db)) == 2
    msg = failures[0]
    assert "\n" not in msg and "segment" in msg and "after 2 retries" in msg and "503" in msg
    assert_no_key(gproject, msg, caplog.text)


def test_safety_blocked_empty_candidate_is_an_error_row(gproject, server, caplog):
    server.script += [Reply(body={"candidates": [{"finishReason": "SAFETY", "index": 0,
                                                  "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                                                                     "probability": "HIGH", "blocked": True}]}],
                                  "usageMetadata": {"promptTokenCount": 400}})]
    stage, db, failures = run_emotion(gproject)
    errs = errors(db)
    assert len(failures) == 1 and len(annotations(db)) == 2 and len(errs) == 1
    assert "safety filter (SAFETY)" in errs[0]["message"] and errs[0]["segment_id"] == gproject.seg_ids[0]
    rec = paid(errs[0])  # the paid receipt: 400 text tokens at $0.30/M (hand-computed)
    assert "HARM_CATEGORY_DANGEROUS_CONTENT" in rec["answer"] and rec["kind"] == "blocked"
    assert rec["input_tokens"] == 400 and rec["cost_usd"] == pytest.approx(400 * 0.30 / 1e6)
    assert len(gen_requests(server)) == 3  # a block is not retried
    # The next run retries the blocked segment only.
    stage2, db2, _ = run_emotion(gproject)
    assert len(annotations(db2)) == 3 and len(gen_requests(server)) == 4


@pytest.mark.parametrize("bad", [
    "Sure! Here is my analysis: the speaker is happy.",  # not JSON
    json.dumps({"visual_analysis": "x", "audio_analysis": "y", "text_analysis": "z",
                "emotions": {"Joy": 1.7}, "primary_emotion": "Joy", "rationale": "r"}),  # wrong schema
])
def test_invalid_answer_retried_once_then_error_row(gproject, server, bad):
    server.script += [Reply(text=bad), Reply(text=bad)]
    stage, db, failures = run_emotion(gproject)
    errs = errors(db)
    assert len(failures) == 1 and len(errs) == 1 and len(annotations(db)) == 2
    assert "invalid answer after one retry" in errs[0]["message"] and "\n" not in errs[0]["message"]
    rec = paid(errs[0])
    assert rec["answer"] == bad and rec["kind"] == "invalid"  # the raw text, for a human to read
    assert rec["cost_usd"] > 0 and rec["input_tokens"] > 600  # both paid attempts
    seeds = [r["json"]["generationConfig"]["seed"] for r in gen_requests(server)[:2]]
    assert seeds[0] == 1234 and seeds[1] != 1234  # the retry is a new draw


def test_invalid_then_valid_is_stored(gproject, server):
    server.script += [Reply(text="{not json")]
    stage, db, failures = run_emotion(gproject)
    assert errors(db) == [] and len(annotations(db)) == 3 and len(gen_requests(server)) == 4


def test_large_clip_goes_through_files_api(gproject, server):
    set_cfg(gproject, clips__inline_max_mb=0.001)
    server.processing_polls = 2
    stage, db, failures = run_emotion(gproject)
    assert failures == [] and len(annotations(db)) == 3
    assert server.count("POST", "/upload/v1/files") == 6  # start + upload/finalize per clip
    assert server.count("GET", "/v1/files/") >= 3 * 3  # polled until ACTIVE (2 x PROCESSING)
    assert len(server.deleted) == 3 and server.files == {}  # deleted afterwards
    parts = gen_requests(server)[0]["json"]["contents"][0]["parts"]
    assert g(parts[0], "fileData") and not g(parts[0], "inlineData")
    start = next(r for r in server.requests if r["path"] == "/upload/v1/files")
    assert start["headers"]["X-Goog-Upload-Protocol"] == "resumable"


def test_runs_n_and_never_pay_twice(gproject, server, demo_clip):
    set_cfg(gproject, emotion__runs=3)
    stage, db, failures = run_emotion(gproject)
    rows = annotations(db)
    assert len(rows) == 9 and sorted({r["run_index"] for r in rows}) == [0, 1, 2]
    seeds = sorted(r["json"]["generationConfig"]["seed"] for r in gen_requests(server))
    assert seeds == [1234] * 3 + [1235] * 3 + [1236] * 3
    n = len(gen_requests(server))
    # Segments rebuilt with new ids but the same times: same clips, answers copied, nothing paid.
    first = db.conn.execute("SELECT video_id, start_s, end_s, text, speaker_bbox_json FROM segments WHERE id=?",
                            (gproject.seg_ids[0],)).fetchone()
    db.conn.execute("INSERT INTO segments (video_id, start_s, end_s, text, speaker_bbox_json) VALUES (?,?,?,?,?)", first)
    stage2, db2, failures2 = run_emotion(gproject)
    rows2 = annotations(db2)
    assert failures2 == [] and len(rows2) == 12 and len(gen_requests(server)) == n
    new = [r for r in rows2 if r["segment_id"] not in gproject.seg_ids]
    old = {r["run_index"]: r for r in rows2 if r["segment_id"] == gproject.seg_ids[0]}
    for r in new:
        assert r["cost_usd"] == 0.0 and r["raw_response"] == old[r["run_index"]]["raw_response"]
        assert r["clip_sha"] == old[r["run_index"]]["clip_sha"]


def test_changing_label_set_or_language_changes_prompt_sha(gproject, server):
    stage, db, _ = run_emotion(gproject)
    set_cfg(gproject, emotion__label_set="meld7", emotion__language="German")
    stage2, db2, _ = run_emotion(gproject)
    rows = annotations(db2)
    assert len({r["prompt_sha"] for r in rows}) == 2 and {r["label_set"] for r in rows} == {"cowen26", "meld7"}
    meld = [r for r in rows if r["label_set"] == "meld7"]
    assert all(set(json.loads(r["intensities_json"])) == set(load_label_set("meld7").names) for r in meld)
    assert "German" in gen_requests(server)[-1]["json"]["systemInstruction"]["parts"][0]["text"]


def test_one_concurrency_limit_however_many_items_are_in_flight(gproject, server, demo_clip):
    server.latency_s = 0.05
    server.gather = 2  # requests wait for a second one: the limit is reached, never passed
    set_cfg(gproject, emotion__concurrency=2, emotion__runs=3)
    stage, db, failures = run_emotion(gproject, in_flight=8)
    assert failures == [] and len(annotations(db)) == 9
    assert server.max_in_flight == 2


def test_api_key_never_leaks(gproject, server, caplog, tmp_path):
    from gemini_server import valid_answer

    from mikupal.export import export_dataset

    # A hostile/buggy proxy echoes the key in an error body, in invalid answers and in a valid one.
    leaky = valid_answer(COWEN, "Joy") | {"rationale": f"I was called with key {API_KEY}."}
    server.script += [Reply(400, body={"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                                 "message": f"API key {API_KEY} not valid"}}),
                      Reply(text=f"key={API_KEY}"), Reply(text=f"key={API_KEY}"), Reply(text=json.dumps(leaky))]
    stage, db, failures = run_emotion(gproject)
    assert len(failures) == 2 and any("400" in f and "***" in f for f in failures)
    assert len(errors(db)) == 2  # the 400 and the invalid answer
    rows = annotations(db)
    assert len(rows) == 1 and "***" in rows[0]["rationale"] and "***" in rows[0]["raw_response"]
    out = tmp_path / "export"
    export_dataset(gproject, out, "jsonl", audio="mix")
    exported = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert b"***" in exported and API_KEY.encode() not in exported
    assert_no_key(gproject, *failures, caplog.text, *[e["detail"] or "" for e in errors(db)])


def test_missing_key_is_one_clear_line(gproject, monkeypatch):
    from mikupal.emotion.stage import EmotionStage
    from mikupal.stage import StageError

    monkeypatch.delenv("GEMINI_API_KEY")
    with pytest.raises(StageError, match="set GEMINI_API_KEY .* or run with --backend baseline"):
        EmotionStage(gproject).load()


def test_through_the_runner(gproject, server, caplog):
    from mikupal.runner import Runner

    set_cfg(gproject, emotion__runs=2, emotion__concurrency=4)
    server.script += [Reply(text="oops"), Reply(text="oops")]  # one item may end as an error row
    summary = Runner(gproject, "emotion").run()
    db = gproject.db()
    rows, errs = annotations(db), errors(db)
    assert summary.status == "finished" and len(rows) + len(errs) == 6
    assert {r["run_id"] for r in rows} == {summary.run_id}
    assert all(e["run_id"] == summary.run_id and paid(e)["answer"] == "oops" for e in errs)
    again = Runner(gproject, "emotion").run()  # resume: only what is missing
    assert len(annotations(gproject.db())) == 6 and again.stages["emotion"].ok == len(errs)
    assert_no_key(gproject, caplog.text)


def test_thinking_is_off_by_default_for_flash_and_left_to_pro(gproject, server):
    run_emotion(gproject)  # the default thinking_budget = 0
    gc = gen_requests(server)[0]["json"]["generationConfig"]
    assert g(g(gc, "thinkingConfig"), "thinkingBudget") == 0
    n = len(gen_requests(server))
    set_cfg(gproject, emotion__model="gemini-test-pro", emotion__thinking_budget=0)  # Pro cannot turn it off
    run_emotion(gproject)
    assert len(gen_requests(server)) == n + 3
    assert g(gen_requests(server)[-1]["json"]["generationConfig"], "thinkingConfig") is None
    set_cfg(gproject, emotion__model="gemini-test-flash-2", emotion__thinking_budget=512)
    run_emotion(gproject)
    assert g(g(gen_requests(server)[-1]["json"]["generationConfig"], "thinkingConfig"), "thinkingBudget") == 512
    set_cfg(gproject, emotion__model="gemini-2.0-flash", emotion__thinking_budget=0)  # the paper's model never thinks
    run_emotion(gproject)
    assert g(gen_requests(server)[-1]["json"]["generationConfig"], "thinkingConfig") is None


def test_retry_info_in_the_body_is_honoured(gproject, server):
    set_cfg(gproject, emotion__backoff_s=0.001, emotion__max_backoff_s=0.002)
    server.script += [Reply(429, body=rate_limit_body(MINUTE_QUOTA, 1.5))]  # no Retry-After header, like Gemini
    stamps = server.stamp_requests()
    stage, db, failures = run_emotion(gproject)
    assert failures == [] and len(annotations(db)) == 3
    assert stamps[1] - stamps[0] >= 1.45  # our backoff would wait ~1 ms; RetryInfo asked for 1.5 s


def test_per_minute_limit_slows_down_instead_of_failing(gproject, server, caplog):
    set_cfg(gproject, emotion__runs=4, emotion__concurrency=4, emotion__max_retries=8)
    server.script += [Reply(429, body=rate_limit_body(MINUTE_QUOTA, 0.05))] * 6
    stage, db, failures = run_emotion(gproject, in_flight=12)
    assert failures == [] and len(annotations(db)) == 12 and errors(db) == []
    assert len(gen_requests(server)) == 12 + 6
    assert "requests in flight at most" in caplog.text  # the stage lowered its concurrency


def test_daily_quota_stops_the_stage_with_one_line_and_a_later_run_finishes(gproject, server, caplog):
    set_cfg(gproject, emotion__runs=7)  # 21 answers to give
    server.daily_quota = 2
    stage, db, failures = run_emotion(gproject)
    assert len(annotations(db)) == 2
    assert len(gen_requests(server)) == 3  # two answers, one 429 naming the daily quota, then no request at all
    assert len(set(failures)) == len(failures) == 19
    msg = failures[-1]
    assert "\n" not in msg and DAILY_QUOTA in msg and "try again after" in msg and "later run" in msg
    assert "concurrency" not in msg and "rpm" not in msg
    server.daily_quota = None  # the next day
    stage2, db2, failures2 = run_emotion(gproject)
    assert failures2 == [] and len(annotations(db2)) == 21 and len(gen_requests(server)) == 3 + 19


def test_exact_cost_from_usage_metadata(gproject, server):
    """Hand-computed from the price table: TEXT/VIDEO $0.30, AUDIO $1.00, cached TEXT $0.03 per M
    input; $2.50 per M output including thinking (gemini-2.5-flash, resources/prices)."""
    server.thoughts, server.cached = 800, 200  # model gemini-2.5-flash-test: priced as gemini-2.5-flash
    stage, db, failures = run_emotion(gproject)
    assert failures == []
    for r in annotations(db):
        u = json.loads(r["usage_json"])
        p = u["prompt"]
        assert p["text"] == 300 and p["video"] > 0 and p["audio"] > 0 and u["cached"] == {"text": 200}
        assert r["thought_tokens"] == 800 and r["cached_tokens"] == 200
        answer_tokens = r["output_tokens"] - 800
        want = ((300 - 200) * 0.30 + 200 * 0.03 + p["video"] * 0.30 + p["audio"] * 1.00
                + (answer_tokens + 800) * 2.50) / 1e6
        assert r["cost_usd"] == pytest.approx(want, rel=1e-9)
        assert r["input_tokens"] == 300 + p["video"] + p["audio"]


def test_project_price_file_overrides_the_shipped_table(gproject, server):
    (Path(gproject.root) / "prices.json").write_text(json.dumps({"as_of": "2030-01-01", "models": {
        "gemini-test-flash": {"input": 1.0, "output": 10.0}}}))
    set_cfg(gproject, emotion__model="gemini-test-flash")
    stage, db, _ = run_emotion(gproject)
    r = annotations(db)[0]
    assert r["cost_usd"] == pytest.approx((r["input_tokens"] * 1.0 + r["output_tokens"] * 10.0) / 1e6)


def test_unpriced_model_costs_unknown_not_a_guess(gproject, server):
    set_cfg(gproject, emotion__model="gemini-test-flash")  # in no table
    stage, db, _ = run_emotion(gproject)
    assert {r["cost_usd"] for r in annotations(db)} == {None}


def test_max_tokens_is_a_clear_per_item_error(gproject, server):
    server.thoughts = 1900
    server.script += [Reply(text='{"visual_analysis": "The speaker', finish="MAX_TOKENS")]
    stage, db, failures = run_emotion(gproject)
    assert len(failures) == 1 and len(annotations(db)) == 2
    msg = failures[0]
    assert "max_output_tokens=2048" in msg and "MAX_TOKENS" in msg and "raise [emotion] max_output_tokens" in msg
    assert "thinking" in msg and len(gen_requests(server)) == 3  # not retried: the same cap cuts it again
    assert paid(errors(db)[0])["kind"] == "max_tokens"


def test_status_reports_the_real_spend_including_unusable_answers(gproject, server):
    from mikupal.status import project_status

    server.script += [Reply(text="junk"), Reply(text="junk")]  # segment 1: two paid, unusable answers
    stage, db, failures = run_emotion(gproject)
    assert len(failures) == 1
    stored = sum(r["cost_usd"] for r in annotations(db))
    wasted = paid(errors(db)[0])["cost_usd"]
    assert wasted > 0
    st = project_status(gproject)
    assert st["cost_usd"] == pytest.approx(stored + wasted, abs=1e-6)
    assert st["spend"]["failed_answers_usd"] == pytest.approx(wasted, abs=1e-6)


def test_daily_quota_through_the_runner(gproject, server):
    from mikupal.runner import Runner

    set_cfg(gproject, emotion__runs=7, emotion__concurrency=2)
    server.daily_quota = 2
    summary = Runner(gproject, "emotion").run()
    db = gproject.db()
    assert len(annotations(db)) == 2 and summary.status == "finished"
    # Two answers; the requests in flight when the quota hit (at most the concurrency) got the 429;
    # nothing was sent after that.
    assert 3 <= len(gen_requests(server)) <= 2 + 2
    msgs = {e["message"].split(": ", 1)[-1] for e in errors(db)}
    (line,) = msgs  # ONE line for the stage, the other items skipped (left for a later run)
    assert len(errors(db)) == 1 and DAILY_QUOTA in line and "try again after" in line and "later run" in line
    assert summary.stages["emotion"].ok == 2 and summary.stages["emotion"].failed + summary.stages["emotion"].skipped == 19
    server.daily_quota = None
    Runner(gproject, "emotion").run()
    assert len(annotations(gproject.db())) == 21

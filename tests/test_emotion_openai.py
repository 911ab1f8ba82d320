"""The emotion stage with the OpenAI-compatible backend: the real `openai` client against a
local chat-completions server (tests/openai_server.py)."""
from __future__ import annotations

import base64
import io
import json
import logging
import sys
import wave
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from emotion_fixtures import (annotations, assert_no_key, errors, paid, project_with_segments,  # noqa: E402
                              run_emotion, set_cfg)
from openai_server import OpenAIServer, Reply  # noqa: E402

from mikupal.taxonomy import load_label_set  # noqa: E402

KEY = "sk-local-TEST-KEY-must-never-leak-987654321"


@pytest.fixture()
def server():
    s = OpenAIServer()
    yield s
    s.close()


@pytest.fixture()
def oproject(project, demo_clip, server, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("MIKUPAL_OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("MIKUPAL_OPENAI_API_KEY", KEY)
    project.seg_ids = project_with_segments(project, demo_clip)
    set_cfg(project, emotion__backend="openai", emotion__model="qwen2.5-omni-test", emotion__label_set="meld7",
            emotion__backoff_s=0.01, emotion__max_backoff_s=0.05,
            emotion__timeout_s=60.0,  # far above a local answer however loaded (a timeout would change the counts)
            emotion__concurrency=1)  # scripted replies go to items in order
    return project


def chat_requests(server):
    return [r for r in server.requests if r["path"].endswith("/chat/completions")]


def test_frames_as_images_audio_as_input_audio_and_validated_json(oproject, server, demo_clip, caplog):
    stage, db, failures = run_emotion(oproject)
    rows = annotations(db)
    assert failures == [] and len(rows) == len(demo_clip.cues)
    meld = load_label_set("meld7").names
    for r in rows:
        assert r["backend"] == "openai" and r["model"] == "qwen2.5-omni-test" and r["label_set"] == "meld7"
        assert list(json.loads(r["intensities_json"])) == meld and r["primary_emotion"] in meld
        assert r["input_tokens"] == 500 and json.loads(r["raw_response"])["choices"]
    body = chat_requests(server)[0]["json"]
    assert body["messages"][0]["role"] == "system" and "- neutral:" in body["messages"][0]["content"]
    content = body["messages"][1]["content"]
    images = [p for p in content if p["type"] == "image_url"]
    audio = [p for p in content if p["type"] == "input_audio"]
    assert images and all(p["image_url"]["url"].startswith("data:image/jpeg;base64,") for p in images)
    with wave.open(io.BytesIO(base64.b64decode(audio[0]["input_audio"]["data"]))) as w:
        seconds = w.getnframes() / w.getframerate()
    a, b, _ = demo_clip.cues[0]
    assert abs(seconds - (b - a)) < 0.1  # the utterance's audio, not the whole video
    assert content[-1]["type"] == "text" and demo_clip.cues[0][2].split()[0] in content[-1]["text"]
    assert body["response_format"]["type"] == "json_schema" and body["temperature"] == 0.0 and body["seed"] == 1234
    hdrs = {k.lower(): v for k, v in chat_requests(server)[0]["headers"].items()}
    assert hdrs["authorization"] == f"Bearer {KEY}"
    assert_no_key(oproject, caplog.text, key=KEY)


def test_storm_with_retry_after_then_success(oproject, server):
    set_cfg(oproject, emotion__backoff_s=0.001, emotion__max_backoff_s=0.002)
    stamps = server.stamp_requests()
    server.script += [Reply(429, headers={"Retry-After": "1"}), Reply(503), Reply(500)]
    stage, db, failures = run_emotion(oproject)
    assert failures == [] and errors(db) == [] and len(chat_requests(server)) == 4 + 3
    assert stamps[1] - stamps[0] >= 0.95


def test_timeout_retried(oproject, server):
    set_cfg(oproject, emotion__timeout_s=4.0)  # the stall (60 s) never answers in time; others take ms
    server.script += [Reply(delay_s=60.0)]
    stage, db, failures = run_emotion(oproject)
    assert failures == [] and len(annotations(db)) == 4 and len(chat_requests(server)) == 5


@pytest.mark.parametrize("bad", ["I think they are happy.", json.dumps({"emotions": {"joy": 0.5}})])
def test_invalid_answer_retried_once_then_error_row(oproject, server, bad):
    server.script += [Reply(text=bad), Reply(text=bad)]
    stage, db, failures = run_emotion(oproject)
    errs = errors(db)
    assert len(failures) == 1 and len(errs) == 1 and paid(errs[0])["answer"] == bad and len(annotations(db)) == 3
    assert paid(errs[0])["input_tokens"] == 1000  # both attempts were paid (500 each)


def test_fenced_json_is_accepted(oproject, server):
    ok = json.dumps({"visual_analysis": "v", "audio_analysis": "a", "text_analysis": "t",
                     "emotions": {n: 0.1 for n in load_label_set("meld7").names} | {"joy": 0.9},
                     "primary_emotion": "Joy", "rationale": "r"})
    server.script += [Reply(text=f"```json\n{ok}\n```")]
    stage, db, failures = run_emotion(oproject)
    rows = annotations(db)
    assert failures == [] and errors(db) == [] and rows[0]["primary_emotion"] == "joy"


def test_content_filter_is_an_error_row(oproject, server):
    server.script += [Reply(body={"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": None},
                                               "finish_reason": "content_filter"}]})]
    stage, db, failures = run_emotion(oproject)
    assert len(failures) == 1 and "content filter" in errors(db)[0]["message"] and len(chat_requests(server)) == 4


def test_key_echoed_by_server_is_scrubbed(oproject, server, caplog):
    server.script += [Reply(400, body={"error": {"message": f"bad key {KEY}", "type": "invalid_request_error"}})]
    stage, db, failures = run_emotion(oproject)
    assert len(failures) == 1 and "400" in failures[0] and "***" in failures[0]
    assert_no_key(oproject, caplog.text, *failures, key=KEY)


def test_no_server_fails_fast_naming_the_url_and_the_variable(oproject, monkeypatch, caplog):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    monkeypatch.setenv("MIKUPAL_OPENAI_BASE_URL", url)
    set_cfg(oproject, emotion__max_retries=6)
    stage, db, failures = run_emotion(oproject)
    assert len(failures) == 4 and annotations(db) == []
    assert all(url in f and "MIKUPAL_OPENAI_BASE_URL" in f and "\n" not in f for f in failures)
    assert "rpm" not in failures[0] and "concurrency" not in failures[0]
    assert "retry 1/" not in caplog.text  # refused: not retried


def test_length_cutoff_is_a_max_tokens_error(oproject, server):
    server.script += [Reply(body={"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": '{"visual'},
                                               "finish_reason": "length"}],
                                  "usage": {"prompt_tokens": 500, "completion_tokens": 2048, "total_tokens": 2548}})]
    stage, db, failures = run_emotion(oproject)
    assert len(failures) == 1 and "max_output_tokens=2048" in failures[0] and paid(errors(db)[0])["kind"] == "max_tokens"

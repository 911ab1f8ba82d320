"""Prompt rendering, answer validation, clip packaging and request pacing."""
from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import av
import pytest

from mikupal.emotion.clips import ClipSpec, cut_clip, parse_bbox
from mikupal.emotion.prompt import build_prompt
from mikupal.emotion.ratelimit import RateLimiter, RetryPolicy, TransientError, parse_retry_after, with_retries
from mikupal.emotion.redact import scrub
from mikupal.emotion.schema import InvalidAnswer, json_schema, parse_answer
from mikupal.taxonomy import load_label_set

COWEN = load_label_set("cowen26")


def good(ls=COWEN, **over):
    d = {"visual_analysis": "smiles", "audio_analysis": "bright", "text_analysis": "kind words",
         "emotions": {n: 0.0 for n in ls.names} | {ls.names[0]: 0.7}, "primary_emotion": ls.names[0], "rationale": "r"}
    d.update(over)
    return json.dumps(d)


def test_prompt_has_three_parts_and_every_category():
    p = build_prompt("cowen26", "English")
    i1, i2, i3 = (p.system.index(f"## Part {k}.") for k in (1, 2, 3))
    assert i1 < i2 < i3
    for c in COWEN.categories:
        assert f"- {c.name}: {c.description}" in p.system[i2:i3]
    assert "Write the three analyses and the rationale in English." in p.system
    assert p.user_text('He said "no"  twice').startswith("Transcript") and '"no"' not in p.user_text('"no"')


def test_prompt_sha_is_content_versioned(tmp_path):
    a, b = build_prompt("cowen26", "English"), build_prompt("cowen26", "English")
    assert a.sha == b.sha and len(a.sha) == 16
    assert build_prompt("meld7", "English").sha != a.sha
    assert build_prompt("cowen26", "Japanese").sha != a.sha
    from mikupal.emotion import prompt as P

    for name in (P.SYSTEM_TEMPLATE, P.USER_TEMPLATE):
        (tmp_path / name).write_text((P.PROMPTS_DIR / name).read_text())
    assert build_prompt("cowen26", "English", tmp_path).sha == a.sha
    (tmp_path / P.SYSTEM_TEMPLATE).write_text((P.PROMPTS_DIR / P.SYSTEM_TEMPLATE).read_text() + "\nBe brief.")
    assert build_prompt("cowen26", "English", tmp_path).sha != a.sha


def test_parse_answer_accepts_valid_and_normalises_names():
    ls = load_label_set("meld7")
    raw = json.loads(good(ls))
    raw["emotions"] = {k.upper(): v for k, v in raw["emotions"].items()}
    raw["primary_emotion"] = "ANGER"
    a = parse_answer(json.dumps(raw), ls)
    assert list(a.emotions) == ls.names and a.primary_emotion == "anger"
    assert parse_answer("```json\n" + good() + "\n```", COWEN).primary_emotion == "Admiration"


@pytest.mark.parametrize("text,reason", [
    ("", "empty"), ("happy!", "not JSON"), ("[1, 2]", "JSON object"),
    (good(rationale=None), "rationale must be a string"),
    (json.dumps({"emotions": {}}), "missing field"),
    (good(emotions={"Joy": 0.5}), "lacks 25 categories"),
    (good(emotions={n: 0.1 for n in COWEN.names} | {"Happiness": 0.3}), "unknown category 'Happiness'"),
    (good(emotions={n: 0.1 for n in COWEN.names} | {"Joy": 1.5}), "not a number in \\[0, 1\\]"),
    (good(emotions={n: 0.1 for n in COWEN.names} | {"Joy": "high"}), "not a number"),
    (good(primary_emotion="Happiness"), "primary_emotion 'Happiness' is not in label set cowen26"),
])
def test_parse_answer_rejects_with_reason(text, reason):
    with pytest.raises(InvalidAnswer, match=reason):
        parse_answer(text, COWEN)


def test_json_schema_lists_every_category():
    s = json_schema(COWEN)
    assert s["properties"]["emotions"]["required"] == COWEN.names
    assert s["properties"]["primary_emotion"]["enum"] == COWEN.names


def test_clip_speaker_crop_full_frame_and_content_hash(demo_clip, tmp_path):
    a, b, _ = demo_clip.cues[0]
    box = demo_clip.face_boxes[demo_clip.speaker_side]
    spk = cut_clip(ClipSpec(str(demo_clip.path), "v", a, b, bbox=box, crop="speaker", height=360, fps=5), tmp_path)
    full = cut_clip(ClipSpec(str(demo_clip.path), "v", a, b, bbox=box, crop="full", height=180, fps=5), tmp_path)
    nobox = cut_clip(ClipSpec(str(demo_clip.path), "v", a, b, bbox=None, crop="speaker", height=180, fps=5), tmp_path)
    assert nobox.sha == full.sha  # no box known: the full frame
    with av.open(spk.path) as c:
        v, au = c.streams.video[0], c.streams.audio[0]
        assert v.codec_context.name == "h264" and au.codec_context.name == "aac"
        assert v.codec_context.width == v.codec_context.height  # square head-and-shoulders crop
        frames = sum(1 for _ in c.decode(v))
    assert abs(frames - round((b - a) * 5)) <= 1
    with av.open(full.path) as c:
        assert (c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height) == (320, 180)
    assert spk.path.endswith(f"{spk.sha}.mp4") and abs(spk.duration_s - (b - a)) < 0.01
    assert spk.sha != full.sha
    # A re-cut after the clips cache was lost (index and files) gets the same name, so answers
    # keyed by clip hash stay valid (the name hashes the content shown, not x264's bytes).
    for f in list((tmp_path / "index").iterdir()) + list(tmp_path.glob("*.mp4")):
        f.unlink()
    again = cut_clip(ClipSpec(str(demo_clip.path), "v", a, b, bbox=box, crop="speaker", height=360, fps=5), tmp_path)
    assert again.sha == spk.sha and Path(again.path).stat().st_size > 0
    with av.open(again.path) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) == frames


def test_parse_bbox_shapes():
    assert parse_bbox("[1, 2, 30, 40]") == (1, 2, 30, 40)
    assert parse_bbox(json.dumps({"x1": 1, "y1": 2, "x2": 3, "y2": 4})) == (1, 2, 3, 4)
    assert parse_bbox(json.dumps({"box": [0, 0, 5, 5]})) == (0, 0, 5, 5)
    assert parse_bbox(None) is None and parse_bbox("[5, 5, 1, 1]") is None and parse_bbox("junk") is None


def test_rate_limiter_paces_requests_and_tokens():
    now = [0.0]
    slept = []

    async def run():
        lim = RateLimiter(rpm=60, tpm=600, clock=lambda: now[0])
        orig = asyncio.sleep

        async def fake_sleep(d):
            slept.append(d)
            now[0] += d
            await orig(0)

        asyncio.sleep = fake_sleep
        try:
            for _ in range(60):
                await lim.acquire(1)
            assert slept == []  # a full bucket: one minute's worth goes at once
            await lim.acquire(1)
            assert sum(slept) == pytest.approx(1.0, abs=1e-6)  # then one request per second
            slept.clear()
            # tokens: 600 - 61 + 10 refilled during the 1 s wait = 549 left; +10 more in the next 1 s
            await lim.acquire(300)  # fits: 249 left (the request bucket is empty: 1 s)
            assert sum(slept) == pytest.approx(1.0, abs=1e-6)
            slept.clear()
            await lim.acquire(300)  # 559 - 300 = 259 left: 41 short at 10 tokens/s
            assert sum(slept) == pytest.approx(4.1, rel=0.01)
        finally:
            asyncio.sleep = orig

    asyncio.run(run())


def test_backoff_grows_with_jitter_and_respects_retry_after():
    p = RetryPolicy(max_retries=5, backoff_s=1.0, max_backoff_s=8.0)
    rng = random.Random(0)
    delays = [p.delay(i, None, rng) for i in range(6)]
    assert all(0.5 * min(8, 2 ** i) <= d <= min(8, 2 ** i) for i, d in enumerate(delays))
    assert p.delay(0, 30.0, rng) == 30.0
    assert parse_retry_after("2.5") == 2.5 and parse_retry_after(None) is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") <= 0.0  # a date in the past: now


def test_with_retries_gives_up_after_max_and_passes_other_errors():
    calls = []

    async def flaky():
        calls.append(1)
        raise ConnectionResetError("reset")

    classify = lambda e: TransientError("conn") if isinstance(e, ConnectionError) else None  # noqa: E731
    with pytest.raises(TransientError):
        asyncio.run(with_retries(flaky, classify, RetryPolicy(2, 0.001, 0.002)))
    assert len(calls) == 3

    async def broken():
        raise KeyError("bug")

    with pytest.raises(KeyError):
        asyncio.run(with_retries(broken, classify, RetryPolicy(2, 0.001, 0.002)))


def test_scrub_masks_env_keys(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaSecretValue123")
    assert scrub("url?key=AIzaSecretValue123&x") == "url?key=***&x"
    assert scrub(None) == ""


def test_audio_only_source_gives_a_wav_clip(tmp_path, demo_clip):
    import numpy as np

    from mikupal.emotion.clips import AUDIO_RATE, _encode, read_audio

    src = str(tmp_path / "talk.m4a")
    t = np.arange(int(3.0 * AUDIO_RATE)) / AUDIO_RATE
    _encode(src, None, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 5.0)
    clip = cut_clip(ClipSpec(src, "a", 1.0, 2.0, bbox=(0, 0, 10, 10)), tmp_path / "clips")
    assert clip.path.endswith(".wav") and clip.mime_type == "audio/wav" and not clip.has_video
    x = read_audio(clip.path)
    assert abs(len(x) / AUDIO_RATE - 1.0) < 0.01 and 0.25 < np.abs(x).max() < 0.35


def test_rpc_error_body_parsing():
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from gemini_server import DAILY_QUOTA, MINUTE_QUOTA, rate_limit_body

    from mikupal.emotion.ratelimit import is_daily, parse_duration, rpc_wait_and_quota

    assert rpc_wait_and_quota(rate_limit_body(MINUTE_QUOTA, 29)) == (29.0, [MINUTE_QUOTA])
    assert rpc_wait_and_quota(rate_limit_body(DAILY_QUOTA, None)) == (None, [DAILY_QUOTA])
    assert rpc_wait_and_quota({"error": {"code": 429}}) == (None, []) and rpc_wait_and_quota("junk") == (None, [])
    assert parse_duration("1.5s") == 1.5 and parse_duration({"seconds": 2, "nanos": 500000000}) == 2.5
    assert is_daily(DAILY_QUOTA) and is_daily("generate_requests_per_day") and not is_daily(MINUTE_QUOTA)


def test_when_to_retry_names_the_time():
    from mikupal.emotion.ratelimit import when_to_retry

    # 2026-12-01 12:00 UTC; +90 min
    assert when_to_retry(5400, now=1796126400.0) == "try again after 2026-12-01 13:30 UTC (in 1 h 30 min)"
    # No hint: midnight US Pacific (PST = UTC-8) -> 08:00 UTC the next day
    assert when_to_retry(None, now=1796126400.0).startswith("try again after 2026-12-02 08:00 UTC (in 20 h 0 min)")


def test_adaptive_concurrency_halves_on_rate_limits_and_grows_back():
    from mikupal.emotion.ratelimit import AdaptiveConcurrency, QuotaExhausted

    async def run():
        gate = AdaptiveConcurrency(8)
        gate.throttled()
        gate.throttled()
        assert gate.limit == 2
        for _ in range(2):
            await gate.succeeded()
        assert gate.limit == 3  # after `limit` successes in a row, one more
        for _ in range(3):
            await gate.succeeded()
        assert gate.limit == 4
        gate.throttled()
        assert gate.limit == 2
        held = [await gate.__aenter__() for _ in range(2)]
        waiter = asyncio.ensure_future(gate.__aenter__())
        await asyncio.sleep(0.01)
        assert not waiter.done() and gate.in_flight == 2  # the limit holds
        await gate.stop(QuotaExhausted("X-PerDay", None))
        with pytest.raises(QuotaExhausted):
            await waiter  # a waiting request does not start after a daily quota
        for g_ in held:
            await g_.__aexit__(None, None, None)
        assert gate.in_flight == 0

    asyncio.run(run())

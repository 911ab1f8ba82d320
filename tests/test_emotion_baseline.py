"""The offline baseline backend: measured prosody + lexicon valence, deterministic, no network."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample_poly

sys.path.insert(0, str(Path(__file__).parent))
from emotion_fixtures import annotations, espeak_wav, project_with_segments, run_emotion, set_cfg  # noqa: E402

from mikupal.emotion.backends.baseline import analyse  # noqa: E402
from mikupal.emotion.clips import AUDIO_RATE, _encode  # noqa: E402
from mikupal.taxonomy import load_label_set  # noqa: E402

TEXT = "I am going to the station now and I will be back tomorrow morning"
HIGH_AROUSAL = [c.name for c in load_label_set("cowen26").categories if c.va[1] >= 0.8]  # Anger, Excitement, Fear, ...
LOW_AROUSAL = [c.name for c in load_label_set("cowen26").categories if c.va[1] <= 0.2]


def clip_from_espeak(tmp_path, name, **voice) -> str:
    x, sr = espeak_wav(TEXT, tmp_path / f"{name}.wav", **voice)
    x = resample_poly(x, AUDIO_RATE, sr).astype(np.float32)
    out = str(tmp_path / f"{name}.m4a")
    _encode(out, None, x, 5.0)  # the clip format the stage sends (AAC in MP4)
    return out


def test_loud_fast_scores_higher_arousal_than_soft_slow(tmp_path):
    ls = load_label_set("cowen26")
    loud, m_loud = analyse(clip_from_espeak(tmp_path, "loud", amplitude=200, speed=260, pitch=85), TEXT, ls)
    soft, m_soft = analyse(clip_from_espeak(tmp_path, "soft", amplitude=12, speed=95, pitch=20), TEXT, ls)
    assert m_loud["prosody"]["loudness_dbfs"] > m_soft["prosody"]["loudness_dbfs"] + 10
    assert m_loud["prosody"]["rate"] > m_soft["prosody"]["rate"]
    assert m_loud["arousal"] > m_soft["arousal"]
    hi = lambda a: sum(a.emotions[n] for n in HIGH_AROUSAL)  # noqa: E731
    lo = lambda a: sum(a.emotions[n] for n in LOW_AROUSAL)  # noqa: E731
    assert hi(loud) > hi(soft) and lo(soft) > lo(loud)
    assert ls.category(loud.primary_emotion).va[1] > ls.category(soft.primary_emotion).va[1]


def test_valence_follows_the_words(tmp_path):
    ls = load_label_set("cowen26")
    clip = clip_from_espeak(tmp_path, "mid", amplitude=100, speed=170, pitch=50)
    happy, m1 = analyse(clip, "This is wonderful, I love it, what a great day!", ls)
    sad, m2 = analyse(clip, "This is terrible, I hate it, everything is awful and sad.", ls)
    assert m1["valence"] > 0.5 > -0.5 > m2["valence"]
    pos = lambda a: sum(v * ls.category(n).va[0] for n, v in a.emotions.items())  # noqa: E731
    assert pos(happy) > 0 > pos(sad)


def test_rationale_cites_measured_values_and_is_deterministic(tmp_path):
    ls = load_label_set("cowen26")
    clip = clip_from_espeak(tmp_path, "mid", amplitude=100, speed=170, pitch=50)
    a1, m = analyse(clip, TEXT, ls)
    a2, _ = analyse(clip, TEXT, ls)
    assert a1 == a2
    assert f"{m['prosody']['loudness_dbfs']} dBFS" in a1.rationale and f"{m['prosody']['f0_median_hz']} Hz" in a1.rationale
    assert "baseline" in a1.rationale.lower() and "no facial model" in a1.visual_analysis
    assert 75 <= m["prosody"]["f0_median_hz"] <= 400


def test_stage_labels_baseline_everywhere(project, demo_clip, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("MIKUPAL_GEMINI_BASE_URL", "http://127.0.0.1:9")  # any network use would fail
    project_with_segments(project, demo_clip)
    set_cfg(project, emotion__backend="baseline", emotion__label_set="iemocap4")
    stage, db, failures = run_emotion(project)
    rows = annotations(db)
    assert failures == [] and len(rows) == len(demo_clip.cues)
    for r in rows:
        assert r["backend"] == "baseline" and r["model"] == "baseline-v1" and r["cost_usd"] == 0.0
        assert set(json.loads(r["intensities_json"])) == {"angry", "happy", "neutral", "sad"}
        assert json.loads(r["raw_response"])["backend"] == "baseline"
        assert re.search(r"-?\d+\.\d dBFS", r["audio_analysis"])


def test_label_set_without_coordinates_is_a_clear_error(tmp_path):
    p = tmp_path / "plain.json"
    p.write_text(json.dumps({"name": "plain", "categories": [
        {"name": "a", "description": "first one", "color": "#000000"},
        {"name": "b", "description": "second one", "color": "#FFFFFF"}]}))
    clip = clip_from_espeak(tmp_path, "mid", amplitude=100, speed=170, pitch=50)
    with pytest.raises(Exception, match="add \"va\""):
        analyse(clip, TEXT, load_label_set(str(p)))

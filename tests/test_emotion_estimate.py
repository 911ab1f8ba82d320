"""`mikupal estimate`: tokens and dollars before a run, from the documented media token rates
and the shipped price table (hand-computed references)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from emotion_fixtures import project_with_segments, set_cfg  # noqa: E402

from mikupal import config  # noqa: E402
from mikupal.emotion.estimate import estimate_clips, estimate_hour  # noqa: E402


def test_one_clip_by_hand():
    cfg = config.defaults()  # gemini-2.5-flash, media_resolution low, thinking off
    est = estimate_clips([(6.0, True, "")], cfg, "x" * 400, "test")
    # text (400 + 0 + 120 template chars) / 4 = 130; audio 6 s x 32; video 6 frames x 66 (low)
    assert est.input_tokens == {"audio": 192, "text": 130, "video": 396}
    assert est.output_tokens == 450 and est.thought_tokens == 0
    usd = (130 * 0.30 + 396 * 0.30 + 192 * 1.00 + 450 * 2.50) / 1e6
    assert est.usd_interactive == pytest.approx(round(usd, 4)) and est.usd == est.usd_interactive
    cfg["emotion"].update(batch=True, thinking_budget=-1)
    est = estimate_clips([(6.0, True, "")], cfg, "x" * 400, "test")
    assert est.batch and est.thought_tokens == 800
    assert est.usd == pytest.approx(round((130 * 0.30 + 396 * 0.30 + 192 + 1250 * 2.50) / 1e6 / 2, 4))


def test_an_hour_costs_less_with_batch_and_flash_lite():
    from mikupal.emotion.prompt import build_prompt

    system = build_prompt("cowen26", "English").system
    cfg = config.defaults()
    default = estimate_hour(cfg, system)
    cfg["emotion"].update(batch=True, model="gemini-2.5-flash-lite", media_resolution="low")
    cheapest = estimate_hour(cfg, system)
    assert default.items == 600 and default.speech_s == 3600
    assert cheapest.usd < 0.5 < default.usd  # the paper's figure is < $0.50 per hour
    assert cheapest.usd == pytest.approx(default.usd * (0.10 / 0.30) / 2, rel=0.35)  # input-dominated, half price


def test_cli_counts_the_pending_answers(project, demo_clip):
    ids = project_with_segments(project, demo_clip, statuses={3: "no_face"})
    (Path(project.root) / "mikupal.toml").write_text('[emotion]\nruns = 2\n')
    out = subprocess.run([sys.executable, "-m", "mikupal.cli", "estimate", str(project.root), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    est = json.loads(out.stdout)
    assert est["items"] == 2 * 3 and est["source"] == "pending segments" and est["usd"] > 0
    segs = [(b - a) for a, b, _ in demo_clip.cues[:3]]
    assert est["speech_s"] == pytest.approx(2 * sum(segs))
    text = subprocess.run([sys.executable, "-m", "mikupal.cli", "estimate", str(project.root), "--batch"],
                          capture_output=True, text=True, timeout=120)
    assert text.returncode == 0 and "Batch API rate" in text.stdout and "per hour of speech" in text.stdout
    assert len(ids) == 4

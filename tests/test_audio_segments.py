"""Utterance building: trimming to voice, merging, splitting, SNR, retention, and the rebuild guard."""
from __future__ import annotations

import json

import numpy as np
import pytest

from audio_fixtures import (run_stages, TINY_MDX, add_video, audio_models_dir, audio_project, speech_scene,  # noqa: F401
                            tiny_mdx, write_video)
from mikupal import store

from mikupal.stages import make_stage
from mikupal.audio.vad import iou
from mikupal.queries import retention
from mikupal.segments import build_segments


def _t(s, e, text, words=None, lang="en"):
    return {"start_s": s, "end_s": e, "text": text, "words_json": json.dumps(words or []), "language": lang}


def _words(spec):
    return [{"start": s, "end": e, "word": f" {w}", "p": 0.9} for s, e, w in spec]


def test_short_neighbours_merge():
    segs = build_segments([_t(0.0, 1.0, "a"), _t(1.3, 2.0, "b"), _t(2.2, 3.5, "c"), _t(8.0, 11.0, "far")],
                          [(0.0, 3.5), (8.0, 11.0)], min_s=2.0, max_s=30.0, merge_gap_s=0.6)
    assert [(u.start, u.end, u.text) for u in segs] == [(0.0, 3.5, "a b c"), (8.0, 11.0, "far")]


def test_short_alone_is_dropped_and_merge_respects_max():
    segs = build_segments([_t(0.0, 1.0, "lone"), _t(5.0, 9.0, "x"), _t(9.2, 10.0, "y")], [(0.0, 10.0)],
                          min_s=2.0, max_s=4.5, merge_gap_s=0.6)
    assert [(u.start, u.end, u.text) for u in segs] == [(5.0, 9.0, "x")]  # "lone" too short, x+y over max


def test_long_unit_splits_at_the_longest_pause():
    spec, t = [], 0.0
    for i in range(70):
        gap = 1.5 if i == 50 else (0.8 if i == 20 else 0.1)
        spec.append((round(t, 2), round(t + 0.4, 2), f"w{i}"))
        t += 0.4 + gap
    words = _words(spec)
    segs = build_segments([_t(0.0, t, "ignored", words)], [(0.0, t)], min_s=2.0, max_s=30.0)
    assert all(2.0 <= u.dur <= 30.0 for u in segs)
    assert segs[0].text.split()[-1] == "w50"  # cut in the 1.5 s pause after word 50 ...
    assert segs[1].text.split()[0] == "w51"
    assert " ".join(u.text for u in segs).split() == [f"w{i}" for i in range(70)]  # ... losing no word


def test_split_without_words_uses_vad_gaps():
    regions = [(0.0, 12.0), (12.6, 20.0), (21.5, 40.0)]
    segs = build_segments([_t(0.0, 40.0, "one two three four five six seven eight")], regions, min_s=2.0, max_s=25.0)
    assert [(u.start, u.end) for u in segs] == [(0.0, 20.0), (21.5, 40.0)]
    assert " ".join(u.text for u in segs) == "one two three four five six seven eight"


def test_trim_to_voice_and_drop_unvoiced():
    words = _words([(1.2, 1.5, "early"), (1.7, 2.5, "hello"), (2.6, 4.0, "world"), (4.6, 4.9, "late")])
    segs = build_segments([_t(1.0, 5.0, "early hello world late", words), _t(6.0, 9.0, "hallucinated")],
                          [(1.6, 4.2)], min_s=1.0, max_s=30.0)
    # edges come from the voice (VAD), text from the words whose middle lies inside it
    assert [(u.start, u.end, u.text) for u in segs] == [(1.6, 4.2, "hello world")]


def _loose_srt(truth, path, rng):
    def ts(t):
        t = max(0.0, t)
        return f"{int(t // 3600):02d}:{int(t % 3600 // 60):02d}:{int(t % 60):02d},{int(t % 1 * 1000):03d}"
    blocks = []
    for i, (s, e, text) in enumerate(truth, 1):
        # real subtitles lead and linger: 0.2-0.6 s early, 0.3-0.8 s late
        blocks.append(f"{i}\n{ts(s - rng.uniform(0.2, 0.6))} --> {ts(e + rng.uniform(0.3, 0.8))}\n{text}\n")
    path.write_text("\n".join(blocks), encoding="utf-8")


LINES = ["hello there how are you doing today", "the weather is lovely this afternoon",
         "please pass me the salt right now", "we should leave before it gets dark"]


# Floors ~0.05 under the IoU measured when set (-s prints it); loose cues alone score ~0.66.
@pytest.mark.parametrize("background,snr,engine,model,floor", [
    ("noise", 20.0, "webrtc", TINY_MDX, 0.80),
    ("music", 10.0, "silero", "none", 0.88),
    ("music", 0.0, "silero", "none", 0.87),
])
def test_segments_match_the_truth(tmp_path, audio_project, tiny_mdx, background, snr, engine, model, floor):
    mix, _, truth = speech_scene(LINES, 48000, snr_db=snr, background=background, seed=3)
    video = write_video(tmp_path / "scene.mp4", mix, 48000, channels=2)
    _loose_srt(truth, tmp_path / "scene.srt", np.random.default_rng(0))
    vid = add_video(audio_project, video)
    c = audio_project.config
    c["separate"]["model"] = model
    c["vad"].update(engine=engine, padding_s=0.05)
    c["asr"]["source"] = "subtitles"
    c["segments"].update(min_s=1.0, max_s=30.0)
    summary = run_stages(audio_project)
    assert all(v["failed"] == 0 for v in summary.values()), store.rows(audio_project.db(), "SELECT * FROM errors")
    db = audio_project.db()
    segs = store.rows(db, "SELECT * FROM segments WHERE video_id=? ORDER BY start_s", (vid,))
    cues = store.rows(db, "SELECT start_s, end_s FROM transcripts WHERE video_id=?", (vid,))
    truth_r = [(s, e) for s, e, _ in truth]
    score = iou([(r["start_s"], r["end_s"]) for r in segs], truth_r)
    loose = iou([(r["start_s"], r["end_s"]) for r in cues], truth_r)
    print(f"{background} {snr} dB {engine}/{model}: segments IoU {score:.3f} (subtitle cues {loose:.3f})")
    assert [r["text"] for r in segs] == [t for _, _, t in truth]
    assert score >= floor and score > loose + 0.1  # trimming to voice beats the loose cues
    for r in segs:
        assert r["status"] == "ok" and r["snr_db"] is not None and r["language"] is None
    info = store.get_stage_state(db, vid, "segments")["info"]
    kept = sum(r["end_s"] - r["start_s"] for r in segs)
    assert info["retention"] == pytest.approx(kept / info["duration_s"], abs=1e-3)
    assert retention(db)["retention"] == pytest.approx(info["retention"], abs=1e-3)


def test_rebuild_is_refused_once_annotated(tmp_path, audio_project):
    mix, _, truth = speech_scene(LINES[:2], 48000, snr_db=20.0, background="noise")
    video = write_video(tmp_path / "scene.mp4", mix, 48000)
    _loose_srt(truth, tmp_path / "scene.srt", np.random.default_rng(1))
    vid = add_video(audio_project, video)
    c = audio_project.config
    c["separate"]["model"] = "none"
    c["asr"]["source"] = "subtitles"
    c["segments"]["min_s"] = 1.0
    run_stages(audio_project)
    db = audio_project.db()
    first = [r["id"] for r in store.rows(db, "SELECT id FROM segments WHERE video_id=?", (vid,))]
    assert len(first) == 2

    key1 = store.get_stage_state(db, vid, "segments")["cache_key"]
    c["segments"]["merge_gap_s"] = 0.5  # a new key: segments is pending again, and nothing is annotated
    assert run_stages(audio_project, ["segments"])["segments"] == {"done": 1, "failed": 0}
    assert store.get_stage_state(db, vid, "segments")["cache_key"] != key1
    second = [r["id"] for r in store.rows(db, "SELECT id FROM segments WHERE video_id=?", (vid,))]
    assert len(second) == 2 == db.conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0]  # replaced, not added

    db.conn.execute("INSERT INTO annotations (segment_id, backend, model, prompt_sha, label_set, primary_emotion, "
                    "intensities_json, created_at) VALUES (?, 'baseline', 'm', 'p', 'cowen26', 'Joy', '{}', ?)",
                    (second[0], store.now()))
    c["segments"]["merge_gap_s"] = 0.4
    assert run_stages(audio_project, ["segments"])["segments"] == {"done": 0, "failed": 1}
    msg = store.rows(db, "SELECT message FROM errors WHERE stage='segments'")[0]["message"]
    assert "annotation" in msg and str(video) in msg
    assert [r["id"] for r in store.rows(db, "SELECT id FROM segments WHERE video_id=?", (vid,))] == second
    assert db.conn.execute("SELECT COUNT(*) FROM annotations").fetchone()[0] == 1


def test_retention_counts_only_kept_statuses(audio_project):
    db = audio_project.db()
    assert retention(db)["retention"] is None
    db.conn.execute("INSERT INTO videos (id, sha256, path, duration_s, added_at) VALUES (1, 'a', 'a.mp4', 100, ?)",
                    (store.now(),))
    store.set_stage_state(db, 1, "segments", "done", info={"duration_s": 100.0})
    for s, e, st in ((0, 10, "ok"), (20, 30, "no_face"), (40, 45, "ok")):
        db.conn.execute("INSERT INTO segments (video_id, start_s, end_s, status) VALUES (1, ?, ?, ?)", (s, e, st))
    assert retention(db) == {"videos": 1, "input_s": 100.0, "kept_s": 15.0, "retention": 0.15}
    assert retention(db, drop_statuses=())["kept_s"] == 25.0


def test_dropped_transcripts_never_become_segments(tmp_path, audio_project):
    """Rows the ASR guards dropped stay in transcripts (auditable) but build no utterance; words drive the text."""
    mix, _, truth = speech_scene(LINES[:2], 48000, snr_db=20.0, background="noise")
    video = write_video(tmp_path / "scene.mp4", mix, 48000)
    vid = add_video(audio_project, video)
    c = audio_project.config
    c["separate"]["model"] = "none"
    c["segments"]["min_s"] = 1.0
    assert run_stages(audio_project, ["separate", "vad"])["vad"] == {"done": 1, "failed": 0}
    db = audio_project.db()
    (s1, e1, t1), (s2, e2, t2) = truth
    words = [{"start": s1 + i * (e1 - s1) / 7, "end": s1 + (i + 1) * (e1 - s1) / 7, "word": f" {w}", "p": 0.9}
             for i, w in enumerate(t1.split())]
    rows = [(s1 - 0.3, e1 + 0.3, "whatever whisper said", json.dumps(words), None),
            (s2, e2, "Thanks for watching!", "[]", "no_speech")]
    for s, e, text, wj, dropped in rows:
        db.conn.execute("INSERT INTO transcripts (video_id, start_s, end_s, text, words_json, language, source, dropped)"
                        " VALUES (?, ?, ?, ?, ?, 'en', 'whisper', ?)", (vid, s, e, text, wj, dropped))
    key = make_stage("asr", audio_project).cache_key(db, vid)
    store.set_stage_state(db, vid, "asr", "done", cache_key=key, info={"source": "whisper"})
    assert run_stages(audio_project, ["segments"])["segments"] == {"done": 1, "failed": 0}
    segs = store.rows(db, "SELECT start_s, end_s, text, words_json, language FROM segments WHERE video_id=?", (vid,))
    assert len(segs) == 1
    assert segs[0]["text"] == t1 and segs[0]["language"] == "en"  # text rebuilt from the words
    assert len(json.loads(segs[0]["words_json"])) == len(t1.split())
    assert iou([(segs[0]["start_s"], segs[0]["end_s"])], [(s1, e1)]) > 0.85

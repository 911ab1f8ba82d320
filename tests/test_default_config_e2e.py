"""The default configuration end to end: every stage the product ships, through its real code
paths, on a clip whose truth is known by construction.

Real weights that travel with the tests (UltraFace, Light-ASD), WebRTC VAD, vocal separation
and Whisper through audio-separator and faster-whisper with the generated tiny models (the
Whisper one hears "hello" once per clip), and the real google-genai client against the local
server that speaks the Gemini protocol. Only what cannot be default offline is set: the model
files (tiny stand-ins) and the API endpoint.

The clip: four spoken lines. Line 1 is said by the left face, line 2 by the right face, line 3
by the left face again while a third face has appeared in the middle, and during line 4 nobody
is on screen.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from audio_fixtures import TINY_MDX, audio_models_dir, hello_whisper, tiny_mdx  # noqa: F401
from emotion_fixtures import env_for_gemini
from gemini_server import GeminiServer
from mikupal import store
from mikupal.demo import _espeak, _face_crop, _open_mouth
from mikupal.ingest import add_videos
from mikupal.media.encode import write_mp4
from mikupal.project import Project
from mikupal.runner import Runner
from mikupal.stage import STAGE_ORDER

W, H, FPS, RATE = 640, 360, 25, 48000
X = {"left": 40, "middle": 240, "right": 440}  # crop x positions (crops are 160 x 180)
Y = 90
LINES = [  # (text, who speaks, faces on screen)
    ("I think we should leave before it starts raining outside", "left", ("left", "right")),
    ("No, the forecast said the sky will stay clear all evening", "right", ("left", "right")),
    ("Who is that standing behind the door over there", "left", ("left", "right", "middle")),
    ("Never mind, it was only the wind moving the curtains", None, ()),
]
PRIMARY = "Amusement"  # what the Gemini test server answers for every segment


def make_clip(path: Path) -> list[dict]:
    """Write the clip; return the truth per line: start, end, speaker side, faces shown."""
    face = _face_crop()
    other = np.ascontiguousarray(face[:, ::-1])  # the third face: the picture mirrored
    lead, gap = 0.8, 1.8  # pauses over 1 s: Whisper gets each line as its own clip
    truth, pieces, t = [], [], lead
    for text, who, shown in LINES:
        x = _espeak(text, RATE)
        pieces.append((t, x))
        truth.append({"start": t, "end": t + len(x) / RATE, "text": text, "speaker": who, "faces": shown})
        t += len(x) / RATE + gap
    duration = t
    audio = np.zeros(int(round(duration * RATE)), np.float32)
    for start, x in pieces:
        i0 = int(round(start * RATE))
        audio[i0:i0 + len(x)] += 0.8 * x
    audio += np.random.default_rng(0).normal(0, 0.002, len(audio)).astype(np.float32)
    spf = RATE // FPS
    n_frames = int(round(duration * FPS))
    env = np.array([np.sqrt(np.mean(audio[i * spf:(i + 1) * spf] ** 2)) for i in range(n_frames)])
    env = np.clip(env / (np.percentile(env, 95) + 1e-9), 0, 1)

    def on_screen(ts: float) -> tuple[tuple[str, ...], str | None]:
        """Faces shown and who speaks at ts: a line's faces hold from the end of the previous
        line (the middle face walks in during the pause before line 3)."""
        for k, line in enumerate(truth):
            nxt = truth[k + 1]["start"] if k + 1 < len(truth) else duration + 1
            lo = line["start"] - (gap / 2 if k else lead + 1)
            if lo <= ts < nxt - gap / 2:
                return line["faces"], line["speaker"] if line["start"] <= ts <= line["end"] else None
        return (), None

    def frames():
        bg = np.zeros((H, W, 3), np.uint8)
        bg[:] = (40, 60, 90)
        bg[:, :, 1] += np.linspace(0, 60, W, dtype=np.uint8)[None, :]
        for i in range(n_frames):
            frame = bg.copy()
            shown, who = on_screen(i / FPS)
            for side in shown:
                img = other if side == "middle" else face
                if side == who:
                    img = _open_mouth(img, float(env[i]))
                frame[Y:Y + img.shape[0], X[side]:X[side] + img.shape[1]] = img
            yield frame

    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16).astype(np.float32) / 32768.0
    write_mp4(path, frames(), FPS, pcm, RATE, crf=20, gop=FPS * 2, audio_bitrate=128000)
    return truth


def _side(track: dict) -> str:
    cx = np.median([(b[1] + b[3]) / 2 for b in json.loads(track["boxes_json"])])
    return min(X, key=lambda s: abs(X[s] + 80 - cx))


@pytest.fixture()
def models_dir(tmp_path, shared_models, audio_models_dir, tiny_mdx, hello_whisper):  # noqa: F811
    """One models dir as a user would have it: the real weights plus the tiny stand-ins."""
    d = tmp_path / "models"  # the `project` fixture points MIKUPAL_MODELS_DIR here
    d.mkdir(exist_ok=True)
    for name in ("ultraface", "light-asd"):
        os.symlink(shared_models / name, d / name)
    os.symlink(tiny_mdx.parent, d / "audio-separator")
    os.symlink(hello_whisper.parent, d / "whisper")
    return d


def test_default_configuration_labels_who_speaks_and_drops_the_faceless_line(project, models_dir, tmp_path,
                                                                            monkeypatch):
    server = GeminiServer(primary=PRIMARY)
    try:
        env_for_gemini(monkeypatch, server.url)
        clip = tmp_path / "talk.mp4"
        truth = make_clip(clip)
        assert not clip.with_suffix(".srt").exists()  # no subtitles: Whisper transcribes
        # Defaults, but for the tiny stand-in models. The tiny Whisper's one-word rows last
        # about 1.4 s (its word timestamps come from random cross-attention), so segments of
        # 1 s are kept instead of the default 2 s.
        proj = Project.open(project.root, ["models.allow_download=false", f'separate.model="{TINY_MDX}"',
                                           'asr.model="tiny-hello"', "segments.min_s=1.0"])
        db = proj.db()
        (vid, _), = add_videos(db, [clip]).added
        summary = Runner(proj).run()
        assert summary.ok, store.rows(db, "SELECT stage, message FROM errors")
        for stage in STAGE_ORDER:  # every stage but emotion (its answers are the annotations) keeps a video state
            if stage != "emotion":
                assert store.get_stage_state(db, vid, stage)["status"] == "done", stage
        sep = store.get_stage_state(db, vid, "separate")["info"]
        assert sep["model"] == TINY_MDX and Path(sep["vocals16k"]).is_file()
        assert sep["snr_after_db"] > sep["snr_before_db"]  # the band-pass "vocals" shed the room noise
        assert store.get_stage_state(db, vid, "vad")["info"]["engine"] == "webrtc"
        assert store.get_stage_state(db, vid, "asr")["info"]["source"] == "whisper"
        assert store.get_stage_state(db, vid, "faces")["info"].get("detector", "ultraface") == "ultraface"

        segs = store.rows(db, "SELECT * FROM segments WHERE video_id=? ORDER BY start_s", (vid,))
        tracks = {t["id"]: t for t in store.rows(db, "SELECT * FROM tracks WHERE video_id=?", (vid,))}
        sides = {tid: _side(t) for tid, t in tracks.items()}

        def segment_of(line):
            over = [s for s in segs if min(s["end_s"], line["end"]) - max(s["start_s"], line["start"]) > 0]
            assert len(over) == 1, (line, segs)
            s = over[0]  # inside the line (VAD padding aside), and most of it spoken
            assert line["start"] - 0.3 <= s["start_s"] < s["end_s"] <= line["end"] + 0.3, (s, line)
            assert s["end_s"] - s["start_s"] >= 1.0, s
            return s

        got = [segment_of(line) for line in truth]
        assert len(segs) == len(truth)
        for line, s in zip(truth, got):
            if line["speaker"] is None or not line["faces"]:
                assert s["status"] == "no_face", s
            else:
                assert s["status"] == "ok", (line["text"], s)
                assert sides[s["speaker_track_id"]] == line["speaker"], (line["text"], s)
                assert s["text"] == "hello"  # what the tiny Whisper hears
        # The middle face was on screen during line 3 but never spoke.
        assert "middle" not in {sides[s["speaker_track_id"]] for s in got if s["speaker_track_id"]}

        # Gemini labelled each kept segment once; the face-less line was never sent.
        ann = store.rows(db, "SELECT segment_id, primary_emotion, backend, model, run_index FROM annotations")
        ok_ids = sorted(s["id"] for s in got if s["status"] == "ok")
        assert sorted(a["segment_id"] for a in ann) == ok_ids
        assert {(a["primary_emotion"], a["backend"], a["model"], a["run_index"]) for a in ann} == \
            {(PRIMARY, "gemini", proj.config["emotion"]["model"], 0)}
        asked = [r for r in server.requests if r["path"].endswith(":generateContent")]
        assert len(asked) == len(ok_ids)
        assert all("hello" in json.dumps(r["json"]) for r in asked)  # the transcript went with the clip
    finally:
        server.close()

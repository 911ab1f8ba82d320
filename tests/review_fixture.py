"""A small real project for the review workspace tests and bench/gui.py.

The video shows a red rectangle (the speaker's "face") moving right by SPEED_PX pixels per
frame and a still blue one (a silent face); the tracks table stores exactly those boxes, so a
test can compare the painted overlay with the pixels of the displayed frame. The audio is a
440 Hz tone, loud only inside the segments.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from mikupal import store
from mikupal.taxonomy import load_label_set

W, H, FPS = 320, 240, 25
SPEED_PX = 2                   # red box moves this many pixels per frame
RED_Y = (60, 140)
RED_W = 60
BLUE_BOX = (220, 70, 290, 150)
RED = (230, 30, 30)
BLUE = (30, 60, 230)
BG = (40, 40, 40)


def red_box_at(frame_index: int) -> tuple[int, int, int, int]:
    x1 = 20 + SPEED_PX * frame_index
    return (x1, RED_Y[0], x1 + RED_W, RED_Y[1])


def make_video(path: Path, duration_s: float = 6.0, audio_rate: int = 16000,
               loud: list[tuple[float, float]] = ()) -> int:
    """Write an H.264 + AAC mp4 (keyframe every 10 frames); returns the frame count."""
    n = int(round(duration_s * FPS))
    out = av.open(str(path), mode="w")
    vs = out.add_stream("libx264", rate=FPS)
    vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
    vs.options = {"preset": "ultrafast", "crf": "12", "g": "10"}
    a_s = out.add_stream("aac", rate=audio_rate)
    a_s.layout = "mono"
    t = np.arange(int(duration_s * audio_rate)) / audio_rate
    gain = np.full_like(t, 0.02)
    for a, b in loud:
        gain[(t >= a) & (t < b)] = 0.5
    pcm = (np.sin(2 * np.pi * 440 * t) * gain * 32767).astype(np.int16)
    for i in range(n):
        img = np.zeros((H, W, 3), np.uint8)
        img[:] = BG
        x1, y1, x2, y2 = red_box_at(i)
        img[y1:y2, max(0, x1):min(W, x2)] = RED
        bx1, by1, bx2, by2 = BLUE_BOX
        img[by1:by2, bx1:bx2] = BLUE
        vf = av.VideoFrame.from_ndarray(img, format="rgb24")
        vf.pts = i
        for p in vs.encode(vf):
            out.mux(p)
    for p in vs.encode():
        out.mux(p)
    a_pts, chunk = 0, 1024
    while a_pts < len(pcm):
        piece = pcm[a_pts:a_pts + chunk]
        af = av.AudioFrame.from_ndarray(piece[None, :], format="s16", layout="mono")
        af.sample_rate = audio_rate
        af.pts = a_pts
        a_pts += len(piece)
        for p in a_s.encode(af):
            out.mux(p)
    for p in a_s.encode():
        out.mux(p)
    out.close()
    return n


def _intensities(names: list[str], primary: str, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    vals = {n: round(float(rng.uniform(0.0, 0.3)), 3) for n in names}
    vals[primary] = 0.9
    return vals


@dataclass
class ReviewProject:
    root: Path
    db_path: Path
    video_path: Path
    segment_ids: list[int] = field(default_factory=list)
    annotation_ids: list[int] = field(default_factory=list)   # run_index 0 per segment
    intensities: dict[int, list[dict[str, float]]] = field(default_factory=dict)  # segment -> per run
    red_track_id: int = 0
    blue_track_id: int = 0
    label_set: str = "cowen26"


def build_project(root: Path, emotions: tuple[str, ...] = ("Joy", "Anger", "Sadness", "Joy"),
                  runs: int = 3, seg_len: float = 1.2) -> ReviewProject:
    """Project with one video, len(emotions) segments, `runs` annotations each (run 0 is the
    listed emotion; the last segment's runs disagree)."""
    root.mkdir(parents=True, exist_ok=True)
    video = root / "clip.mp4"
    spans = [(0.4 + i * (seg_len + 0.2), 0.4 + i * (seg_len + 0.2) + seg_len) for i in range(len(emotions))]
    duration = spans[-1][1] + 0.6
    n = make_video(video, duration, loud=spans)
    db_path = root / "project.db"
    db = store.connect(db_path)
    ls = load_label_set("cowen26")
    proj = ReviewProject(root=root, db_path=db_path, video_path=video)
    with store.transaction(db) as c:
        vid = c.execute(
            "INSERT INTO videos (sha256, path, duration_s, fps, width, height, has_audio, has_video, added_at)"
            " VALUES (?,?,?,?,?,?,1,1,?)", ("f" * 64, str(video), duration, FPS, W, H, store.now())).lastrowid
        red = [[round(i / FPS, 4), *red_box_at(i)] for i in range(n)]
        blue = [[round(i / FPS, 4), *BLUE_BOX] for i in range(0, n, 5)]
        proj.red_track_id = c.execute(
            "INSERT INTO tracks (video_id, start_s, end_s, boxes_json) VALUES (?,?,?,?)",
            (vid, 0.0, (n - 1) / FPS, json.dumps(red))).lastrowid
        proj.blue_track_id = c.execute(
            "INSERT INTO tracks (video_id, start_s, end_s, boxes_json) VALUES (?,?,?,?)",
            (vid, 0.0, (n - 1) / FPS, json.dumps(blue))).lastrowid
        run_id = c.execute("INSERT INTO runs (started_at, status) VALUES (?, 'done')", (store.now(),)).lastrowid
        for i, ((a, b), emo) in enumerate(zip(spans, emotions)):
            sid = c.execute(
                "INSERT INTO segments (video_id, start_s, end_s, text, language, speaker_track_id, asd_score)"
                " VALUES (?,?,?,?,?,?,?)",
                (vid, a, b, f"utterance number {i + 1} about {emo.lower()}", "en", proj.red_track_id, 0.9)).lastrowid
            proj.segment_ids.append(sid)
            proj.intensities[sid] = []
            for r in range(runs):
                prim = emo
                if i == len(emotions) - 1 and r > 0:
                    prim = ls.names[(ls.names.index(emo) + r) % len(ls.names)]  # runs disagree
                vals = _intensities(ls.names, prim, seed=100 * i + r)
                proj.intensities[sid].append(vals)
                aid = c.execute(
                    "INSERT INTO annotations (segment_id, run_id, backend, model, prompt_sha, run_index, label_set,"
                    " primary_emotion, intensities_json, rationale, visual_analysis, audio_analysis, text_analysis,"
                    " created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (sid, run_id, "baseline", "mikupal-baseline-1", "abc123def456", r, "cowen26", prim,
                     json.dumps(vals), f"The voice and words point to {prim.lower()}.",
                     "Red face, mouth moving.", "Steady 440 Hz tone, loud.", f"The speaker talks about {emo.lower()}.",
                     store.now())).lastrowid
                if r == 0:
                    proj.annotation_ids.append(aid)
    db.conn.close()
    return proj

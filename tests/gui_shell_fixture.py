"""A synthetic project store of any size for the shell's table tests and bench/gui.py.

Rows are inserted straight through SQLite (executemany) so 100k segments take a couple of
seconds; no media files exist, which is fine for the tables, the filters and the dashboard.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from mikupal import store
from mikupal.project import Project

EMOTIONS = ("Joy", "Anger", "Sadness", "Fear", "Surprise", "Calmness", "Interest", "Confusion")
STATUSES = ("ok", "ok", "ok", "no_face", "low_asd", "multi_speaker")
WORDS = "the quick brown fox jumps over a lazy dog while seven happy people sing loudly".split()


def build_big_project(root: Path, n_segments: int, n_videos: int = 50, runs: int = 1,
                      raters: tuple[str, ...] = ("alice", "bob"), review_every: int = 3,
                      seed: int = 0) -> Project:
    """A project whose store holds `n_segments` segments spread over `n_videos` videos, one
    annotation per segment and run, and verdicts from `raters`: rater k reviews
    the segments whose id is a multiple of review_every + k, so some have two raters."""
    rng = random.Random(seed)
    project = Project.create(root, name="synthetic")
    db = project.db()
    now = store.now()
    with store.transaction(db) as c:
        c.executemany(
            "INSERT INTO videos (id, sha256, path, duration_s, fps, width, height, has_audio, has_video, added_at)"
            " VALUES (?,?,?,?,?,?,?,1,1,?)",
            [(v + 1, f"{v:064x}", f"/data/video_{v:03d}.mp4", 36000.0, 25.0, 1280, 720, now) for v in range(n_videos)])
        c.execute("INSERT INTO runs (id, started_at, finished_at, status) VALUES (1, ?, ?, 'done')", (now, now))
        seg_rows, ann_rows = [], []
        for i in range(1, n_segments + 1):
            start = rng.uniform(0, 35000)
            status = STATUSES[i % len(STATUSES)]
            text = " ".join(rng.choice(WORDS) for _ in range(6)) + f" #{i}"
            seg_rows.append((i, (i % n_videos) + 1, start, start + rng.uniform(2, 12), text, "en",
                             round(rng.uniform(0, 1), 3), status))
            for r in range(runs):
                emo = EMOTIONS[(i + r * (i % 2)) % len(EMOTIONS)]
                vals = {e: round(rng.uniform(0, 0.5), 3) for e in EMOTIONS}
                vals[emo] = round(rng.uniform(0.5, 1.0), 3)
                ann_rows.append((i, 1, "baseline", "baseline-v1", "p" * 12, r, "cowen26", emo, json.dumps(vals),
                                 "rationale", 1000, 200, 0.0008, 0.5, now))
        c.executemany("INSERT INTO segments (id, video_id, start_s, end_s, text, language, asd_score, status)"
                      " VALUES (?,?,?,?,?,?,?,?)", seg_rows)
        c.executemany(
            "INSERT INTO annotations (segment_id, run_id, backend, model, prompt_sha, run_index, label_set,"
            " primary_emotion, intensities_json, rationale, input_tokens, output_tokens, cost_usd, latency_s,"
            " created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", ann_rows)
        rater_ids = {}
        for name in raters:
            rater_ids[name] = c.execute("INSERT INTO raters (name) VALUES (?)", (name,)).lastrowid
        review_rows = []
        for aid, seg in c.execute("SELECT id, segment_id FROM annotations WHERE run_index=0").fetchall():
            for k, name in enumerate(raters):
                if seg % (review_every + k) == 0:
                    verdict = "accept" if rng.random() < 0.7 else ("reject" if rng.random() < 0.8 else "skip")
                    review_rows.append((aid, rater_ids[name], verdict, now))
        c.executemany("INSERT INTO reviews (annotation_id, rater_id, verdict, created_at) VALUES (?,?,?,?)",
                      review_rows)
    db.conn.close()
    return project

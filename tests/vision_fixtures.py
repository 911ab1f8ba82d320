"""Helpers for the vision tests: a project holding given videos with given segments, run
through the real Runner (faces and asd only)."""
from __future__ import annotations

import json
from pathlib import Path

from mikupal import store
from mikupal.ingest import add_videos
from mikupal.project import Project


def project_with_video(root: Path, video: Path, segments: list[tuple[float, float]], settings: dict | None = None,
                       *, probe: bool = True) -> tuple[Project, int]:
    """A fresh project with ``video`` and its ``segments`` rows, segments stage marked done."""
    Project.create(root)
    overrides = [f"{k}={json.dumps(v)}" for k, v in (settings or {}).items()]
    proj = Project.open(root, overrides)
    db = proj.db()
    if probe:
        rep = add_videos(db, [video])
        assert rep.added, rep.failed
        vid = rep.added[0][0]
    else:  # files add_videos would refuse (no audio): insert the row as a later stage would see it
        vid = int(db.conn.execute(
            "INSERT INTO videos (sha256, path, duration_s, has_audio, has_video, added_at) VALUES (?,?,?,?,?,?)",
            (f"test-{video.name}", str(video), 5.0, 1, 0, store.now())).lastrowid)
    with store.transaction(db):
        for a, b in segments:
            db.conn.execute("INSERT INTO segments (video_id, start_s, end_s, text) VALUES (?,?,?,?)", (vid, a, b, "x"))
        store.set_stage_state(db, vid, "segments", "done", cache_key="test")
    db.conn.close()
    return proj, vid


def run_stages(proj: Project, stages=("faces", "asd")):
    from mikupal.runner import Runner

    return Runner(proj, list(stages), devices="cpu").run()


def segments_of(proj: Project, vid: int) -> list[dict]:
    db = proj.db()
    try:
        return store.rows(db, "SELECT * FROM segments WHERE video_id=? ORDER BY start_s", (vid,))
    finally:
        db.conn.close()


def tracks_of(proj: Project, vid: int) -> list[dict]:
    db = proj.db()
    try:
        out = store.rows(db, "SELECT * FROM tracks WHERE video_id=? ORDER BY start_s, id", (vid,))
    finally:
        db.conn.close()
    for t in out:
        t["boxes"] = json.loads(t["boxes_json"])
    return out


def errors_of(proj: Project, stage: str | None = None) -> list[dict]:
    db = proj.db()
    try:
        sql = "SELECT * FROM errors" + (" WHERE stage=?" if stage else "") + " ORDER BY id"
        return store.rows(db, sql, (stage,) if stage else ())
    finally:
        db.conn.close()


def stage_info(proj: Project, vid: int, stage: str) -> dict | None:
    db = proj.db()
    try:
        return store.get_stage_state(db, vid, stage)
    finally:
        db.conn.close()


def chunk_by_chunk_scores(net, faces, feats):
    """The official ASD protocol, spelled out: each duration 1..6 s scored chunk by chunk with
    batch 1, averaged. The reference the batched `multi_length_scores` must reproduce."""
    import numpy as np
    import torch

    t = len(faces)
    want = np.zeros(t)
    with torch.inference_mode():
        for dur in range(1, 7):
            n = 25 * dur
            chunks = [net(torch.from_numpy(feats[4 * i: 4 * (i + n)])[None], torch.from_numpy(faces[i: i + n])[None])[0]
                      for i in range(0, t, n)]
            want += torch.cat(chunks).numpy() / 6
    return want

"""A project with three synthetic voices in two videos, for the speakers tests.

espeak-ng voices measured with the GE2E encoder here (pairs of utterances): en-us / en-us+f4 /
en-us+Andy are >= 0.83 within a voice and <= 0.79 across. (en-gb+m3 is not a third voice:
espeak-ng ignores the variant after en-gb, and en-gb itself sits at 0.86-0.97 against en-us.)
Video 1 alternates voices A and B, video 2 alternates C and A: voice A is in both files.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mikupal import store
from mikupal.ingest import add_videos
from mikupal.project import Project

from audio_fixtures import espeak, write_video  # noqa: F401 (espeak is used by the tests)

RATE = 16000
VOICES = {"A": "en-us", "B": "en-us+f4", "C": "en-us+Andy"}
LINES = {
    1: [("A", "The weather today is bright and the wind is calm over the hills."),
        ("B", "I never thought we would finish the project before the end of the month."),
        ("A", "Please bring the blue folder and two pens to the meeting room."),
        ("B", "She laughed when the dog jumped into the cold river after the ball."),
        ("A", "Numbers like seven hundred and forty two are hard to remember."),
        ("B", "We walked along the beach until the sun went down behind the rocks.")],
    2: [("C", "The library closes early on Sundays, so come before noon."),
        ("A", "A cup of tea and a quiet evening sound perfect to me."),
        ("C", "Turn left at the old bakery and the station is right there."),
        ("A", "My brother fixed the bicycle with nothing but a spoon and some tape.")],
}


def make_video(path: Path, lines: list[tuple[str, str]], gap_s: float = 0.8) -> list[tuple[float, float, str]]:
    """Write the clip; returns (start_s, end_s, voice) per line (the generator's ground truth)."""
    pieces, truth, t = [np.zeros(int(0.5 * RATE), np.float32)], [], 0.5
    for voice, text in lines:
        x = 0.5 * espeak(text, RATE, voice=VOICES[voice])
        truth.append((round(t, 3), round(t + len(x) / RATE, 3), voice))
        pieces += [x, np.zeros(int(gap_s * RATE), np.float32)]
        t += len(x) / RATE + gap_s
    write_video(path, np.concatenate(pieces), RATE)
    return truth


def build(root: Path, media: Path, settings: dict | None = None) -> tuple[Project, dict[int, str], dict[int, list[int]]]:
    """(project, truth {segment_id: voice}, {video_id: [segment ids]}) with the segments stage done."""
    Project.create(root)
    proj = Project.open(root, [f"{k}={json.dumps(v)}" for k, v in (settings or {}).items()])
    db = proj.db()
    truth: dict[int, str] = {}
    by_video: dict[int, list[int]] = {}
    try:
        for k, lines in LINES.items():
            spans = make_video(media / f"talk{k}.mp4", lines)
            rep = add_videos(db, [media / f"talk{k}.mp4"])
            assert rep.added, rep.failed
            vid = rep.added[0][0]
            with store.transaction(db):
                for a, b, voice in spans:
                    sid = int(db.conn.execute("INSERT INTO segments (video_id, start_s, end_s, text) VALUES (?,?,?,?)",
                                              (vid, a, b, voice)).lastrowid)
                    truth[sid] = voice
                    by_video.setdefault(vid, []).append(sid)
                store.set_stage_state(db, vid, "segments", "done", cache_key="test")
    finally:
        db.conn.close()
    return proj, truth, by_video


def run(proj: Project, stages=("speakers",)):
    from mikupal.runner import Runner

    summary = Runner(proj, list(stages), devices="cpu").run()
    assert summary.status == "finished", summary.message
    return summary


def assignments(proj: Project) -> dict[int, int | None]:
    db = proj.db()
    try:
        return {r[0]: r[1] for r in db.conn.execute("SELECT id, speaker_id FROM segments ORDER BY id")}
    finally:
        db.conn.close()


def purity(assigned: dict[int, int | None], truth: dict[int, str]) -> float:
    """Each speaker counts its most common true voice; a segment without a speaker counts as wrong."""
    per: dict[int, list[str]] = {}
    for seg, spk in assigned.items():
        if spk is not None:
            per.setdefault(spk, []).append(truth[seg])
    return sum(max(v.count(x) for x in set(v)) for v in per.values()) / len(truth)

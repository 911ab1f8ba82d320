"""Rows for evaluation/report tests, written with the real store (no media files needed:
evaluation reads only videos.path stems, segments, annotations, reviews and runs)."""
from __future__ import annotations

import hashlib
import json

from mikupal import store


def add_video(db, path: str, duration_s: float = 10.0) -> int:
    cur = db.conn.execute(
        "INSERT INTO videos (sha256, path, duration_s, has_audio, has_video, added_at) VALUES (?,?,?,?,?,?)",
        (hashlib.sha256(path.encode()).hexdigest(), path, duration_s, 1, 1, store.now()),
    )
    return int(cur.lastrowid)


def add_segment(db, video_id: int, start_s: float, end_s: float, text: str = "", status: str = "ok") -> int:
    cur = db.conn.execute(
        "INSERT INTO segments (video_id, start_s, end_s, text, status) VALUES (?,?,?,?,?)",
        (video_id, start_s, end_s, text, status),
    )
    return int(cur.lastrowid)


def add_annotation(db, segment_id: int, primary: str, intensities: dict[str, float] | float, *, run_index: int = 0,
                   backend: str = "gemini", model: str = "gemini-test", label_set: str = "cowen26",
                   prompt_sha: str = "p1", cost_usd: float | None = 0.001, latency_s: float | None = 1.5,
                   run_id: int | None = None) -> int:
    if not isinstance(intensities, dict):
        intensities = {primary: float(intensities)}
    cur = db.conn.execute(
        "INSERT INTO annotations (segment_id, run_id, backend, model, prompt_sha, run_index, label_set, primary_emotion,"
        " intensities_json, rationale, input_tokens, output_tokens, cost_usd, latency_s, created_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (segment_id, run_id, backend, model, prompt_sha, run_index, label_set, primary, json.dumps(intensities),
         f"because {primary.lower()}", 1000, 100, cost_usd, latency_s, store.now()),
    )
    return int(cur.lastrowid)


def add_review(db, annotation_id: int, rater: str, verdict: str, corrected_label: str | None = None) -> int:
    db.conn.execute("INSERT OR IGNORE INTO raters (name) VALUES (?)", (rater,))
    rid = db.conn.execute("SELECT id FROM raters WHERE name=?", (rater,)).fetchone()[0]
    cur = db.conn.execute(
        "INSERT INTO reviews (annotation_id, rater_id, verdict, corrected_label, created_at) VALUES (?,?,?,?,?)",
        (annotation_id, rid, verdict, corrected_label, store.now()),
    )
    return int(cur.lastrowid)


def add_run(db, started_at: str, finished_at: str | None, status: str = "done", stages: str = "") -> int:
    cur = db.conn.execute("INSERT INTO runs (started_at, finished_at, status, stages) VALUES (?,?,?,?)",
                          (started_at, finished_at, status, stages))
    return int(cur.lastrowid)


# MELD rows as the real files have them: quoted commas, a Windows-1252 apostrophe stored as
# U+0092 ("he\x92s"), curly quotes, a doubled quote, a missing Emotion, and a gap (dia1_utt3).
MELD_CSV = (
    "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
    '1,"Oh my God, he\x92s lost it. He\x92s totally lost it.",Phoebe,sadness,negative,0,0,4,7,"00:20:57,256","00:21:00,049"\n'
    '2,What?,Monica,surprise,negative,0,1,4,7,"00:21:01,927","00:21:03,261"\n'
    '3,"Or! Or, we could go to the bank, close our accounts and cut them off at the source.",Chandler,neutral,neutral,1,0,3,6,"00:12:24,660","00:12:30,915"\n'
    '4,"You\u2019re a genius! \u201cBank buddies\u201d, he said.",Joey,joy,positive,1,1,3,6,"00:12:32,334","00:12:33,960"\n'
    '5,"Aww, man, now we won\u2019t be ""bank buddies""!",Joey,sadness,negative,1,2,3,6,"00:12:34,211","00:12:37,505"\n'
    '6,"Now, there\x92s two reasons.",Chandler,,neutral,1,4,3,6,"00:12:40,000","00:12:42,000"\n'
    '7,"Hey!",Ross,anger,negative,2,0,1,1,"00:01:00,000","00:01:01,000"\n'
    "\n"
)


# One IEMOCAP dialogue: agreement, a 2-2 tie (xxx), excited (happy in 4-class), frustrated.
IEMOCAP_TXT = (
    "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
    "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]\n"
    "C-E2:\tNeutral;\t()\n"
    "C-E3:\tNeutral;\t()\n"
    "C-E4:\tNeutral;\t()\n"
    "C-F1:\tNeutral;\t(curious)\n"
    "A-E3:\tval 3; act 2; dom  2;\t()\n"
    "A-F1:\tval 3; act 2; dom  2;\t()\n\n"
    # a 2-2 tie among four evaluators: IEMOCAP writes xxx (no consensus)
    "[10.0100 - 11.3925]\tSes01F_impro01_F001\txxx\t[2.0000, 3.0000, 3.0000]\n"
    "C-E1:\tFrustration; Anger;\t()\n"
    "C-E2:\tAnger;\t()\n"
    "C-E3:\tNeutral;\t()\n"
    "C-E4:\tNeutral state;\t()\n\n"
    "[14.8872 - 18.0175]\tSes01F_impro01_M000\texc\t[4.0000, 4.0000, 3.0000]\n"
    "C-E1:\tExcited;\t()\n"
    "C-E3:\tHappiness; Excited;\t(cheerful)\n"
    "C-E4:\tOther:amused;\t()\n"
    "C-M1:\tHappiness;\t()\n\n"
    "[19.0000 - 21.5000]\tSes01F_impro01_M001\tfru\t[2.0000, 3.5000, 3.5000]\n"
    "C-E1:\tFrustration;\t()\n"
    "C-E2:\tFrustration;\t()\n"
    "C-E4:\tAnger;\t()\n"
)


def meld_project(db) -> dict:
    """Five MELD clips with two runs of cowen26 answers (see test_eval_project for the arithmetic)."""
    v = {stem: add_video(db, f"/data/MELD/test_splits/{stem}.mp4", 4.0)
         for stem in ("dia0_utt0", "dia0_utt1", "dia1_utt0", "dia1_utt1", "dia1_utt2", "unrelated_clip")}
    short = add_segment(db, v["dia0_utt0"], 0.0, 1.0, "Oh my God")
    long_ = add_segment(db, v["dia0_utt0"], 1.0, 3.5, "he's lost it")
    add_annotation(db, short, "Joy", 0.9)  # the shorter segment of the clip is not the one scored
    segs = {"dia0_utt0": long_}
    for stem in ("dia0_utt1", "dia1_utt0", "dia1_utt1", "dia1_utt2", "unrelated_clip"):
        segs[stem] = add_segment(db, v[stem], 0.2, 3.0, stem)
    answers = {  # stem -> (run 0, run 1) as (primary, max intensity)
        "dia0_utt0": (("Sadness", 0.8), ("Sadness", 0.7)),
        "dia0_utt1": (("Surprise", 0.9), ("Confusion", 0.6)),      # Confusion maps to surprise
        "dia1_utt0": (("Calmness", 0.6), ("Joy", 0.2)),            # weak Joy falls under the neutral rule
        "dia1_utt1": (("Joy", 0.9), ("Joy", 0.8)),
        "dia1_utt2": (("Anger", 0.7), ("Sadness", 0.6)),
        "unrelated_clip": (("Fear", 0.9), ("Fear", 0.9)),
    }
    ann = {}
    for stem, runs in answers.items():
        for ri, (prim, val) in enumerate(runs):
            ann[(stem, ri)] = add_annotation(db, segs[stem], prim, {prim: val, "Interest": 0.1}, run_index=ri)
    # A second system answering Joy everywhere, one run only.
    for stem in answers:
        add_annotation(db, segs[stem], "Joy", 0.9, model="always-joy")
    return {"videos": v, "segments": segs, "annotations": ann}

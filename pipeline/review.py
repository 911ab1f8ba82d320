"""Human review of emotion annotations: raters, verdicts, undo and review queues.

Qt-free so the GUI, the CLI and the metrics share one definition of "a rater's verdict".

Verdict history: the ``reviews`` table is append-only per (annotation, rater). Reviewing an
annotation again adds a row; the rater's *current* verdict is their newest row (highest id),
which is what export and metrics count ("each rater's latest verdict counts once"). Undo
deletes the rater's newest row, so a previous verdict on the same annotation comes back.
Every write is one short IMMEDIATE transaction on the caller's connection: two app instances
(two raters) on one project.db never overwrite each other, because rows are per rater and
WAL + busy_timeout serialise the writers.

Queues list one *reviewable* annotation per (segment, backend, model, label set): the lowest
run_index, newest prompt. The other runs of that segment are its spread (radar band) and its
agreement evidence. Every queue puts items this rater has not reviewed first.
"""
from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from . import queries, store

VERDICTS = ("accept", "reject", "skip")
QUEUE_KINDS = ("unreviewed", "emotion", "low_agreement", "balanced", "all")


class ReviewError(ValueError):
    """A bad review request; the message names the item and the fix."""


def ensure_rater(db, name: str) -> int:
    """The rater's id, creating the raters row on first use."""
    name = (name or "").strip()
    if not name:
        raise ReviewError("empty rater name; type your name (or initials) before reviewing")
    with store.transaction(db) as c:
        c.execute("INSERT OR IGNORE INTO raters (name) VALUES (?)", (name,))
        return int(c.execute("SELECT id FROM raters WHERE name = ?", (name,)).fetchone()[0])


def save_verdict(db, annotation_id: int, rater: str, verdict: str,
                 corrected_label: str | None = None, comment: str | None = None) -> int:
    """Store one verdict at once (own transaction); returns the reviews row id."""
    if verdict not in VERDICTS:
        raise ReviewError(f"verdict {verdict!r} for annotation {annotation_id}: use one of {', '.join(VERDICTS)}")
    rater = (rater or "").strip()
    if not rater:
        raise ReviewError("empty rater name; type your name (or initials) before reviewing")
    with store.transaction(db) as c:  # one transaction: rater row (first time) + verdict
        c.execute("INSERT OR IGNORE INTO raters (name) VALUES (?)", (rater,))
        rater_id = c.execute("SELECT id FROM raters WHERE name = ?", (rater,)).fetchone()[0]
        row = c.execute("SELECT label_set FROM annotations WHERE id = ?", (annotation_id,)).fetchone()
        if row is None:
            raise ReviewError(f"annotation {annotation_id} does not exist (deleted by a rerun?); reload the queue")
        if corrected_label:
            corrected_label = _canonical_label(row[0], corrected_label, annotation_id)
        cur = c.execute(
            "INSERT INTO reviews (annotation_id, rater_id, verdict, corrected_label, comment, created_at)"
            " VALUES (?,?,?,?,?,?)",
            (annotation_id, rater_id, verdict, corrected_label or None, comment or None, store.now()))
        return int(cur.lastrowid)


def _canonical_label(label_set: str, label: str, annotation_id: int) -> str:
    from .taxonomy import TaxonomyError, load_label_set
    try:
        ls = load_label_set(label_set)
    except TaxonomyError:
        return label  # a user label set file that moved: keep the rater's text as typed
    canon = ls.canonical(label)
    if canon is None:
        raise ReviewError(f"corrected label {label!r} for annotation {annotation_id} is not in label set "
                          f"{ls.name}; choose one of: {', '.join(ls.names)}")
    return canon


def undo_last(db, rater: str) -> int | None:
    """Delete the rater's newest verdict; returns its annotation id, or None if there is none."""
    with store.transaction(db) as c:
        row = c.execute(
            "SELECT r.id, r.annotation_id FROM reviews r JOIN raters t ON t.id = r.rater_id"
            " WHERE t.name = ? ORDER BY r.id DESC LIMIT 1", ((rater or "").strip(),)).fetchone()
        if row is None:
            return None
        c.execute("DELETE FROM reviews WHERE id = ?", (row[0],))
        return int(row[1])


def current_verdict(db, annotation_id: int, rater: str) -> dict | None:
    """The rater's newest verdict on the annotation: {verdict, corrected_label, comment, created_at}."""
    r = store.rows(db, "SELECT r.verdict, r.corrected_label, r.comment, r.created_at FROM reviews r"
                       " JOIN raters t ON t.id = r.rater_id WHERE r.annotation_id = ? AND t.name = ?"
                       " ORDER BY r.id DESC LIMIT 1", (annotation_id, (rater or "").strip()))
    return r[0] if r else None


def _reviewed_by(db, rater: str) -> set[int]:
    return {r[0] for r in db.conn.execute(
        "SELECT DISTINCT r.annotation_id FROM reviews r JOIN raters t ON t.id = r.rater_id WHERE t.name = ?",
        ((rater or "").strip(),))}


def disagreement(db) -> dict[int, float]:
    """Per reviewable annotation: 1 - share of the modal label, the larger of across runs (primary
    emotion of each run_index) and across raters (latest accept/reject of each rater). 0 = all agree."""
    items = queries.reviewable(db)
    runs: dict[tuple, list[str]] = defaultdict(list)
    for r in store.rows(db, "SELECT a.segment_id, a.backend, a.model, a.label_set, a.run_index, a.primary_emotion"
                            " FROM annotations a WHERE a.id IN (SELECT MAX(id) FROM annotations"
                            " GROUP BY segment_id, backend, model, label_set, run_index)"):
        runs[(r["segment_id"], r["backend"], r["model"], r["label_set"])].append(r["primary_emotion"])
    votes: dict[int, list[str]] = defaultdict(list)
    for v in queries.latest_verdicts(db):
        if v["verdict"] != "skip":
            votes[v["annotation_id"]].append(v["verdict"])
    out = {}
    for it in items:
        d = 0.0
        for labels in (runs[(it["segment_id"], it["backend"], it["model"], it["label_set"])], votes[it["id"]]):
            if len(labels) >= 2:
                d = max(d, 1.0 - Counter(labels).most_common(1)[0][1] / len(labels))
        out[it["id"]] = d
    return out


def queue(db, kind: str, rater: str, emotion: str | None = None, limit: int = 5000, seed: int = 0) -> list[int]:
    """Annotation ids to review, this rater's unreviewed ones first.

    unreviewed: only what the rater has not reviewed; emotion: one primary emotion;
    low_agreement: items whose runs or raters disagree, most disputed first; balanced: a
    round-robin over primary emotions (seeded shuffle within each) so rare emotions surface;
    all: everything in video/time order.
    """
    if kind not in QUEUE_KINDS:
        raise ReviewError(f"unknown queue {kind!r}; use one of {', '.join(QUEUE_KINDS)}")
    items = queries.reviewable(db)
    done = _reviewed_by(db, rater)
    if kind == "unreviewed":
        items = [it for it in items if it["id"] not in done]
    elif kind == "emotion":
        if not emotion:
            raise ReviewError("the emotion queue needs an emotion; pick one from the list")
        key = emotion.strip().casefold()
        items = [it for it in items if it["primary_emotion"].casefold() == key]
    elif kind == "low_agreement":
        dis = disagreement(db)
        items = sorted((it for it in items if dis.get(it["id"], 0) > 0), key=lambda it: -dis[it["id"]])
    elif kind == "balanced":
        by_emo: dict[str, list[dict]] = defaultdict(list)
        for it in items:
            by_emo[it["primary_emotion"]].append(it)
        rng = random.Random(seed)
        pools = []
        for emo in sorted(by_emo):
            pool = by_emo[emo]
            rng.shuffle(pool)
            pool.sort(key=lambda it: it["id"] in done)  # stable: unreviewed first, shuffled within
            pools.append(pool)
        items = [p[i] for i in range(max((len(p) for p in pools), default=0)) for p in pools if i < len(p)]
        return [it["id"] for it in items][:limit]
    ids = [it["id"] for it in items]
    ids.sort(key=lambda i: i in done)  # stable sort keeps each queue's own order within groups
    return ids[:limit]


def emotions_present(db) -> list[str]:
    return [r[0] for r in db.conn.execute("SELECT DISTINCT primary_emotion FROM annotations ORDER BY 1")]


# ---- one item, everything the review screen shows -----------------------------------------

@dataclass
class ReviewItem:
    annotation: dict                       # the annotations row (intensities parsed)
    segment: dict
    video: dict
    tracks: list[dict]                     # {id, boxes: [[t,x1,y1,x2,y2],...]} overlapping the window
    runs: list[dict[str, float]]           # intensities of every run_index of this answer set
    verdict: dict | None                   # this rater's current verdict
    others: dict[str, int] = field(default_factory=dict)  # other raters' current verdict counts

    @property
    def annotation_id(self) -> int:
        return int(self.annotation["id"])


def load_item(db, annotation_id: int, rater: str, context_s: float = 0.5) -> ReviewItem:
    a = store.rows(db, "SELECT * FROM annotations WHERE id = ?", (annotation_id,))
    if not a:
        raise ReviewError(f"annotation {annotation_id} does not exist (deleted by a rerun?); reload the queue")
    ann = a[0]
    ann["intensities"] = json.loads(ann.pop("intensities_json") or "{}")
    ann.pop("raw_response", None)
    seg = store.rows(db, "SELECT * FROM segments WHERE id = ?", (ann["segment_id"],))[0]
    item = load_segment(db, seg, rater, context_s)
    item.annotation = ann
    item.runs = [json.loads(r[0]) for r in db.conn.execute(
        "SELECT intensities_json FROM annotations WHERE id IN (SELECT MAX(id) FROM annotations"
        " WHERE segment_id=? AND backend=? AND model=? AND label_set=? GROUP BY run_index) ORDER BY run_index",
        (ann["segment_id"], ann["backend"], ann["model"], ann["label_set"]))]
    item.verdict = current_verdict(db, annotation_id, rater)
    for v in queries.latest_verdicts(db, [annotation_id]):
        if v["rater"] != (rater or "").strip():
            item.others[v["verdict"]] = item.others.get(v["verdict"], 0) + 1
    return item


def load_segment(db, seg: dict | int, rater: str = "", context_s: float = 0.5) -> ReviewItem:
    """A segment without (or before) its annotation: media, transcript and face tracks."""
    if isinstance(seg, int):
        found = store.rows(db, "SELECT * FROM segments WHERE id = ?", (seg,))
        if not found:
            raise ReviewError(f"segment {seg} does not exist; reload the project")
        seg = found[0]
    video = store.rows(db, "SELECT * FROM videos WHERE id = ?", (seg["video_id"],))[0]
    lo, hi = seg["start_s"] - context_s, seg["end_s"] + context_s
    tracks = []
    # The segment's own track pieces (they cover it plus [faces] margin_s); a neighbour's piece
    # of the same face would draw a second box. Tracks from before per-segment tracking have
    # no segment.
    for t in store.rows(db, "SELECT id, start_s, end_s, boxes_json FROM tracks WHERE video_id = ?"
                            " AND end_s >= ? AND start_s <= ? AND (segment_id = ? OR segment_id IS NULL) ORDER BY id",
                        (seg["video_id"], lo, hi, seg["id"])):
        boxes = [b for b in json.loads(t["boxes_json"] or "[]") if lo - 1.0 <= b[0] <= hi + 1.0]
        tracks.append({"id": t["id"], "start_s": t["start_s"], "end_s": t["end_s"], "boxes": boxes})
    return ReviewItem(annotation={}, segment=seg, video=video, tracks=tracks, runs=[], verdict=None)

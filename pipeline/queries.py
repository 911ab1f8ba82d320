"""The project's domain nouns, defined once: the primary annotation, the latest verdict,
reviewable answers, pending work, retention and throughput.

The GUI models, `mikupal status`, the report, export and review all ask here, so two
screens never disagree about what "pending" or "the primary answer" means.

Definitions:
- **The primary annotation** of a segment (within one answer set, i.e. backend, model and
  label set, or across all of them): its lowest run index, newest answer first. A changed
  prompt or model leaves older answers behind; the newest is what review shows and export writes.
- **The latest verdict** of a rater on an annotation: that rater's newest reviews row.
- **Pending work** of a stage: the items its own ``pending()`` returns under the current
  config and cache keys (exactly what the next ``mikupal run`` will do).
- **Retention**: kept utterance seconds (status not dropped) / the project's video seconds.
- **Throughput** of a run: media seconds covered per wall second, answers per hour.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Iterable, Sequence

from . import store

# ---- the primary annotation ------------------------------------------------------------

_ORDER = "ORDER BY run_index, id DESC LIMIT 1"


def primary_annotation_sql(segment: str = "s.id") -> str:
    """A scalar subquery: the id of the primary annotation of the segment `segment` (SQL)."""
    return f"(SELECT id FROM annotations WHERE segment_id = {segment} {_ORDER})"


def primary_annotation_join(alias: str = "pa", segment: str = "s.id") -> str:
    """LEFT JOIN clause giving each segment row its primary annotation as `alias`."""
    return f" LEFT JOIN annotations {alias} ON {alias}.id = {primary_annotation_sql(segment)}"


def primary_annotation_for_segment(db, segment_id: int) -> int | None:
    r = db.conn.execute(f"SELECT id FROM annotations WHERE segment_id = ? {_ORDER}", (segment_id,)).fetchone()
    return int(r[0]) if r else None


# One annotation per (segment, answer set): the primary one of each set, in video/time order.
REVIEWABLE_SQL = """
    SELECT id, segment_id, primary_emotion, backend, model, label_set, video_id, start_s FROM (
        SELECT a.id, a.segment_id, a.primary_emotion, a.backend, a.model, a.label_set,
               s.video_id, s.start_s,
               ROW_NUMBER() OVER (PARTITION BY a.segment_id, a.backend, a.model, a.label_set
                                  ORDER BY a.run_index, a.id DESC) AS rn
        FROM annotations a JOIN segments s ON s.id = a.segment_id)
    WHERE rn = 1 ORDER BY video_id, start_s, id"""


def reviewable(db) -> list[dict]:
    return store.rows(db, REVIEWABLE_SQL)


def primary_in_set(db, backend: str, model: str, label_set: str, run_index: int = 0) -> list[dict]:
    """Per segment, the newest answer of one answer set at one run index (what export writes)."""
    return store.rows(db, """
        SELECT a.* FROM annotations a
        WHERE a.id IN (SELECT MAX(id) FROM annotations WHERE backend = ? AND model = ? AND label_set = ?
                       AND run_index = ? GROUP BY segment_id)
        ORDER BY a.segment_id""", (backend, model, label_set, run_index))


# ---- verdicts ----------------------------------------------------------------------------

def latest_verdict_sql(annotation: str = "pa.id", rater_param: bool = False) -> str:
    """A scalar subquery: the latest verdict on `annotation` (of the rater named by a `?` when asked)."""
    who = " AND rv.rater_id = (SELECT id FROM raters WHERE name = ?)" if rater_param else ""
    return f"(SELECT rv.verdict FROM reviews rv WHERE rv.annotation_id = {annotation}{who} ORDER BY rv.id DESC LIMIT 1)"


def latest_verdicts(db, annotation_ids: list[int] | None = None) -> list[dict]:
    """Each rater's newest verdict per annotation: {annotation_id, rater, verdict, corrected_label,
    emotion (the annotation's primary emotion)}; the input the metrics' rationality() takes."""
    sql = ("SELECT r.annotation_id, t.name AS rater, r.verdict, r.corrected_label, a.primary_emotion AS emotion"
           " FROM reviews r JOIN raters t ON t.id = r.rater_id JOIN annotations a ON a.id = r.annotation_id"
           " WHERE r.id IN (SELECT MAX(id) FROM reviews GROUP BY annotation_id, rater_id)")
    params: list = []
    if annotation_ids is not None:
        sql += f" AND r.annotation_id IN ({','.join('?' * len(annotation_ids))})"
        params = list(annotation_ids)
    return store.rows(db, sql + " ORDER BY r.annotation_id, t.name", params)


# ---- pending work ------------------------------------------------------------------------

def stage_work(project, db, stages: Iterable[str] | None = None) -> dict[str, dict]:
    """Per stage: ``pending`` (what the next run works on, from the stage's own ``pending()``),
    ``done`` and ``failed`` (pending items whose last try failed).

    Video-scope stages count videos (done and failed from their stage_state); segment-scope
    stages count their own items (segments, or (segment, run) answers) from ``done_count``
    and the errors rows of pending segments. A stage whose upstream is not done is pending 0
    here (the run reports it as skipped); a stage that cannot be built on this install (or
    whose config does not parse: ``run`` says why) has pending None.
    """
    from .stage import STAGE_ORDER
    from .stages import stage_class

    out: dict[str, dict] = {}
    for name in stages or STAGE_ORDER:
        try:
            stage = stage_class(name)(project, device="cpu")
            items = stage.pending(db)
        except Exception:  # noqa: BLE001 - unavailable on this install, or a config the run will explain
            out[name] = {"pending": None, **_video_states(db, name)}
            continue
        done = stage.done_count(db)
        if done is None:
            out[name] = {"pending": len(items), **_video_states(db, name)}
            continue
        segs = sorted({int(it[0] if isinstance(it, (list, tuple)) else it) for it in items})
        failed = db.conn.execute(
            "SELECT COUNT(DISTINCT segment_id) FROM errors WHERE stage=? AND segment_id IN"
            " (SELECT value FROM json_each(?))", (name, json.dumps(segs))).fetchone()[0]
        out[name] = {"pending": len(items), "done": int(done), "failed": int(failed)}
    return out


def _video_states(db, name: str) -> dict[str, int]:
    per = dict(db.conn.execute("SELECT status, COUNT(*) FROM stage_state WHERE stage=? GROUP BY status",
                               (name,)).fetchall())
    return {"done": per.get("done", 0), "failed": per.get("failed", 0)}


# ---- retention ---------------------------------------------------------------------------

def retention(db, drop_statuses: Sequence[str] = ("no_face", "multi_speaker", "low_asd")) -> dict:
    """Kept utterance seconds / the project's video seconds (None without videos).

    Segments whose status is in drop_statuses (set by later stages) do not count as kept; a
    video not yet segmented counts as input with nothing kept (the figure grows as a run goes).
    """
    n, input_s = db.conn.execute("SELECT COUNT(*), COALESCE(SUM(duration_s), 0) FROM videos").fetchone()
    drop = list(drop_statuses) or [""]
    kept = db.conn.execute(f"SELECT COALESCE(SUM(end_s - start_s), 0) FROM segments "
                           f"WHERE status NOT IN ({','.join('?' * len(drop))})", drop).fetchone()[0]
    return {"videos": int(n), "input_s": round(float(input_s), 3), "kept_s": round(float(kept), 3),
            "retention": float(kept) / input_s if input_s > 0 else None}


# ---- throughput --------------------------------------------------------------------------

def _parse_ts(s: str | None) -> datetime | None:
    if not s:
        return None
    try:
        return datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None


def run_throughput(db, limit: int | None = None) -> list[dict]:
    """Per run (newest first): wall time, answers, cost, errors, media seconds covered,
    the real-time factor (media s per wall s) and answers per hour."""
    sql = """
        SELECT r.id, r.started_at, r.finished_at, r.status, r.stages,
               (SELECT COUNT(*) FROM annotations a WHERE a.run_id = r.id) AS answers,
               (SELECT COALESCE(SUM(cost_usd), 0) FROM annotations a WHERE a.run_id = r.id) AS cost_usd,
               (SELECT COUNT(*) FROM errors e WHERE e.run_id = r.id) AS errors,
               (SELECT COALESCE(SUM(v.duration_s), 0) FROM videos v
                 WHERE v.id IN (SELECT video_id FROM stage_state WHERE run_id = r.id)) AS media_s
        FROM runs r ORDER BY r.id DESC"""
    rows = store.rows(db, sql + (f" LIMIT {int(limit)}" if limit else ""))
    for r in rows:
        t0, t1 = _parse_ts(r["started_at"]), _parse_ts(r["finished_at"])
        wall = (t1 - t0).total_seconds() if t0 and t1 else None
        r["stages"] = r["stages"] or "all"
        r["wall_s"] = wall
        r["realtime_factor"] = r["media_s"] / wall if wall and r["media_s"] else None
        r["answers_per_hour"] = r["answers"] / wall * 3600 if wall and r["answers"] else None
    return rows

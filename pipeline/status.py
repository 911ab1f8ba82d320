"""`mikupal status`: what a project holds, per stage, with retention, cost and recent errors."""
from __future__ import annotations


from . import store
from .fileutil import pid_alive
from .stage import STAGE_ORDER


def project_status(db, drop_statuses: list[str] | None = None, n_errors: int = 10) -> dict:
    q = lambda sql, *a: db.conn.execute(sql, a).fetchone()[0]  # noqa: E731
    tables = ["videos", "runs", "transcripts", "segments", "tracks", "annotations", "raters", "reviews", "errors", "exports"]
    counts = {t: q(f"SELECT COUNT(*) FROM {t}") for t in tables}
    stages = {}
    for name in STAGE_ORDER[:-1]:
        per = dict(db.conn.execute("SELECT status, COUNT(*) FROM stage_state WHERE stage=? GROUP BY status", (name,)).fetchall())
        stages[name] = {"done": per.get("done", 0), "failed": per.get("failed", 0), "pending": max(0, counts["videos"] - per.get("done", 0))}
    n_kept = q("SELECT COUNT(*) FROM segments WHERE status='ok'")
    stages["emotion"] = {
        "done": q("SELECT COUNT(DISTINCT segment_id) FROM annotations"),
        "failed": q("SELECT COUNT(DISTINCT segment_id) FROM errors WHERE stage='emotion' AND segment_id IS NOT NULL"
                    " AND segment_id NOT IN (SELECT segment_id FROM annotations)"),
        "pending": q("SELECT COUNT(*) FROM segments WHERE status='ok' AND id NOT IN (SELECT segment_id FROM annotations)"),
    }
    total_s = q("SELECT COALESCE(SUM(duration_s), 0) FROM videos")
    drop = drop_statuses or []
    kept_sql = "SELECT COALESCE(SUM(end_s - start_s), 0) FROM segments"
    if drop:
        kept_sql += f" WHERE status NOT IN ({','.join('?' * len(drop))})"
    retained_s = db.conn.execute(kept_sql, tuple(drop)).fetchone()[0]
    segment_statuses = dict(db.conn.execute("SELECT status, COUNT(*) FROM segments GROUP BY status").fetchall())
    cost = q("SELECT COALESCE(SUM(cost_usd), 0) FROM annotations")
    tokens_in = q("SELECT COALESCE(SUM(input_tokens), 0) FROM annotations")
    tokens_out = q("SELECT COALESCE(SUM(output_tokens), 0) FROM annotations")
    runs = store.rows(db, "SELECT * FROM runs ORDER BY id DESC LIMIT 5")
    for r in runs:
        r.pop("config_json", None)
        if r["status"] == "running" and not pid_alive(r.get("pid")):
            r["status"] = "interrupted"
    errors = store.rows(
        db,
        "SELECT e.id, e.run_id, e.stage, e.video_id, e.segment_id, e.message, e.created_at, e.path"
        " FROM errors e ORDER BY e.id DESC LIMIT ?",
        (n_errors,),
    )
    return {
        "schema_version": store.schema_version(db),
        "counts": counts,
        "stages": stages,
        "segments_ok": n_kept,
        "segment_statuses": segment_statuses,
        "total_duration_s": total_s,
        "retained_duration_s": retained_s,
        "retention": (retained_s / total_s) if total_s else 0.0,
        "cost_usd": cost,
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "recent_runs": runs,
        "recent_errors": errors,
    }

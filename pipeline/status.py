"""`mikupal status`: what a project holds, per stage, with retention, cost and recent errors."""
from __future__ import annotations


from . import queries, store
from .fileutil import pid_alive
from .stage import STAGE_ORDER


def project_status(project, db=None, n_errors: int = 10) -> dict:
    """Counts per stage (pending = what the next run will do, from the stages' own pending()),
    durations and retention, cost, recent runs and errors."""
    db = db if db is not None else project.db()
    drop_statuses = project.config["segments"]["drop_statuses"]
    q = lambda sql, *a: db.conn.execute(sql, a).fetchone()[0]  # noqa: E731
    tables = ["videos", "runs", "transcripts", "segments", "tracks", "annotations", "raters", "reviews", "errors", "exports"]
    counts = {t: q(f"SELECT COUNT(*) FROM {t}") for t in tables}
    work = queries.stage_work(project, db)
    stages = {name: work[name] for name in STAGE_ORDER}
    n_kept = q("SELECT COUNT(*) FROM segments WHERE status='ok'")
    total_s = q("SELECT COALESCE(SUM(duration_s), 0) FROM videos")
    ret = queries.retention(db, drop_statuses)
    segment_statuses = dict(db.conn.execute("SELECT status, COUNT(*) FROM segments GROUP BY status").fetchall())
    from .emotion.spend import llm_spend, pending_batch_jobs

    spend = llm_spend(db)  # paid answers, including the unusable ones (their errors rows)
    cost, tokens_in, tokens_out = spend["cost_usd"], spend["input_tokens"], spend["output_tokens"]
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
        "retained_duration_s": ret["kept_s"],
        "retention": ret["retention"],
        "retention_input_s": ret["input_s"],
        "cost_usd": cost,
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "spend": spend,
        "batch_jobs": pending_batch_jobs(db),
        "recent_runs": runs,
        "recent_errors": errors,
    }

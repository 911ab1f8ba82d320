"""What the LLM stage has cost so far, and the Batch API jobs still out: data for `mikupal status`.

The spend is every paid answer: the stored ones (``annotations.cost_usd``) plus the paid but
unusable ones (invalid, blocked, cut off), whose cost is in their errors row's JSON detail
(``$.cost_usd``, see stage.py; one per Batch API request, ``$.request``). Answers of a model with no price count as unpriced, not $0.
"""
from __future__ import annotations

from .. import store


def llm_spend(db) -> dict:
    q = lambda sql: db.conn.execute(sql).fetchone()[0] or 0  # noqa: E731
    answers = q("SELECT SUM(cost_usd) FROM annotations")
    # One receipt per paid request: a resumed batch run may record the same answer twice.
    failed = q("SELECT SUM(c) FROM (SELECT MAX(json_extract(detail, '$.cost_usd')) AS c FROM errors"
               " WHERE stage='emotion' AND detail LIKE '{%' AND json_valid(detail)"
               " GROUP BY COALESCE(json_extract(detail, '$.request'), 'row ' || id))")
    return {
        "cost_usd": round(answers + failed, 8),
        "answers_usd": round(answers, 8),
        "failed_answers_usd": round(failed, 8),
        "batch_usd": round(q("SELECT SUM(cost_usd) FROM annotations WHERE batch_job IS NOT NULL"), 8),
        "unpriced_answers": q("SELECT COUNT(*) FROM annotations WHERE cost_usd IS NULL AND backend != 'baseline'"),
        "input_tokens": q("SELECT SUM(input_tokens) FROM annotations"),
        "output_tokens": q("SELECT SUM(output_tokens) FROM annotations"),
        "cached_tokens": q("SELECT SUM(cached_tokens) FROM annotations"),
        "thought_tokens": q("SELECT SUM(thought_tokens) FROM annotations"),
    }


def pending_batch_jobs(db) -> list[dict]:
    """Jobs recorded and not yet collected, oldest first, with their requests still out."""
    return store.rows(db, "SELECT j.id, j.name, j.display_name, j.state, j.mode, j.n_requests, j.created_at,"
                          " (SELECT COUNT(*) FROM batch_requests r WHERE r.job_id = j.id AND r.state = 'pending') AS waiting"
                          " FROM batch_jobs j WHERE j.state != 'collected' ORDER BY j.id")

"""`mikupal review-stats`: how often raters accept the labels, and how much raters agree.

- Rationality (the paper's score): accepted / (accepted + rejected), skips left out, with
  a Wilson 95% interval, overall, per emotion (the reviewed primary label) and per rater.
- Agreement between raters on each annotation: Fleiss' kappa and Krippendorff's alpha
  (nominal) on the verdicts, and alpha on the label each rater ends up with (the primary
  label when accepted, the correction when rejected with one). A rater who skipped or never
  saw an item is a missing value; items with fewer than two verdicts carry no agreement
  information and drop out (alpha handles this natively; kappa uses per-item rater counts).
- Intensities: interval alpha between raters when reviews carry corrected intensities, and
  between the annotator's own runs (run_index) on every category, which is the consistency
  the paper reports for the model.

When a rater reviewed the same annotation more than once, the latest review counts.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path


from . import metrics, store


def _latest_reviews(db) -> list[dict]:
    rows = store.rows(
        db,
        "SELECT r.id, r.annotation_id, r.rater_id, ra.name AS rater, r.verdict, r.corrected_label,"
        " a.primary_emotion AS emotion FROM reviews r JOIN raters ra ON ra.id = r.rater_id"
        " JOIN annotations a ON a.id = r.annotation_id ORDER BY r.id",
    )
    latest: dict[tuple[int, int], dict] = {}
    for r in rows:
        latest[(r["annotation_id"], r["rater_id"])] = r
    return list(latest.values())


def rater_agreement(reviews: list[dict]) -> dict:
    """Kappa and alpha over annotations x raters from the latest review rows."""
    raters = sorted({r["rater"] for r in reviews})
    units = sorted({r["annotation_id"] for r in reviews})
    col = {u: i for i, u in enumerate(units)}
    verdicts = {name: [None] * len(units) for name in raters}
    final = {name: [None] * len(units) for name in raters}
    for r in reviews:
        i = col[r["annotation_id"]]
        if r["verdict"] != "skip":
            verdicts[r["rater"]][i] = r["verdict"]
        if r["verdict"] == "accept":
            final[r["rater"]][i] = r["emotion"]
        elif r["verdict"] == "reject" and r.get("corrected_label"):
            final[r["rater"]][i] = r["corrected_label"]
    v_rows = [verdicts[n] for n in raters]
    pairable = sum(sum(row[i] is not None for row in v_rows) >= 2 for i in range(len(units)))
    return {
        "raters": len(raters),
        "items_reviewed": len(units),
        "items_with_two_or_more_verdicts": pairable,
        "fleiss_kappa_verdicts": metrics.fleiss_kappa_labels(v_rows, ["accept", "reject"]) if v_rows else float("nan"),
        "krippendorff_alpha_verdicts": metrics.krippendorff_alpha(v_rows, "nominal") if v_rows else float("nan"),
        "krippendorff_alpha_labels": metrics.krippendorff_alpha([final[n] for n in raters], "nominal") if raters else float("nan"),
    }


def intensity_alpha_runs(db) -> dict:
    """Interval alpha between the annotator's runs, per system with two or more runs:
    units are (segment, category), raters are run indices."""
    out = []
    systems = store.rows(db, "SELECT backend, model, label_set, prompt_sha, COUNT(DISTINCT run_index) AS runs"
                             " FROM annotations GROUP BY backend, model, label_set, prompt_sha HAVING runs > 1")
    for s in systems:
        rows = store.rows(db, "SELECT segment_id, run_index, intensities_json FROM annotations"
                              " WHERE backend=? AND model=? AND label_set=? AND prompt_sha=?",
                          (s["backend"], s["model"], s["label_set"], s["prompt_sha"]))
        by_run: dict[int, dict[tuple[int, str], float]] = defaultdict(dict)
        for r in rows:
            try:
                d = json.loads(r["intensities_json"] or "{}")
            except json.JSONDecodeError:
                continue
            for cat, v in d.items():
                if isinstance(v, (int, float)):
                    by_run[r["run_index"]][(r["segment_id"], cat)] = float(v)
        units = sorted({u for d in by_run.values() for u in d})
        data = [[by_run[ri].get(u) for u in units] for ri in sorted(by_run)]
        out.append({"backend": s["backend"], "model": s["model"], "label_set": s["label_set"], "runs": s["runs"],
                    "units": len(units), "krippendorff_alpha_interval": metrics.krippendorff_alpha(data, "interval")})
    return {"systems": out}


def review_stats(db) -> dict:
    reviews = _latest_reviews(db)
    return metrics.clean_json({
        "reviews": len(reviews),
        "rationality": metrics.rationality(reviews).as_dict(),
        "agreement": rater_agreement(reviews),
        "intensity_agreement_runs": intensity_alpha_runs(db),
    })


# ---- CLI -------------------------------------------------------------------------------------

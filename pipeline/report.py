"""`mikupal report`: one self-contained HTML file (inline CSS, images as data: URIs, no
scripts, nothing fetched) that a researcher can mail or archive with the dataset.

Sections: overview and retention, cost, throughput, label distribution, review
(rationality and agreement), evaluations found under PROJECT/eval/*/eval.json (written by
`mikupal eval`), and the emotion map.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Optional

import numpy as np

from . import __version__, queries, store, taxonomy
from .review_stats import review_stats
from .status import project_status

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
h3{font-size:1.05rem}.muted{color:#666;font-size:.9rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}th,td{border:1px solid #ddd;padding:.25rem .55rem;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:.8rem}.card{border:1px solid #ddd;border-radius:6px;padding:.6rem .9rem;min-width:9rem}
.card b{display:block;font-size:1.3rem}img{max-width:100%;height:auto;border:1px solid #eee}
"""


def _e(v) -> str:
    return html.escape(str(v), quote=True)


def _pct(v) -> str:
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{100 * v:.1f}%"


def _f(v, fmt=".3f") -> str:
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)


def _dur(s: float | None) -> str:
    if s is None:
        return "—"
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fig_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def cost_by_system(db) -> list[dict]:
    out = []
    for s in store.rows(db, "SELECT backend, model, COUNT(*) AS n, COALESCE(SUM(cost_usd), 0) AS cost,"
                            " COALESCE(SUM(input_tokens), 0) AS tin, COALESCE(SUM(output_tokens), 0) AS tout"
                            " FROM annotations GROUP BY backend, model ORDER BY backend, model"):
        lat = [r[0] for r in db.conn.execute("SELECT latency_s FROM annotations WHERE backend=? AND model=?"
                                             " AND latency_s IS NOT NULL", (s["backend"], s["model"]))]
        s["latency_mean"] = float(np.mean(lat)) if lat else None
        s["latency_p50"] = float(np.percentile(lat, 50)) if lat else None
        s["latency_p95"] = float(np.percentile(lat, 95)) if lat else None
        out.append(s)
    return out


def throughput(db) -> dict:
    """Per run, oldest first: wall time, answers stored, and media hours covered per wall hour."""
    runs = list(reversed(queries.run_throughput(db)))
    walls = [r["wall_s"] for r in runs if r["wall_s"]]
    return {"runs": runs, "total_wall_s": float(sum(walls)) if walls else None}


def label_distribution(db) -> dict[str, dict[str, int]]:
    """label_set -> primary emotion -> count (first run of each answer only)."""
    out: dict[str, dict[str, int]] = {}
    for r in db.conn.execute("SELECT label_set, primary_emotion, COUNT(*) FROM annotations WHERE run_index = 0"
                             " GROUP BY label_set, primary_emotion ORDER BY label_set, COUNT(*) DESC"):
        out.setdefault(r[0], {})[r[1]] = r[2]
    return out


def find_evals(root: Path) -> list[tuple[Path, dict]]:
    out = []
    for p in sorted((root / "eval").glob("*/eval.json")):
        try:
            out.append((p, json.loads(p.read_text(encoding="utf-8"))))
        except (OSError, json.JSONDecodeError):
            continue
    return out


# ---- figures ----------------------------------------------------------------------------

def _distribution_png(label_set: str, counts: dict[str, int]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        colors = taxonomy.load_label_set(label_set).colors
    except taxonomy.TaxonomyError:
        colors = {}
    names = list(counts)
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.28 * len(names)), dpi=100)
    ax.barh(names[::-1], [counts[n] for n in names][::-1], color=[colors.get(n, "#888888") for n in names][::-1])
    ax.set_xlabel("answers (run 0)")
    ax.set_title(f"Primary emotions ({label_set})", fontsize=10)
    fig.tight_layout()
    return _fig_png(fig)


def _rationality_png(per_emotion: dict[str, dict], overall: dict) -> bytes:
    """Rationality per emotion with Wilson 95% error bars and the overall score as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [(k, p) for k, p in per_emotion.items() if p["reviewed"]]
    names = [k for k, _ in items][::-1]
    score = np.array([p["score"] for _, p in items][::-1])
    lo = score - np.array([p["ci_low"] for _, p in items][::-1])
    hi = np.array([p["ci_high"] for _, p in items][::-1]) - score
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.3 * len(names)), dpi=100)
    ax.barh(names, score, xerr=[lo, hi], color="#7FA7D9", ecolor="#333333", capsize=3)
    if overall.get("score") is not None:
        ax.axvline(overall["score"], color="#D7191C", linestyle="--", linewidth=1)
        ax.set_title(f"Rationality per emotion; dashed: overall {100 * overall['score']:.1f}%", fontsize=10)
    ax.set_xlim(0, 1)
    ax.set_xlabel("rationality (accepted / reviewed), 95% Wilson interval")
    fig.tight_layout()
    return _fig_png(fig)


# ---- HTML ---------------------------------------------------------------------------------

def _section_overview(st: dict) -> str:
    c = st["counts"]
    cards = [
        ("videos", c["videos"]), ("media", _dur(st["total_duration_s"])), ("segments", c["segments"]),
        ("retained", f"{_dur(st['retained_duration_s'])} ({_pct(st['retention'])})"),
        ("answers", c["annotations"]), ("reviews", c["reviews"]), ("errors", c["errors"]),
    ]
    html_cards = "".join(f'<div class="card"><b>{_e(v)}</b>{_e(k)}</div>' for k, v in cards)
    statuses = _table(["segment status", "segments"], sorted(st["segment_statuses"].items()))
    stages = _table(["stage", "done", "failed", "pending"],
                    [[k, v["done"], v["failed"], v["pending"]] for k, v in st["stages"].items()])
    return f'<h2 id="overview">Overview and retention</h2><div class="cards">{html_cards}</div>{statuses}{stages}'


def _section_cost(st: dict, systems: list[dict]) -> str:
    hours = (st["retained_duration_s"] or 0) / 3600
    per_hour = st["cost_usd"] / hours if hours else None
    rows = [[s["backend"], s["model"], s["n"], f"${s['cost']:.4f}", f"${s['cost'] / s['n']:.5f}" if s["n"] else "—",
             s["tin"], s["tout"], _f(s["latency_mean"], ".2f"), _f(s["latency_p50"], ".2f"), _f(s["latency_p95"], ".2f")]
            for s in systems]
    return (f'<h2 id="cost">Cost</h2><p>Total <b>${st["cost_usd"]:.4f}</b> for {st["counts"]["annotations"]} answers '
            f'({st["input_tokens"]} input / {st["output_tokens"]} output tokens); '
            f'{"$" + format(per_hour, ".4f") if per_hour is not None else "—"} per retained hour of speech.</p>'
            + _table(["backend", "model", "answers", "cost", "per answer", "tokens in", "tokens out",
                      "latency mean s", "p50 s", "p95 s"], rows))


def _section_throughput(tp: dict) -> str:
    if not tp["runs"]:
        return '<h2 id="throughput">Throughput</h2><p class="muted">No pipeline runs recorded yet.</p>'
    rows = [[r["id"], r["status"], r["stages"], r["started_at"], _dur(r["wall_s"]), r["answers"],
             _f(r["answers_per_hour"], ".0f"), _f(r["realtime_factor"], ".2f") + ("×" if r["realtime_factor"] else "")]
            for r in tp["runs"]]
    return ('<h2 id="throughput">Throughput</h2>'
            + _table(["run", "status", "stages", "started", "wall time", "answers", "answers / h", "media / wall"], rows)
            + f'<p class="muted">Total wall time {_dur(tp["total_wall_s"])}. "media / wall" is the duration of the '
              'videos a run finished a stage for, divided by its wall time.</p>')


def _section_labels(dist: dict) -> str:
    if not dist:
        return '<h2 id="labels">Labels</h2><p class="muted">No emotion answers yet.</p>'
    parts = ['<h2 id="labels">Labels</h2>']
    for ls_name, counts in dist.items():
        parts.append(_img(_distribution_png(ls_name, counts), f"label distribution {ls_name}"))
        parts.append(_table(["primary emotion", "answers"], list(counts.items())))
    return "".join(parts)


def _section_review(rs: dict) -> str:
    if not rs["reviews"]:
        return '<h2 id="review">Review</h2><p class="muted">No reviews yet.</p>'
    r = rs["rationality"]
    o = r["overall"]

    def ci(p):
        return "—" if p["ci_low"] is None else f"{100 * p['ci_low']:.1f}–{100 * p['ci_high']:.1f}%"

    def rows(d):
        return [[k, p["accepted"], p["reviewed"], p["skipped"], _pct(p["score"]), ci(p)] for k, p in d.items()]

    a = rs["agreement"]
    runs = rs["intensity_agreement_runs"]["systems"]
    parts = [
        '<h2 id="review">Review</h2>',
        f'<p>Rationality score <b>{_pct(o["score"])}</b> (95% Wilson CI {ci(o)}): {o["accepted"]} accepted of '
        f'{o["reviewed"]} reviewed; {o["skipped"]} skipped (excluded).</p>',
        "<h3>Per emotion</h3>", _img(_rationality_png(r["per_emotion"], o), "rationality per emotion"), _table(["emotion", "accepted", "reviewed", "skipped", "rationality", "95% CI"], rows(r["per_emotion"])),
        "<h3>Per rater</h3>", _table(["rater", "accepted", "reviewed", "skipped", "rationality", "95% CI"], rows(r["per_rater"])),
        "<h3>Agreement</h3>",
        _table(["measure", "value"], [
            ["raters", a["raters"]], ["items with ≥ 2 verdicts", a["items_with_two_or_more_verdicts"]],
            ["Fleiss κ (verdicts)", _f(a["fleiss_kappa_verdicts"])],
            ["Krippendorff α nominal (verdicts)", _f(a["krippendorff_alpha_verdicts"])],
            ["Krippendorff α nominal (final labels)", _f(a["krippendorff_alpha_labels"])],
        ] + [[f"Krippendorff α interval (intensities across {s['runs']} runs of {s['model']})",
              _f(s["krippendorff_alpha_interval"])] for s in runs]),
    ]
    return "".join(parts)


def _section_evals(evals: list[tuple[Path, dict]]) -> str:
    if not evals:
        return ('<h2 id="evaluation">Evaluation</h2><p class="muted">No evaluation yet: run '
                '<code>mikupal eval PROJECT --dataset meld|iemocap --labels FILE</code>.</p>')
    parts = ['<h2 id="evaluation">Evaluation</h2>']
    for path, ev in evals:
        try:
            parts.append(_one_eval(path, ev))
        except (KeyError, TypeError, AttributeError):
            parts.append(f'<p class="muted">{_e(path)}: not an eval.json this version can read; re-run mikupal eval.</p>')
    return "".join(parts)


def _one_eval(path: Path, ev: dict) -> str:
    """One eval.json: the summary table, the human reference, the confusion figures."""
    parts = []
    mt = ev.get("matching", {})
    parts.append(f"<h3>{_e(ev.get('dataset', '?'))} ({_e(ev.get('label_set', '?'))})</h3>"
                 f'<p class="muted">{_e(ev.get("labels_file", ""))}: {mt.get("references", 0)} references, '
                 f'{mt.get("matched", 0)} matched; written {_e(ev.get("created_at", ""))}</p>')
    rows = []
    for s in ev.get("systems", []):
        m, x = s["metrics"], s["excluding"]["metrics"]
        rows.append([s["backend"], s["model"], s["items"], s["runs"], _pct(m["accuracy"]), _pct(m["balanced_accuracy"]),
                     _pct(m["f1_weighted"]), _pct(m["f1_macro"]), _pct(x["accuracy"]),
                     _pct((s.get("majority_of_runs") or {}).get("accuracy")), _f(s.get("fleiss_kappa_runs")),
                     _pct(s.get("all_runs_agree"))])
    excl = "+".join(ev["systems"][0]["excluding"]["labels"]) if ev.get("systems") else ""
    parts.append(_table(["backend", "model", "n", "runs", "accuracy", "UA", "weighted F1", "macro F1",
                         f"accuracy w/o {excl}", "majority of runs", "κ across runs", "all runs agree"], rows))
    h = ev.get("human")
    if h:
        parts.append(f"<p>Human evaluators vs consensus: accuracy {_pct(h['accuracy'])}, UA {_pct(h['balanced_accuracy'])}, "
                     f"Fleiss κ {_f(h['fleiss_kappa'])} over {h['kappa_utterances']} utterances.</p>")
    for s in ev.get("systems", []):
        png = path.parent / s.get("files", {}).get("confusion_png", "-")
        if png.is_file():
            parts.append(f"<h3>Confusion: {_e(s['model'])}</h3>" + _img(png.read_bytes(), f"confusion {s['model']}"))
    return "".join(parts)


def _section_map(db) -> str:
    from .emotion_map import _pick_label_set, emotion_map_points, render_emotion_map

    pts = emotion_map_points(db)
    if not pts:
        return '<h2 id="map">Emotion map</h2><p class="muted">No emotion answers yet.</p>'
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        png = render_emotion_map(pts, Path(tmp) / "map.png", _pick_label_set(db, None)).read_bytes()
    return ('<h2 id="map">Emotion map</h2><p class="muted">t-SNE of the intensity vectors; colours blend the category '
            'colours by intensity, labels sit at the centre of each strongest category.</p>' + _img(png, "emotion map"))


def build_report(project, include_map: bool = True) -> str:
    """The report for a Project, as one HTML string."""
    db = project.db()
    st = project_status(project, db)
    name = project.config["project"]["name"] or project.root.name
    body = [
        f"<h1>MIKU-PAL report: {_e(name)}</h1>",
        f'<p class="muted">{_e(project.root)} · generated {_e(store.now())} · MIKU-PAL {_e(__version__)}</p>',
        _section_overview(st),
        _section_cost(st, cost_by_system(db)),
        _section_throughput(throughput(db)),
        _section_labels(label_distribution(db)),
        _section_review(review_stats(db)),
        _section_evals(find_evals(project.root)),
        _section_map(db) if include_map else "",
    ]
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>MIKU-PAL report: {_e(name)}</title><style>{CSS}</style></head><body>"
            + "".join(body) + "</body></html>")

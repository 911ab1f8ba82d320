"""`mikupal eval`, `review-stats`, `map` and `report`: the analysis modules compute, these print."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .common import fail, open_project
from .. import taxonomy
from ..emotion_map import _pick_label_set, emotion_map_points, render_emotion_map
from ..evaluate import DATASETS, DEFAULT_EXCLUDE, DEFAULT_LABEL_SET, EvalError, evaluate
from ..fileutil import write_text_atomic
from ..report import build_report
from ..review_stats import review_stats


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _num(v, fmt: str = ".3f") -> str:
    return "—" if v is None else format(v, fmt)


def print_result(result: dict, console=None) -> None:
    """The readable summary: one row per system, then per-class recall of each."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    refs, mt = result["references"], result["matching"]
    con.print(f"[bold]{result['dataset']}[/bold] ({result['label_set']}): {refs['total']} references, "
              f"{refs['in_label_set']} in the label set, {mt['matched']} matched to annotated segments "
              f"({mt['no_video']} without a video, {mt['no_annotated_segment']} without an annotated segment)")
    if mt.get("ambiguous_video_stems"):
        con.print(f"[yellow]{mt['ambiguous_video_stems']} clip names belong to more than one video (e.g. "
                  f"{', '.join(mt['examples_ambiguous'][:3])}); the first added is used: pass --videos-under FOLDER[/yellow]",
                  highlight=False)
    if not result["systems"]:
        con.print("no annotations to score: run the emotion stage on the matched videos first")
    # One line naming each system, then a table of numbers keyed by its number: a model
    # name of any length cannot squeeze the metrics out of an 80-column terminal or log.
    excluding = "+".join(result["systems"][0]["excluding"]["labels"]) if result["systems"] else ""
    for i, s in enumerate(result["systems"], 1):
        con.print(f"[{i}] {s['backend']} / {s['model']}  (labels {Path(s['label_set']).stem}, "
                  f"{s['items']} items, runs {s['runs']})", markup=False, highlight=False)
    t = Table("#", "acc %", "UA %", "wF1 %", "mF1 %", "acc* %", "κ runs", "agree %",
              title="Accuracy against the dataset labels", box=box.SIMPLE_HEAD)
    for i, s in enumerate(result["systems"], 1):
        m, x = s["metrics"], s["excluding"]["metrics"]
        t.add_row(str(i), _pct(m["accuracy"]), _pct(m["balanced_accuracy"]), _pct(m["f1_weighted"]),
                  _pct(m["f1_macro"]), _pct(x["accuracy"]), _num(s["fleiss_kappa_runs"]), _pct(s["all_runs_agree"]))
    for col in t.columns:
        col.justify = "right"
    con.print(t)
    if result["systems"]:
        con.print(f"acc*: without {excluding or 'nothing'}; κ runs: Fleiss κ between runs; agree: all runs agree",
                  highlight=False)
    for s in result["systems"]:
        rec = s["metrics"]["per_class_recall"]
        if rec:
            con.print(f"recall ({s['model']}): " + ", ".join(f"{k} {_pct(v)}%" for k, v in rec.items()))
        for msg in s["mapping_errors"]:
            con.print(f"[yellow]unmapped answers: {msg}[/yellow]", highlight=False)
    h = result.get("human")
    if h:
        con.print(f"human evaluators vs consensus: accuracy {_pct(h['accuracy'])}%, UA {_pct(h['balanced_accuracy'])}%, "
                  f"Fleiss κ {_num(h['fleiss_kappa'])} over {h['kappa_utterances']} utterances")
    for p in result["problems"][:10]:
        con.print(f"[yellow]{p}[/yellow]", highlight=False)


def eval_command(
    project: Path = typer.Argument(..., help="Project folder."),
    dataset: str = typer.Option(..., "--dataset", help="meld or iemocap."),
    labels: Path = typer.Option(..., "--labels", help="MELD *_sent_emo.csv, or an IEMOCAP EmoEvaluation file or folder."),
    label_set: Optional[str] = typer.Option(None, "--label-set", help="meld7 (MELD default), iemocap4 (IEMOCAP default), iemocap9, or a label set file."),
    exclude: Optional[List[str]] = typer.Option(None, "--exclude", help="Classes left out of the variant table (repeat or comma-separate; default frustration,neutral)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default PROJECT/eval/DATASET-LABELSET)."),
    videos_under: Optional[Path] = typer.Option(None, "--videos-under", help="Match only the project's videos below this folder (e.g. MELD's test split)."),
    neutral_below: Optional[float] = typer.Option(None, "--neutral-below", help="Answers whose strongest intensity is below this map to neutral (default: the mapping's own threshold; 0 turns it off)."),
    as_json: bool = typer.Option(False, "--json", help="Print eval.json instead of the table."),
):
    """Accuracy, UA, F1, confusion and run-to-run kappa against MELD or IEMOCAP labels."""
    if dataset not in DATASETS:
        raise fail(f"--dataset {dataset!r}: unknown dataset; use one of: {', '.join(DATASETS)}")
    p = open_project(project)
    excl = [x.strip() for e in (exclude or list(DEFAULT_EXCLUDE)) for x in e.split(",") if x.strip()]
    out_dir = out or p.root / "eval" / f"{dataset}-{Path(label_set or DEFAULT_LABEL_SET[dataset]).stem}"
    try:
        result = evaluate(p.db(), dataset, labels, label_set, excl, out_dir, neutral_below, videos_under)
    except EvalError as e:
        raise fail(str(e))
    if as_json:
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    from rich.console import Console

    con = Console()
    print_result(result, con)
    con.print(f"wrote {out_dir / 'eval.json'}", highlight=False)


def _rs_pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _rs_num(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def _rs_ci(p: dict) -> str:
    return "—" if p["ci_low"] is None else f"{100 * p['ci_low']:.1f}–{100 * p['ci_high']:.1f}%"


def print_stats(st: dict, console=None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    rat = st["rationality"]
    o = rat["overall"]
    con.print(f"[bold]Rationality[/bold] {_rs_pct(o['score'])} (95% CI {_rs_ci(o)}): {o['accepted']} accepted of "
              f"{o['reviewed']} reviewed, {o['skipped']} skipped")
    for title, key in (("per emotion", "per_emotion"), ("per rater", "per_rater")):
        if rat[key]:
            t = Table(title.split()[1], "accepted", "reviewed", "skipped", "rationality", "95% CI",
                      title=f"Rationality {title}", box=box.SIMPLE_HEAD)
            t.columns[0].overflow = "fold"  # a long rater or emotion name wraps, never loses letters
            for name, p in rat[key].items():
                t.add_row(name, str(p["accepted"]), str(p["reviewed"]), str(p["skipped"]), _rs_pct(p["score"]), _rs_ci(p))
            con.print(t)
    a = st["agreement"]
    con.print(f"[bold]Agreement[/bold] between {a['raters']} raters on {a['items_with_two_or_more_verdicts']} items with "
              f"two or more verdicts: Fleiss κ {_rs_num(a['fleiss_kappa_verdicts'])}, Krippendorff α (verdicts) "
              f"{_rs_num(a['krippendorff_alpha_verdicts'])}, α (final labels) {_rs_num(a['krippendorff_alpha_labels'])}")
    for s in st["intensity_agreement_runs"]["systems"]:
        con.print(f"model runs ({s['model']}, {s['runs']} runs): intensity α interval {_rs_num(s['krippendorff_alpha_interval'])}"
                  f" over {s['units']} values", highlight=False)


def review_stats_command(
    project: Path = typer.Argument(..., help="Project folder."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Rationality score (Wilson 95% CI) per emotion and rater; kappa and alpha between raters."""
    p = open_project(project)
    st = review_stats(p.db())
    if as_json:
        typer.echo(json.dumps(st, indent=2, ensure_ascii=False))
        return
    if not st["reviews"]:
        typer.echo("no reviews yet: review labels in the app (mikupal gui) first")
        return
    print_stats(st)


def map_command(
    project: Path = typer.Argument(..., help="Project folder."),
    out: Optional[Path] = typer.Option(None, "--out", help="PNG to write (default PROJECT/emotion_map.png)."),
    label_set: Optional[str] = typer.Option(None, "--label-set", help="Which answers to map (default: the most used label set)."),
    run_index: int = typer.Option(0, "--run", help="Which run's answers (annotations.run_index)."),
    seed: int = typer.Option(0, "--seed", help="t-SNE random seed."),
):
    """The emotion map: t-SNE of intensity vectors, colours blended by intensity (paper Fig. 3)."""
    p = open_project(project)
    try:
        pts = emotion_map_points(p.db(), label_set, run_index, seed=seed)
        name = _pick_label_set(p.db(), label_set)
    except taxonomy.TaxonomyError as e:
        raise fail(str(e))
    if not pts:
        raise fail(f"{project}: no emotion answers to map" + (f" for label set {label_set!r}" if label_set else "")
                   + "; run the emotion stage first (mikupal run PROJECT)")
    dest = render_emotion_map(pts, out or p.root / "emotion_map.png", name)
    typer.echo(f"wrote {dest} ({len(pts)} points)")


def report_command(
    project: Path = typer.Argument(..., help="Project folder."),
    out: Optional[Path] = typer.Option(None, "--out", help="HTML file to write (default PROJECT/report.html)."),
    no_map: bool = typer.Option(False, "--no-map", help="Leave out the emotion map (t-SNE takes a while on big projects)."),
):
    """One self-contained HTML report: retention, cost, throughput, review, evaluation, emotion map."""
    p = open_project(project)
    dest = out or p.root / "report.html"
    if dest.exists() and dest.is_dir():
        raise fail(f"--out {dest} is a folder; give a file name such as {dest / 'report.html'}")
    text = build_report(p, include_map=not no_map)
    write_text_atomic(dest, text)
    typer.echo(f"wrote {dest} ({len(text) // 1024} KiB)")

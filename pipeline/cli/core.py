"""`mikupal init`, `add`, `status` and `demo`: the project's everyday commands."""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import List

import typer

from .common import fail, open_project
from ..project import Project, ProjectError


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def init(
    project: Path = typer.Argument(..., help="Folder to create (or an empty existing folder)."),
    name: str = typer.Option("", help="Project name for the app and dataset cards."),
):
    """Create a project: mikupal.toml (every setting, commented) and project.db."""
    try:
        p = Project.create(project, name=name)
    except ProjectError as e:
        raise fail(str(e))
    typer.echo(f"created {p.root} (settings: {p.root / 'mikupal.toml'})")
    typer.echo(f"next: mikupal add {shlex.quote(str(project))} VIDEOS...")


def add(
    project: Path = typer.Argument(..., help="Project folder."),
    paths: List[str] = typer.Argument(..., help="Video files, folders (searched recursively) or http(s) URLs (downloaded with yt-dlp)."),
):
    """Add videos by content hash (adding the same file twice does nothing); URLs are
    downloaded into PROJECT/sources/ (resumable, with yt-dlp's .info.json kept)."""
    from ..ingest import add_videos

    p = open_project(project)
    db = p.db()
    with _download_progress() as progress:
        report = add_videos(db, paths, on_line=lambda line: typer.echo(line, err=line.startswith(("error:", "warning:"))),
                            download_dir=p.root / "sources", on_progress=progress)
    typer.echo(f"{len(report.added)} added, {len(report.already)} already present, {len(report.failed)} rejected")
    if report.failed:
        raise typer.Exit(2)


class _download_progress:
    """A rich bar on a terminal; in a log (no TTY) one line per downloaded file instead."""

    def __enter__(self):
        import sys

        self.bar = None
        self.done: set[str] = set()
        if sys.stderr.isatty():
            from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

            self.bar = Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), transient=True)
            self.tasks: dict[str, int] = {}
            self.bar.start()
        return self

    def __call__(self, done: int, total, name: str) -> None:
        if self.bar is not None:
            if name not in self.tasks:
                self.tasks[name] = self.bar.add_task(f"downloading {name}", total=total)
            self.bar.update(self.tasks[name], completed=done, total=total)
        elif total is not None and done >= total and name not in self.done:
            self.done.add(name)
            typer.echo(f"downloaded {name} ({done / 1e6:.1f} MB)", err=True)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


def _ts(stamp) -> str:
    """A stored UTC timestamp as 'YYYY-MM-DD HH:MM' (a status line fits 80 columns)."""
    return str(stamp)[:16].replace("T", " ") if stamp else ""


def status(
    project: Path = typer.Argument(..., help="Project folder."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Counts per stage, durations and retention, cost so far and recent errors."""
    from ..status import project_status

    p = open_project(project)
    st = project_status(p)
    if as_json:
        typer.echo(json.dumps(st, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console()
    c = st["counts"]
    con.print(f"[bold]{p.root}[/bold]  schema v{st['schema_version']}")
    con.print(
        f"videos {c['videos']}  segments {c['segments']} ({st['segments_ok']} ok)  annotations {c['annotations']}"
        f"  reviews {c['reviews']}  raters {c['raters']}  errors {c['errors']}"
    )
    t = Table("stage", "done", "failed", "pending", title="Stages")
    for name, s in st["stages"].items():
        t.add_row(name, str(s["done"]), str(s["failed"]), "?" if s["pending"] is None else str(s["pending"]))
    con.print(t)
    h = lambda s: f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min"  # noqa: E731
    con.print(
        f"duration {h(st['total_duration_s'])}, retained {h(st['retained_duration_s'])} "
        f"({_pct(st['retention'])})\ncost ${st['cost_usd']:.4f} "
        f"({st['input_tokens']} in / {st['output_tokens']} out tokens)"
    )
    sp = st.get("spend") or {}
    if sp.get("failed_answers_usd") or sp.get("unpriced_answers") or sp.get("batch_usd"):
        con.print(f"  of which ${sp['failed_answers_usd']:.4f} for unusable answers (see errors), "
                  f"${sp['batch_usd']:.4f} at the Batch API rate; {sp['unpriced_answers']} answer(s) of a model "
                  f"with no price (add it to {p.root / 'prices.json'})", highlight=False)
    for j in st.get("batch_jobs") or []:
        con.print(f"batch job {j['name'] or j['display_name']}: {j['state']}, {j['waiting']} of {j['n_requests']} "
                  f"request(s) waiting (submitted {_ts(j['created_at'])}); `mikupal run` again collects it",
                  highlight=False)
    for r in st["recent_runs"][:3]:
        con.print(f"run {r['id']}: {r['status']} ({_ts(r['started_at'])} .. {_ts(r['finished_at'])}) "
                  f"stages {r.get('stages') or 'all'}", highlight=False)
    if st["recent_errors"]:
        con.print("[bold]Recent errors[/bold]")
        for e in st["recent_errors"]:
            where = f"video {e['video_id']}" if e["video_id"] else ""
            if e["segment_id"]:
                where += f" segment {e['segment_id']}"
            con.print(f"  [{e['stage']}] {where + ': ' if where else ''}{e['message']}", markup=False, highlight=False)


def demo(
    project: Path = typer.Argument(Path("demo-project"), help="Where to build the demo project."),
    no_gui: bool = typer.Option(False, "--no-gui", help="Stay headless: do not open the app afterwards."),
):
    """Build a sample project offline from the synthetic demo clip, run the pipeline, open it."""
    from ..demo_project import build_demo_project

    from .app import launch_gui
    from .run import run_command

    p = build_demo_project(project, on_line=typer.echo)
    typer.echo(f"running the pipeline on {p.root} (offline demo settings: subtitles, Haar faces, baseline annotator)")
    code = 0
    try:
        run_command(project=p.root, stages=None, backend=None, model=None, runs=None, workers=None,
                    devices=None, ray=None, sets=None, quiet=False, wait=False, events=None)
    except typer.Exit as e:  # failed items are recorded; still open the app so they can be inspected
        code = e.exit_code
    if no_gui:
        q = shlex.quote(str(project))
        typer.echo(f"next: mikupal gui {q}   (review the labels)   mikupal export {q} OUT   (write a dataset)")
    else:
        code = launch_gui(p.root) or code
    raise typer.Exit(code)

"""`mikupal run PROJECT`: the pipeline with rich progress bars, per-stage workers, devices, Ray.

Exit codes: 0 every item done, 1 some items failed (see `mikupal status`), 2 bad usage.
Ctrl-C (or SIGTERM) cancels cooperatively: in-flight items finish or are dropped within a
second, and a rerun resumes.
"""
from __future__ import annotations

import json
import shlex
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import List, Optional

import typer

from .common import fail, open_project
from ..events import ProgressEvent


def _overrides(backend, model, runs, sets) -> list[str]:
    out = []
    if backend:
        out.append(f'emotion.backend="{backend}"')
    if model:
        out.append(f'emotion.model="{model}"')
    if runs is not None:
        out.append(f"emotion.runs={int(runs)}")
    return out + list(sets or [])


class _Bars:
    """One rich progress bar per stage, fed by runner events (any thread)."""

    def __init__(self, progress, quiet: bool):
        self.progress = progress
        self.quiet = quiet
        self.tasks: dict[str, int] = {}
        self.lines: list[str] = []

    def __call__(self, ev: ProgressEvent) -> None:
        if ev.kind == "item_error":
            self.lines.append(ev.message)
            if not self.quiet:
                self.progress.console.print(f"[red]error[/red] [{ev.stage}] {ev.message}", markup=True, highlight=False)
        if ev.stage is None or ev.kind not in ("stage_progress", "stage_finished", "item_error"):
            return
        if ev.stage not in self.tasks:
            self.tasks[ev.stage] = self.progress.add_task(ev.stage, total=None, errors=0, rate="")
        tid = self.tasks[ev.stage]
        rate = f"{ev.rate:.2f}/s" if ev.rate else ""
        self.progress.update(tid, completed=ev.done, total=max(ev.total, 1) if ev.total or ev.kind == "stage_finished" else None,
                             errors=ev.errors, rate=rate)


def run_command(
    project: Path = typer.Argument(..., help="Project folder."),
    stages: Optional[str] = typer.Option(None, "--stages", help="Comma-separated subset, e.g. asr,segments (default: all)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Emotion backend: gemini, openai or baseline."),
    model: Optional[str] = typer.Option(None, "--model", help="Emotion model name."),
    runs: Optional[int] = typer.Option(None, "--runs", min=1, help="Independent emotion answers per segment."),
    workers: Optional[List[str]] = typer.Option(None, "--workers", help="stage=N worker count, repeatable (e.g. --workers faces=2)."),
    devices: Optional[str] = typer.Option(None, "--devices", help="auto, cpu or a list like cuda:0,cuda:1 (default: the runner.devices setting)."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Run on Ray: a cluster ADDRESS, auto (running cluster) or local."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="Override a setting for this run: section.key=value (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars; only the summary."),
    batch: bool = typer.Option(False, "--batch", help="Emotion through the Gemini Batch API: half price, answers within "
                               "24 h; a stopped run resumes its recorded jobs (same as --set emotion.batch=true)."),
    wait: bool = typer.Option(False, "--wait", help="If another run holds the project, wait for it instead of exiting."),
    events: Optional[str] = typer.Option(None, "--events", help="jsonl: one JSON progress event per line on stdout "
                                         "(the app reads these); the summary goes to stderr."),
):
    """Run the pipeline: separate -> vad -> asr -> segments -> faces -> asd -> emotion -> speakers (resumable).

    One run holds a project at a time (run.lock): a second one says who holds it and exits 2,
    or waits with --wait. project.db is backed up into backups/ at the start and the end."""
    from ..runner import RunnerError, parse_workers, resolve_devices
    from ..stages import UnknownStageError, parse_stages

    if backend and backend not in ("gemini", "openai", "baseline"):
        raise fail(f"--backend {backend}: choose gemini, openai or baseline")
    if events not in (None, "jsonl"):
        raise fail(f"--events {events}: the only format is jsonl")
    p = open_project(project, _overrides(backend, model, runs, sets) + (["emotion.batch=true"] if batch is True else []))
    try:
        names = parse_stages(stages)
        worker_counts = parse_workers(workers)
        devs = resolve_devices(devices) if devices else None
    except (UnknownStageError, RunnerError) as e:
        raise fail(str(e))
    if p.db().conn.execute("SELECT COUNT(*) FROM videos").fetchone()[0] == 0:
        raise fail(f"{project}: no videos yet; add some with: mikupal add {shlex.quote(str(project))} VIDEOS...")

    _run(p, project, names, worker_counts, devs, ray, quiet or events is not None, events, wait)


def _emit_jsonl(ev: ProgressEvent) -> None:
    sys.stdout.write(json.dumps(ev.to_dict()) + "\n")
    sys.stdout.flush()


def _failure_reason(lines: list[str]) -> str:
    """The most common item error of this run, for the last stderr line."""
    if not lines:
        return ""
    msg, n = Counter(lines).most_common(1)[0]
    return f" ({n}x: {msg})" if n > 1 else f" ({msg})"


def _run(p, project, names, worker_counts, devs, ray, quiet, events, wait):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..project_lock import ProjectLocked
    from ..runner import Runner
    from ..stages import StageUnavailableError

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]{task.description:<9}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>9}"), TextColumn("errors {task.fields[errors]}"), TimeRemainingColumn(),
        console=console, disable=quiet, transient=False,
    )
    bars = _Bars(progress, quiet)

    def on_event(ev):
        bars(ev)
        if events:
            _emit_jsonl(ev)
    runner = Runner(p, names, workers=worker_counts, devices=devs, on_event=on_event, ray_address=ray,
                    wait_for_lock=wait, on_notice=lambda line: typer.echo(f"mikupal: {line}", err=True))

    def _on_signal(signum, frame):
        if runner.cancelled:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        console.print("cancelling: finishing the items in flight (Ctrl-C again to stop at once)")
        runner.cancel()

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with progress:
            try:
                summary = runner.run()
            except ProjectLocked as e:
                raise fail(str(e))
            except StageUnavailableError as e:
                raise fail(str(e), 1)
    finally:
        for s, h in old.items():
            signal.signal(s, h)

    out = Console(stderr=bool(events))
    for s in summary.stages.values():
        extra = f", {s.skipped} skipped" if s.skipped else ""
        out.print(f"{s.name:<9} {s.ok} ok, {s.failed} failed{extra} ({s.elapsed():.1f}s)", highlight=False)
    out.print(f"run {summary.run_id} {summary.status} in {summary.elapsed_s:.1f}s; log {summary.log_path}", highlight=False)
    if summary.status == "failed":
        typer.echo(f"mikupal: run {summary.run_id} failed: {summary.message}", err=True)
        raise typer.Exit(1)
    bad = summary.failed_items + summary.skipped_items
    if bad:
        typer.echo(f"mikupal: {bad} item(s) failed{_failure_reason(bars.lines)}; see them with: "
                   f"mikupal status {shlex.quote(str(project))}", err=True)
        raise typer.Exit(1)
    if summary.status == "cancelled":
        typer.echo(f"mikupal: run {summary.run_id} cancelled; run the same command again to resume", err=True)
        raise typer.Exit(1)

"""`mikupal export PROJECT OUT --format ...`: the CLI face of export_dataset."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from .common import fail, open_project
from ..export.dataset import export_dataset
from ..export.select import ExportError, ExportFilters


def _csv(value: Optional[str]) -> tuple[str, ...]:
    return tuple(x.strip() for x in (value or "").split(",") if x.strip())


def export_command(
    project: Path = typer.Argument(..., help="Project folder."),
    out: Path = typer.Argument(..., help="Dataset folder to create (must be empty unless --force)."),
    fmt: str = typer.Option("jsonl", "--format", "-f", help="jsonl | hf | webdataset | lab | elan | lhotse"),
    accepted_only: bool = typer.Option(False, "--accepted-only", help="Only clips most raters accepted."),
    min_rationality: Optional[float] = typer.Option(None, help="Minimum rater accept rate of the clip's primary emotion."),
    emotions: Optional[str] = typer.Option(None, help="Comma-separated primary emotions to keep, e.g. Joy,Anger."),
    min_intensity: Optional[float] = typer.Option(None, help="Minimum intensity of the primary emotion (0..1)."),
    min_duration: Optional[float] = typer.Option(None, help="Shortest clip in seconds."),
    max_duration: Optional[float] = typer.Option(None, help="Longest clip in seconds."),
    min_snr: Optional[float] = typer.Option(None, help="Minimum SNR in dB."),
    language: Optional[str] = typer.Option(None, help="Comma-separated language codes to keep, e.g. en,ja."),
    min_asd: Optional[float] = typer.Option(None, help="Minimum active-speaker score."),
    max_per_video: Optional[int] = typer.Option(None, help="Keep at most N clips per source video (most intense first)."),
    speaker: Optional[str] = typer.Option(None, "--speaker", help="Comma-separated speaker names or numbers to keep."),
    label_set: Optional[str] = typer.Option(None, help="Label set of the annotations to export."),
    run_index: int = typer.Option(0, help="Which independent annotation run to export."),
    backend: Optional[str] = typer.Option(None, help="Annotation backend, when several were used."),
    model: Optional[str] = typer.Option(None, help="Annotation model, when several were used."),
    audio: Optional[str] = typer.Option(None, help="vocals (separated) or mix (original audio) (default: setting export.audio)."),
    sample_rate: Optional[int] = typer.Option(None, help="WAV sample rate (default: setting export.sample_rate)."),
    seed: Optional[int] = typer.Option(None, help="Split seed (default: setting export.seed)."),
    splits: Optional[str] = typer.Option(None, help="train,validation,test fractions by source video, e.g. 0.8,0.1,0.1."),
    shard_size: Optional[float] = typer.Option(None, "--shard-size", help="webdataset: shard size in MB."),
    lab_template: Optional[str] = typer.Option(None, help="lab: transcript template (default the bare '{text}'; "
                                                "'{fish_emotion} {text}' adds Fish-Speech emotion tags)."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty OUT."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what each filter keeps; write nothing."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a setting: section.key=value."),
):
    """Export reviewed clips as a dataset (WAV + labels, README.md card, SHA256SUMS)."""

    proj = open_project(project, set_)
    filters = ExportFilters(
        accepted_only=accepted_only, min_rationality=min_rationality, emotions=_csv(emotions),
        min_intensity=min_intensity, min_duration=min_duration, max_duration=max_duration, min_snr=min_snr,
        languages=_csv(language), min_asd=min_asd, max_per_video=max_per_video, speakers=_csv(speaker), label_set=label_set,
        run_index=run_index, backend=backend, model=model)
    if dry_run:
        from ..export.dataset import preview_export

        try:
            pv = preview_export(proj, filters)
        except ExportError as e:
            raise fail(str(e))
        for name, left in pv["steps"]:
            typer.echo(f"{left:>7} clips after {name}")
        typer.echo(f"would export {pv['clips']} clips ({pv['hours']:.3f} h) from {pv['videos']} videos: "
                   + ", ".join(f"{e} {n}" for e, n in pv["per_emotion"].items()))
        return
    split_values = None
    if splits is not None:
        try:
            split_values = [float(x) for x in _csv(splits)]
        except ValueError:
            raise fail(f"--splits {splits!r}: give train,validation,test fractions, e.g. 0.8,0.1,0.1")
    progress = None
    bar = None
    if sys.stderr.isatty():
        from rich.progress import Progress

        bar = Progress(transient=True)
        task = bar.add_task("exporting", total=None)
        progress = lambda done, total, _msg: bar.update(task, completed=done, total=total)  # noqa: E731
        bar.start()
    try:
        result = export_dataset(proj, out, fmt, filters, force=force, progress=progress, audio=audio,
                                sample_rate=sample_rate, seed=seed, splits=split_values,
                                shard_size_mb=shard_size, lab_template=lab_template)
    except ExportError as e:
        raise fail(str(e))
    except OSError as e:
        raise fail(f"{out}: cannot write the dataset ({e.strerror or e}); check free space and permissions", 1)
    finally:
        if bar is not None:
            bar.stop()
    for line in result.skipped:
        typer.echo(f"left out: {line}", err=True)
    typer.echo(result.summary())



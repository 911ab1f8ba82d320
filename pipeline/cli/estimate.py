"""`mikupal estimate PROJECT`: tokens and dollars of the emotion stage before a run."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .common import fail, open_project


def _usd(v: float) -> str:
    return f"${v:,.2f}" if v >= 1 else f"${v:.4f}"


def estimate_command(
    project: Path = typer.Argument(..., help="Project folder."),
    model: Optional[str] = typer.Option(None, "--model", help="Emotion model name (default: the project's)."),
    runs: Optional[int] = typer.Option(None, "--runs", min=1, help="Independent answers per segment."),
    batch: bool = typer.Option(False, "--batch", help="Price at the Gemini Batch API rate (half price)."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="Override a setting: section.key=value (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """What the emotion stage would cost now: pending answers, tokens per modality, dollars."""
    from ..emotion.estimate import estimate_project
    from ..emotion.prices import PriceError

    over = [f'emotion.model="{model}"'] if model else []
    over += [f"emotion.runs={int(runs)}"] if runs is not None else []
    over += ["emotion.batch=true"] if batch is True else []
    p = open_project(project, over + list(sets or []))
    try:
        est = estimate_project(p)
    except PriceError as e:
        raise fail(str(e))
    if as_json:
        typer.echo(json.dumps(est.to_dict(), indent=2))
        return
    tin = sum(est.input_tokens.values())
    per = ", ".join(f"{k} {v:,}" for k, v in est.input_tokens.items())
    typer.echo(f"{est.items} answer(s) to ask for ({est.source}), {est.speech_s / 3600:.2f} h of speech, model {est.model}")
    typer.echo(f"tokens: {tin:,} in ({per}), {est.output_tokens:,} out (of which {est.thought_tokens:,} thinking)")
    if est.usd is None:
        typer.echo("cost: unknown (the model has no price: add it to PROJECT/prices.json)")
    else:
        rate = "Batch API rate" if est.batch else "interactive rate"
        hour = f", ${est.usd_per_hour:.2f} per hour of speech" if est.usd_per_hour is not None else ""
        other = f"; interactive {_usd(est.usd_interactive)}" if est.batch else f"; with --batch {_usd(est.usd_batch)}"
        typer.echo(f"cost: {_usd(est.usd)} at the {rate}{hour}{other} (prices of {est.prices_as_of})")
    typer.echo("assumes: " + "; ".join(est.assumptions))

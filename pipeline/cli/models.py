"""`mikupal models list|download|check` and `mikupal doctor`."""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .. import __version__, models
from ..stage import ModelMissingError

models_app = typer.Typer(help="List, download and check model weights.", no_args_is_help=True)


def _cfg(project: Optional[Path]):
    from .. import config
    from ..project import Project

    return Project.open(project).config if project else config.defaults()


@models_app.command("list")
def list_cmd(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    project: Optional[Path] = typer.Option(None, "--project", "-p", help="Use this project's [models] dir."),
):
    """Every model the pipeline can use, with size, source, licence and status."""
    root = models.models_dir(_cfg(project))
    rows = []
    for m in models.REGISTRY.values():
        rows.append({"id": m.id, "stage": m.stage, "size_mb": round(m.size_mb, 1), "licence": m.licence,
                     "source": m.source, "status": models.model_status(m, root), "description": m.description,
                     "files": [{"path": f.relpath, "url": f.url, "sha256": f.sha256 or f.sha256_prefix} for f in m.files]})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table("model", "stage", "MB", "licence", "status", "description", title=f"Models in {root}")
    for r in rows:
        t.add_row(r["id"], r["stage"], f"{r['size_mb']:.0f}", r["licence"], r["status"], r["description"])
    Console().print(t)


@models_app.command("download")
def download_cmd(
    ids: List[str] = typer.Argument(..., help="Model ids from `mikupal models list`."),
    project: Optional[Path] = typer.Option(None, "--project", "-p", help="Download into this project's [models] dir."),
):
    """Download models into the models dir with progress bars and checksum checks."""
    cfg = _cfg(project)
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    failed = 0
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn()) as prog:
        tasks: dict[str, int] = {}

        def cb(name, done, total):
            if name not in tasks:
                tasks[name] = prog.add_task(name, total=total)
            prog.update(tasks[name], completed=done, total=total)

        for mid in ids:
            try:
                path = models.ensure(mid, cfg, allow_download=True, progress=cb)
                prog.console.print(f"{mid}: {path}")
            except ModelMissingError as e:
                prog.console.print(f"mikupal: {e}", style="red", markup=False, soft_wrap=True)  # one line
                failed += 1
    raise typer.Exit(1 if failed else 0)


@models_app.command("check")
def check_cmd(project: Optional[Path] = typer.Argument(None, help="Project whose settings decide what is needed.")):
    """Report which models the current configuration needs and whether they are present."""
    cfg = _cfg(project)
    root = models.models_dir(cfg)
    missing = 0
    for mid in models.required_models(cfg):
        m = models.REGISTRY.get(mid)
        if m is None:
            typer.echo(f"? {mid}: not in the registry; make sure its files are in {root}")
            continue
        bad = [f for f in m.files if models.file_status(f, root) != "present"]
        if bad:
            missing += 1
            typer.echo(f"MISSING {mid}: {models.missing_message(m, root, bad)}")
        else:
            typer.echo(f"ok {mid}: {root / m.files[0].relpath}")
    if not models.required_models(cfg):
        typer.echo("the current settings need no model files")
    raise typer.Exit(1 if missing else 0)


# PySide6 releases with a known bug that breaks the app (see mikupal_gui/qt_compat.py, which
# probes for it at GUI start; doctor must not import Qt, so it goes by the version here).
BAD_PYSIDE6 = {"6.12.0": "a reference-count bug aborts the app after a while (\"Fatal Python error: none_dealloc\")"}


def qt_binding_line() -> str:
    """One line on the Qt binding the GUI needs, read from package metadata (imports no Qt)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("PySide6")
    except PackageNotFoundError:
        try:
            v = version("PySide6-Essentials")
        except PackageNotFoundError:
            return "Qt binding: PySide6 not installed (the GUI needs it: pip install \"PySide6!=6.12.0\")"
    why = BAD_PYSIDE6.get(v)
    if why:
        return f"Qt binding: PySide6 {v} is known bad: {why}; install another release: pip install \"PySide6!={v}\""
    return f"Qt binding: PySide6 {v}"


def vlc_line() -> str:
    """Whether libVLC starts, probed in a child process: the player is the app's, and a broken
    libVLC install must not take this process down."""
    code = ("import vlc, sys; i = vlc.Instance('--quiet');"
            " print(vlc.libvlc_get_version().decode() if i else '')")
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"VLC: could not be checked ({type(e).__name__})"
    if r.returncode == 0 and r.stdout.strip():
        return f"VLC: {r.stdout.strip()}"
    if r.returncode == 0:
        return "VLC: libvlc found but failed to start"
    why = (r.stderr.strip().splitlines() or ["unknown error"])[-1][:120]
    return f"VLC: not found ({why}); install libvlc (apt-get install libvlc5 vlc-plugin-base)"


def doctor():
    """What is installed: GPU, VLC, ffmpeg, models, API key present (never the key)."""
    lines = [f"mikupal {__version__}"]
    try:
        import torch

        cuda = torch.cuda.is_available()
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
        lines.append(f"torch {torch.__version__}; GPU: {', '.join(gpus) if gpus else 'none (CPU mode)'}")
    except Exception as e:  # noqa: BLE001 - report, never crash
        lines.append(f"torch: not importable ({type(e).__name__})")
    lines.append(vlc_line())
    lines.append(f"ffmpeg: {shutil.which('ffmpeg') or 'not found (apt-get install ffmpeg)'}")
    lines.append(f"espeak-ng: {shutil.which('espeak-ng') or 'not found (needed only for the demo clip)'}")
    try:
        lines.append(f"PyAV {importlib.metadata.version('av')}")
    except importlib.metadata.PackageNotFoundError:
        lines.append("PyAV: not installed")
    root = models.models_dir()
    lines.append(f"models dir: {root}")
    for m in models.REGISTRY.values():
        lines.append(f"  {models.model_status(m, root):12s} {m.id}")
    lines.append(qt_binding_line())
    key = bool(os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY"))
    lines.append(f"Gemini API key: {'present' if key else 'not set (GEMINI_API_KEY)'}")
    lines.append(f"OpenAI-compatible server: {os.environ.get('MIKUPAL_OPENAI_BASE_URL') or 'not set (MIKUPAL_OPENAI_BASE_URL)'}")
    for line in lines:
        typer.echo(line)

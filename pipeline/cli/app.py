"""The `mikupal` Typer app: the root (bare `mikupal` opens the desktop app), registration of
every command module, and `main()`.

The desktop app is wired in from its own side (`mikupal_gui.launcher` calls
:func:`set_gui_launcher`), so this package never imports `mikupal_gui`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from .. import __version__
from .common import USER_ERRORS

app = typer.Typer(
    name="mikupal",
    help="MIKU-PAL: turn unlabeled video into an emotion-labeled speech dataset, and review every label.",
    no_args_is_help=False,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

def _version(value: bool):
    if value:
        typer.echo(f"mikupal {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
):
    """Without a command, open the desktop app."""
    if ctx.invoked_subcommand is None:
        raise typer.Exit(launch_gui(None))


_gui_launcher: Optional[Callable[[Optional[Path]], int]] = None


def set_gui_launcher(launch: Callable[[Optional[Path]], int]) -> None:
    """Called by the desktop app's entry point: how `mikupal gui` (and bare `mikupal`) start it."""
    global _gui_launcher
    _gui_launcher = launch


def launch_gui(project: Optional[Path]) -> int:
    from .common import fail

    if _gui_launcher is None:
        raise fail("the desktop app is not part of this entry point; start it with the `mikupal` command", 1)
    return int(_gui_launcher(project) or 0)


@app.command()
def gui(project: Optional[Path] = typer.Argument(None, help="Project folder to open (default: the last one).")):
    """Open the desktop app."""
    raise typer.Exit(launch_gui(project))


# --- commands (one registration line each; the functions live in the modules beside this one) ---
from . import analysis, core, estimate, export, models, project, run  # noqa: E402

for _name, _fn in (("init", core.init), ("add", core.add), ("status", core.status), ("demo", core.demo),
                   ("run", run.run_command), ("estimate", estimate.estimate_command), ("eval", analysis.eval_command),
                   ("review-stats", analysis.review_stats_command), ("map", analysis.map_command),
                   ("report", analysis.report_command), ("export", export.export_command),
                   ("doctor", models.doctor),
                   ("repair", project.repair_command), ("backup", project.backup_command), ("restore", project.restore_command)):
    app.command(_name)(_fn)
app.add_typer(models.models_app, name="models")


def main() -> None:
    try:
        app()
    except USER_ERRORS as e:
        typer.echo(f"mikupal: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

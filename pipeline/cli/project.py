"""`mikupal repair`, `backup` and `restore`: keeping project.db safe.

repair and restore replace the data, so they take the project's run lock (no run may be
writing); backup is an online copy and works while the app or a run is using the project.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer

from .common import fail, open_project
from ..config import CONFIG_NAME


def _root(project: Path) -> Path:
    if not (project / CONFIG_NAME).exists():
        raise fail(f"{project}: not a MIKU-PAL project (no {CONFIG_NAME})")
    return project.resolve()


def _locked(root: Path, command: str):
    from ..project_lock import ProjectLocked, RunLock

    lock = RunLock(root, command)
    try:
        return lock.acquire()
    except ProjectLocked as e:
        raise fail(str(e))


def _counts(c: dict) -> str:
    return ", ".join(f"{c.get(t, 0)} {t}" for t in ("videos", "segments", "annotations", "reviews"))


def repair_command(
    project: Path = typer.Argument(..., help="Project folder whose project.db is damaged."),
    from_backup: bool = typer.Option(False, "--from-backup", help="Skip recovery; use the newest good backup."),
):
    """Recover a damaged project.db into a fresh file (SQLite recovery, or the newest good
    backup, whichever keeps more rows); the damaged file is kept in backups/damaged-*/."""
    from .. import backup
    from ..store import DatabaseDamaged, check_file

    from ..project_lock import open_elsewhere

    root = _root(project)
    lock = _locked(root, "mikupal repair")
    try:
        if open_elsewhere(root):
            raise fail(f"{root} is open in the app; close it there first (repair replaces project.db)")
        if not from_backup:
            try:
                check_file(root / backup.DB_NAME)
                typer.echo(f"{root / backup.DB_NAME} is healthy; nothing to repair "
                           f"(to go back to a backup: mikupal restore {shlex.quote(str(project))})")
                return
            except DatabaseDamaged:
                pass
        try:
            rep = backup.repair(root, from_backup=from_backup)
        except backup.BackupError as e:
            raise fail(str(e), 1)
    finally:
        lock.release()
    how = f"recovered with {rep.method}" if rep.source == "recovered" else f"restored from backup {rep.method}"
    typer.echo(f"repaired {root / backup.DB_NAME}: {how}: {_counts(rep.counts)}")
    other = [k for k in rep.candidates if k != rep.source]
    for k in other:
        typer.echo(f"  (the {k} candidate had {_counts(rep.candidates[k])})")
    for n in rep.notes:
        typer.echo(f"  note: {n}")
    typer.echo(f"the damaged file is kept in {rep.damaged_kept}")


def backup_command(
    project: Path = typer.Argument(..., help="Project folder."),
    out: Optional[Path] = typer.Argument(None, help="Where to write the copy (default: backups/manual-STAMP.db)."),
):
    """An online copy of project.db (safe while the app or a run is using it)."""
    from .. import backup

    p = open_project(project)
    try:
        path = backup.manual_backup(p.root, out)
    except backup.BackupError as e:
        raise fail(str(e))
    typer.echo(f"backed up {p.db_path} to {path}")


def restore_command(
    project: Path = typer.Argument(..., help="Project folder."),
    source: Optional[Path] = typer.Argument(None, help="Backup file (default: the newest good one in backups/)."),
    list_: bool = typer.Option(False, "--list", help="List the project's backups and exit."),
):
    """Put a backup back into project.db; the state it replaces is kept as a backup too."""
    from .. import backup

    root = _root(project)
    if list_:
        items = backup.list_backups(root)
        if not items:
            typer.echo(f"no backups in {backup.backups_dir(root)}")
        for b in items:
            good = "ok" if backup.is_good(b.path) else "DAMAGED"
            typer.echo(f"{b.path.name:<48} {b.kind:<15} {b.size / 1e6:8.2f} MB  {good}")
        return
    lock = _locked(root, "mikupal restore")
    try:
        used, kept = backup.restore(root, source)
    except backup.BackupError as e:
        raise fail(str(e))
    finally:
        lock.release()
    typer.echo(f"restored {root / backup.DB_NAME} from {used}" + (f"; the replaced state is in {kept}" if kept else ""))

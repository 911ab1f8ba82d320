"""What every command shares: the one-line error, opening a project, the user-error types."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..config import ConfigError
from ..media import MediaError
from ..project import Project, ProjectError
from ..store import NewerSchemaError

USER_ERRORS = (ProjectError, ConfigError, MediaError, FileNotFoundError, NewerSchemaError)


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print one line to stderr and return the Exit to raise."""
    typer.echo(f"mikupal: {message}", err=True)
    return typer.Exit(code)


def open_project(path: Path, overrides: Optional[List[str]] = None) -> Project:
    try:
        return Project.open(path, overrides or [])
    except (ProjectError, ConfigError) as e:
        raise fail(str(e))

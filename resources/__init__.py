"""MIKU-PAL's data files, shipped inside the installed package as ``mikupal.resources``.

prompts/ (the annotator's prompt templates), taxonomy/ (label sets), icons/, mikupal.desktop,
and price tables. Always found through :func:`path`, never relative to a source checkout, so a
wheel install, an editable install and the frozen app read the same files.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def path(*parts: str) -> Path:
    """The file or folder ``parts`` below the resources (a real path: the package is unzipped)."""
    return Path(str(files(__name__).joinpath(*parts)))

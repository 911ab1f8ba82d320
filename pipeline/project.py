"""A project folder: mikupal.toml + project.db + cache/ + exports/ + logs/."""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config as config_mod
from . import store
from .fileutil import write_text_atomic

DB_NAME = "project.db"


class ProjectError(Exception):
    """A user-facing problem with the project folder (one clear line)."""


class DamagedProjectError(ProjectError):
    """project.db failed its open-time check; nothing was written to it."""


@dataclass
class Project:
    root: Path
    config: dict[str, dict[str, Any]] = field(default_factory=config_mod.defaults)

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def stage_cache(self, stage: str) -> Path:
        p = self.cache_dir / stage
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def models_dir(self) -> Path:
        return models_dir(self.config)

    def db(self):
        return store.connect(self.db_path)

    @classmethod
    def create(cls, root: str | Path, name: str = "") -> "Project":
        root = Path(root)
        if (root / config_mod.CONFIG_NAME).exists():
            raise ProjectError(f"{root}: already a MIKU-PAL project (has {config_mod.CONFIG_NAME}); use it as is")
        if root.exists() and not root.is_dir():
            raise ProjectError(f"{root}: exists and is not a folder; choose another path")
        root.mkdir(parents=True, exist_ok=True)
        text = config_mod.template({"project": {"name": name}} if name else None)
        write_text_atomic(root / config_mod.CONFIG_NAME, text)
        for sub in ("cache", "exports", "logs"):
            (root / sub).mkdir(exist_ok=True)
        store.connect(root / DB_NAME).conn.close()
        return cls.open(root)

    @classmethod
    def open(cls, root: str | Path, overrides: list[str] | tuple[str, ...] = (), *, check: bool = True) -> "Project":
        """The project at `root` with its settings; `check` runs the damage check on project.db
        (skip it only where this process has just checked, e.g. the app re-reading settings)."""
        root = Path(root)
        if not (root / config_mod.CONFIG_NAME).exists():
            raise ProjectError(f"{root}: not a MIKU-PAL project (no {config_mod.CONFIG_NAME}); create it with: mikupal init {shlex.quote(str(root))}")
        cfg = config_mod.load(root, overrides)
        if check:
            check_database(root)
        return cls(root=root.resolve(), config=cfg)


def check_database(root: str | Path) -> None:
    """Raise DamagedProjectError (one line naming project.db and the fix) when the file is damaged."""
    path = Path(root) / DB_NAME
    try:
        store.check_file(path)
    except store.DatabaseDamaged as e:
        raise DamagedProjectError(
            f"{path} is damaged ({e}); nothing was written to it. Recover it with: "
            f"mikupal repair {shlex.quote(str(root))}") from None


def models_dir_and_origin(cfg: dict | None = None) -> tuple[Path, str]:
    """The models dir and why it is there: MIKUPAL_MODELS_DIR, else [models] dir, else the user cache."""
    env = os.environ.get("MIKUPAL_MODELS_DIR")
    if env:
        return Path(env).expanduser(), "set by $MIKUPAL_MODELS_DIR"
    if cfg and cfg.get("models", {}).get("dir"):
        return Path(cfg["models"]["dir"]).expanduser(), "the project's [models] dir"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mikupal" / "models", "the default folder (set [models] dir or $MIKUPAL_MODELS_DIR to move it)"


def models_dir(cfg: dict | None = None) -> Path:
    return models_dir_and_origin(cfg)[0]

"""`mikupal demo`: a sample project built offline from the synthetic demo clip."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .demo import make_demo_clip
from .ingest import add_videos
from .project import Project

# Offline settings: subtitles instead of Whisper, no separation model, weight-free
# detectors and the baseline annotator, so the demo needs no downloads and no API key.
DEMO_SETTINGS = {
    ("separate", "model"): '"none"',
    ("asr", "source"): '"subtitles"',
    ("faces", "detector"): '"haar"',
    ("asd", "model"): '"sync"',
    ("emotion", "backend"): '"baseline"',
    ("emotion", "model"): '"baseline-v1"',
}


def _apply_settings(cfg_path: Path, settings: dict[tuple[str, str], str]) -> None:
    """Rewrite the values in the commented template, keeping every comment."""
    lines = cfg_path.read_text(encoding="utf-8").splitlines()
    section = None
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            section = s[1:-1]
        elif "=" in s and not s.startswith("#"):
            key = s.split("=", 1)[0].strip()
            if (section, key) in settings:
                lines[i] = f"{key} = {settings[(section, key)]}"
    cfg_path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def build_demo_project(root: str | Path, on_line: Callable[[str], None] = print) -> Project:
    root = Path(root)
    if (root / "mikupal.toml").exists():
        project = Project.open(root)
        on_line(f"using existing demo project {project.root}")
    else:
        project = Project.create(root, name="MIKU-PAL demo")
        _apply_settings(project.root / "mikupal.toml", DEMO_SETTINGS)
        project = Project.open(project.root)
        on_line(f"created demo project {project.root}")
    media = project.root / "media"
    clip_path = media / "demo.mp4"
    if not clip_path.exists():
        make_demo_clip(clip_path, speaker="left")
        on_line(f"made demo clip {clip_path} (+ {clip_path.with_suffix('.srt').name})")
    add_videos(project.db(), [clip_path], on_line=on_line)
    return project

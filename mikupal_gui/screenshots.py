"""Grab the review workspace (or any widget) to PNG, for README images and visual checks.

The shell's take_screenshots script calls these on its own ReviewWorkspace; run this module
to shoot a standalone workspace on a project:

    QT_QPA_PLATFORM=offscreen python -m mikupal_gui.screenshots PROJECT_DIR OUT.png [--rater NAME]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication, QWidget


def settle(seconds: float = 0.3) -> None:
    """Let queued paints and the prefetch land before grabbing."""
    app = QApplication.instance()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def grab(widget: QWidget, path: str | Path | None = None) -> QImage:
    """The widget as an image (what the user sees), saved to `path` when given."""
    img = widget.grab().toImage()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if not img.save(str(path)):
            raise OSError(f"{path}: cannot write the screenshot; check the folder")
    return img


def grab_review(workspace, path: str | Path, at: float | None = None, play_s: float = 0.0) -> QImage:
    """Shoot a ReviewWorkspace showing its current item: paused at `at` seconds (default: the
    middle of the segment), or after playing `play_s` seconds."""
    player = workspace.player
    if player.path is not None:
        if play_s > 0:
            player.play()
            settle(play_s)
        else:
            s0, s1 = player.segment
            player.seek((s0 + s1) / 2 if at is None else at)
    settle(0.2)
    return grab(workspace, path)


def grab_parts(workspace, out_dir: str | Path, prefix: str = "review") -> list[Path]:
    """The player, the radar and the label panel as separate PNGs."""
    out = Path(out_dir)
    parts = {"player": workspace.player, "radar": workspace.radar, "labels": workspace.labels,
             "waveform": workspace.waveform}
    written = []
    for name, w in parts.items():
        p = out / f"{prefix}_{name}.png"
        grab(w, p)
        written.append(p)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("project", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--rater", default="screenshot")
    ap.add_argument("--size", default="1280x760")
    a = ap.parse_args(argv)
    app = QApplication.instance() or QApplication([])
    from .review import ReviewWorkspace
    ws = ReviewWorkspace(a.project / "project.db", a.project)
    w, h = (int(x) for x in a.size.split("x"))
    ws.resize(w, h)
    ws.show()
    ws.set_rater(a.rater)
    settle(0.3)
    grab_review(ws, a.out)
    print(f"wrote {a.out}")
    ws.shutdown()
    del app
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

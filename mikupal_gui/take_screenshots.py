"""Write PNG screenshots of the main views (used in the README).

    xvfb-run -a python -m mikupal_gui.take_screenshots OUT_DIR [--project DIR] [--raters N]

Builds (or reuses) the offline demo project, runs the pipeline on it from the run panel
(as a user would press Start), lets demo raters review a few items with the review
keys, and saves: project chooser, data tables, run panel, review workspace, dashboard,
settings, export and models dialogs. QSettings go to a temporary file, so the user's own window
layout and recent list are untouched. Works offscreen too (QT_QPA_PLATFORM=offscreen).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

WIDTH, HEIGHT = 1440, 900


def _wait(app, cond, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        app.processEvents()
        if cond():
            return True
        time.sleep(0.02)
    app.processEvents()
    return cond()


def _settle(app, seconds: float = 0.3) -> None:
    _wait(app, lambda: False, seconds)


def _save(widget, out: Path, name: str, written: list[Path]) -> None:
    path = out / name
    widget.grab().save(str(path))
    written.append(path)
    print(f"wrote {path}")


def _review_some(app, win, raters: list[str], per_rater: int) -> int:
    """Demo raters go through their unreviewed queue: accept, with every fourth rejected
    (the slots the A and R keys trigger)."""
    review = win.review
    if review is None:
        return 0
    done = 0
    saved: list = []
    review.verdictSaved.connect(lambda aid, v: saved.append((aid, v)))
    win.tabs.setCurrentIndex(1)
    for k, name in enumerate(raters):
        win.set_rater(name)
        review.set_queue("unreviewed")
        _settle(app, 0.5)
        for i in range(per_rater):
            before = len(saved)
            review.verdict("reject" if (i + k) % 4 == 3 else "accept")
            if not _wait(app, lambda: len(saved) > before, 5):
                break
            done += 1
            _settle(app, 0.2)
    return done


def take(out: Path, project_dir: Path | None = None, raters: int = 2, per_rater: int = 4) -> list[Path]:
    from PySide6.QtCore import QSettings, Qt

    from mikupal.demo_project import build_demo_project

    from .app import make_app

    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="mikupal-shots-"))
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp / "settings"))
    os.environ.setdefault("MIKUPAL_AUDIO", "none")
    app = make_app()
    root = project_dir or (tmp / "mikupal-demo")
    project = build_demo_project(root)
    settings = QSettings()
    settings.setValue("review/rater", "demo-rater-1")

    from .dialogs import ExportDialog, ProjectDialog, SettingsDialog, add_recent
    from .main_window import MainWindow

    written: list[Path] = []
    add_recent(project.root, settings)
    dlg = ProjectDialog()
    dlg.resize(640, 420)
    dlg.show()
    _settle(app)
    _save(dlg, out, "01-open-project.png", written)
    dlg.close()

    win = MainWindow(settings)
    win.resize(WIDTH, HEIGHT)
    win.show()
    win.open_project(project.root)
    _settle(app)

    # Run the pipeline from the run panel, exactly as the Start button does.
    panel = win.run_panel
    finished: list[str] = []
    panel.runFinished.connect(finished.append)
    if panel.start():
        _wait(app, lambda: bool(panel.events_seen), 60)
        _settle(app, 1.0)
        _save(win, out, "02-run-in-progress.png", written)
        if not _wait(app, lambda: bool(finished), 900):
            print("the demo run did not finish within 15 minutes; screenshots show it unfinished", file=sys.stderr)
    _settle(app, 0.5)
    _save(win, out, "03-run-finished.png", written)

    n = _review_some(app, win, [f"demo-rater-{i + 1}" for i in range(raters)], per_rater)
    print(f"demo raters gave {n} verdicts")
    if win.review is not None:
        win.run_dock.hide()  # reviewers work without it (View > Run pipeline brings it back)
        win.tabs.setCurrentIndex(1)
        seg = win.segments_model.segment_id(0) if win.segments_model else None
        if seg is not None:
            win.open_segment(seg)
        _settle(app, 1.5)
        _save(win, out, "04-review.png", written)
        win.run_dock.show()
        win.resizeDocks([win.run_dock], [440], Qt.Orientation.Horizontal)

    win.tabs.setCurrentIndex(0)
    win.refresh()
    _wait(app, lambda: not win.segments_model.busy(), 30)
    _settle(app, 0.5)
    _save(win, out, "05-data.png", written)

    win.run_dock.hide()
    win.tabs.setCurrentIndex(2)
    _wait(app, lambda: win.dashboard.data is not None and not win.dashboard.busy(), 300)
    _settle(app, 0.5)
    _save(win, out, "06-dashboard.png", written)
    win.run_dock.show()

    sd = SettingsDialog(win)
    sd.show()
    _settle(app)
    _save(sd, out, "07-settings.png", written)
    sd.close()

    from .models import distinct_values

    ed = ExportDialog(project.root, distinct_values(win.segments_model._conn, "emotion"), win)
    ed.show()
    _settle(app, 1.0)
    _save(ed, out, "08-export.png", written)
    ed.close()

    md = win.open_models()  # Tools > Models…: the registry against the project's models dir
    _settle(app, 0.5)
    _save(md, out, "09-models.png", written)
    md.close()

    win.close()
    app.processEvents()
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mikupal_gui.take_screenshots", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder for the PNG files")
    ap.add_argument("--project", type=Path, default=None,
                    help="demo project folder to build or reuse (default: a temporary folder)")
    ap.add_argument("--raters", type=int, default=2, help="demo raters who review a few items (default 2)")
    ap.add_argument("--per-rater", type=int, default=4, help="verdicts per demo rater (default 4)")
    args = ap.parse_args(argv)
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") \
            and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    written = take(args.out, args.project, args.raters, args.per_rater)
    print(f"{len(written)} screenshots in {args.out}")
    return 0 if written else 1


if __name__ == "__main__":
    raise SystemExit(main())

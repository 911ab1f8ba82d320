"""Application setup and the entry point used by `mikupal gui [PROJECT]` and bare `mikupal`."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QSettings
from PySide6.QtWidgets import QApplication

from mikupal.resources import path as resource_path

ORG = "MIKU-PAL"
APP = "MIKU-PAL"
ICON = resource_path("icons", "mikupal-256.png")


def make_app(argv: list[str] | None = None) -> QApplication:
    """The QApplication (reused when one exists, e.g. under pytest-qt)."""
    QCoreApplication.setOrganizationName(ORG)
    QCoreApplication.setApplicationName(APP)
    app = QApplication.instance()
    if app is None:
        app = QApplication(argv if argv is not None else [sys.argv[0]])
    if ICON.exists():
        from PySide6.QtGui import QIcon

        app.setWindowIcon(QIcon(str(ICON)))
    if app.style().name().lower() not in ("fusion", "macos", "windowsvista", "windows11"):
        app.setStyle("Fusion")
    return app


def pick_project(project: str | None, settings: QSettings) -> Path | None:
    """The project to open: the argument, else the last one (if it still exists), else ask."""
    from .dialogs import ProjectDialog

    if project:
        return Path(project)
    last = settings.value("project/last")
    if last and (Path(last) / "mikupal.toml").exists():
        return Path(last)
    dlg = ProjectDialog()
    return dlg.chosen if dlg.exec() and dlg.chosen else None


def build_window(project: str | Path | None, settings: QSettings | None = None):
    """A shown MainWindow with `project` open (or none); used by main() and the tests."""
    from .main_window import MainWindow

    win = MainWindow(settings)
    if project is not None:
        win.open_project(project)
    win.show()
    return win


def no_display_reason() -> str | None:
    """Why Qt could not open a window here (Linux without X/Wayland), else None.

    Qt itself would abort the process with a core dump; one line is kinder."""
    if not sys.platform.startswith("linux"):
        return None
    if any(os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")):
        return None
    return ("no display: DISPLAY and WAYLAND_DISPLAY are unset; start the app in a desktop session "
            "(or under xvfb-run), or use the headless commands (mikupal run/status/export)")


def main(project: str | None = None, argv: list[str] | None = None) -> int:
    """Run the desktop app; returns the process exit code (0 = closed normally)."""
    why = no_display_reason()
    if why:
        print(f"mikupal gui: {why}", file=sys.stderr)
        return 1
    app = make_app(argv)
    settings = QSettings()
    root = pick_project(project, settings)
    if root is None:
        return 0  # the user closed the project chooser
    from .main_window import MainWindow

    win = MainWindow(settings)
    win.show()
    if root is not None and not win.open_project(root):
        win.choose_project()
    return int(app.exec())


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else None))

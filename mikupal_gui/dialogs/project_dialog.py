"""Open or create a project; the recent list lives in QSettings (per user, not per project)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QDialog, QDialogButtonBox, QFileDialog, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
    QMessageBox, QPushButton, QVBoxLayout,
)

RECENT_KEY = "projects/recent"
MAX_RECENT = 10


def recent_projects(settings: QSettings | None = None) -> list[str]:
    """Recent project folders, newest first, that still look like projects."""
    s = settings or QSettings()
    items = s.value(RECENT_KEY, []) or []
    if isinstance(items, str):
        items = [items]
    return [p for p in items if (Path(p) / "mikupal.toml").exists()]


def add_recent(path: str | Path, settings: QSettings | None = None) -> None:
    s = settings or QSettings()
    p = str(Path(path).resolve())
    items = [x for x in (s.value(RECENT_KEY, []) or []) if x != p]
    if isinstance(items, str):
        items = [items]
    s.setValue(RECENT_KEY, [p] + items[: MAX_RECENT - 1])


class ProjectDialog(QDialog):
    """Pick a recent project, open a folder, create a new one or build the demo project.

    After exec(), `chosen` is the project folder (created when needed)."""

    def __init__(self, parent=None, message: str = ""):
        super().__init__(parent)
        self.setWindowTitle("MIKU-PAL: open a project")
        self.resize(560, 380)
        self.chosen: Path | None = None
        lay = QVBoxLayout(self)
        title = QLabel("<h2>MIKU-PAL</h2>Turn videos into an emotion-labelled speech dataset and review every label.")
        title.setWordWrap(True)
        lay.addWidget(title)
        if message:
            warn = QLabel(message)
            warn.setWordWrap(True)
            warn.setStyleSheet("color: #b3261e;")
            lay.addWidget(warn)
        lay.addWidget(QLabel("Recent projects:"))
        self.recent = QListWidget()
        for p in recent_projects():
            it = QListWidgetItem(f"{Path(p).name}    —    {p}")
            it.setData(Qt.ItemDataRole.UserRole, p)
            self.recent.addItem(it)
        if not self.recent.count():
            it = QListWidgetItem("(none yet: create a project or try the demo)")
            it.setFlags(Qt.ItemFlag.NoItemFlags)
            self.recent.addItem(it)
        else:
            self.recent.setCurrentRow(0)
        self.recent.itemDoubleClicked.connect(lambda _it: self._open_selected())
        lay.addWidget(self.recent, 1)

        row = QHBoxLayout()
        self.open_btn = QPushButton("Open folder…")
        self.new_btn = QPushButton("New project…")
        self.demo_btn = QPushButton("Demo project")
        self.demo_btn.setToolTip("Build a small sample project offline (synthetic clip, baseline labels)")
        self.open_btn.clicked.connect(self._browse_open)
        self.new_btn.clicked.connect(self._browse_new)
        self.demo_btn.clicked.connect(self._demo)
        for b in (self.open_btn, self.new_btn, self.demo_btn):
            row.addWidget(b)
        row.addStretch(1)
        lay.addLayout(row)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._open_selected)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)

    def _open_selected(self) -> None:
        it = self.recent.currentItem()
        p = it.data(Qt.ItemDataRole.UserRole) if it else None
        if p:
            self.choose(Path(p))

    def choose(self, path: Path) -> bool:
        """Accept `path` when it is a project; otherwise say why and stay open."""
        from mikupal.project import Project, ProjectError

        try:
            Project.open(path)
        except (ProjectError, ValueError) as e:
            QMessageBox.warning(self, "Not a project", str(e))
            return False
        self.chosen = Path(path).resolve()
        self.accept()
        return True

    def create(self, path: Path) -> bool:
        from mikupal.project import Project, ProjectError

        try:
            Project.create(path, name=Path(path).name)
        except (ProjectError, OSError) as e:
            QMessageBox.warning(self, "Cannot create the project", str(e))
            return False
        return self.choose(path)

    def _browse_open(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Open a MIKU-PAL project folder")
        if d:
            self.choose(Path(d))

    def _browse_new(self) -> None:
        d, _ = QFileDialog.getSaveFileName(self, "New project folder", str(Path.home() / "mikupal-project"))
        if d:
            self.create(Path(d))

    def _demo(self) -> None:
        from mikupal.demo_project import build_demo_project

        d = QFileDialog.getExistingDirectory(self, "Where to put the demo project (a 'mikupal-demo' folder is made)")
        if not d:
            return
        from ..workers import TaskThread

        root = Path(d) / "mikupal-demo"
        # Making the clip (espeak + encoding) takes a few seconds: keep the dialog painting.
        self._demo_thread = TaskThread(lambda progress: build_demo_project(root, on_line=lambda s: None), self)
        self._demo_thread.succeeded.connect(lambda _p: self.choose(root))
        self._demo_thread.failed.connect(lambda m: QMessageBox.warning(self, "Cannot build the demo", m))
        self._demo_thread.finished.connect(lambda: self._busy(False))
        self._busy(True)
        self._demo_thread.start()

    def _busy(self, on: bool) -> None:
        for b in (self.open_btn, self.new_btn, self.demo_btn):
            b.setEnabled(not on)
        self.demo_btn.setText("Building the demo…" if on else "Demo project")

    def done(self, r: int) -> None:
        t = getattr(self, "_demo_thread", None)
        if t is not None:
            t.wait()
        super().done(r)

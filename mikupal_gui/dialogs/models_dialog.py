"""Models: every registry model, its status in the project's models folder, and downloads.

The same registry, resolver and downloader as `mikupal models list|download|check`
(mikupal.models); downloads run on a TaskThread with a progress bar and Cancel, so the
window keeps painting. A failed download (offline, HTTP error, checksum mismatch) leaves
no partial file and says, in one line per model, which file to place where.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QBrush, QColor, QDesktopServices, QFont, QTextOption
from PySide6.QtWidgets import (
    QAbstractItemView, QDialog, QHBoxLayout, QHeaderView, QLabel, QPlainTextEdit, QProgressBar, QPushButton,
    QTableWidget, QTableWidgetItem, QVBoxLayout,
)

from mikupal import models
from mikupal.stage import ModelMissingError

from ..workers import TaskThread

COLUMNS = ("Model", "Stage", "Size", "Licence", "Status", "Needed", "Description")
COL = {name: i for i, name in enumerate(COLUMNS)}
RED, GREEN = QColor("#b3261e"), QColor("#1b7f3b")


def _size(mb: float) -> str:
    if mb <= 0:
        return "?"
    return f"{mb / 1000:.1f} GB" if mb >= 1000 else (f"{mb:.0f} MB" if mb >= 1 else "<1 MB")


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB"


class ModelsDialog(QDialog):
    """Lists mikupal.models.REGISTRY for a project (or the default settings) and downloads."""

    thread_done = Signal()  # a download finished, failed or was cancelled

    def __init__(self, project=None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.resize(1060, 600)
        self.thread: TaskThread | None = None
        self.downloaded: list[str] = []
        self.errors: list[tuple[str, str]] = []
        lay = QVBoxLayout(self)

        top = QHBoxLayout()
        self.dir_label = QLabel()
        self.dir_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.dir_label.setWordWrap(True)
        self.open_dir_btn = QPushButton("Open models folder")
        self.open_dir_btn.clicked.connect(self.open_folder)
        top.addWidget(self.dir_label, 1)
        top.addWidget(self.open_dir_btn, 0, Qt.AlignmentFlag.AlignTop)
        lay.addLayout(top)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        lay.addWidget(self.summary)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(24)
        self.table.horizontalHeader().setHighlightSections(False)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        lay.addWidget(self.table, 1)

        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.progress.setTextVisible(False)
        self.progress_text = QLabel("")
        self.progress_text.setVisible(False)
        lay.addWidget(self.progress_text)
        lay.addWidget(self.progress)
        # Paths and URLs are long: a read-only text box wraps them anywhere and lets them be copied.
        self.message = QPlainTextEdit()
        self.message.setReadOnly(True)
        self.message.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.message.setMaximumHeight(110)
        self.message.setVisible(False)
        lay.addWidget(self.message)

        buttons = QHBoxLayout()
        self.download_btn = QPushButton("Download selected")
        self.download_btn.setToolTip("Fetch the selected models' missing files from their upstream URLs")
        self.needed_btn = QPushButton("Download needed")
        self.needed_btn.setToolTip("Fetch every model the project's settings need that is not here yet")
        self.refresh_btn = QPushButton("Refresh")
        self.refresh_btn.setToolTip("Check the models folder again (after placing files by hand)")
        self.cancel_btn = QPushButton("Cancel download")
        self.cancel_btn.setVisible(False)
        self.close_btn = QPushButton("Close")
        self.download_btn.clicked.connect(lambda: self.download(self.selected_ids()))
        self.needed_btn.clicked.connect(lambda: self.download(self.needed_missing()))
        self.refresh_btn.clicked.connect(self.refresh)
        self.cancel_btn.clicked.connect(self.cancel)
        self.close_btn.clicked.connect(self.reject)
        for b in (self.download_btn, self.needed_btn, self.refresh_btn, self.cancel_btn):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.close_btn)
        lay.addLayout(buttons)

        self.set_project(project)

    # ---- state --------------------------------------------------------------------------
    def set_project(self, project) -> None:
        """Show status for this project's models dir and settings (None: the default settings)."""
        from mikupal import config

        self.project = project
        self.cfg = project.config if project is not None else config.defaults()
        self.refresh()

    @property
    def root(self) -> Path:
        return models.models_dir(self.cfg)

    def refresh(self) -> None:
        """Re-read every file's status (stat, plus sha256 for the pinned small files)."""
        root = self.root
        self.required = models.required_models(self.cfg)
        keep = set(self.selected_ids())
        self.status: dict[str, str] = {}
        self.table.setRowCount(len(models.REGISTRY))
        bold = QFont()
        bold.setBold(True)
        for row, m in enumerate(models.REGISTRY.values()):
            st = models.model_status(m, root)
            self.status[m.id] = st
            need = m.id in self.required
            files = "\n".join(f"{models.file_status(f, root):12s} {root / f.relpath}" for f in m.files)
            cells = (m.id, m.stage, _size(m.size_mb), m.licence, st, "yes" if need else "", m.description)
            for col, text in enumerate(cells):
                it = QTableWidgetItem(text)
                it.setData(Qt.ItemDataRole.UserRole, m.id)
                it.setToolTip(f"{m.description}\nsource: {m.source}\n\n{files}")
                if col == COL["Status"]:
                    if st == "present":
                        it.setForeground(QBrush(GREEN))
                    elif st == "bad checksum" or need:
                        it.setForeground(QBrush(RED))
                    if not all(f.url for f in m.files) and st != "present":
                        it.setText(f"{st} (by hand)")
                if col == COL["Needed"] and need:
                    it.setFont(bold)
                if col == COL["Size"]:
                    it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, it)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(COL["Description"], QHeaderView.ResizeMode.Stretch)
        self.select(keep)

        where = None
        if self.project is not None:
            where = self.project.config.get("project", {}).get("name") or self.project.root.name
        self.dir_label.setText(f"<b>Models folder:</b> {root}<br><span style='color: palette(mid);'>"
                               f"{models.models_dir_origin(self.cfg)}</span>")
        unknown = [mid for mid in self.required if mid not in models.REGISTRY]
        known = [mid for mid in self.required if mid in models.REGISTRY]
        missing = [mid for mid in known if self.status[mid] != "present"]
        whose = f"Project <b>{where}</b> needs" if where else "The default settings (no project open) need"
        if not self.required:
            text = f"{whose} no model files."
        else:
            text = (f"{whose} {len(known)} model{'s' if len(known) != 1 else ''}: "
                    f"{len(known) - len(missing)} present, "
                    + (f"<span style='color:{RED.name()}'>{len(missing)} missing</span>" if missing else "0 missing")
                    + ".")
        if unknown:
            text += f" Also needed, not in the registry (place by hand): {', '.join(unknown)}."
        self.summary.setText(text)
        self._update_buttons()

    def selected_ids(self) -> list[str]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [self.table.item(r, 0).text() for r in rows if self.table.item(r, 0) is not None]

    def select(self, ids) -> None:
        ids = set(ids)
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for r in range(self.table.rowCount()):
            if self.table.item(r, 0).text() in ids:
                self.table.selectRow(r)
        self.table.setSelectionMode(mode)

    def row_of(self, model_id: str) -> int:
        return list(models.REGISTRY).index(model_id)

    def cell(self, model_id: str, column: str) -> str:
        return self.table.item(self.row_of(model_id), COL[column]).text()

    def needed_missing(self) -> list[str]:
        return [mid for mid in self.required if self.status.get(mid, "present") != "present"]

    def busy(self) -> bool:
        return self.thread is not None and self.thread.isRunning()

    def _update_buttons(self) -> None:
        busy = self.busy()
        todo = [mid for mid in self.selected_ids() if self.status.get(mid) != "present"]
        self.download_btn.setEnabled(not busy and bool(todo))
        self.needed_btn.setEnabled(not busy and bool(self.needed_missing()))
        self.refresh_btn.setEnabled(not busy)
        self.cancel_btn.setVisible(busy)

    def _say(self, text: str, error: bool = False) -> None:
        self.message.setPlainText(text)
        self.message.setStyleSheet(f"color: {RED.name()};" if error else "")
        self.message.setVisible(bool(text))

    # ---- actions ------------------------------------------------------------------------
    def open_folder(self) -> bool:
        root = self.root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._say(f"Cannot create the models folder {root}: {e.strerror or e}", error=True)
            return False
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(root))):
            self._say(f"No file manager could open {root}; open it by hand.", error=True)
            return False
        return True

    def download(self, ids: list[str]) -> bool:
        """Fetch the missing files of `ids` in the background; False when nothing to do or busy."""
        ids = [mid for mid in ids if self.status.get(mid) != "present"]
        if not ids or self.busy():
            return False
        cfg, n = self.cfg, len(ids)

        def work(progress):
            done, errors = [], []
            for i, mid in enumerate(ids):
                head = f"{mid} ({i + 1}/{n})" if n > 1 else mid
                progress(0, 0, f"{head}: connecting…")

                def cb(name, got, total, head=head):
                    # KiB keep 3 GB files inside the signal's 32-bit ints
                    progress(got // 1024, (total or 0) // 1024,
                             f"{head}: {name}  {_mb(got)}" + (f" of {_mb(total)}" if total else ""))

                try:
                    models.ensure(mid, cfg, allow_download=True, progress=cb)
                    done.append(mid)
                except ModelMissingError as e:
                    from mikupal.events import one_line

                    errors.append((mid, one_line(e, limit=2000)))
            return done, errors

        self.thread = TaskThread(work, self)
        self.thread.progress.connect(self._progress)
        self.thread.succeeded.connect(self._finished)
        self.thread.failed.connect(self._failed)
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.progress_text.setText(f"Downloading {', '.join(ids)}…")
        self.progress_text.setVisible(True)
        self._say("")
        self.thread.start()
        self._update_buttons()
        return True

    def cancel(self) -> None:
        if self.busy():
            self.thread.cancel()
            self.progress_text.setText("Cancelling…")

    def _progress(self, done: int, total: int, message: str) -> None:
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(min(done, total))
        else:
            self.progress.setRange(0, 0)
        self.progress_text.setText(message)

    def _end(self) -> None:
        self.progress.setVisible(False)
        self.progress_text.setVisible(False)
        self.refresh()
        self.thread_done.emit()

    def _finished(self, result) -> None:
        self.downloaded, self.errors = result
        lines = [f"Downloaded {', '.join(self.downloaded)}."] if self.downloaded else []
        lines += [msg if msg.startswith(f"model {mid} ") else f"model {mid}: {msg}" for mid, msg in self.errors]
        self._say("\n\n".join(lines), error=bool(self.errors))  # one line per model, spaced for reading
        self._end()

    def _failed(self, message: str) -> None:
        self.downloaded, self.errors = [], []
        if message == "cancelled":
            self._say("Download cancelled; no partial file was kept.")
        else:
            self.errors = [("", message)]
            self._say(f"Download failed: {message}", error=True)
        self._end()

    def shutdown(self) -> None:
        """Stop a download and wait for its thread (closing the dialog or the app)."""
        if self.busy():
            self.thread.cancel()
        if self.thread is not None:
            self.thread.wait(60000)

    def done(self, r: int) -> None:  # Close, Esc or the window's X while downloading: stop first
        self.shutdown()
        super().done(r)

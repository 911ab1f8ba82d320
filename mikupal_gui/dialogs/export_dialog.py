"""Export a curated subset: format, filters and output folder; runs in the background."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
    QHBoxLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem, QProgressBar, QPushButton, QSpinBox,
    QVBoxLayout, QWidget,
)
from PySide6.QtCore import Qt, QTimer, Signal

from ..workers import TaskThread

FORMAT_HELP = {
    "jsonl": "WAV clips + one JSONL manifest per split",
    "hf": "Hugging Face audiofolder (load_dataset('audiofolder', ...))",
    "webdataset": "WebDataset tar shards",
    "lab": "Fish-Speech: one folder per speaker, .wav + .lab",
    "elan": "ELAN .eaf tiers per source video",
    "lhotse": "Lhotse manifests: recordings, supervisions, cuts",
}


def _optional(spin, enabled: QCheckBox):
    return float(spin.value()) if enabled.isChecked() else None


class ExportDialog(QDialog):
    """Calls mikupal.export.export_dataset on a TaskThread with a progress bar and cancel."""

    thread_done = Signal()  # an export finished, failed or was cancelled

    def __init__(self, project_root: str | Path, emotions: list[str] = (), parent=None):
        super().__init__(parent)
        from mikupal.export import FORMATS

        self.project_root = Path(project_root)
        self.result = None
        self.thread: TaskThread | None = None
        self.setWindowTitle("Export dataset")
        self.resize(560, 560)
        lay = QVBoxLayout(self)

        where = QGroupBox("Output")
        wf = QFormLayout(where)
        self.fmt = QComboBox()
        for f in FORMATS:
            self.fmt.addItem(f"{f} — {FORMAT_HELP.get(f, '')}", f)
        self.out = QLineEdit(str(self.project_root / "exports" / "dataset"))
        browse = QPushButton("…")
        browse.setFixedWidth(32)
        browse.clicked.connect(self._browse)
        row = QWidget()
        rl = QHBoxLayout(row)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.out, 1)
        rl.addWidget(browse)
        self.force = QCheckBox("Replace the folder if it is not empty")
        wf.addRow("Format", self.fmt)
        wf.addRow("Folder", row)
        wf.addRow("", self.force)
        lay.addWidget(where)

        filt = QGroupBox("Filters")
        ff = QFormLayout(filt)
        self.accepted_only = QCheckBox("Only clips the raters accepted (majority of verdicts)")
        ff.addRow(self.accepted_only)
        self.emotions = QListWidget()
        self.emotions.setMaximumHeight(110)
        for e in emotions:
            it = QListWidgetItem(e)
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            it.setCheckState(Qt.CheckState.Unchecked)
            self.emotions.addItem(it)
        ff.addRow("Emotions (none = all)", self.emotions)

        def opt(label, lo, hi, val, step, suffix=""):
            cb = QCheckBox(label)
            sp = QDoubleSpinBox()
            sp.setRange(lo, hi)
            sp.setValue(val)
            sp.setSingleStep(step)
            sp.setSuffix(suffix)
            sp.setEnabled(False)
            cb.toggled.connect(sp.setEnabled)
            ff.addRow(cb, sp)
            return cb, sp

        self.min_int = opt("Min. intensity", 0, 1, 0.5, 0.05)
        self.min_dur = opt("Min. length", 0, 60, 2, 0.5, " s")
        self.max_dur = opt("Max. length", 0, 600, 30, 1, " s")
        self.min_asd = opt("Min. speaker score", -100, 100, 0, 0.1)
        self.per_video_cb = QCheckBox("Max. clips per video")
        self.per_video = QSpinBox()
        self.per_video.setRange(1, 100000)
        self.per_video.setValue(50)
        self.per_video.setEnabled(False)
        self.per_video_cb.toggled.connect(self.per_video.setEnabled)
        ff.addRow(self.per_video_cb, self.per_video)
        lay.addWidget(filt)
        self.preview = QLabel("")
        self.preview.setWordWrap(True)
        self.preview.setStyleSheet("color: palette(mid);")
        lay.addWidget(self.preview)
        # Any filter change re-counts what the export would hold (no audio is cut for that).
        self._preview_timer = QTimer(self)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.setInterval(300)
        self._preview_timer.timeout.connect(self.update_preview)
        self._preview_thread: TaskThread | None = None
        self._preview_again = False
        for cb in (self.accepted_only, self.min_int[0], self.min_dur[0], self.max_dur[0], self.min_asd[0],
                   self.per_video_cb):
            cb.toggled.connect(lambda _b: self._preview_timer.start())
        for sp in (self.min_int[1], self.min_dur[1], self.max_dur[1], self.min_asd[1], self.per_video):
            sp.valueChanged.connect(lambda _v: self._preview_timer.start())
        self.emotions.itemChanged.connect(lambda _it: self._preview_timer.start())

        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        lay.addWidget(self.progress)
        lay.addWidget(self.message)
        self.buttons = QDialogButtonBox()
        self.export_btn = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.close_btn = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.export_btn.clicked.connect(self.start)
        self.close_btn.clicked.connect(self._close_or_cancel)
        lay.addWidget(self.buttons)
        self._preview_timer.start()

    def update_preview(self) -> None:
        from mikupal.export.dataset import preview_export

        if self._preview_thread is not None and self._preview_thread.isRunning():
            self._preview_again = True
            return
        root, filters = self.project_root, self.filters()
        self._preview_thread = TaskThread(lambda progress: preview_export(root, filters), self)
        self._preview_thread.succeeded.connect(self._show_preview)
        self._preview_thread.failed.connect(lambda m: self._show_preview(None, m))
        self._preview_thread.start()

    def _show_preview(self, p: dict | None, error: str = "") -> None:
        if p is not None:
            top = ", ".join(f"{e} {n}" for e, n in sorted(p["per_emotion"].items(), key=lambda kv: -kv[1])[:6])
            self.preview.setText(f"Would export <b>{p['clips']}</b> clips ({p['hours'] * 60:.1f} min) from "
                                 f"{p['videos']} video{'s' if p['videos'] != 1 else ''}" + (f": {top}" if top else ""))
            self.export_btn.setEnabled(p["clips"] > 0)
        else:
            self.preview.setText(f"<span style='color:#b3261e'>{error}</span>")
            self.export_btn.setEnabled(False)
        if self._preview_again:
            self._preview_again = False
            self.update_preview()

    def _browse(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Export folder", self.out.text())
        if d:
            self.out.setText(d)

    def filters(self):
        from mikupal.export import ExportFilters

        chosen = tuple(self.emotions.item(i).text() for i in range(self.emotions.count())
                       if self.emotions.item(i).checkState() == Qt.CheckState.Checked)
        return ExportFilters(
            accepted_only=self.accepted_only.isChecked(),
            emotions=chosen,
            min_intensity=_optional(self.min_int[1], self.min_int[0]),
            min_duration=_optional(self.min_dur[1], self.min_dur[0]),
            max_duration=_optional(self.max_dur[1], self.max_dur[0]),
            min_asd=_optional(self.min_asd[1], self.min_asd[0]),
            max_per_video=self.per_video.value() if self.per_video_cb.isChecked() else None,
        )

    def start(self) -> None:
        from mikupal.export import export_dataset

        if self.thread is not None and self.thread.isRunning():
            return
        root, out, fmt, filters, force = (self.project_root, self.out.text().strip(), self.fmt.currentData(),
                                          self.filters(), self.force.isChecked())
        self.thread = TaskThread(lambda progress: export_dataset(root, out, fmt, filters, force=force, progress=progress),
                                 self)
        self.thread.progress.connect(self._progress)
        self.thread.succeeded.connect(self._done)
        self.thread.failed.connect(self._failed)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.message.setStyleSheet("")
        self.message.setText("Selecting clips…")
        self.export_btn.setEnabled(False)
        self.close_btn.setText("Cancel")
        self.thread.start()

    def _progress(self, done: int, total: int, message: str) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.message.setText(message or f"{done}/{total} clips")

    def _done(self, result) -> None:
        self.result = result
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.message.setText(result.summary())
        self.export_btn.setEnabled(True)
        self.close_btn.setText("Close")
        self.thread_done.emit()

    def _failed(self, message: str) -> None:
        self.progress.setVisible(False)
        self.message.setStyleSheet("color: #b3261e;")
        self.message.setText("Export cancelled; the folder was left untouched." if message == "cancelled"
                             else f"Export failed: {message}")
        self.export_btn.setEnabled(True)
        self.close_btn.setText("Close")
        self.thread_done.emit()

    def _close_or_cancel(self) -> None:
        if self.thread is not None and self.thread.isRunning():
            self.thread.cancel()
            self.message.setText("Cancelling…")
            return
        self.reject()

    def done(self, r: int) -> None:  # closing with Esc while exporting: stop first
        self._preview_timer.stop()
        if self.thread is not None and self.thread.isRunning():
            self.thread.cancel()
        for t in (self.thread, self._preview_thread):
            if t is not None:
                t.wait(30000)
        super().done(r)

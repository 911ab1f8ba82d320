"""The run panel: choose stages and settings, start a run, watch it.

A run is a child `mikupal run` process (workers.RunProcess) built from these controls, so a
crash in a model library ends that process, not the app. One progress bar per stage with
items/s and ETA, a cancel button, and an error list (the project's errors table plus live
events) whose rows open the failing item.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QComboBox, QFormLayout, QGridLayout, QGroupBox, QHBoxLayout,
    QHeaderView, QLabel, QLineEdit, QProgressBar, QPushButton, QSpinBox, QTableWidget,
    QTableWidgetItem, QVBoxLayout, QWidget,
)

from mikupal.stage import STAGE_ORDER

from . import keys
from .workers import RunProcess, RunRequest

STAGE_TITLES = {
    "separate": "Vocal separation", "vad": "Voice activity", "asr": "Transcription",
    "segments": "Utterances", "faces": "Faces", "asd": "Active speaker", "speakers": "Speakers",
    "emotion": "Emotion labels",
}
BACKEND_MODELS = {
    "gemini": ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite"],
    "openai": ["qwen2.5-omni-7b", "gpt-4o-mini"],
    "baseline": ["baseline-v1"],
}
KEY_FOR_BACKEND = {"gemini": "GEMINI_API_KEY"}


def fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_rate(rate: float) -> str:
    """items/s for fast stages, s/item for slow ones (0.02 items/s reads badly)."""
    if not rate:
        return ""
    if rate >= 100:
        return f"{rate:.0f} items/s"
    return f"{rate:.1f} items/s" if rate >= 1 else f"{1 / rate:.1f} s/item"


class StageProgress(QWidget):
    """One stage: its name and 'items/s · ETA · errors' above a 'done/total' bar."""

    def __init__(self, stage: str, parent=None):
        super().__init__(parent)
        self.stage = stage
        lay = QGridLayout(self)
        lay.setContentsMargins(0, 2, 0, 2)
        lay.setVerticalSpacing(1)
        self.name = QLabel(STAGE_TITLES.get(stage, stage))
        self.info = QLabel("waiting")
        self.info.setWordWrap(False)
        self.info.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.info.setStyleSheet("color: palette(mid);")
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.bar.setFormat("")
        self.bar.setMaximumHeight(16)
        lay.addWidget(self.name, 0, 0)
        lay.addWidget(self.info, 0, 1)
        lay.addWidget(self.bar, 1, 0, 1, 2)

    def update_from(self, ev, finished: bool = False) -> None:
        total = max(int(ev.total), 0)
        done = min(int(ev.done), total) if total else int(ev.done)
        self.bar.setRange(0, max(total, 1))
        self.bar.setValue(done if total else 0)
        if not total:
            # Nothing reached this stage: all done before, or its inputs failed upstream.
            self.bar.setFormat("no items" if finished else "waiting for input")
            self.info.setText("")
            self.setToolTip("No item needed this stage in this run (already done, or an earlier stage failed for it).")
            return
        self.bar.setFormat(f"{done}/{total}")
        parts = [fmt_rate(ev.rate)]
        if done < total and not finished:
            parts.append(f"ETA {fmt_eta(ev.eta_s)}")
        elif finished and not ev.errors:
            parts.append("done")
        if ev.errors:
            ok = f"{done - ev.errors} ok · " if finished else ""
            parts.append(f"{ok}<span style='color:#b3261e'>{ev.errors} failed</span>")
        self.info.setText(" · ".join(p for p in parts if p))

    def finish(self, ev) -> None:
        self.update_from(ev, finished=True)


class RunPanel(QWidget):
    """Start, watch and cancel pipeline runs on the open project."""

    runStarted = Signal()
    runFinished = Signal(str)           # finished / cancelled / failed
    stageFinished = Signal(str)         # new rows may be in the store
    openItem = Signal(int, int)         # video id, segment id (-1 when absent)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.project_root: Path | None = None
        self.proc: RunProcess | None = None
        self.last_status = ""
        self.events_seen = 0
        self._crash: tuple[str, str] | None = None
        self._bars: dict[str, StageProgress] = {}
        self._build()

    # ---- layout ---------------------------------------------------------------------
    def _build(self) -> None:
        root = QVBoxLayout(self)

        stages_box = QGroupBox("Stages")
        grid = QGridLayout(stages_box)
        self.stage_boxes: dict[str, QCheckBox] = {}
        self.worker_spins: dict[str, QSpinBox] = {}
        # One column: the dock must stay usable at ~300 px when the review tab claims the width.
        grid.addWidget(QLabel("<small>workers</small>"), 0, 1)
        for i, name in enumerate(STAGE_ORDER):
            cb = QCheckBox(STAGE_TITLES.get(name, name.capitalize()))
            cb.setToolTip(f"Stage `{name}`")
            cb.setChecked(True)
            spin = QSpinBox()
            spin.setRange(0, 64)
            spin.setSpecialValueText("auto")
            spin.setMaximumWidth(70)
            spin.setToolTip(f"Parallel workers for {name} (auto = the project's [runner] workers)")
            self.stage_boxes[name], self.worker_spins[name] = cb, spin
            grid.addWidget(cb, i + 1, 0)
            grid.addWidget(spin, i + 1, 1)
        grid.setVerticalSpacing(2)
        root.addWidget(stages_box)

        opts = QGroupBox("Annotator and devices")
        form = QFormLayout(opts)
        self.backend = QComboBox()
        self.backend.addItems(list(BACKEND_MODELS))
        self.backend.currentTextChanged.connect(self._backend_changed)
        self.model = QComboBox()
        self.model.setEditable(True)
        self.runs = QSpinBox()
        self.runs.setRange(1, 20)
        self.runs.setToolTip("Independent answers per segment (consistency across runs)")
        self.devices = QLineEdit()
        self.devices.setPlaceholderText("auto, cpu or cuda:0,cuda:1")
        self.key_hint = QLabel("")
        self.key_hint.setWordWrap(True)
        form.addRow("Backend", self.backend)
        form.addRow("Model", self.model)
        form.addRow("Runs per segment", self.runs)
        self.batch = QCheckBox("Batch API (half price)")  # short: the dock is ~300 px wide
        self.batch.setToolTip("Gemini Batch API, the same as mikupal run --batch: half price, answers within "
                              "24 h; jobs are recorded in project.db, a stopped run resumes them and never pays twice")
        self.batch.toggled.connect(lambda _on: self.update_estimate())
        form.addRow("", self.batch)
        form.addRow("Devices", self.devices)
        form.addRow(self.key_hint)
        root.addWidget(opts)

        buttons = QHBoxLayout()
        self.start_btn = QPushButton("Start run")
        self.start_btn.setDefault(True)
        self.start_btn.clicked.connect(self.start)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        buttons.addWidget(self.start_btn)
        buttons.addWidget(self.cancel_btn)
        self.estimate = QLabel("")  # what the emotion stage would cost (mikupal estimate)
        self.estimate.setToolTip("mikupal estimate: pending answers priced with the shipped price table")
        buttons.addWidget(self.estimate)
        buttons.addStretch(1)
        root.addLayout(buttons)

        self.status = QLabel("No run yet.")
        self.status.setWordWrap(True)
        root.addWidget(self.status)

        self.progress_box = QGroupBox("Progress")
        self.progress_lay = QVBoxLayout(self.progress_box)
        root.addWidget(self.progress_box)

        err_box = QGroupBox("Errors (double-click to open the item)")
        el = QVBoxLayout(err_box)
        self.errors = QTableWidget(0, 3)
        self.errors.setHorizontalHeaderLabels(["Stage", "Item", "Message"])
        self.errors.verticalHeader().setVisible(False)
        self.errors.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.errors.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.errors.setWordWrap(False)
        h = self.errors.horizontalHeader()
        h.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        h.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        h.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)

        self.errors.cellDoubleClicked.connect(self._error_activated)
        self.errors.currentCellChanged.connect(lambda r, *_: self._show_error_detail(r))
        el.addWidget(self.errors)
        self.error_detail = QLabel("")
        self.error_detail.setWordWrap(True)
        self.error_detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        el.addWidget(self.error_detail)
        root.addWidget(err_box, 1)
        self._backend_changed(self.backend.currentText())

    def _backend_changed(self, backend: str) -> None:
        current = self.model.currentText()
        self.model.clear()
        self.model.addItems(BACKEND_MODELS.get(backend, []))
        if current in BACKEND_MODELS.get(backend, []):
            self.model.setCurrentText(current)
        self._update_key_hint()

    def _update_key_hint(self) -> None:
        var = KEY_FOR_BACKEND.get(self.backend.currentText())
        if not var:
            self.key_hint.setText("")
            return
        src = keys.source_of(var)
        if src:
            self.key_hint.setText(f"<small>API key: from the {src}.</small>")
        else:
            self.key_hint.setText(f"<small style='color:#b3261e'>No API key: set it in Settings (OS keyring) "
                                  f"or the {var} environment variable.</small>")

    # ---- project --------------------------------------------------------------------
    def set_project(self, project) -> None:
        """Show the project's settings as defaults and its stored errors."""
        self.project_root = Path(project.root)
        self._crash = None
        cfg = project.config
        emo = cfg["emotion"]
        self.backend.setCurrentText(emo["backend"])
        self._backend_changed(self.backend.currentText())
        self.model.setCurrentText(str(emo["model"]))
        self.runs.setValue(int(emo["runs"]))
        self.batch.setChecked(bool(emo["batch"]))
        devices = cfg["runner"]["devices"]
        self.devices.setText(",".join(devices) if isinstance(devices, list) else str(devices))
        self.load_errors()
        self.update_estimate()

    def update_estimate(self) -> None:
        """The emotion stage's cost at the chosen model, runs and batch choice, next to Start."""
        self.estimate.setText("")
        if self.project_root is None or self.backend.currentText() != "gemini":
            return
        try:
            from mikupal.emotion.estimate import estimate_project
            from mikupal.project import Project

            over = [f"emotion.runs={self.runs.value()}"] + (["emotion.batch=true"] if self.batch.isChecked() else [])
            if self.model.currentText().strip():
                over.append(f'emotion.model="{self.model.currentText().strip()}"')
            est = estimate_project(Project.open(self.project_root, over, check=False))  # checked when opened
        except Exception:  # noqa: BLE001 - an estimate is a hint; the run reports real problems
            return
        if est.items:
            cost = "cost unknown (no price)" if est.usd is None else f"≈ ${est.usd:.2f}" if est.usd >= 1 else f"≈ ${est.usd:.4f}"
            self.estimate.setText(f"Emotion: {est.items} answers, {cost}{' (batch)' if est.batch else ''}")

    def load_errors(self, limit: int = 500) -> None:
        if self.project_root is None:
            return
        from mikupal import store

        db = store.connect(self.project_root / "project.db", migrate=False)
        try:
            rows = store.rows(db, "SELECT stage, video_id, segment_id, message, path, created_at FROM errors"
                                  " ORDER BY id DESC LIMIT ?", (limit,))
        finally:
            db.conn.close()
        self.errors.setRowCount(0)
        for r in reversed(rows):
            self._add_error(r["stage"], r["video_id"], r["segment_id"], r["message"], r["created_at"] or "", r["path"])
        if self._crash is not None:
            self._add_error("run", None, None, *self._crash)
        if rows:
            self.errors.setCurrentCell(0, 0)

    def _add_error(self, stage, video_id, segment_id, message, when, path=None) -> None:
        self.errors.insertRow(0)
        item = ("segment %d" % segment_id if segment_id else "video %d" % video_id if video_id
                else Path(path).name if path else "—")
        when = (when or "")[:19].replace("T", " ")
        for c, text in enumerate([stage or "", item, message or ""]):
            it = QTableWidgetItem(text)
            it.setToolTip(f"{when}: {message}" if when else (message or ""))
            it.setData(Qt.ItemDataRole.UserRole, (video_id or -1, segment_id or -1))
            self.errors.setItem(0, c, it)

    def _show_error_detail(self, row: int) -> None:
        it = self.errors.item(row, 2) if row >= 0 else None
        self.error_detail.setText(it.toolTip() if it is not None else "")

    def _error_activated(self, row: int, _col: int) -> None:
        it = self.errors.item(row, 0)
        if it is None:
            return
        vid, sid = it.data(Qt.ItemDataRole.UserRole)
        if vid != -1 or sid != -1:
            self.openItem.emit(int(vid), int(sid))

    # ---- running ----------------------------------------------------------------------
    def selected_stages(self) -> list[str]:
        return [n for n, cb in self.stage_boxes.items() if cb.isChecked()]

    def request(self) -> RunRequest:
        workers = {n: s.value() for n, s in self.worker_spins.items() if s.value() > 0}
        return RunRequest(
            project_root=str(self.project_root),
            stages=self.selected_stages(),
            backend=self.backend.currentText(),
            model=self.model.currentText().strip() or None,
            runs=self.runs.value(),
            workers=workers,
            devices=self.devices.text().strip() or None,
            extra_overrides=["emotion.batch=true"] if self.batch.isChecked() and self.backend.currentText() == "gemini" else [],
        )

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.is_running()

    def start(self) -> bool:
        if self.project_root is None or self.is_running():
            return False
        stages = self.selected_stages()
        if not stages:
            self.status.setText("Choose at least one stage.")
            return False
        self._reset_bars(stages)
        self.events_seen = 0
        self.last_status = ""
        self._crash = None
        req = self.request()
        self.proc = RunProcess(req, self)
        self.proc.event.connect(self.on_event)
        self.proc.done.connect(self._run_done)
        self.start_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.status.setStyleSheet("")
        self.status.setText("Starting…")
        self.status.setToolTip(f"Same as: {req.command_line()}")
        self.proc.start()
        self.runStarted.emit()
        return True

    def cancel(self) -> None:
        if self.is_running():
            self.proc.cancel()
            self.cancel_btn.setEnabled(False)
            self.status.setText("Cancelling: items in flight finish first…")

    def _reset_bars(self, stages: list[str]) -> None:
        for bar in self._bars.values():
            bar.setParent(None)
            bar.deleteLater()
        self._bars = {}
        for name in stages:
            bar = StageProgress(name)
            self._bars[name] = bar
            self.progress_lay.addWidget(bar)

    def bar(self, stage: str) -> StageProgress | None:
        return self._bars.get(stage)

    def on_event(self, ev) -> None:
        """A runner event, already on the GUI thread."""
        self.events_seen += 1
        kind = ev.kind
        if kind == "run_started":
            self.status.setText(f"Run {ev.run_id} running: {ev.message}")
        elif kind in ("stage_progress", "stage_finished") and ev.stage:
            bar = self._bars.get(ev.stage)
            if bar is None:
                bar = self._bars[ev.stage] = StageProgress(ev.stage)
                self.progress_lay.addWidget(bar)
            (bar.finish if kind == "stage_finished" else bar.update_from)(ev)
            if kind == "stage_finished":
                self.stageFinished.emit(ev.stage)
        elif kind == "item_error":
            from mikupal.store import now

            self._add_error(ev.stage, ev.video_id, ev.segment_id, ev.message, now())
        elif kind == "run_finished":
            self.last_status = ev.status
            text = {"finished": "finished", "cancelled": "cancelled", "failed": "failed"}.get(ev.status, ev.status)
            extra = f" with {ev.errors} item error{'s' if ev.errors != 1 else ''}" if ev.errors else ""
            why = f": {ev.message}" if ev.message else ""
            if ev.status == "finished" and not ev.total:
                self.status.setText(f"Run {ev.run_id}: nothing to do, every chosen stage is up to date.")
            else:
                self.status.setText(f"Run {ev.run_id} {text}{extra}{why}.")

    def _run_done(self, status: str, message: str) -> None:
        """The child process ended: `status` as RunProcess.done says."""
        self.start_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        self.last_status = status
        red = "color: #b3261e;"
        if status == "crashed":
            self.status.setText(f"The run stopped: {message}. The app and your review are not affected.")
            self.status.setStyleSheet(red)
            from mikupal.store import now

            self._crash = (message, now())  # not in the errors table (the run died): kept here
            self._add_error("run", None, None, *self._crash)
        elif status == "failed" and (self.proc is None or self.proc.final is None):
            self.status.setText(f"The run could not start: {message}")
            self.status.setStyleSheet(red)
        elif status == "cancelled" and (self.proc is None or self.proc.final is None):
            self.status.setText(f"Run cancelled: {message}.")
        self.runFinished.emit(status)

    def closeEvent(self, ev) -> None:
        self.shutdown()
        super().closeEvent(ev)

    def shutdown(self, wait_ms: int = 30000) -> None:
        """Cancel a running run and wait for its process (closing the window)."""
        if self.proc is not None and self.proc.is_running():
            self.proc.cancel(grace_ms=max(wait_ms - 1000, 0))
            if not self.proc.wait(wait_ms):
                self.proc._kill()
                self.proc.wait(5000)

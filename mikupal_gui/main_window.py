"""The main window: data tables, the review workspace, the dashboard and the run dock.

A thin view over the store: it reads through the table models, starts runs and exports
on background threads and hands review to the ReviewWorkspace. Window geometry, dock
layout, the tab, the table sort and the last reviewed item come back on the next start.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QComboBox, QDockWidget, QDoubleSpinBox, QFileDialog, QHBoxLayout,
    QHeaderView, QInputDialog, QLabel, QLineEdit, QMainWindow, QMessageBox, QScrollArea, QSplitter,
    QTableView, QTabWidget, QVBoxLayout, QWidget,
)

from mikupal.project import Project

from . import models
from .dashboard import Dashboard
from .dialogs import ExportDialog, ModelsDialog, ProjectDialog, SettingsDialog, add_recent
from .run_panel import RunPanel

TAB_DATA, TAB_REVIEW, TAB_DASHBOARD = 0, 1, 2
STATE_VERSION = 1


def _project_key(root: Path) -> str:
    # QSettings groups by '/', so a path cannot be a key as is.
    return "project_state/" + str(root).replace("/", "|").replace("\\", "|")


class FilterBar(QWidget):
    """Search, emotion, status, score and rater-verdict filters for the segments table."""

    def __init__(self, on_change, parent=None):
        super().__init__(parent)
        self._on_change = on_change
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(4)
        top = QHBoxLayout()
        lay = QHBoxLayout()
        outer.addLayout(top)
        outer.addLayout(lay)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search transcripts…")
        self.search.setClearButtonEnabled(True)
        self.emotion = QComboBox()
        self.status = QComboBox()
        self.verdict = QComboBox()
        self.rater = QComboBox()
        self.min_score = QDoubleSpinBox()
        self.min_score.setRange(0, 1)
        self.min_score.setSingleStep(0.1)
        self.min_score.setDecimals(2)
        self.min_score.setSpecialValueText("any")
        self.min_score.setToolTip("Minimum intensity of the primary emotion")
        self.only_video = QCheckBox("Selected video only")
        top.addWidget(self.search, 1)
        self.count = QLabel("")
        self.count.setMinimumWidth(130)
        self.count.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        top.addWidget(self.count)
        for w, label in ((self.emotion, "Emotion"), (self.status, "Status"), (self.min_score, "Intensity ≥"),
                         (self.verdict, "Verdict"), (self.rater, "by"), (self.only_video, None)):
            if label:
                lay.addWidget(QLabel(label))
            lay.addWidget(w)
            if isinstance(w, QComboBox):
                w.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        lay.addStretch(1)
        # Typing waits for a pause; the query itself runs off the GUI thread anyway.
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(250)
        self._debounce.timeout.connect(self._emit)
        self.search.textChanged.connect(lambda _t: self._debounce.start())
        for combo in (self.emotion, self.status, self.verdict, self.rater):
            combo.currentIndexChanged.connect(lambda _i: self._emit())
        self.min_score.valueChanged.connect(lambda _v: self._debounce.start())
        self.only_video.toggled.connect(lambda _b: self._emit())

    def set_choices(self, emotions: list[str], statuses: list[str], raters: list[str]) -> None:
        def fill(combo: QComboBox, first: str, values: list[tuple[str, str]]):
            keep = combo.currentData()
            combo.blockSignals(True)
            combo.clear()
            combo.addItem(first, "")
            for text, data in values:
                combo.addItem(text, data)
            i = combo.findData(keep)
            combo.setCurrentIndex(max(i, 0))
            combo.blockSignals(False)

        fill(self.emotion, "any", [(e, e) for e in emotions])
        fill(self.status, "any", [(s, s) for s in statuses])
        fill(self.verdict, "any", [("accepted", "accept"), ("rejected", "reject"), ("skipped", "skip"),
                                   ("not reviewed", "unreviewed")])
        fill(self.rater, "any rater", [(r, r) for r in raters])

    def _emit(self) -> None:
        self._on_change()

    def value(self, video_id: int | None) -> models.SegmentFilter:
        return models.SegmentFilter(
            text=self.search.text(),
            emotion=self.emotion.currentData() or "",
            status=self.status.currentData() or "",
            min_score=self.min_score.value() if self.min_score.value() > 0 else None,
            verdict=self.verdict.currentData() or "",
            rater=self.rater.currentData() or "",
            video_id=video_id if self.only_video.isChecked() else None,
        )


class ReviewUnavailable(QLabel):
    """Shown in the Review tab when the review workspace cannot be imported."""

    def __init__(self, why: str, parent=None):
        super().__init__(f"The review workspace could not be loaded: {why}", parent)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setWordWrap(True)


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None):
        super().__init__()
        self.settings = settings or QSettings()
        self.project: Project | None = None
        self.segments_model: models.SegmentTableModel | None = None
        self.videos_model: models.VideoTableModel | None = None
        self.review = None
        self.rater: str = str(self.settings.value("review/rater", "") or "")
        self.setWindowTitle("MIKU-PAL")
        self.resize(1400, 900)
        self._build()
        self._build_menus()
        self._restore_window()

    # ---- layout -----------------------------------------------------------------------
    def _build(self) -> None:
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.setCentralWidget(self.tabs)

        data = QWidget()
        dl = QVBoxLayout(data)
        split = QSplitter(Qt.Orientation.Vertical)
        self.videos_view = self._make_view()
        self.videos_view.setSortingEnabled(False)
        split.addWidget(self.videos_view)
        seg_box = QWidget()
        sl = QVBoxLayout(seg_box)
        sl.setContentsMargins(0, 0, 0, 0)
        self.filter_bar = FilterBar(self._apply_filter)
        sl.addWidget(self.filter_bar)
        self.segments_view = self._make_view()
        self.segments_view.doubleClicked.connect(self._segment_activated)
        self.segments_view.setToolTip("Double-click (or Enter) to review a segment; right-click for its speaker")
        from .speakers import attach_to_segments_table

        attach_to_segments_table(self.segments_view,
                                 lambda row: self.segments_model.segment_id(row) if self.segments_model else None,
                                 lambda: self.project.db_path if self.project else None, self._speakers_changed)
        sl.addWidget(self.segments_view)
        split.addWidget(seg_box)
        split.setSizes([220, 600])
        self.data_split = split
        dl.addWidget(split)
        self.tabs.addTab(data, "Data")

        self.review_holder = QWidget()
        QVBoxLayout(self.review_holder).setContentsMargins(0, 0, 0, 0)
        self.tabs.addTab(self.review_holder, "Review")
        self.dashboard = Dashboard()
        self.dashboard.openAnnotation.connect(self.open_annotation)
        self.tabs.addTab(self.dashboard, "Dashboard")
        self.tabs.currentChanged.connect(self._tab_changed)

        self.run_panel = RunPanel()
        self.run_panel.runFinished.connect(self._run_finished)
        # Show new segments and labels as stages finish, not only at the end of the run.
        self.run_panel.stageFinished.connect(lambda _stage: self.refresh())
        self.run_panel.openItem.connect(self.open_item)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.run_panel)
        self.run_dock = QDockWidget("Run pipeline", self)
        self.run_dock.setObjectName("runDock")
        self.run_dock.setWidget(scroll)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.run_dock)

        self.status_label = QLabel("")
        self.statusBar().addWidget(self.status_label, 1)
        self.busy_label = QLabel("")
        self.statusBar().addPermanentWidget(self.busy_label)

    def _make_view(self) -> QTableView:
        v = QTableView()
        v.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        v.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        v.setAlternatingRowColors(True)
        v.setSortingEnabled(True)
        v.setWordWrap(False)
        v.verticalHeader().setVisible(False)
        v.verticalHeader().setDefaultSectionSize(24)
        v.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)  # uniform rows stay fast
        v.horizontalHeader().setHighlightSections(False)
        return v

    def _build_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self.act_open = QAction("&Open or create project…", self, shortcut=QKeySequence.StandardKey.Open,
                                triggered=self.choose_project)
        self.act_add = QAction("&Add videos…", self, triggered=self.add_videos)
        self.act_export = QAction("&Export dataset…", self, shortcut=QKeySequence("Ctrl+E"), triggered=self.export)
        self.act_backup = QAction("&Back up project", self, triggered=self.backup_project)
        self.act_restore = QAction("Restore from bac&kup…", self, triggered=self.restore_backup)
        self.act_settings = QAction("&Settings (API keys)…", self, triggered=self.open_settings)
        self.act_quit = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit, triggered=self.close)
        f.addAction(self.act_open)
        self.recent_menu = f.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        for a in (self.act_add, self.act_export, None, self.act_backup, self.act_restore, None, self.act_settings,
                  None, self.act_quit):
            f.addSeparator() if a is None else f.addAction(a)
        v = mb.addMenu("&View")
        for i, name in enumerate(("&Data", "&Review", "Dash&board")):
            v.addAction(QAction(name, self, shortcut=QKeySequence(f"Ctrl+{i + 1}"),
                                triggered=lambda _=False, i=i: self.tabs.setCurrentIndex(i)))
        v.addSeparator()
        v.addAction(self.run_dock.toggleViewAction())
        self.act_rater = QAction("Change &rater…", self, triggered=lambda: self.ask_rater(force=True))
        v.addAction(self.act_rater)
        self.act_refresh = QAction("Re&fresh", self, shortcut=QKeySequence.StandardKey.Refresh, triggered=self.refresh)
        v.addAction(self.act_refresh)
        t = mb.addMenu("&Tools")
        self.act_models = QAction("&Models…", self, triggered=self.open_models)
        self.act_models.setToolTip("Which model weights the project needs, which are here; download them")
        t.addAction(self.act_models)
        self.act_speakers = QAction("&Speakers…", self, triggered=self.open_speakers)
        self.act_speakers.setToolTip("Every speaker in the project: rename, merge")
        t.addAction(self.act_speakers)
        h = mb.addMenu("&Help")
        h.addAction(QAction("&About MIKU-PAL", self, triggered=self._about))
        self._set_project_actions(False)

    def _set_project_actions(self, on: bool) -> None:
        for a in (self.act_add, self.act_export, self.act_refresh, self.act_speakers):
            a.setEnabled(on)
        self.run_panel.setEnabled(on)
        self.act_backup.setEnabled(on)
        self.act_restore.setEnabled(on)

    # ---- project ----------------------------------------------------------------------
    def open_project(self, root: str | Path) -> bool:
        """Open a project folder; False (with a message box) when it is not one."""
        from mikupal.project import ProjectError

        try:
            project = Project.open(root)
            project.db().conn.close()  # brings an older schema forward before the tables read it
        except (ProjectError, ValueError, RuntimeError) as e:
            QMessageBox.warning(self, "Cannot open the project", str(e))
            return False
        self._close_project()
        self.project = project
        from mikupal.project_lock import OpenHold

        self._open_hold = OpenHold(project.root).acquire()  # `mikupal repair` waits for the app to close it
        add_recent(project.root, self.settings)
        self.settings.setValue("project/last", str(project.root))
        name = project.config.get("project", {}).get("name") or project.root.name
        self.setWindowTitle(f"{name} — MIKU-PAL")
        db_path = project.db_path

        self.videos_model = models.VideoTableModel(db_path, self)
        self.videos_view.setModel(self.videos_model)
        self.videos_view.selectionModel().currentRowChanged.connect(self._video_selected)
        hv = self.videos_view.horizontalHeader()
        hv.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        hv.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)

        self.segments_model = models.SegmentTableModel(db_path, self)
        self.segments_model.totalChanged.connect(self._segments_counted)
        self.segments_model.busyChanged.connect(lambda b: self.busy_label.setText("Querying…" if b else ""))
        self.segments_view.setModel(self.segments_model)
        hs = self.segments_view.horizontalHeader()
        hs.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in (("id", 50), ("video", 105), ("start", 60), ("duration", 55), ("status", 75),
                           ("emotion", 95), ("score", 65), ("speaker", 110), ("asd", 50), ("verdict", 80)):
            self.segments_view.setColumnWidth(models.COLUMN_INDEX[col], width)
        hs.setSectionResizeMode(models.COLUMN_INDEX["text"], QHeaderView.ResizeMode.Stretch)  # full text in tooltip
        hs.setStretchLastSection(False)
        sort_col = int(self.settings.value("segments/sort_column", 0) or 0)
        sort_desc = str(self.settings.value("segments/sort_desc", "false")).lower() == "true"
        self.segments_view.sortByColumn(sort_col, Qt.SortOrder.DescendingOrder if sort_desc else Qt.SortOrder.AscendingOrder)
        self._refresh_choices()

        self.run_panel.set_project(project)
        self.dashboard.set_project(db_path)
        self._make_review()
        self._set_project_actions(True)
        state = self.settings.value(_project_key(project.root) + "/last_segment")
        self.last_segment = int(state) if state not in (None, "") else None
        if self.last_segment is not None and self.review is not None and self.rater:
            self.review.open_segment(self.last_segment)  # the review tab shows where the rater left off
        elif self.tabs.currentIndex() == TAB_REVIEW and self.last_segment is not None:
            self._open_in_review(self.last_segment)
        self.status_label.setText(str(project.root))
        md = getattr(self, "models_dialog", None)
        if md is not None and md.isVisible() and not md.busy():
            md.set_project(project)  # needs and models dir follow the open project
        if self.tabs.currentIndex() == TAB_DASHBOARD:
            self.dashboard.refresh()
        return True

    def _close_project(self) -> None:
        if getattr(self, "_open_hold", None) is not None:
            self._open_hold.release()
            self._open_hold = None
        if self.review is not None:
            try:
                self.review.shutdown()
            except Exception:  # noqa: BLE001 - closing must go on
                pass
            self.review.setParent(None)
            self.review.deleteLater()
            self.review = None
        for m in (self.segments_model, self.videos_model):
            if m is not None:
                m.close()
        self.segments_model = self.videos_model = None
        self.project = None

    def _make_review(self) -> None:
        lay = self.review_holder.layout()
        while lay.count():
            w = lay.takeAt(0).widget()
            if w is not None:
                w.setParent(None)
                w.deleteLater()
        try:
            from .review import ReviewWorkspace

            self.review = ReviewWorkspace(self.project.db_path, self.project.root, self.review_holder)
        except Exception as e:  # noqa: BLE001 - the rest of the app still works
            self.review = None
            lay.addWidget(ReviewUnavailable(f"{type(e).__name__}: {e}"))
            return
        # The workspace speaks in annotation ids; the tables and the saved state in segments.
        self.review.verdictSaved.connect(lambda aid, _v: self._annotation_changed(aid))
        if hasattr(self.review, "speaker_btn"):
            self.review.speaker_btn.changed.connect(self.refresh)
        if hasattr(self.review, "verdictUndone"):
            self.review.verdictUndone.connect(self._annotation_changed)
        lay.addWidget(self.review)
        if self.rater:
            self.review.set_rater(self.rater)
        # Connected after the first queue is shown, so it cannot replace the remembered item.
        if hasattr(self.review, "itemShown"):
            self.review.itemShown.connect(self._item_shown)

    def choose_project(self) -> None:
        dlg = ProjectDialog(self)
        if dlg.exec() and dlg.chosen:
            self.open_project(dlg.chosen)

    def _fill_recent(self) -> None:
        from .dialogs import recent_projects

        self.recent_menu.clear()
        for p in recent_projects(self.settings):
            self.recent_menu.addAction(p, lambda p=p: self.open_project(p))
        if self.recent_menu.isEmpty():
            self.recent_menu.addAction("(none)").setEnabled(False)

    def backup_project(self) -> None:
        """An online copy of project.db in the project's backups/ (same as `mikupal backup`)."""
        from mikupal import backup

        if self.project is not None:
            path = backup.manual_backup(self.project.root)
            self.statusBar().showMessage(f"Backed up to {path}", 10000)

    def restore_backup(self) -> None:
        """Put a backup back (same as `mikupal restore`): refused while a run holds the project."""
        from mikupal import backup
        from mikupal.project_lock import ProjectLocked, RunLock

        if self.project is None:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Restore from backup", str(backup.backups_dir(self.project.root)),
                                              "MIKU-PAL backups (*.db)")
        if not path or QMessageBox.question(
                self, "Restore from backup", f"Replace the project's data with {Path(path).name}? "
                "The current state is kept as a backup too.") != QMessageBox.StandardButton.Yes:
            return
        try:
            with RunLock(self.project.root, "mikupal restore (app)"):
                _, kept = backup.restore(self.project.root, path)
        except (ProjectLocked, backup.BackupError) as e:
            QMessageBox.warning(self, "Cannot restore", str(e))
            return
        self.refresh()
        self.run_panel.load_errors()
        self.statusBar().showMessage(f"Restored {Path(path).name}; the replaced state is in {kept}", 10000)

    def add_videos(self) -> None:
        if self.project is None:
            return
        files, _ = QFileDialog.getOpenFileNames(self, "Add videos", str(Path.home()),
                                                "Videos (*.mp4 *.mkv *.mov *.avi *.webm *.m4v);;All files (*)")
        if not files:
            return
        from mikupal.ingest import add_videos
        from .workers import TaskThread

        root = self.project.root
        lines: list[str] = []

        def work(progress):
            p = Project.open(root)
            db = p.db()
            try:
                return add_videos(db, files, on_line=lines.append)
            finally:
                db.conn.close()

        t = TaskThread(work, self)
        t.succeeded.connect(lambda rep: (self.refresh(), self.statusBar().showMessage(
            f"added {len(rep.added)}, already there {len(rep.already)}, failed {len(rep.failed)}", 8000),
            self.run_panel.load_errors()))
        t.failed.connect(lambda m: QMessageBox.warning(self, "Adding videos failed", m))
        self.busy_label.setText("Adding videos…")
        t.finished.connect(lambda: self.busy_label.setText(""))
        t.start()
        self._add_thread = t

    # ---- tables ---------------------------------------------------------------------
    def _refresh_choices(self) -> None:
        conn = self.segments_model._conn
        self.filter_bar.set_choices(models.distinct_values(conn, "emotion"), models.distinct_values(conn, "status"),
                                    models.distinct_values(conn, "rater"))

    def _selected_video(self) -> int | None:
        if self.videos_model is None:
            return None
        idx = self.videos_view.currentIndex()
        return self.videos_model.video_id(idx.row()) if idx.isValid() else None

    def _apply_filter(self) -> None:
        if self.segments_model is not None:
            self.segments_model.set_filter(self.filter_bar.value(self._selected_video()))

    def _video_selected(self, *_):
        if self.filter_bar.only_video.isChecked():
            self._apply_filter()

    def _segments_counted(self, n: int) -> None:
        total = self.segments_model.total() if self.segments_model else n
        self.filter_bar.count.setText(f"{total:,} segment{'s' if total != 1 else ''}")
        col, desc = self.segments_model.sort_key
        self.settings.setValue("segments/sort_column", models.COLUMN_INDEX[col])
        self.settings.setValue("segments/sort_desc", desc)

    def _segment_activated(self, index) -> None:
        sid = self.segments_model.segment_id(index.row()) if self.segments_model else None
        if sid is not None:
            self.open_segment(sid)

    def keyPressEvent(self, ev) -> None:
        if ev.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.segments_view.hasFocus():
            self._segment_activated(self.segments_view.currentIndex())
            return
        super().keyPressEvent(ev)

    def select_segment(self, segment_id: int) -> bool:
        """Scroll the segments table to a segment (False when the filter hides it)."""
        if self.segments_model is None:
            return False
        row = self.segments_model.row_of(segment_id)
        if row is None:
            return False
        idx = self.segments_model.index(row, 0)
        self.segments_view.setCurrentIndex(idx)
        self.segments_view.scrollTo(idx, QAbstractItemView.ScrollHint.PositionAtCenter)
        return True

    def refresh(self) -> None:
        if self.project is None:
            return
        self.videos_model.refresh()
        self.segments_model.requery()
        self._refresh_choices()
        self.dashboard.mark_stale()

    # ---- review -----------------------------------------------------------------------
    def ask_rater(self, force: bool = False) -> str:
        """The rater names themself once per session (remembered as the next default)."""
        if self.rater and not force:
            return self.rater
        name, ok = QInputDialog.getText(self, "Who is reviewing?",
                                        "Your rater name (saved with every verdict you give):", text=self.rater)
        name = name.strip()
        if ok and name:
            self.set_rater(name)
        return self.rater

    def set_rater(self, name: str) -> None:
        """Review as `name` from now on (also the default at the next start)."""
        self.rater = name
        self.settings.setValue("review/rater", name)
        if self.review is not None:
            self.review.set_rater(name)
        self.statusBar().showMessage(f"Reviewing as {name}", 5000)

    def open_segment(self, segment_id: int) -> None:
        if self.tabs.currentIndex() != TAB_REVIEW:
            self._remember(segment_id)  # the tab switch opens the remembered item
            self.tabs.setCurrentIndex(TAB_REVIEW)
            return
        self._open_in_review(segment_id)

    def _open_in_review(self, segment_id: int) -> None:
        self._remember(segment_id)
        if self.review is None:
            return
        if not self.ask_rater():
            return
        self.review.open_segment(segment_id)

    def open_annotation(self, annotation_id: int) -> None:
        sid = self.segment_of(annotation_id)
        if sid is not None:
            self.open_segment(sid)

    def open_item(self, video_id: int, segment_id: int) -> None:
        """An error row was activated: show its segment in review, or its video in the table."""
        if segment_id != -1:
            self.open_segment(segment_id)
            return
        if video_id != -1 and self.videos_model is not None:
            self.tabs.setCurrentIndex(TAB_DATA)
            row = self.videos_model.row_of(video_id)
            if row is not None:
                self.videos_view.setCurrentIndex(self.videos_model.index(row, 0))
                self.filter_bar.only_video.setChecked(True)

    def segment_of(self, annotation_id: int) -> int | None:
        if self.segments_model is None or not annotation_id:
            return None
        row = self.segments_model._conn.execute("SELECT segment_id FROM annotations WHERE id=?",
                                                (annotation_id,)).fetchone()
        return int(row[0]) if row else None

    def _remember(self, segment_id: int) -> None:
        self.last_segment = segment_id
        if self.project is not None:
            self.settings.setValue(_project_key(self.project.root) + "/last_segment", segment_id)

    def _annotation_changed(self, annotation_id: int) -> None:
        """A verdict was saved or undone: update that table row and the dashboard."""
        sid = self.segment_of(annotation_id)
        if sid is not None:
            self.segments_model.refresh_segment(sid)
        self.dashboard.mark_stale()

    def _item_shown(self, annotation_id: int) -> None:
        sid = self.segment_of(annotation_id)
        if sid is not None:
            self._remember(sid)

    def _tab_changed(self, i: int) -> None:
        self.settings.setValue("window/tab", i)
        # The review tab squeezes the dock; give it its width back on the other tabs.
        if i != TAB_REVIEW and self.run_dock.isVisible() and self.run_dock.width() < 400:
            QTimer.singleShot(0, lambda: self.resizeDocks([self.run_dock], [440], Qt.Orientation.Horizontal))
        if i == TAB_REVIEW and self.review is not None and self.project is not None:
            if self.ask_rater() and getattr(self, "last_segment", None) is not None:
                self.review.open_segment(self.last_segment)

    # ---- runs, export, settings ----------------------------------------------------------
    def _run_finished(self, status: str) -> None:
        self.refresh()
        self.run_panel.load_errors()
        self.statusBar().showMessage(f"Run {status}", 8000)

    def export(self) -> None:
        if self.project is None:
            return
        emotions = models.distinct_values(self.segments_model._conn, "emotion") if self.segments_model else []
        ExportDialog(self.project.root, emotions, self).exec()

    def open_settings(self) -> None:
        SettingsDialog(self).exec()
        self.run_panel._update_key_hint()

    def open_models(self) -> ModelsDialog:
        """The models dialog, not modal: downloads go on while the rest of the app is used."""
        dlg = getattr(self, "models_dialog", None)
        if dlg is None:
            dlg = self.models_dialog = ModelsDialog(self.project, self)
        elif not dlg.busy():
            dlg.set_project(self.project)
        dlg.show()
        dlg.raise_()
        dlg.activateWindow()
        return dlg

    def open_speakers(self):
        from .speakers import SpeakersDialog

        if self.project is None:
            return None
        self.speakers_dialog = SpeakersDialog(self.project.db_path, self)
        self.speakers_dialog.changed.connect(self._speakers_changed)
        self.speakers_dialog.show()
        return self.speakers_dialog

    def _speakers_changed(self) -> None:
        """A speaker was renamed, merged or split: the table and the review view show it."""
        self.refresh()
        if self.review is not None and hasattr(self.review, "speaker_btn"):
            self.review.speaker_btn.set_segment(self.review.speaker_btn.segment_id)

    def _about(self) -> None:
        from mikupal import __version__

        QMessageBox.about(self, "About MIKU-PAL",
                          f"<b>MIKU-PAL</b> {__version__}<br>Emotion-labelled speech from unlabeled video, "
                          "with human review.")

    # ---- state ------------------------------------------------------------------------
    def _restore_window(self) -> None:
        geo = self.settings.value("window/geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        state = self.settings.value("window/state")
        if state is not None:
            self.restoreState(state, STATE_VERSION)
        self._size_dock = state is None  # first start: give the run dock a readable width once shown
        split = self.settings.value("window/data_split")
        if split is not None:
            self.data_split.restoreState(split)
        tab = int(self.settings.value("window/tab", TAB_DATA) or 0)
        self.tabs.blockSignals(True)
        self.tabs.setCurrentIndex(tab if tab in (TAB_DATA, TAB_REVIEW, TAB_DASHBOARD) else TAB_DATA)
        self.tabs.blockSignals(False)

    def showEvent(self, ev) -> None:
        super().showEvent(ev)
        if getattr(self, "_size_dock", False):
            self._size_dock = False
            QTimer.singleShot(0, lambda: self.resizeDocks([self.run_dock], [440], Qt.Orientation.Horizontal))

    def save_state(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState(STATE_VERSION))
        self.settings.setValue("window/data_split", self.data_split.saveState())
        self.settings.setValue("window/tab", self.tabs.currentIndex())
        self.settings.sync()

    def closeEvent(self, ev) -> None:
        if self.run_panel.is_running():
            answer = QMessageBox.question(self, "A run is in progress",
                                          "Cancel the run and quit? Finished items are kept; a later run resumes.")
            if answer != QMessageBox.StandardButton.Yes:
                ev.ignore()
                return
        self.save_state()
        self.run_panel.shutdown()
        self.dashboard.shutdown()
        if getattr(self, "models_dialog", None) is not None:
            self.models_dialog.shutdown()  # a download in flight stops and leaves no partial file
        if getattr(self, "_add_thread", None) is not None:
            self._add_thread.wait()
        self._close_project()
        super().closeEvent(ev)

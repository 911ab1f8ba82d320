"""Speaker corrections in the app: rename a speaker, merge two, split a segment off, move one.

One menu (`SpeakerMenu`) serves the Data table's context menu and the review view's speaker
button; `SpeakersDialog` (Tools > Speakers…) lists every speaker. The edits themselves are
`mikupal.speakers.table` functions, each one transaction on a short-lived connection; this
module only asks the questions and reports the one-line errors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QHBoxLayout, QInputDialog, QLabel,
                               QMenu, QMessageBox, QPushButton, QTableWidget, QTableWidgetItem, QToolButton,
                               QVBoxLayout, QWidget)

from mikupal import store
from mikupal.speakers import table


def _connect(db_path: Path):
    return store.connect(db_path, migrate=False)


def _speaker_label(s: dict) -> str:
    return f"{s['name']}  (#{s['id']}, {s['n_segments']} segment{'s' if s['n_segments'] != 1 else ''})"


class SpeakerEdits:
    """The questions and the store calls, shared by the menu and the dialog."""

    def __init__(self, parent: QWidget, db_path: Path, on_changed: Callable[[], None]):
        self.parent, self.db_path, self.on_changed = parent, Path(db_path), on_changed

    def _run(self, fn, *args) -> bool:
        """One store edit; a refused one shows its one-line reason and changes nothing."""
        db = _connect(self.db_path)
        try:
            fn(db, *args)
        except table.SpeakerEditError as e:
            QMessageBox.warning(self.parent, "Speakers", str(e))
            return False
        finally:
            db.conn.close()
        self.on_changed()
        return True

    def speakers(self) -> list[dict]:
        db = _connect(self.db_path)
        try:
            return table.list_speakers(db)
        finally:
            db.conn.close()

    def _ask_text(self, title: str, label: str, value: str) -> str | None:
        dlg = QInputDialog(self.parent)
        dlg.setObjectName("speakerNameDialog")
        dlg.setWindowTitle(title)
        dlg.setLabelText(label)
        dlg.setTextValue(value)
        return dlg.textValue() if dlg.exec() == QDialog.DialogCode.Accepted else None

    def _ask_speaker(self, title: str, label: str, exclude: int | None) -> int | None:
        choices = [s for s in self.speakers() if s["id"] != exclude]
        if not choices:
            QMessageBox.information(self.parent, "Speakers", "There is no other speaker to choose.")
            return None
        dlg = QInputDialog(self.parent)
        dlg.setObjectName("speakerChoiceDialog")
        dlg.setWindowTitle(title)
        dlg.setLabelText(label)
        dlg.setComboBoxItems([_speaker_label(s) for s in choices])
        dlg.setComboBoxEditable(False)
        if dlg.exec() != QDialog.DialogCode.Accepted:
            return None
        labels = [_speaker_label(s) for s in choices]
        return choices[labels.index(dlg.textValue())]["id"] if dlg.textValue() in labels else None

    def rename(self, speaker_id: int, current: str) -> bool:
        name = self._ask_text("Rename speaker", f"New name for {current}:", current)
        return name is not None and self._run(table.rename_speaker, speaker_id, name)

    def merge(self, speaker_id: int, current: str) -> bool:
        into = self._ask_speaker("Merge speaker", f"Merge all of {current} into:", speaker_id)
        return into is not None and self._run(table.merge_speakers, speaker_id, into)

    def split(self, segment_id: int) -> bool:
        return self._run(table.split_segments, [segment_id])

    def move(self, segment_id: int, current_id: int | None) -> bool:
        to = self._ask_speaker("Move segment", f"Segment {segment_id} is spoken by:", current_id)
        return to is not None and self._run(table.move_segments, [segment_id], to)


class SpeakerMenu(QMenu):
    """The speaker actions for one segment."""

    def __init__(self, edits: SpeakerEdits, segment_id: int, parent=None):
        super().__init__("Speaker", parent)
        db = _connect(edits.db_path)
        try:
            info = table.segment_speaker(db, segment_id) or {}
        finally:
            db.conn.close()
        sid, name = info.get("speaker_id"), info.get("speaker_name")
        self.setObjectName("speakerMenu")
        head = self.addAction(f"Speaker: {name}" if sid else "No speaker yet (run the speakers stage)")
        head.setEnabled(False)
        self.addSeparator()
        self.act_rename = self.addAction("Rename speaker…", lambda: edits.rename(sid, name))
        self.act_merge = self.addAction("Merge speaker into…", lambda: edits.merge(sid, name))
        self.act_split = self.addAction("Split this segment off into a new speaker", lambda: edits.split(segment_id))
        self.act_move = self.addAction("Move this segment to speaker…", lambda: edits.move(segment_id, sid))
        for a in (self.act_rename, self.act_merge, self.act_split):
            a.setEnabled(sid is not None)


def attach_to_segments_table(view: QAbstractItemView, segment_at: Callable[[int], int | None],
                             db_path: Callable[[], Path | None], on_changed: Callable[[], None]) -> None:
    """Right-click on a row of the segments table opens the speaker menu for that segment."""
    view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)

    def show(pos):
        idx = view.indexAt(pos)
        path = db_path()
        sid = segment_at(idx.row()) if idx.isValid() else None
        if sid is None or path is None:
            return
        SpeakerMenu(SpeakerEdits(view, path, on_changed), sid, view).exec(view.viewport().mapToGlobal(pos))

    view.customContextMenuRequested.connect(show)


class SpeakerButton(QToolButton):
    """The review view's 'Speaker: NAME ▾' button; its menu corrects the shown segment's speaker."""

    changed = Signal()

    def __init__(self, db_path: Path, parent=None):
        super().__init__(parent)
        self.db_path = Path(db_path)
        self.segment_id: int | None = None
        self.setObjectName("speakerButton")
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.setToolTip("Who speaks this segment (the speakers stage); click to rename, merge, split off or move")
        self.set_segment(None)

    def set_segment(self, segment_id: int | None) -> None:
        self.segment_id = segment_id
        name = None
        if segment_id is not None:
            db = _connect(self.db_path)
            try:
                name = (table.segment_speaker(db, segment_id) or {}).get("speaker_name")
            finally:
                db.conn.close()
        self.setText(f"Speaker: {name or '—'}")
        self.setEnabled(segment_id is not None)
        if segment_id is not None:
            self.setMenu(SpeakerMenu(SpeakerEdits(self, self.db_path, self._changed), segment_id, self))

    def _changed(self) -> None:
        self.set_segment(self.segment_id)
        self.changed.emit()


class SpeakersDialog(QDialog):
    """Every speaker with its segments, videos and speech time; rename and merge here."""

    changed = Signal()

    def __init__(self, db_path: Path, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Speakers")
        self.setObjectName("speakersDialog")
        self.resize(620, 420)
        self.edits = SpeakerEdits(self, db_path, self._changed)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["Name", "Segments", "Videos", "Speech"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.doubleClicked.connect(lambda _i: self.rename_selected())
        self.rename_btn = QPushButton("Rename…", clicked=self.rename_selected)
        self.merge_btn = QPushButton("Merge into…", clicked=self.merge_selected)
        buttons = QHBoxLayout()
        buttons.addWidget(self.rename_btn)
        buttons.addWidget(self.merge_btn)
        buttons.addStretch(1)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, rejected=self.reject)
        buttons.addWidget(close)
        self.summary = QLabel()
        lay = QVBoxLayout(self)
        lay.addWidget(self.summary)
        lay.addWidget(self.table, 1)
        lay.addLayout(buttons)
        self.reload()

    def reload(self) -> None:
        rows = self.edits.speakers()
        self.rows = rows
        self.table.setRowCount(len(rows))
        for i, s in enumerate(rows):
            m, sec = divmod(int(round(s["speech_s"])), 60)
            for j, v in enumerate((s["name"], s["n_segments"], s["n_videos"], f"{m}:{sec:02d}")):
                it = QTableWidgetItem(str(v))
                if j:
                    it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if j == 0:
                    it.setToolTip(f"speaker #{s['id']} ({'named by you' if s['name_source'] == 'user' else 'automatic name'})")
                self.table.setItem(i, j, it)
        self.table.resizeColumnsToContents()
        self.summary.setText(f"{len(rows)} speaker{'s' if len(rows) != 1 else ''}" if rows
                             else "No speakers yet: run the speakers stage (Run pipeline).")
        for b in (self.rename_btn, self.merge_btn):
            b.setEnabled(bool(rows))
        if rows and self.table.currentRow() < 0:
            self.table.selectRow(0)

    def _selected(self) -> dict | None:
        r = self.table.currentRow()
        return self.rows[r] if 0 <= r < len(self.rows) else None

    def rename_selected(self) -> None:
        s = self._selected()
        if s:
            self.edits.rename(s["id"], s["name"])

    def merge_selected(self) -> None:
        s = self._selected()
        if s:
            self.edits.merge(s["id"], s["name"])

    def _changed(self) -> None:
        row = self.table.currentRow()
        self.reload()
        if 0 <= row < self.table.rowCount():
            self.table.selectRow(row)
        self.changed.emit()

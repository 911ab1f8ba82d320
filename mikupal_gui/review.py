"""The review workspace: play a segment, read the annotator's answer, accept/reject/skip it.

Keys: Space play/pause · A accept · R reject · S skip · U undo · Left/Right previous/next ·
L loop · [ ] slower/faster · , . frame back/forward · C correct the label (then R).

Each verdict is written at once in its own transaction (mikupal.review); the next item's
data, waveform and first frame are prefetched on a worker thread with its own database
connection, so moving on never waits for the disk or for VLC.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from . import qt_compat  # noqa: F401  (PySide6 6.12 emit refcount fix, before any emit)
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSplitter,
                               QVBoxLayout, QWidget)

from mikupal import review as rv
from mikupal import queries, store
from mikupal.taxonomy import TaxonomyError, load_label_set

from .label_panel import LabelPanel
from .player import Player, decode_size, poster
from .radar import RadarView
from .speakers import SpeakerButton
from .waveform import WaveformView, load_envelope

QUEUE_TITLES = {"unreviewed": "Unreviewed (mine)", "emotion": "One emotion", "low_agreement": "Low agreement",
                "balanced": "Balanced across emotions", "all": "All"}
NO_CORRECTION = "(no correction)"


@dataclass
class Prepared:
    """Everything one item needs on screen, built off the GUI thread."""
    item: rv.ReviewItem
    envelope: tuple[np.ndarray, np.ndarray, np.ndarray]
    first: tuple[np.ndarray, float] | None
    video_path: str
    video_size: tuple[int, int]


def _audio_track(root: Path) -> str:
    """The project's [media] audio_track (the default track when the settings cannot be read)."""
    from mikupal import config as config_mod

    try:
        return str(config_mod.load(root).get("media", {}).get("audio_track", "default"))
    except (config_mod.ConfigError, OSError):
        return "default"


class Prefetcher:
    """One worker thread with its own SQLite connection; results cached by key."""

    def __init__(self, db_path: Path, project_root: Path, context_s: float, audio_track: str = "default"):
        self.db_path, self.root, self.context_s = db_path, project_root, context_s
        self.audio_track = audio_track
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="review-prefetch")
        self.local = threading.local()
        self.cache: dict[tuple, Future] = {}

    def _db(self):
        if getattr(self.local, "db", None) is None:
            self.local.db = store.connect(self.db_path, migrate=False)
        return self.local.db

    def _video_path(self, video: dict) -> str:
        p = Path(video["path"])
        return str(p if p.is_absolute() else self.root / p)

    def _prepare(self, key: tuple, rater: str) -> Prepared:
        kind, ident = key
        db = self._db()
        item = rv.load_item(db, ident, rater, self.context_s) if kind == "a" else rv.load_segment(db, ident, rater, self.context_s)
        seg, vid = item.segment, item.video
        path = self._video_path(vid)
        lo, hi = max(0.0, seg["start_s"] - self.context_s), seg["end_s"] + self.context_s
        size = decode_size(vid.get("width") or 640, vid.get("height") or 360)
        return Prepared(item, load_envelope(path, lo, hi, audio_track=self.audio_track), poster(path, lo, size), path,
                        (int(vid.get("width") or size[0]), int(vid.get("height") or size[1])))

    def get(self, key: tuple, rater: str) -> Future:
        fut = self.cache.get(key)
        if fut is None:
            fut = self.cache[key] = self.pool.submit(self._prepare, key, rater)
        return fut

    def keep_only(self, keys: set[tuple]) -> None:
        for k in [k for k in self.cache if k not in keys]:
            self.cache.pop(k).cancel()

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class ReviewWorkspace(QWidget):
    verdictSaved = Signal(int, str)     # annotation id, verdict
    verdictUndone = Signal(int)         # annotation id whose newest verdict was removed
    itemShown = Signal(int)             # annotation id (0 for a segment without annotation)

    def __init__(self, db_path: Path, project_root: Path, parent=None, context_s: float = 0.5):
        super().__init__(parent)
        self.db_path, self.project_root = Path(db_path), Path(project_root)
        self.db = store.connect(self.db_path)
        self.rater = ""
        self.kind, self.emotion = "unreviewed", None
        self.ids: list[int] = []
        self.pos = 0
        self.current: Prepared | None = None
        track = _audio_track(self.project_root)
        self.prefetch = Prefetcher(self.db_path, self.project_root, context_s, track)
        self._build(context_s)
        self.player.audio_track = track  # hear and see the track the stages analysed
        self._bind_keys()
        self._set_enabled(False)
        self.labels.show_item(None)
        self.status.setText("Enter your rater name to start reviewing.")

    # ---- layout ----------------------------------------------------------------------------
    def _build(self, context_s: float) -> None:
        self.player = Player(self, context_s=context_s)
        self.waveform = WaveformView(self)
        self.radar = RadarView(self)
        self.labels = LabelPanel(self)

        self.rater_label = QLabel()
        self.queue_combo = QComboBox()
        for k, title in QUEUE_TITLES.items():
            self.queue_combo.addItem(title, k)
        self.emotion_combo = QComboBox()
        self.emotion_combo.setMinimumContentsLength(12)
        self.pos_label = QLabel("0 / 0")
        for w in (self.queue_combo, self.emotion_combo):
            w.setFocusPolicy(Qt.ClickFocus)
        self.queue_combo.activated.connect(self._queue_picked)
        self.emotion_combo.activated.connect(self._queue_picked)
        top = QHBoxLayout()
        top.addWidget(self.rater_label)
        self.speaker_btn = SpeakerButton(self.db_path, self)
        top.addWidget(self.speaker_btn)
        top.addStretch(1)
        top.addWidget(QLabel("Queue:"))
        top.addWidget(self.queue_combo)
        top.addWidget(self.emotion_combo)
        top.addWidget(self.pos_label)

        self.play_btn = self._button("▶ Play (Space)", self.player.toggle)
        self.loop_btn = self._button("Loop (L)", lambda: self._toggle_loop())
        self.loop_btn.setCheckable(True)
        self.time_label = QLabel()
        self.time_label.setMinimumWidth(230)
        transport = QHBoxLayout()
        transport.addWidget(self._button("◀| Frame (,)", lambda: self.player.step(-1)))
        transport.addWidget(self.play_btn)
        transport.addWidget(self._button("Frame (.) |▶", lambda: self.player.step(1)))
        transport.addWidget(self.loop_btn)
        transport.addWidget(self._button("[ slower", self.player.slower))
        transport.addWidget(self._button("faster ]", self.player.faster))
        transport.addStretch(1)
        transport.addWidget(self.time_label)

        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.player, 1)
        ll.addLayout(transport)
        ll.addWidget(self.waveform)
        right = QSplitter(Qt.Vertical)
        right.addWidget(self.radar)
        right.addWidget(self.labels)
        right.setSizes([380, 300])
        split = QSplitter(Qt.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([760, 500])

        self.accept_btn = self._button("✔ Accept (A)", lambda: self.verdict("accept"), "#2e7d32")
        self.reject_btn = self._button("✘ Reject (R)", lambda: self.verdict("reject"), "#c62828")
        self.skip_btn = self._button("Skip (S)", lambda: self.verdict("skip"))
        self.undo_btn = self._button("↶ Undo (U)", self.undo)
        self.correct_combo = QComboBox()
        self.correct_combo.setFocusPolicy(Qt.ClickFocus)
        self.correct_combo.setToolTip("Corrected label, saved with a Reject (C to pick)")
        # A free-text note saved with the next verdict (reviews.comment); Enter or Esc hands
        # the keys back to the review shortcuts.
        self.note_edit = QLineEdit()
        self.note_edit.setPlaceholderText("Note (N)…")
        self.note_edit.setToolTip("A note saved with your next verdict; Enter or Esc returns to the review keys")
        self.note_edit.setMaximumWidth(260)
        self.note_edit.returnPressed.connect(self.setFocus)
        QShortcut(QKeySequence(Qt.Key_Escape), self.note_edit, context=Qt.WidgetShortcut).activated.connect(self.setFocus)
        bottom = QHBoxLayout()
        bottom.addWidget(self._button("◀ Prev", self.prev_item))
        for b in (self.accept_btn, self.reject_btn, self.skip_btn, self.undo_btn):
            bottom.addWidget(b)
        bottom.addWidget(QLabel("Correct to (C):"))
        bottom.addWidget(self.correct_combo)
        bottom.addWidget(self.note_edit)
        bottom.addWidget(self._button("Next ▶", self.next_item))
        bottom.addStretch(1)
        self.status = QLabel()
        self.status.setStyleSheet("color:#bbb")
        bottom.addWidget(self.status)

        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(split, 1)
        lay.addLayout(bottom)

        self.player.positionChanged.connect(self._position)
        self.player.stateChanged.connect(lambda on: self.play_btn.setText("Pause (Space)" if on else "▶ Play (Space)"))
        self.player.rateChanged.connect(lambda r: self._position(self.player.position))
        self.waveform.seekRequested.connect(self.player.seek)

    def _button(self, text: str, slot, color: str | None = None) -> QPushButton:
        b = QPushButton(text)
        b.setFocusPolicy(Qt.NoFocus)  # keys go to the workspace shortcuts
        b.clicked.connect(slot)
        if color:
            b.setStyleSheet(f"QPushButton{{background:{color};color:white;font-weight:bold;padding:4px 10px}}"
                            "QPushButton:disabled{background:#444;color:#888}")
        return b

    def _bind_keys(self) -> None:
        keys = {
            Qt.Key_Space: self.player.toggle, Qt.Key_A: lambda: self.verdict("accept"),
            Qt.Key_R: lambda: self.verdict("reject"), Qt.Key_S: lambda: self.verdict("skip"),
            Qt.Key_U: self.undo, Qt.Key_Left: self.prev_item, Qt.Key_Right: self.next_item,
            Qt.Key_L: self._toggle_loop, Qt.Key_BracketLeft: self.player.slower,
            Qt.Key_BracketRight: self.player.faster, Qt.Key_Comma: lambda: self.player.step(-1),
            Qt.Key_Period: lambda: self.player.step(1), Qt.Key_C: self._pick_correction,
            Qt.Key_N: self._focus_note,
        }
        self._shortcuts = []
        for key, slot in keys.items():
            sc = QShortcut(QKeySequence(key), self, context=Qt.WidgetWithChildrenShortcut)
            sc.activated.connect(slot)
            self._shortcuts.append(sc)
        self.setFocusPolicy(Qt.StrongFocus)

    # ---- public API --------------------------------------------------------------------------
    def set_rater(self, name: str) -> None:
        rv.ensure_rater(self.db, name)
        self.rater = name.strip()
        self.rater_label.setText(f"Rater: <b>{self.rater}</b>")
        self.status.clear()
        self.prefetch.keep_only(set())  # verdicts shown are per rater
        self.set_queue(self.kind, self.emotion)

    def set_queue(self, kind: str, emotion: str | None = None) -> None:
        if kind not in rv.QUEUE_KINDS:
            raise rv.ReviewError(f"unknown queue {kind!r}; use one of {', '.join(rv.QUEUE_KINDS)}")
        self._refresh_emotions()
        if kind == "emotion" and not emotion:
            emotion = self.emotion_combo.currentText() or None
        self.kind, self.emotion = kind, emotion
        self.queue_combo.setCurrentIndex(list(QUEUE_TITLES).index(kind))
        self.emotion_combo.setVisible(kind == "emotion")
        if emotion:
            self.emotion_combo.setCurrentText(emotion)
        if not self.rater:
            return
        self.ids = rv.queue(self.db, kind, self.rater, emotion) if (kind != "emotion" or emotion) else []
        self.pos = 0
        self._show_pos()

    def open_segment(self, segment_id: int) -> None:
        aid = queries.primary_annotation_for_segment(self.db, segment_id)
        if aid is None:
            self._show(self.prefetch.get(("s", segment_id), self.rater).result(), standalone=True)
            return
        if aid not in self.ids:
            self.ids.insert(min(self.pos, len(self.ids)), aid)
        self.pos = self.ids.index(aid)
        self._show_pos()

    def shutdown(self) -> None:
        self.player.shutdown()
        self.prefetch.shutdown()
        self.db.conn.close()

    # ---- review actions ------------------------------------------------------------------------
    @property
    def annotation_id(self) -> int | None:
        if self.current is None or not self.current.item.annotation:
            return None
        return self.current.item.annotation_id

    def verdict(self, verdict: str) -> None:
        aid = self.annotation_id
        if aid is None or not self.rater:
            return
        corrected = self.correct_combo.currentText() if verdict == "reject" else None
        if corrected == NO_CORRECTION:
            corrected = None
        try:
            rv.save_verdict(self.db, aid, self.rater, verdict, corrected_label=corrected,
                            comment=self.note_edit.text().strip() or None)
        except rv.ReviewError as e:
            self.status.setText(str(e))
            return
        self.verdictSaved.emit(aid, verdict)
        self.status.setText(f"Saved {verdict} for annotation {aid}" + (f" → {corrected}" if corrected else ""))
        self.next_item()

    def undo(self) -> None:
        if not self.rater:
            return
        aid = rv.undo_last(self.db, self.rater)
        if aid is None:
            self.status.setText("Nothing to undo.")
            return
        self.verdictUndone.emit(aid)
        if aid not in self.ids:
            self.ids.insert(min(self.pos, len(self.ids)), aid)
        self.pos = self.ids.index(aid)
        self._show_pos()
        self.status.setText(f"Undid your last verdict (annotation {aid}).")

    def next_item(self) -> None:
        if self.pos < len(self.ids):
            self.pos += 1
            self._show_pos()

    def prev_item(self) -> None:
        if self.pos > 0:
            self.pos -= 1
            self._show_pos()

    # ---- display ----------------------------------------------------------------------------
    def _show_pos(self) -> None:
        if self.pos >= len(self.ids):
            self.player.pause()
            self.current = None
            self._set_enabled(False)
            self.radar.clear_values("queue finished" if self.ids else "queue empty")
            self.labels.show_item(None)
            self.pos_label.setText(f"{len(self.ids)} / {len(self.ids)}")
            self.status.setText(f"Queue finished: {len(self.ids)} item(s). Pick another queue or press ← to go back."
                                if self.ids else "Nothing in this queue.")
            return
        key = ("a", self.ids[self.pos])
        try:
            prepared = self.prefetch.get(key, self.rater).result()
        except rv.ReviewError as e:
            self.prefetch.cache.pop(key, None)
            self.status.setText(str(e))
            return
        self._show(prepared)
        want = {("a", self.ids[i]) for i in range(max(0, self.pos - 1), min(len(self.ids), self.pos + 3))}
        self.prefetch.keep_only(want)
        for i in (self.pos + 1, self.pos + 2, self.pos - 1):
            if 0 <= i < len(self.ids):
                self.prefetch.get(("a", self.ids[i]), self.rater)

    def _show(self, p: Prepared, standalone: bool = False) -> None:
        self.current = p
        it = p.item
        if it.annotation:  # the verdicts may have changed since the prefetch
            it.verdict = rv.current_verdict(self.db, it.annotation_id, self.rater)
            it.others = {}
            for v in queries.latest_verdicts(self.db, [it.annotation_id]):
                if v["rater"] != self.rater:
                    it.others[v["verdict"]] = it.others.get(v["verdict"], 0) + 1
        seg = it.segment
        self.player.load(p.video_path, p.video_size, it.video.get("fps"), (seg["start_s"], seg["end_s"]),
                         it.tracks, seg.get("speaker_track_id"), p.first)
        w = self.player.window
        self.waveform.set_audio(*p.envelope, seg["start_s"], seg["end_s"], w)
        if it.annotation:
            self.radar.set_intensities(it.annotation["intensities"], it.runs, it.annotation["label_set"])
            self._fill_corrections(it.annotation["label_set"], it.verdict)
        else:
            self.radar.clear_values("no annotation yet")
        self.note_edit.setText(((it.verdict or {}).get("comment") or "") if it.annotation else "")
        self.labels.show_item(it)
        self.speaker_btn.set_segment(seg["id"])
        self._set_enabled(bool(it.annotation))
        self.pos_label.setText("outside queue" if standalone else f"{self.pos + 1} / {len(self.ids)}")
        self._position(self.player.position)
        self.itemShown.emit(it.annotation_id if it.annotation else 0)

    def _fill_corrections(self, label_set: str, verdict: dict | None) -> None:
        try:
            names = load_label_set(label_set).names
        except TaxonomyError:
            names = []
        if [self.correct_combo.itemText(i) for i in range(1, self.correct_combo.count())] != names:
            self.correct_combo.clear()
            self.correct_combo.addItems([NO_CORRECTION] + names)
        cur = (verdict or {}).get("corrected_label")
        self.correct_combo.setCurrentText(cur if cur in names else NO_CORRECTION)

    def _refresh_emotions(self) -> None:
        have = rv.emotions_present(self.db)
        if [self.emotion_combo.itemText(i) for i in range(self.emotion_combo.count())] != have:
            cur = self.emotion_combo.currentText()
            self.emotion_combo.clear()
            self.emotion_combo.addItems(have)
            if cur in have:
                self.emotion_combo.setCurrentText(cur)

    def _set_enabled(self, on: bool) -> None:
        for b in (self.accept_btn, self.reject_btn, self.skip_btn, self.correct_combo, self.note_edit):
            b.setEnabled(on)

    def _position(self, t: float) -> None:
        self.waveform.set_playhead(t)
        s0, s1 = self.player.segment
        self.time_label.setText(f"{t:7.2f} s   segment {s0:.2f}–{s1:.2f}   {self.player.rate:g}×"
                                + ("   loop" if self.player.loop else ""))

    def _toggle_loop(self) -> None:
        self.player.set_loop(not self.player.loop)
        self.loop_btn.setChecked(self.player.loop)
        self._position(self.player.position)

    def _focus_note(self) -> None:
        if self.note_edit.isEnabled():
            self.note_edit.setFocus()
            self.note_edit.selectAll()

    def _pick_correction(self) -> None:
        if self.correct_combo.isEnabled():
            self.correct_combo.setFocus()
            self.correct_combo.showPopup()

    def _queue_picked(self, *_):
        kind = self.queue_combo.currentData()
        self.set_queue(kind, self.emotion_combo.currentText() if kind == "emotion" else None)
        self.setFocus()

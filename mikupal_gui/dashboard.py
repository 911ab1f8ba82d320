"""The dashboard: how good the labels are (rationality, agreement) and what the runs cost.

Numbers come from the same functions as `mikupal review-stats` and `mikupal status`
(mikupal.review_stats, mikupal.status), computed on a background thread; the emotion map
(t-SNE of the intensity vectors) comes from mikupal.emotion_map and is interactive: hover
shows the utterance, a click opens it in review.
"""
from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView, QFrame, QGridLayout, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QPushButton,
    QSplitter, QTableWidget, QTableWidgetItem, QToolTip, QVBoxLayout, QWidget,
)

from .workers import TaskThread


def pct(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def num(v, digits: int = 3) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def ci(p: dict) -> str:
    lo, hi = p.get("ci_low"), p.get("ci_high")
    return "—" if lo is None or hi is None else f"{100 * lo:.1f}–{100 * hi:.1f}%"


def run_table(db) -> list[dict]:
    """Per run (newest 50): duration, answers stored, cost, errors and answers per minute."""
    from mikupal import queries

    rows = queries.run_throughput(db, limit=50)
    for r in rows:
        r["duration_s"], r["cost"] = r["wall_s"], r["cost_usd"]
        r["per_min"] = r["answers_per_hour"] / 60 if r["answers_per_hour"] else None
    return rows


def compute_dashboard(db_path: str | Path) -> dict:
    """Everything the dashboard shows except the map (the slow part)."""
    from mikupal import review_stats, store
    from mikupal.project import Project
    from mikupal.status import project_status

    db = store.connect(db_path, migrate=False)
    try:
        project = Project.open(Path(db_path).parent)
        return {
            "review": review_stats.review_stats(db),
            "status": project_status(project, db),
            "runs": run_table(db),
        }
    finally:
        db.conn.close()


def compute_map(db_path: str | Path) -> list:
    from mikupal import store
    from mikupal.emotion_map import emotion_map_points

    db = store.connect(db_path, migrate=False)
    try:
        return emotion_map_points(db, max_points=2000)
    finally:
        db.conn.close()


class StatCard(QFrame):
    """A big number with a caption and a small detail line."""

    def __init__(self, caption: str, parent=None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setObjectName("statCard")
        self.setStyleSheet("#statCard { background: palette(base); border-radius: 6px; }")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 8, 12, 8)
        self.caption = QLabel(caption)
        self.caption.setStyleSheet("color: palette(mid); font-size: 11px;")
        self.value = QLabel("—")
        f = QFont()
        f.setPointSize(18)
        f.setBold(True)
        self.value.setFont(f)
        self.detail = QLabel("")
        self.detail.setStyleSheet("font-size: 11px;")
        self.detail.setWordWrap(True)
        lay.addWidget(self.caption)
        lay.addWidget(self.value)
        lay.addWidget(self.detail)

    def set(self, value: str, detail: str = "") -> None:
        self.value.setText(value)
        self.detail.setText(detail)


def _table(headers: list[str]) -> QTableWidget:
    t = QTableWidget(0, len(headers))
    t.setHorizontalHeaderLabels(headers)
    t.verticalHeader().setVisible(False)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    t.horizontalHeader().setStretchLastSection(True)
    return t


def _fill(t: QTableWidget, rows: list[list[str]], text_columns: tuple[int, ...] = (0,)) -> None:
    """Numbers right-aligned, text columns left-aligned."""
    t.setRowCount(len(rows))
    for i, row in enumerate(rows):
        for j, text in enumerate(row):
            it = QTableWidgetItem(str(text))
            if j not in text_columns:
                it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            t.setItem(i, j, it)


class RationalityChart(pg.PlotWidget):
    """Accept rate per emotion (horizontal bars, one row per emotion) with Wilson 95%
    intervals as error bars: 26 category names read better down the side than across."""

    def __init__(self, parent=None):
        super().__init__(parent, background="w")
        self.setMinimumHeight(180)
        pi = self.getPlotItem()
        pi.setLabel("bottom", "accepted / reviewed")
        pi.showGrid(x=True, alpha=0.25)
        pi.invertY(True)
        self.setMouseEnabled(x=False, y=False)
        self.names: list[str] = []

    def show_per_emotion(self, per: dict[str, dict]) -> None:
        self.clear()
        names = [n for n, p in per.items() if p.get("reviewed")]
        self.names = names
        pi = self.getPlotItem()
        if not names:
            pi.setTitle("no accept/reject verdicts yet")
            pi.getAxis("left").setTicks([[]])
            return
        pi.setTitle("")
        y = np.arange(len(names))
        x = np.array([per[n]["score"] for n in names], dtype=float)
        lo = np.array([per[n]["ci_low"] for n in names], dtype=float)
        hi = np.array([per[n]["ci_high"] for n in names], dtype=float)
        self.addItem(pg.BarGraphItem(x0=0, y=y, width=x, height=0.6, brush=QColor("#5b8def"), pen=pg.mkPen("#3b6bd0")))
        self.addItem(pg.ErrorBarItem(x=x, y=y, left=x - lo, right=hi - x, beam=0.25, pen=pg.mkPen("#333", width=1.5)))
        pi.getAxis("left").setTicks([[(i, f"{n} (n={per[n]['reviewed']})") for i, n in enumerate(names)]])
        self.setYRange(-0.6, len(names) - 0.4, padding=0)
        self.setXRange(0, 1.0, padding=0.02)


class EmotionMap(pg.PlotWidget):
    """t-SNE of the intensity vectors; hover shows the utterance, click opens it."""

    annotationClicked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent, background="w")
        self.setMinimumHeight(240)
        self.getPlotItem().hideAxis("left")
        self.getPlotItem().hideAxis("bottom")
        self.getPlotItem().getViewBox().setDefaultPadding(0.12)  # room for the labels at the edges
        self.scatter = pg.ScatterPlotItem(size=9, hoverable=True, hoverSize=14, hoverPen=pg.mkPen("k", width=1.5))
        self.scatter.sigClicked.connect(self._clicked)
        self.scatter.sigHovered.connect(self._hovered)
        self.addItem(self.scatter)
        self.points: list = []
        self._labels: list[pg.TextItem] = []

    def show_points(self, points: list) -> None:
        self.points = points
        for t in self._labels:
            self.removeItem(t)
        self._labels = []
        if not points:
            self.scatter.setData([])
            self.getPlotItem().setTitle("no labelled segments yet")
            return
        self.getPlotItem().setTitle("")
        spots = [{"pos": (p.x, p.y), "data": i,
                  "brush": pg.mkBrush(*(int(255 * c) for c in p.rgb)), "pen": pg.mkPen(255, 255, 255, 160)}
                 for i, p in enumerate(points)]
        self.scatter.setData(spots)
        if len(points) < 30:
            # Few points: name each one (a cluster centre between scattered points misleads).
            for p in points:
                t = pg.TextItem(p.label, color=(60, 60, 60), anchor=(0, 1.2))
                t.setPos(p.x, p.y)
                self.addItem(t)
                self._labels.append(t)
            self.scatter.setSize(14)
            return
        self.scatter.setSize(9)
        # Name each cluster at the median of its points (the strongest category).
        by_label: dict[str, list] = {}
        for p in points:
            by_label.setdefault(p.label, []).append((p.x, p.y))
        for label, xy in by_label.items():
            if len(xy) < max(2, len(points) // 50):
                continue
            cx, cy = np.median(np.array(xy), axis=0)
            t = pg.TextItem(label, color=(40, 40, 40), anchor=(0.5, 0.5))
            t.setPos(float(cx), float(cy))
            self.addItem(t)
            self._labels.append(t)

    def _point(self, spot):
        i = spot.data()
        return self.points[i] if i is not None and 0 <= i < len(self.points) else None

    def _hovered(self, _item, spots, ev) -> None:
        if len(spots):
            p = self._point(spots[0])
            if p is not None:
                QToolTip.showText(ev.screenPos().toPoint(), f"<b>{p.label}</b><br>{p.text}")
                return
        QToolTip.hideText()

    def _clicked(self, _item, spots, _ev=None) -> None:
        if len(spots):
            p = self._point(spots[0])
            if p is not None:
                self.annotationClicked.emit(int(p.annotation_id))


class Dashboard(QWidget):
    """Rationality with CIs, inter-rater agreement, emotion map, cost/retention/throughput."""

    openAnnotation = Signal(int)
    refreshed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.db_path: Path | None = None
        self.data: dict | None = None
        self._thread: TaskThread | None = None
        self._map_thread: TaskThread | None = None
        self._stale = True
        self._build()

    def _build(self) -> None:
        root = QVBoxLayout(self)
        top = QHBoxLayout()
        self.status = QLabel("")
        self.status.setStyleSheet("color: palette(mid);")
        self.refresh_btn = QPushButton("Refresh")
        self.refresh_btn.clicked.connect(self.refresh)
        top.addWidget(self.status, 1)
        top.addWidget(self.refresh_btn)
        root.addLayout(top)

        cards = QGridLayout()
        self.card_rationality = StatCard("Rationality (accepted / reviewed)")
        self.card_agreement = StatCard("Inter-rater agreement")
        self.card_retention = StatCard("Retention (speech kept / video)")
        self.card_cost = StatCard("Annotation cost")
        for i, c in enumerate((self.card_rationality, self.card_agreement, self.card_retention, self.card_cost)):
            cards.addWidget(c, 0, i)
        root.addLayout(cards)

        split = QSplitter(Qt.Orientation.Horizontal)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        box = QGroupBox("Rationality per emotion (Wilson 95% intervals)")
        QVBoxLayout(box).addWidget(chart := RationalityChart())
        self.chart = chart
        ll.addWidget(box, 2)
        rbox = QGroupBox("Per rater")
        self.rater_table = _table(["Rater", "Accepted", "Reviewed", "Skipped", "Rationality", "95% CI"])
        QVBoxLayout(rbox).addWidget(self.rater_table)
        ll.addWidget(rbox, 1)
        split.addWidget(left)

        mbox = QGroupBox("Emotion map (t-SNE of intensities; hover to read, click to review)")
        ml = QVBoxLayout(mbox)
        self.map = EmotionMap()
        self.map.annotationClicked.connect(self.openAnnotation)
        self.map_status = QLabel("")
        self.map_status.setStyleSheet("color: palette(mid);")
        ml.addWidget(self.map, 1)
        ml.addWidget(self.map_status)
        split.addWidget(mbox)
        split.setSizes([500, 500])
        root.addWidget(split, 3)

        runs_box = QGroupBox("Runs: cost and throughput")
        self.runs_table = _table(["Run", "Started", "Status", "Stages", "Duration", "Answers", "Answers/min",
                                  "Cost", "Errors"])
        self.runs_table.horizontalHeader().setStretchLastSection(False)
        self.runs_table.horizontalHeader().setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        QVBoxLayout(runs_box).addWidget(self.runs_table)
        root.addWidget(runs_box, 1)

    # ---- data -------------------------------------------------------------------------
    def set_project(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self.data = None
        self._stale = True

    def mark_stale(self) -> None:
        self._stale = True
        if self.isVisible():
            self.refresh()

    def showEvent(self, ev) -> None:
        super().showEvent(ev)
        if self._stale:
            self.refresh()

    def busy(self) -> bool:
        return any(t is not None and t.isRunning() for t in (self._thread, self._map_thread))

    def refresh(self, with_map: bool = True) -> None:
        if self.db_path is None or (self._thread is not None and self._thread.isRunning()):
            return
        self._stale = False
        self.status.setText("Computing…")
        db_path = self.db_path
        self._thread = TaskThread(lambda progress: compute_dashboard(db_path), self)
        self._thread.succeeded.connect(self._show)
        self._thread.failed.connect(lambda m: self.status.setText(f"Could not compute the dashboard: {m}"))
        self._thread.start()
        if with_map and not (self._map_thread is not None and self._map_thread.isRunning()):
            self.map_status.setText("Computing the map…")
            self._map_thread = TaskThread(lambda progress: compute_map(db_path), self)
            self._map_thread.succeeded.connect(self._show_map)
            self._map_thread.failed.connect(lambda m: self.map_status.setText(f"No map: {m}"))
            self._map_thread.start()

    def _show(self, data: dict) -> None:
        self.data = data
        rev, st = data["review"], data["status"]
        rat = rev["rationality"]
        o = rat["overall"]
        skipped = f", {o['skipped']} skipped" if o.get("skipped") else ""
        if o["reviewed"]:
            self.card_rationality.set(pct(o["score"]),
                                      f"95% CI {ci(o)} · {o['accepted']} of {o['reviewed']} reviewed{skipped}")
        else:
            self.card_rationality.set("—", f"no accept/reject verdicts yet{skipped}; review in the Review tab")
        a = rev["agreement"]
        if a["items_with_two_or_more_verdicts"]:
            self.card_agreement.set(f"κ {num(a['fleiss_kappa_verdicts'], 2)}",
                                    f"Fleiss κ on verdicts · Krippendorff α {num(a['krippendorff_alpha_verdicts'], 2)}"
                                    f" · {a['items_with_two_or_more_verdicts']} items with ≥2 raters ({a['raters']} raters)")
        else:
            self.card_agreement.set("—", f"needs items reviewed by two or more raters ({a['raters']} rater"
                                         f"{'s' if a['raters'] != 1 else ''} so far)")
        runs = [x for x in (rev.get("intensity_agreement_runs") or {}).get("systems", [])
                if x.get("krippendorff_alpha_interval") is not None]
        if runs:  # the annotator's consistency across its own runs (the paper's measure)
            best = max(runs, key=lambda x: x["units"])
            self.card_agreement.detail.setText(self.card_agreement.detail.text() + (
                f"<br>model runs ({best['model']}, {best['runs']} runs): intensity α "
                f"{num(best['krippendorff_alpha_interval'], 2)}"))
        kept, total = st["retained_duration_s"], st["total_duration_s"]
        self.card_retention.set(pct(st["retention"]) if total else "—",
                                f"{kept / 60:.1f} of {total / 60:.1f} min · {st['segments_ok']} usable segments")
        n_ann = st["counts"]["annotations"]
        self.card_cost.set(f"${st['cost_usd']:.2f}",
                           f"{n_ann} answers · {st['input_tokens']:,} in / {st['output_tokens']:,} out tokens"
                           + (f" · ${st['cost_usd'] / n_ann * 1000:.2f} per 1k" if n_ann else ""))
        self.chart.show_per_emotion(rat["per_emotion"])
        _fill(self.rater_table, [[n, p["accepted"], p["reviewed"], p["skipped"], pct(p["score"]), ci(p)]
                                 for n, p in rat["per_rater"].items()])
        _fill(self.runs_table, [[r["id"], (r["started_at"] or "")[:16].replace("T", " "), r["status"],
                                 r["stages"] or "", "—" if r["duration_s"] is None else f"{r['duration_s']:.0f} s",
                                 r["answers"], "—" if r["per_min"] is None else f"{r['per_min']:.1f}",
                                 f"${r['cost'] or 0:.3f}", r["errors"]] for r in data["runs"]], text_columns=(1, 2, 3))
        self.status.setText(f"{rev['reviews']} verdicts · {st['counts']['segments']} segments · "
                            f"{st['counts']['videos']} videos")
        self.refreshed.emit()

    def shutdown(self, wait_ms: int = 60000) -> None:
        """Wait for background computations (a QThread must not outlive its window)."""
        for t in (self._thread, self._map_thread):
            if t is not None and t.isRunning():
                t.wait(wait_ms)

    def closeEvent(self, ev) -> None:
        self.shutdown()
        super().closeEvent(ev)

    def _show_map(self, points: list) -> None:
        self.map.show_points(points)
        self.map_status.setText(f"{len(points)} answers" if points else "")

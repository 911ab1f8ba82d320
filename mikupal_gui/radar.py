"""Radar chart of every category intensity of one answer, with the min–max band across runs."""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QFont, QPainterPath, QPolygonF
from PySide6.QtWidgets import QGraphicsPathItem

from mikupal.taxonomy import TaxonomyError, load_label_set

RINGS = (0.25, 0.5, 0.75, 1.0)


def _angles(n: int) -> np.ndarray:
    # first category at 12 o'clock, clockwise like a clock face
    return math.pi / 2 - 2 * math.pi * np.arange(n) / n


def polar_xy(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = _angles(len(values))
    return values * np.cos(a), values * np.sin(a)


class RadarView(pg.PlotWidget):
    def __init__(self, parent=None):
        super().__init__(parent, background="#1e1f22")
        self.setFocusPolicy(Qt.NoFocus)
        self.setMenuEnabled(False)
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        pi = self.getPlotItem()
        pi.hideAxis("left")
        pi.hideAxis("bottom")
        self.setAspectLocked(True)
        self.setMinimumSize(300, 300)
        self._label_font = QFont()
        self._label_font.setPointSize(7)
        self.categories: list[str] = []
        self.colors: list[str] = []
        self._static: list = []
        self._brushes: list = []
        self._symbol_pen = pg.mkPen("#1e1f22")
        self._band = QGraphicsPathItem()
        self._band.setBrush(pg.mkBrush(255, 200, 87, 70))
        self._band.setPen(pg.mkPen(255, 200, 87, 120, width=1))
        self._band.setZValue(5)
        self.addItem(self._band)
        self.curve = pg.PlotDataItem([], [], pen=pg.mkPen("#ffc857", width=2.5))
        self.curve.setZValue(10)
        self.addItem(self.curve)
        self._title = pg.TextItem("", color="#d0d0d0", anchor=(0.5, 0.5))
        self.addItem(self._title)
        self._values = np.zeros(0)
        self._spread: tuple[np.ndarray, np.ndarray] | None = None

    def set_label_set(self, name: str) -> None:
        try:
            ls = load_label_set(name)
            names, colors = ls.names, [c.color for c in ls.categories]
        except TaxonomyError:
            names, colors = [], []
        self._set_axes(names, colors)

    def _set_axes(self, names: list[str], colors: list[str]) -> None:
        if names == self.categories:
            return
        for it in self._static:
            self.removeItem(it)
        self._static = []
        self.categories, self.colors = list(names), list(colors)
        self._brushes = [pg.mkBrush(c) for c in colors]  # reused: pyqtgraph caches rendered symbols
        n = len(names)
        if n < 3:
            return
        a = _angles(n)
        ring_pen = pg.mkPen(255, 255, 255, 40, width=1)
        for r in RINGS:
            x, y = np.append(r * np.cos(a), r * np.cos(a[0])), np.append(r * np.sin(a), r * np.sin(a[0]))
            self._static.append(pg.PlotDataItem(x, y, pen=ring_pen))
        for ang in a:
            self._static.append(pg.PlotDataItem([0, math.cos(ang)], [0, math.sin(ang)], pen=ring_pen))
        for name, col, ang in zip(names, colors, a):
            ax, ay = math.cos(ang), math.sin(ang)
            anchor = (0.5 - 0.5 * ax, 0.5 + 0.5 * ay)  # push the text outward from the spoke end
            t = pg.TextItem(name, color=readable(col), anchor=anchor)
            t.setFont(self._label_font)
            t.setPos(1.06 * ax, 1.06 * ay)
            self._static.append(t)
        for it in self._static:
            self.addItem(it)
        self.setRange(xRange=(-1.6, 1.6), yRange=(-1.3, 1.3), padding=0)

    def set_intensities(self, intensities: dict[str, float], runs: list[dict[str, float]] | None = None,
                        label_set: str | None = None) -> None:
        """Plot one answer; `runs` (all run_index answers, this one included) draws the spread band."""
        if label_set:
            self.set_label_set(label_set)
        if not self.categories:  # unknown label set: use the answer's own keys
            self._set_axes(list(intensities), ["#c0c0c0"] * len(intensities))
        vals = np.array([_get(intensities, c) for c in self.categories], float)
        self._values = vals
        x, y = polar_xy(vals)
        self.curve.setData(np.append(x, x[:1]), np.append(y, y[:1]), symbol="o", symbolSize=8,
                           symbolBrush=self._brushes + self._brushes[:1], symbolPen=self._symbol_pen)
        path = QPainterPath()
        self._spread = None
        if runs and len(runs) > 1:
            m = np.array([[_get(r, c) for c in self.categories] for r in runs], float)
            lo, hi = m.min(axis=0), m.max(axis=0)
            self._spread = (lo, hi)
            path.setFillRule(Qt.OddEvenFill)
            for ring in (hi, lo):
                px, py = polar_xy(ring)
                path.addPolygon(QPolygonF([QPointF(a, b) for a, b in zip(px, py)] + [QPointF(px[0], py[0])]))
        self._band.setPath(path)
        self._title.setText("" if runs is None or len(runs) < 2 else f"band: min–max of {len(runs)} runs")
        self._title.setAnchor((0, 0))
        self._title.setPos(-1.58, 1.28)

    def clear_values(self, message: str = "") -> None:
        self.curve.setData([], [])
        self._band.setPath(QPainterPath())
        self._values = np.zeros(0)
        self._spread = None
        self._title.setText(message)
        self._title.setAnchor((0.5, 0.5))
        self._title.setPos(0, 0)

    def plotted_values(self) -> dict[str, float]:
        """Intensities read back from the drawn curve (radius of each vertex)."""
        x, y = self.curve.getData()
        if x is None or len(x) == 0:
            return {}
        r = np.hypot(x[:-1], y[:-1])
        return {c: float(v) for c, v in zip(self.categories, r)}

    def spread(self) -> tuple[np.ndarray, np.ndarray] | None:
        return self._spread


def readable(color: str) -> QColor:
    """The category colour, lightened until it reads on the dark background."""
    c = QColor(color)
    for _ in range(6):
        if c.lightness() >= 150:
            break
        c = c.lighter(140) if c.lightness() > 20 else QColor.fromHsl(c.hslHue(), c.hslSaturation(), 60)
    return c


def _get(d: dict[str, float], name: str) -> float:
    if name in d:
        v = d[name]
    else:
        low = {k.casefold(): v for k, v in d.items()}
        v = low.get(name.casefold(), 0.0)
    try:
        return min(1.0, max(0.0, float(v)))
    except (TypeError, ValueError):
        return 0.0

"""The segment's audio as a min/max envelope (pyqtgraph) with segment bounds and a playhead."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal

from mikupal.media import MediaError, decode_span


def load_envelope(path: str | Path, start_s: float, end_s: float, bins: int = 1200,
                  rate: int = 8000, audio_track: str = "default") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, min, max) of the mono audio in [start_s, end_s] on the project clock (the one
    segments and the player use); empty arrays when there is no audio."""
    start_s = max(0.0, start_s)
    try:
        x = decode_span(path, start_s, end_s, rate, audio_track=audio_track)
    except (MediaError, OSError):
        return np.zeros(0), np.zeros(0), np.zeros(0)
    if len(x) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    t = start_s + np.arange(len(x)) / rate
    bins = max(1, min(bins, len(x)))
    edges = np.linspace(0, len(x), bins + 1).astype(int)
    lo = np.minimum.reduceat(x, edges[:-1])
    hi = np.maximum.reduceat(x, edges[:-1])
    return t[edges[:-1]], lo, hi


class WaveformView(pg.PlotWidget):
    """Click to seek; the shaded band is the segment, the rest is context."""

    seekRequested = Signal(float)

    def __init__(self, parent=None):
        super().__init__(parent, background="#1e1f22")
        self.setFocusPolicy(Qt.NoFocus)  # keys belong to the review workspace
        self.setMenuEnabled(False)
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        self.getPlotItem().hideAxis("left")
        self.getPlotItem().getAxis("bottom").setStyle(tickTextOffset=2)
        self.setFixedHeight(90)
        self.setYRange(-1, 1, padding=0.05)
        # one vertical stroke per bin (min to max): a filled look at a fraction of a fill's cost
        self._env = self.plot([], [], pen=pg.mkPen("#5fa8d3", width=1), connect="pairs")
        self.segment = pg.LinearRegionItem(movable=False, brush=pg.mkBrush(255, 255, 255, 28),
                                           pen=pg.mkPen("#f0c674", width=1.5))
        self.addItem(self.segment)
        self.playhead = pg.InfiniteLine(0, angle=90, pen=pg.mkPen("#ff5370", width=2))
        self.addItem(self.playhead)
        self.scene().sigMouseClicked.connect(self._clicked)

    def set_audio(self, times: np.ndarray, lo: np.ndarray, hi: np.ndarray, seg_start: float, seg_end: float,
                  view: tuple[float, float]) -> None:
        peak = float(max(np.abs(lo).max(initial=0), np.abs(hi).max(initial=0))) or 1.0
        x = np.repeat(times, 2)
        y = np.empty(2 * len(lo))
        y[0::2], y[1::2] = lo / peak, hi / peak
        self._env.setData(x, y, connect="pairs")
        self.segment.setRegion((seg_start, seg_end))
        self.setXRange(*view, padding=0)
        self.playhead.setValue(view[0])

    def set_playhead(self, t: float) -> None:
        self.playhead.setValue(t)

    def _clicked(self, ev) -> None:
        if ev.button() == Qt.LeftButton:
            x = self.getPlotItem().vb.mapSceneToView(ev.scenePos()).x()
            self.seekRequested.emit(float(x))

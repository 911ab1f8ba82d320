"""Review workspace responsiveness, in milliseconds and as ratios of a 16 ms frame (60 Hz).

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/gui.py [--items 30]

- next item: time from the Next key's slot to the new item painted (radar, labels, first frame,
  waveform), with the prefetch (the product path) and cold (prefetch cache emptied first: the
  baseline, measured in the same process). p50/p95, ratio prefetched/cold and vs the frame.
- radar redraw: setting all 26 intensities + run band and repainting the radar widget.
Each measurement is one function; the shell adds project-open time beside them.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MIKUPAL_AUDIO", "none")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

FRAME_MS = 1000.0 / 60


def pct(xs: list[float]) -> tuple[float, float]:
    return float(np.percentile(xs, 50)), float(np.percentile(xs, 95))


def build_bench_project(root: Path, items: int):
    import review_fixture as rf
    emotions = ("Joy", "Anger", "Sadness", "Fear", "Surprise", "Calmness")
    return rf.build_project(root, emotions=tuple(emotions[i % len(emotions)] for i in range(items)),
                            runs=3, seg_len=0.8)


def _painted(app, ws) -> None:
    ws.repaint()  # synchronous paint of the whole workspace, as the user would see it
    app.processEvents()


def next_item_latency(app, ws, n: int, prefetch: bool = True) -> list[float]:
    """ms per Next (Right key slot) until the item is painted."""
    out = []
    ws.set_queue("all")
    for _ in range(min(n, len(ws.ids) - 1)):
        if prefetch:  # the user spends a moment on each item; the prefetch finishes meanwhile
            for f in list(ws.prefetch.cache.values()):
                f.result()
        else:
            ws.prefetch.keep_only(set())
        t0 = time.perf_counter()
        ws.next_item()
        _painted(app, ws)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def radar_redraw_ms(app, radar, n: int = 100) -> list[float]:
    from mikupal.taxonomy import load_label_set
    names = load_label_set("cowen26").names
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        runs = [dict(zip(names, rng.uniform(0, 1, len(names)))) for _ in range(3)]
        t0 = time.perf_counter()
        radar.set_intensities(runs[0], runs, "cowen26")
        radar.repaint()
        app.processEvents()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def project_open(app, n_segments: int = 100_000, repeats: int = 3) -> dict:
    """The shell's segments table on an n-segment project: open (id query + first page), next
    page, sort and filter (both run off the GUI thread), the longest event-loop turn meanwhile;
    baseline: loading every display row eagerly, as a naive table model would (same process)."""
    import statistics

    from PySide6.QtCore import Qt

    from gui_shell_fixture import build_big_project
    from mikupal_gui import models

    tmp = tempfile.TemporaryDirectory()
    project = build_big_project(Path(tmp.name) / "big", n_segments)
    stalls: list[float] = []

    def wait(m):
        worst = 0.0
        while m.busy():
            t = time.perf_counter()
            app.processEvents()
            worst = max(worst, (time.perf_counter() - t) * 1000)
            time.sleep(0.001)
        stalls.append(worst)

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1000

    conn = models.open_readonly(project.db_path)
    eager = statistics.median(timed(lambda: models.segment_rows(
        conn, models.ordered_segment_ids(conn, models.SegmentFilter()))) for _ in range(repeats))
    conn.close()
    res: dict[str, list[float]] = {"open": [], "page": [], "sort": [], "filter": []}
    for _ in range(repeats):
        box = {}
        res["open"].append(timed(lambda: (box.setdefault("m", models.SegmentTableModel(project.db_path)),
                                          wait(box["m"]))))
        m = box["m"]
        res["page"].append(timed(m.fetchMore))
        res["sort"].append(timed(lambda: (m.sort(models.COLUMN_INDEX["emotion"], Qt.SortOrder.AscendingOrder), wait(m))))
        res["filter"].append(timed(lambda: (m.set_filter(models.SegmentFilter(text="fox", min_score=0.8)), wait(m))))
        m.close()
    tmp.cleanup()
    out = {k: statistics.median(v) for k, v in res.items()}
    out.update(eager=eager, worst_turn=max(stalls), segments=n_segments)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=30)
    ap.add_argument("--segments", type=int, default=100_000, help="project size for the open/sort/filter timings")
    a = ap.parse_args()
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance() or QApplication([])
    from mikupal_gui.review import ReviewWorkspace

    with tempfile.TemporaryDirectory() as tmp:
        proj = build_bench_project(Path(tmp) / "bench", a.items)
        ws = ReviewWorkspace(proj.db_path, proj.root)
        ws.resize(1280, 760)
        ws.show()
        ws.set_rater("bench")
        cold = next_item_latency(app, ws, a.items, prefetch=False)
        warm = next_item_latency(app, ws, a.items, prefetch=True)
        radar = radar_redraw_ms(app, ws.radar)
        ws.shutdown()

    c50, c95 = pct(cold)
    w50, w95 = pct(warm)
    r50, r95 = pct(radar)
    print(f"next item, prefetched : p50 {w50:7.1f} ms  p95 {w95:7.1f} ms  = {w50 / FRAME_MS:5.2f} / {w95 / FRAME_MS:5.2f} frames")
    print(f"next item, cold (base): p50 {c50:7.1f} ms  p95 {c95:7.1f} ms  = {c50 / FRAME_MS:5.2f} / {c95 / FRAME_MS:5.2f} frames")
    print(f"prefetch / cold ratio : p50 {w50 / c50:5.2f}  p95 {w95 / c95:5.2f}")
    print(f"radar redraw          : p50 {r50:7.2f} ms  p95 {r95:7.2f} ms  = {r50 / FRAME_MS:5.2f} / {r95 / FRAME_MS:5.2f} of a 16 ms frame")
    po = project_open(app, a.segments)
    print(f"open {po['segments']:,} segments  : {po['open']:7.1f} ms = {po['open'] / po['eager']:5.2f} x eager load of every row "
          f"({po['eager']:.0f} ms, baseline)")
    print(f"next table page       : {po['page']:7.1f} ms = {po['page'] / FRAME_MS:5.2f} frames")
    print(f"sort by emotion       : {po['sort']:7.1f} ms = {po['sort'] / po['eager']:5.2f} x eager (off the GUI thread)")
    print(f"filter text+intensity : {po['filter']:7.1f} ms = {po['filter'] / po['eager']:5.2f} x eager (off the GUI thread)")
    print(f"longest GUI turn then : {po['worst_turn']:7.1f} ms = {po['worst_turn'] / FRAME_MS:5.2f} frames")


if __name__ == "__main__":
    main()

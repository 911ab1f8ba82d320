"""The desktop shell: tables over a real project.db, filters in SQL, the run panel's thread
bridge, the dashboard, settings (API keys) and restored state. Runs offscreen (pytest-qt)."""
from __future__ import annotations

import json
import math
import os
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from PySide6.QtCore import QSettings, Qt, QTimer  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from gui_shell_fixture import build_big_project  # noqa: E402

from mikupal_gui import keys, models  # noqa: E402

SECRET = "AIzaTEST-secret-key-0123456789abcdef"


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    """QSettings() anywhere in the app writes to a temp ini, never the user's real one."""
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "MIKUPAL_OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    yield tmp_path / "qsettings"


@pytest.fixture()
def settings(isolated_settings):
    return QSettings(str(isolated_settings / "test.ini"), QSettings.Format.IniFormat)


@pytest.fixture()
def small(tmp_path):
    return build_big_project(tmp_path / "small", 300, n_videos=5, runs=2)


def wait_query(qtbot, model, timeout=20000):
    """Wait until the model's background id query has landed."""
    qtbot.waitUntil(lambda: not model.busy(), timeout=timeout)


def all_ids(model) -> list[int]:
    while model.canFetchMore():
        model.fetchMore()
    return [model.data(model.index(r, 0)) for r in range(model.rowCount())]


def expected_rows(db_path) -> dict[int, dict]:
    """Per segment, computed in Python straight from the tables (independent of the SQL)."""
    import sqlite3

    c = sqlite3.connect(db_path)
    out = {sid: {"text": text, "status": st, "emotion": None, "score": None, "latest": {}, "ann": None}
           for sid, text, st in c.execute("SELECT id, text, status FROM segments")}
    for aid, sid, run, emo, inten in c.execute(
            "SELECT id, segment_id, run_index, primary_emotion, intensities_json FROM annotations ORDER BY id"):
        if run == 0:
            out[sid].update(emotion=emo, score=json.loads(inten)[emo], ann=aid)
    by_ann = defaultdict(dict)
    for aid, rater, verdict in c.execute(
            "SELECT r.annotation_id, ra.name, r.verdict FROM reviews r JOIN raters ra ON ra.id=r.rater_id ORDER BY r.id"):
        by_ann[aid][rater] = verdict
    for row in out.values():
        row["latest"] = by_ann.get(row["ann"], {})
    return out


def test_tables_show_the_projects_rows_a_page_at_a_time(qtbot, small, settings):
    from mikupal_gui.app import build_window

    win = build_window(small.root, settings)
    qtbot.addWidget(win)
    m = win.segments_model
    wait_query(qtbot, m)
    assert m.total() == 300
    assert m.rowCount() == m.page_size == 256       # only the first page is loaded
    assert m.canFetchMore()
    m.fetchMore()
    assert m.rowCount() == 300 and not m.canFetchMore()
    assert win.videos_model.rowCount() == 5
    exp = expected_rows(small.db_path)
    col = models.COLUMN_INDEX
    for r in (0, 137, 299):
        sid = m.segment_id(r)
        assert m.data(m.index(r, col["text"])) == exp[sid]["text"]
        assert m.data(m.index(r, col["emotion"])) == exp[sid]["emotion"]
        assert m.data(m.index(r, col["score"])) == f"{exp[sid]['score']:.2f}"
    assert "300 segments" in win.filter_bar.count.text()
    win.close()


@pytest.mark.parametrize("flt, keep", [
    (models.SegmentFilter(text="#17"), lambda r: "#17" in r["text"]),
    (models.SegmentFilter(text="LAZY dog"), lambda r: "lazy dog" in r["text"]),
    (models.SegmentFilter(emotion="Joy"), lambda r: r["emotion"] == "Joy"),
    (models.SegmentFilter(status="no_face"), lambda r: r["status"] == "no_face"),
    (models.SegmentFilter(min_score=0.8), lambda r: r["score"] >= 0.8),
    (models.SegmentFilter(verdict="accept"), None),
    (models.SegmentFilter(verdict="reject", rater="bob"), lambda r: r["latest"].get("bob") == "reject"),
    (models.SegmentFilter(verdict="unreviewed", rater="alice"), lambda r: "alice" not in r["latest"]),
    (models.SegmentFilter(verdict="unreviewed"), lambda r: not r["latest"]),
    (models.SegmentFilter(emotion="Anger", min_score=0.7, status="ok"),
     lambda r: r["emotion"] == "Anger" and r["score"] >= 0.7 and r["status"] == "ok"),
])
def test_filters_match_the_rows_computed_from_the_tables(qtbot, small, flt, keep):
    import sqlite3

    exp = expected_rows(small.db_path)
    if keep is None:  # "accept" by any rater: the newest review row on the primary answer
        c = sqlite3.connect(small.db_path)
        newest = {a: v for a, v in c.execute("SELECT annotation_id, verdict FROM reviews ORDER BY id")}
        keep = lambda r: newest.get(r["ann"]) == "accept"  # noqa: E731
    want = sorted(sid for sid, r in exp.items() if keep(r))
    assert want, "the fixture must exercise the filter"
    m = models.SegmentTableModel(small.db_path)
    try:
        m.set_filter(flt)
        wait_query(qtbot, m)
        assert m.total() == len(want)
        assert all_ids(m) == want
    finally:
        m.close()


def test_sorting_happens_in_sql_over_all_rows(qtbot, small):
    exp = expected_rows(small.db_path)
    m = models.SegmentTableModel(small.db_path, page_size=50)
    try:
        m.sort(models.COLUMN_INDEX["score"], Qt.SortOrder.DescendingOrder)
        wait_query(qtbot, m)
        assert m.rowCount() == 50                    # still lazy after sorting
        top = m.segment_id(0)
        assert exp[top]["score"] == max(r["score"] for r in exp.values())
        m.sort(models.COLUMN_INDEX["emotion"], Qt.SortOrder.AscendingOrder)
        wait_query(qtbot, m)
        emos = [exp[m.segment_id(i)]["emotion"] for i in range(m.total())]
        assert emos == sorted(emos)
    finally:
        m.close()


def test_filter_bar_typing_filters_the_table(qtbot, small, settings):
    from mikupal_gui.app import build_window

    win = build_window(small.root, settings)
    qtbot.addWidget(win)
    wait_query(qtbot, win.segments_model)
    with qtbot.waitSignal(win.segments_model.totalChanged, timeout=20000):
        qtbot.keyClicks(win.filter_bar.search, "#29")
    want = [sid for sid, r in expected_rows(small.db_path).items() if "#29" in r["text"]]
    assert win.segments_model.total() == len(want) > 0
    assert f"{len(want)} segment" in win.filter_bar.count.text()
    emotion_idx = win.filter_bar.emotion.findData("Joy")
    with qtbot.waitSignal(win.segments_model.totalChanged, timeout=20000):
        win.filter_bar.emotion.setCurrentIndex(emotion_idx)
    assert all(win.segments_model.data(win.segments_model.index(r, models.COLUMN_INDEX["emotion"])) == "Joy"
               for r in range(win.segments_model.rowCount()))
    win.close()


def test_a_100k_segment_project_opens_lazily(qtbot, tmp_path):
    project = build_big_project(tmp_path / "big", 100_000, n_videos=40)
    m = models.SegmentTableModel(project.db_path)
    try:
        wait_query(qtbot, m, timeout=60000)
        assert m.total() == 100_000
        assert m.rowCount() == m.page_size            # Qt holds one page, not 100k rows
        m.fetchMore()
        assert m.rowCount() == 2 * m.page_size
        row = m.row_of(50_000)                        # jumping deep loads pages up to it only
        assert row == 49_999 and m.rowCount() < 50_000 + 2 * m.page_size
        assert m.data(m.index(row, 0)) == 50_000
        m.set_filter(models.SegmentFilter(emotion="Fear", min_score=0.9))
        wait_query(qtbot, m, timeout=60000)
        assert 0 < m.total() < 100_000 and m.rowCount() <= m.page_size
    finally:
        m.close()


def test_verdict_refreshes_one_row_in_place(qtbot, small):
    import sqlite3

    m = models.SegmentTableModel(small.db_path)
    try:
        wait_query(qtbot, m)
        sid = m.segment_id(3)
        c = sqlite3.connect(small.db_path)
        aid = c.execute("SELECT MAX(id) FROM annotations WHERE segment_id=? AND run_index=0", (sid,)).fetchone()[0]
        rid = c.execute("INSERT INTO raters (name) VALUES ('carol')").lastrowid
        c.execute("INSERT INTO reviews (annotation_id, rater_id, verdict, created_at) VALUES (?,?,'reject','now')",
                  (aid, rid))
        c.commit()
        with qtbot.waitSignal(m.dataChanged, timeout=30000):
            m.refresh_segment(sid)
        cell = m.index(3, models.COLUMN_INDEX["verdict"])
        assert "✗1" in m.data(cell)
        assert "carol: reject" in m.data(cell, Qt.ItemDataRole.ToolTipRole)
    finally:
        m.close()


# ---- run panel: tests/test_gui_run_panel.py drives it through its controls (child runs) ----------


# ---- dashboard ---------------------------------------------------------------------------

def test_dashboard_shows_rationality_with_intervals_and_agreement(qtbot, small):
    from mikupal.metrics import wilson_interval

    from mikupal_gui.dashboard import Dashboard

    dash = Dashboard()
    qtbot.addWidget(dash)
    dash.set_project(small.db_path)
    with qtbot.waitSignal(dash.refreshed, timeout=60000):
        dash.refresh(with_map=False)
    exp = expected_rows(small.db_path)
    acc = rej = 0
    for r in exp.values():
        for v in r["latest"].values():
            acc += v == "accept"
            rej += v == "reject"
    assert dash.card_rationality.value.text() == f"{100 * acc / (acc + rej):.1f}%"
    lo, hi = wilson_interval(acc, acc + rej)
    assert f"{100 * lo:.1f}–{100 * hi:.1f}%" in dash.card_rationality.detail.text()
    assert dash.card_agreement.value.text().startswith("κ ")           # alice and bob overlap
    assert dash.rater_table.rowCount() == 2
    assert set(dash.chart.names) == {r["emotion"] for r in exp.values() if r["latest"]}
    assert dash.runs_table.rowCount() == 1
    dash.shutdown()


def test_emotion_map_click_opens_the_answer(qtbot, small):
    from mikupal_gui.dashboard import compute_map, EmotionMap

    points = compute_map(small.db_path)
    assert points
    view = EmotionMap()
    qtbot.addWidget(view)
    view.show_points(points)
    spot = view.scatter.points()[5]
    with qtbot.waitSignal(view.annotationClicked) as blocker:
        view._clicked(view.scatter, [spot])
    assert blocker.args == [points[5].annotation_id]


# ---- settings, keys and state ---------------------------------------------------------------

class MemoryKeyring:
    """An OS keyring stand-in (the only fake: the OS edge)."""

    def __init__(self):
        import keyring.backend

        class _KR(keyring.backend.KeyringBackend):
            priority = 10
            store: dict = {}

            def get_password(self, service, username):
                return self.store.get((service, username))

            def set_password(self, service, username, password):
                self.store[(service, username)] = password

            def delete_password(self, service, username):
                self.store.pop((service, username), None)

        self.backend = _KR()


@pytest.fixture()
def memory_keyring():
    import keyring

    old = keyring.get_keyring()
    kr = MemoryKeyring().backend
    kr.store.clear()
    keyring.set_keyring(kr)
    yield kr
    keyring.set_keyring(old)


def _grep_tree(root: Path, needle: str) -> list[Path]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and needle.encode() in p.read_bytes():
            hits.append(p)
    return hits


def test_settings_keep_the_key_in_the_keyring_never_the_project(qtbot, small, settings, memory_keyring,
                                                                isolated_settings, monkeypatch):
    from mikupal_gui.app import build_window
    from mikupal_gui.dialogs import SettingsDialog

    win = build_window(small.root, settings)
    qtbot.addWidget(win)
    dlg = SettingsDialog(win)
    qtbot.addWidget(dlg)
    dlg.edits["GEMINI_API_KEY"].setText(SECRET)
    assert dlg.save()
    assert memory_keyring.store[(keys.SERVICE, "GEMINI_API_KEY")] == SECRET
    assert keys.source_of("GEMINI_API_KEY") == "keyring"
    win.close()
    settings.sync()
    assert _grep_tree(small.root, SECRET) == []
    assert _grep_tree(isolated_settings, SECRET) == []
    # A run hands it to the pipeline through the environment; an environment key wins.
    assert keys.export_to_environment() == ["GEMINI_API_KEY"]
    assert os.environ["GEMINI_API_KEY"] == SECRET
    monkeypatch.setenv("GEMINI_API_KEY", "from-env-0123456789")
    assert keys.export_to_environment() == []
    assert os.environ["GEMINI_API_KEY"] == "from-env-0123456789"


def test_without_a_keyring_the_dialog_points_to_the_environment(qtbot):
    import keyring
    from keyring.backends import fail

    from mikupal_gui.dialogs import SettingsDialog

    old = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        assert keys.keyring_status()[0] is False
        with pytest.raises(keys.KeyringUnavailable, match="GEMINI_API_KEY"):
            keys.store_key("GEMINI_API_KEY", SECRET)
        dlg = SettingsDialog()
        qtbot.addWidget(dlg)
        assert not dlg.edits["GEMINI_API_KEY"].isEnabled()
        texts = " ".join(w.text() for w in dlg.findChildren(type(dlg.sources["GEMINI_API_KEY"])))
        assert "No OS keyring" in texts and "GEMINI_API_KEY" in texts
    finally:
        keyring.set_keyring(old)


def test_window_state_and_last_project_come_back(qtbot, small, settings):
    from mikupal_gui.app import build_window, pick_project
    from mikupal_gui.dialogs import recent_projects

    win = build_window(small.root, settings)
    qtbot.addWidget(win)
    wait_query(qtbot, win.segments_model)
    win.run_dock.hide()
    win.segments_view.sortByColumn(models.COLUMN_INDEX["start"], Qt.SortOrder.DescendingOrder)
    wait_query(qtbot, win.segments_model)
    win.set_rater("alice")                  # named at session start (no dialog in the test)
    win.open_segment(42)                    # the last item opened for review
    win.tabs.setCurrentIndex(2)
    win.dashboard.shutdown()
    win.resize(1250, 690)                    # the default is 1400 x 900
    shown = win.size()
    win.close()

    assert pick_project(None, settings) == Path(small.root)
    assert recent_projects(settings)[0] == str(Path(small.root).resolve())
    win2 = build_window(small.root, settings)
    qtbot.addWidget(win2)
    wait_query(qtbot, win2.segments_model)
    assert win2.tabs.currentIndex() == 2
    assert shown.height() == 690 and win2.height() == 690  # the saved geometry came back (offscreen
    #                                                   clamps the width to its screen, not the height)
    assert not win2.run_dock.isVisible()
    assert win2.segments_model.sort_key == ("start", True)
    assert win2.last_segment == 42
    assert win2.rater == "alice"
    win2._fill_recent()
    assert [a.text() for a in win2.recent_menu.actions()] == [str(Path(small.root).resolve())]
    win2.dashboard.shutdown()
    win2.close()


def test_mikupal_gui_opens_the_project_and_returns_the_exit_code(small, tmp_path):
    """`mikupal gui PROJECT` in a real process: the window opens the project, the user closes
    it, the process exits 0 (a script closes the window once the table has rows)."""
    import subprocess

    script = (
        "import sys\n"
        "from PySide6.QtCore import QTimer\n"
        "from PySide6.QtWidgets import QApplication\n"
        "import mikupal_gui.app as gui\n"
        "make = gui.make_app\n"
        "def close_when_loaded():\n"
        "    wins = [w for w in QApplication.topLevelWidgets() if type(w).__name__ == 'MainWindow']\n"
        "    m = wins[0].segments_model if wins else None\n"
        "    if m is not None and m.rowCount() and not m.busy():\n"
        "        print('rows', m.total(), flush=True); wins[0].close()\n"
        "    else:\n"
        "        QTimer.singleShot(100, close_when_loaded)\n"
        "def make_app(argv=None):\n"
        "    a = make(argv); QTimer.singleShot(100, close_when_loaded); return a\n"
        "gui.make_app = make_app\n"
        "from mikupal_gui.launcher import main\n"
        "sys.argv = ['mikupal', 'gui', sys.argv[1]]\n"
        "main()\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
           "HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-c", script, str(small.root)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "rows 300" in r.stdout
    assert (tmp_path / "cfg" / "MIKU-PAL" / "MIKU-PAL.conf").exists()   # state saved for the next start


def test_pipeline_never_imports_qt():
    import subprocess

    code = ("import sys, mikupal.cli, mikupal.runner, mikupal.store, mikupal.metrics; "
            "sys.exit(any(m.startswith('PySide6') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---- export dialog ---------------------------------------------------------------------------

def test_export_dialog_previews_then_exports_in_the_background(qtbot, tmp_path):
    import export_fixture as fx

    from mikupal.export import ExportFilters
    from mikupal.export.dataset import preview_export

    from mikupal_gui.dialogs import ExportDialog

    proj, clips = fx.build(tmp_path / "proj", tmp_path / "videos")
    dlg = ExportDialog(proj.root, fx.EMOTIONS)
    qtbot.addWidget(dlg)
    dlg.out.setText(str(tmp_path / "out"))
    dlg.fmt.setCurrentIndex(dlg.fmt.findData("jsonl"))
    dlg.accepted_only.setChecked(True)
    want = preview_export(proj.root, ExportFilters(accepted_only=True))
    assert 0 < want["clips"] < len(clips)
    try:
        qtbot.waitUntil(lambda: f"<b>{want['clips']}</b> clips" in dlg.preview.text(), timeout=30000)
    except Exception:
        raise AssertionError(f"preview shows {dlg.preview.text()!r}")
    with qtbot.waitSignal(dlg.thread_done, timeout=120000):
        dlg.export_btn.click()
        # click() came back with the export still going: it runs off the GUI thread (its result
        # arrives as a queued signal, which only the event loop can deliver after this line)
        assert dlg.result is None and not dlg.progress.isHidden() and not dlg.export_btn.isEnabled()
    assert dlg.result is not None, dlg.message.text()
    assert dlg.result.n_items == want["clips"] == sum(c.accepted for c in clips)
    assert (tmp_path / "out" / "README.md").exists()
    assert f"exported {want['clips']} clips" in dlg.message.text()
    # A second export into the same non-empty folder needs the "replace" box: one clear line.
    with qtbot.waitSignal(dlg.thread_done, timeout=60000):
        dlg.export_btn.click()
    assert dlg.message.text().startswith("Export failed:") and "\n" not in dlg.message.text()


def test_the_demo_pipeline_from_the_run_panel_reaches_100_percent(qtbot, tmp_path, monkeypatch):
    """The real stages (subtitles ASR, no separation model, Haar faces, sync ASD, baseline
    annotator) on the synthetic demo clip, started as the Start button does."""
    import sqlite3

    from mikupal.demo_project import build_demo_project
    from mikupal.stage import STAGE_ORDER

    from mikupal_gui.run_panel import RunPanel

    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(tmp_path / "models"))
    proj = build_demo_project(tmp_path / "demo", on_line=lambda s: None)
    panel = RunPanel()
    qtbot.addWidget(panel)
    panel.set_project(proj)
    assert panel.backend.currentText() == "baseline"      # the project's settings are the defaults
    assert panel.selected_stages() == list(STAGE_ORDER)
    # A timer of this process notes each turn of the event loop while the child runs (a Start
    # that blocked the GUI thread until the run ended would see none).
    turns_while_running = []
    timer = QTimer()
    timer.timeout.connect(lambda: panel.is_running() and turns_while_running.append(True))
    timer.start(20)
    with qtbot.waitSignal(panel.runFinished, timeout=600000) as blocker:
        panel.start_btn.click()
    timer.stop()
    assert blocker.args == ["finished"], panel.status.text()
    assert panel.errors.rowCount() == 0, panel.errors.item(0, 2).text()
    for stage in STAGE_ORDER:
        bar = panel.bar(stage).bar
        assert bar.value() == bar.maximum() > 0, stage
    n = sqlite3.connect(proj.db_path).execute("SELECT COUNT(DISTINCT segment_id) FROM annotations").fetchone()[0]
    assert n > 0 and panel.bar("emotion").bar.maximum() == n
    assert turns_while_running, "the event loop never turned while the run was going"


def test_an_error_row_for_a_video_shows_that_videos_segments(qtbot, small, settings):
    from mikupal_gui.app import build_window

    win = build_window(small.root, settings)
    qtbot.addWidget(win)
    wait_query(qtbot, win.segments_model)
    with qtbot.waitSignal(win.segments_model.totalChanged, timeout=20000):
        win.open_item(3, -1)
    assert win.tabs.currentIndex() == 0
    assert win.videos_model.video_id(win.videos_view.currentIndex().row()) == 3
    m = win.segments_model
    assert m.total() == 60 and {m.data(m.index(r, 0), m.VideoIdRole) for r in range(m.rowCount())} == {3}
    win.dashboard.shutdown()
    win.close()


def test_project_dialog_creates_a_project_and_lists_recent_ones(qtbot, tmp_path, small):
    from mikupal_gui.dialogs import ProjectDialog, add_recent, recent_projects

    add_recent(small.root)
    add_recent(tmp_path / "gone")                 # no longer a project: not offered
    dlg = ProjectDialog()
    qtbot.addWidget(dlg)
    items = [dlg.recent.item(i).data(Qt.ItemDataRole.UserRole) for i in range(dlg.recent.count())]
    assert items == [str(Path(small.root).resolve())]
    assert dlg.create(tmp_path / "fresh")
    assert dlg.chosen == (tmp_path / "fresh").resolve()
    assert (tmp_path / "fresh" / "mikupal.toml").exists() and (tmp_path / "fresh" / "project.db").exists()
    assert recent_projects() == [str(Path(small.root).resolve())]   # the window adds it when it opens


def test_without_a_display_mikupal_gui_says_so_in_one_line(small, tmp_path):
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["HOME"] = str(tmp_path)
    if sys.platform.startswith("linux"):
        r = subprocess.run([sys.executable, "-m", "mikupal_gui.launcher", "gui", str(small.root)], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1
        assert r.stderr.strip().count("\n") == 0 and "no display" in r.stderr
    else:
        pytest.skip("only Linux runs without a display server")


# ---- the review workspace inside the window ---------------------------------------------------

def test_verdicts_given_in_the_review_tab_show_in_the_table_and_undo(qtbot, tmp_path, settings):
    from PySide6.QtTest import QTest
    from mikupal.project import Project
    from review_fixture import build_project

    from mikupal_gui.app import build_window

    root = tmp_path / "rev"
    Project.create(root)
    rp = build_project(root)
    win = build_window(root, settings)
    qtbot.addWidget(win)
    wait_query(qtbot, win.segments_model)
    assert win.review is not None
    win.set_rater("alice")
    sid = rp.segment_ids[1]
    win.open_segment(sid)
    assert win.tabs.currentIndex() == 1
    qtbot.waitUntil(lambda: win.review.annotation_id == rp.annotation_ids[1], timeout=20000)
    m, col = win.segments_model, models.COLUMN_INDEX["verdict"]
    row = m.row_of(sid)
    with qtbot.waitSignal(win.review.verdictSaved, timeout=10000):
        win.review.setFocus()
        QTest.keyClick(win.review, Qt.Key.Key_A)
    assert m.data(m.index(row, col)) == "✓1"
    assert m.data(m.index(row, col), Qt.ItemDataRole.ToolTipRole) == "alice: accept"
    with qtbot.waitSignal(win.review.verdictUndone, timeout=10000):
        QTest.keyClick(win.review, Qt.Key.Key_U)
    assert m.data(m.index(row, col)) == ""
    assert int(settings.value(f"project_state/{str(Path(root).resolve()).replace('/', '|')}/last_segment")) == sid
    win.close()


def test_dashboard_shows_the_annotators_consistency_across_runs(qtbot, small):
    import json
    import sqlite3

    import krippendorff
    import numpy as np

    from mikupal_gui.dashboard import Dashboard

    # The reference, read straight from SQLite (not through review_stats): interval alpha between
    # the annotator's runs over units = (segment, emotion), from its textbook definition with every
    # unit holding one value per run; checked against the `krippendorff` package on a slice (the
    # package builds a values x values matrix per unit: ~1000 distinct intensities do not fit).
    rows = sqlite3.connect(small.db_path).execute(
        "SELECT segment_id, run_index, intensities_json FROM annotations").fetchall()
    runs = sorted({r for _, r, _ in rows})
    by_run = {r: {} for r in runs}
    for seg, r, js in rows:
        for emo, v in json.loads(js).items():
            by_run[r][(seg, emo)] = v
    units = sorted({u for d in by_run.values() for u in d})
    data = np.array([[by_run[r].get(u, np.nan) for u in units] for r in runs], float)
    assert data.shape == (2, 300 * len(json.loads(rows[0][2]))) and not np.isnan(data).any()

    def alpha_by_definition(d, pairs=True):
        values = d.reshape(-1)
        n = len(values)
        d_o = 2 * ((d[0] - d[1]) ** 2).sum() / n  # within units: both ordered pairs, m_u - 1 = 1
        if pairs:  # every ordered pair of values in the data
            d_e = ((values[:, None] - values[None, :]) ** 2).sum() / (n * (n - 1))
        else:      # the same sum without the n x n matrix
            d_e = 2 * (n * (values ** 2).sum() - values.sum() ** 2) / (n * (n - 1))
        return 1 - d_o / d_e

    part = data[:, :60]
    assert alpha_by_definition(part) == pytest.approx(
        float(krippendorff.alpha(reliability_data=part, level_of_measurement="interval")), abs=1e-9)
    assert alpha_by_definition(data[:, :1500]) == pytest.approx(alpha_by_definition(data[:, :1500], pairs=False))
    alpha = alpha_by_definition(data, pairs=False)
    dash = Dashboard()
    qtbot.addWidget(dash)
    dash.set_project(small.db_path)
    with qtbot.waitSignal(dash.refreshed, timeout=60000):
        dash.refresh(with_map=False)
    assert f"intensity α {alpha:.2f}" in dash.card_agreement.detail.text()
    dash.shutdown()

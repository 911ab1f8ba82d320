"""The run panel through its own controls: each Start runs a child `mikupal run` process
(the command a user would type) and the tests check the run it left in project.db.

The stages are a test build (tests/safety_stages.py, registered with $MIKUPAL_TEST_STAGES
behind the real names, so the panel's own checkboxes pick them); the child finds the module
through PYTHONPATH. One of them calls os.abort() to stand for a native crash.
"""
from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import pytest

from PySide6.QtCore import QSettings, QTimer

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

BUILD = "segments=safety_stages:Segments,emotion=safety_stages:Emotion"
ABORTING = "segments=safety_stages:Segments,emotion=safety_stages:Aborting"


@pytest.fixture(autouse=True)
def child_env(tmp_path, monkeypatch):
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MIKUPAL_TEST_STAGES", BUILD)
    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("MIKUPAL_TEST_SEGMENTS", "3")
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "MIKUPAL_TEST_BARRIER", "MIKUPAL_TEST_EMOTION_SLEEP",
                "MIKUPAL_TEST_LABEL_HOLD_AFTER", "MIKUPAL_TEST_LABEL_RELEASE"):
        monkeypatch.delenv(var, raising=False)


def hold_items(monkeypatch, tmp_path, after: int) -> Path:
    """Emotion items after the `after`-th wait in the child until the returned file exists."""
    release = tmp_path / "release-emotion"
    monkeypatch.setenv("MIKUPAL_TEST_LABEL_HOLD_AFTER", str(after))
    monkeypatch.setenv("MIKUPAL_TEST_LABEL_RELEASE", str(release))
    return release


def project_with_videos(tmp_path, n=2, name="run proj"):
    """A project (with a space in its path: the child's argv must survive it) and n videos."""
    from mikupal.ingest import add_videos
    from mikupal.project import Project
    from review_fixture import make_video

    proj = Project.create(tmp_path / name)
    paths = []
    for i in range(n):
        p = tmp_path / f"v{i}.mp4"
        make_video(p, duration_s=1.0 + i * 0.2)
        paths.append(p)
    db = proj.db()
    add_videos(db, paths)
    db.conn.close()
    return proj


def choose_stages(panel, names):
    for n, cb in panel.stage_boxes.items():
        cb.setChecked(n in names)


def panel_for(qtbot, proj):
    from mikupal_gui.run_panel import RunPanel

    panel = RunPanel()
    qtbot.addWidget(panel)
    panel.set_project(proj)
    panel.show()
    return panel


def q(db_path, sql, *args):
    c = sqlite3.connect(db_path)
    try:
        return c.execute(sql, args).fetchall()
    finally:
        c.close()


def test_start_runs_what_the_controls_say_in_a_child_process(qtbot, tmp_path, monkeypatch):
    # Every emotion item waits until three are in flight at once: the run can only finish
    # if the workers spin box really gave the child three workers.
    monkeypatch.setenv("MIKUPAL_TEST_BARRIER", "3")
    # ... and until this process's event loop has turned with the child running: a Start that
    # blocked the GUI thread for the run would never release it.
    release = hold_items(monkeypatch, tmp_path, after=0)
    proj = project_with_videos(tmp_path)
    panel = panel_for(qtbot, proj)
    choose_stages(panel, {"segments", "emotion"})
    panel.backend.setCurrentText("openai")
    panel.model.setEditText("panel-model-x")
    panel.runs.setValue(2)
    panel.worker_spins["emotion"].setValue(3)
    panel.devices.setText("cpu")
    running_when_the_loop_turned = []

    def loop_turned():
        running_when_the_loop_turned.append(panel.is_running())
        release.touch()

    with qtbot.waitSignal(panel.runFinished, timeout=120000) as blocker:
        panel.start_btn.click()
        assert panel.is_running() and not panel.start_btn.isEnabled() and panel.cancel_btn.isEnabled()
        assert panel.proc.proc.processId() not in (0, os.getpid())   # a child process, not a thread
        QTimer.singleShot(0, loop_turned)
    assert blocker.args == ["finished"], panel.status.text()
    assert running_when_the_loop_turned == [True]
    # The run in the database: the stages chosen, 2 videos x 3 segments x 2 runs, under the
    # backend and model chosen in the panel, each (segment, run index) exactly once.
    (run_id, status, stages), = q(proj.db_path, "SELECT id, status, stages FROM runs")
    assert status == "finished" and set(stages.split(",")) == {"segments", "emotion"}
    rows = q(proj.db_path, "SELECT segment_id, run_index, backend, model, run_id FROM annotations ORDER BY 1, 2")
    segs = [r[0] for r in q(proj.db_path, "SELECT id FROM segments ORDER BY id")]
    assert len(segs) == 6
    assert rows == [(s, i, "openai", "panel-model-x", run_id) for s in segs for i in (0, 1)]
    assert q(proj.db_path, "SELECT COUNT(*) FROM errors") == [(0,)]
    for stage, total in (("segments", 2), ("emotion", 12)):
        bar = panel.bar(stage).bar
        assert bar.maximum() == total and bar.value() == total, stage
    assert f"Run {run_id} finished" in panel.status.text()
    assert panel.start_btn.isEnabled() and not panel.cancel_btn.isEnabled()
    assert "'" + str(proj.root) + "'" in panel.status.toolTip()          # the terminal command, quoted
    # A backup was made at the start and at the end of the run.
    names = sorted(p.name for p in (proj.root / "backups").glob("auto-*.db"))
    assert any("run-start" in n for n in names) and any("run-end" in n for n in names)


def test_cancel_stops_the_child_and_keeps_what_it_finished(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("MIKUPAL_TEST_SEGMENTS", "20")
    hold_items(monkeypatch, tmp_path, after=2)   # two items finish; the other 38 wait for a release that never comes
    proj = project_with_videos(tmp_path)
    panel = panel_for(qtbot, proj)
    choose_stages(panel, {"segments", "emotion"})
    panel.backend.setCurrentText("baseline")
    panel.runs.setValue(1)
    with qtbot.waitSignal(panel.runFinished, timeout=120000) as blocker:
        panel.start_btn.click()
        qtbot.waitUntil(lambda: panel.bar("emotion") is not None and panel.bar("emotion").bar.value() >= 2,
                        timeout=60000)
        panel.cancel_btn.click()
        assert "Cancelling" in panel.status.text()
    assert blocker.args == ["cancelled"]
    assert "cancelled" in panel.status.text()
    assert not panel.is_running()
    assert q(proj.db_path, "SELECT COUNT(*) FROM annotations") == [(2,)]   # what finished, nothing more
    assert q(proj.db_path, "SELECT status FROM runs") == [("cancelled",)]


def test_item_errors_from_the_child_are_listed_and_open_their_item(qtbot, tmp_path, monkeypatch):
    proj = project_with_videos(tmp_path, n=1)
    panel = panel_for(qtbot, proj)
    choose_stages(panel, {"segments"})
    with qtbot.waitSignal(panel.runFinished, timeout=120000):
        panel.start_btn.click()
    sid = q(proj.db_path, "SELECT MIN(id) FROM segments")[0][0]
    c = sqlite3.connect(proj.db_path)
    c.execute("UPDATE segments SET text='poison pill' WHERE id=?", (sid,))
    c.commit()
    c.close()
    choose_stages(panel, {"emotion"})
    panel.backend.setCurrentText("baseline")
    panel.runs.setValue(1)
    with qtbot.waitSignal(panel.runFinished, timeout=120000) as blocker:
        panel.start_btn.click()
    assert blocker.args == ["finished"]                     # a per-item failure; the run goes on
    assert "1 item error" in panel.status.text()
    assert "poisoned" in panel.errors.item(0, 2).text()
    with qtbot.waitSignal(panel.openItem) as opened:
        panel._error_activated(0, 2)
    assert opened.args[1] == sid
    (msg,), = q(proj.db_path, "SELECT message FROM errors")    # the runner stored it in the child
    assert "poisoned" in msg
    assert q(proj.db_path, "SELECT COUNT(*) FROM annotations") == [(2,)]   # the other two segments


def test_a_run_that_cannot_start_says_why_in_one_line(qtbot, tmp_path):
    from mikupal.project_lock import RunLock

    proj = project_with_videos(tmp_path, n=1)
    panel = panel_for(qtbot, proj)
    panel.devices.setText("tpu:0")
    with qtbot.waitSignal(panel.runFinished, timeout=60000) as blocker:
        panel.start_btn.click()
    assert blocker.args == ["failed"]
    text = panel.status.text()
    assert text.startswith("The run could not start:") and "tpu:0" in text and "\n" not in text
    assert panel.start_btn.isEnabled()
    # Another run holds the project (here: this process): Start says who, and nothing runs.
    panel.devices.setText("cpu")
    with RunLock(proj.root, "mikupal run"):
        with qtbot.waitSignal(panel.runFinished, timeout=60000) as blocker:
            panel.start_btn.click()
    assert blocker.args == ["failed"]
    assert f"pid {os.getpid()}" in panel.status.text() and "already holds" in panel.status.text()
    assert q(proj.db_path, "SELECT COUNT(*) FROM runs") == [(0,)]


def test_the_app_survives_a_child_run_that_aborts(qtbot, tmp_path, monkeypatch):
    from mikupal_gui.app import build_window

    monkeypatch.setenv("MIKUPAL_TEST_STAGES", ABORTING)
    proj = project_with_videos(tmp_path)
    settings = QSettings(str(tmp_path / "win.ini"), QSettings.Format.IniFormat)
    win = build_window(proj.root, settings)
    qtbot.addWidget(win)
    panel = win.run_panel
    choose_stages(panel, {"segments", "emotion"})
    panel.backend.setCurrentText("baseline")
    with qtbot.waitSignal(panel.runFinished, timeout=120000) as blocker:
        panel.start_btn.click()
    assert blocker.args == ["crashed"], panel.status.text()
    text = panel.status.text()
    assert "crashed before stage" in text and "emotion finished" in text and "\n" not in text
    assert panel.errors.item(0, 2).text().startswith("the run process crashed")
    # The app is up: the window, its tables over the store, and the next run.
    assert win.isVisible() and panel.start_btn.isEnabled()
    n_segments = q(proj.db_path, "SELECT COUNT(*) FROM segments")[0][0]
    assert n_segments >= 3                        # the segments the child committed before it died
    win.refresh()
    qtbot.waitUntil(lambda: win.segments_model.total() == n_segments, timeout=30000)
    assert q(proj.db_path, "SELECT status FROM runs") == [("running",)]   # died without closing its run
    monkeypatch.setenv("MIKUPAL_TEST_STAGES", BUILD)
    with qtbot.waitSignal(panel.runFinished, timeout=120000) as blocker:
        panel.start_btn.click()    # the dead child's lock is free again
    assert blocker.args == ["finished"], panel.status.text()
    assert q(proj.db_path, "SELECT COUNT(*) FROM annotations") == [(6,)]
    win.close()


def test_file_menu_backs_up_and_restores_the_project(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog, QMessageBox

    from mikupal_gui.app import build_window

    proj = project_with_videos(tmp_path, n=1)
    c = sqlite3.connect(proj.db_path)
    c.execute("INSERT INTO raters (name) VALUES ('alice')")
    c.commit()
    settings = QSettings(str(tmp_path / "win.ini"), QSettings.Format.IniFormat)
    win = build_window(proj.root, settings)
    qtbot.addWidget(win)
    win.act_backup.trigger()
    (made,) = (proj.root / "backups").glob("manual-*.db")
    assert str(made) in win.statusBar().currentMessage()
    c.execute("INSERT INTO raters (name) VALUES ('bob')")
    c.commit()
    # The user picks that file and says yes (the modal dialogs are the user's side).
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(made), "")))
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.StandardButton.Yes))
    win.act_restore.trigger()
    assert "Restored" in win.statusBar().currentMessage()
    assert c.execute("SELECT name FROM raters").fetchall() == [("alice",)]   # seen by an open connection too
    c.close()
    from mikupal.project_lock import open_elsewhere

    assert open_elsewhere(proj.root)                  # `mikupal repair` would wait for the app ...
    win.close()
    assert not open_elsewhere(proj.root)              # ... until it closes the project

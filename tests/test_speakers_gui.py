"""Speakers in the app: the Data table's Speaker column, and rename / merge / split-off done
through the app's own menus and dialogs, checked in the table, the review view and project.db."""
from __future__ import annotations

import shutil

import pytest

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QInputDialog

from mikupal import store
from mikupal.project import Project

import speakers_fixture as F
from qt_dialogs import answer_next_modal
from mikupal_gui import models


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("spkgui")
    proj, truth, by_video = F.build(base / "proj", base)
    F.run(proj)
    return proj, truth


@pytest.fixture()
def win(qtbot, built, tmp_path):
    from mikupal_gui.app import build_window

    proj, truth = built
    root = tmp_path / "proj"
    shutil.copytree(proj.root, root, ignore=shutil.ignore_patterns("project.db*"))
    a, b = proj.db(), store.connect(root / "project.db", migrate=False)
    a.conn.backup(b.conn)
    a.conn.close(), b.conn.close()
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    w = build_window(root, QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: not w.segments_model.busy(), timeout=20000)
    w.truth = truth
    return w


def db_speakers(win) -> dict[int, tuple[int | None, str | None]]:
    db = Project.open(win.project.root).db()
    try:
        return {r[0]: (r[1], r[2]) for r in db.conn.execute(
            "SELECT s.id, s.speaker_id, sp.name FROM segments s LEFT JOIN speakers sp ON sp.id = s.speaker_id")}
    finally:
        db.conn.close()


def table_speakers(qtbot, win) -> dict[int, str]:
    m = win.segments_model
    qtbot.waitUntil(lambda: not m.busy(), timeout=20000)
    while m.canFetchMore():
        m.fetchMore()
    col = models.COLUMN_INDEX["speaker"]
    return {m.data(m.index(r, 0)): m.data(m.index(r, col)) for r in range(m.rowCount())}


def answer_dialog(fill):
    """Answer the next modal QInputDialog the app opens: fill(dialog), then OK."""
    answer_next_modal(QInputDialog, lambda dlg: (fill(dlg), dlg.accept()))


def choose_speaker(speaker_id: int):
    def fill(dlg: QInputDialog):
        dlg.setTextValue(next(t for t in dlg.comboBoxItems() if f"(#{speaker_id}," in t))
    return fill


def test_the_data_table_shows_each_segments_speaker(qtbot, win):
    shown = table_speakers(qtbot, win)
    stored = db_speakers(win)
    assert shown == {sid: name for sid, (_, name) in stored.items()}
    # one name per voice (the generator's truth), three names in all
    by_voice = {}
    for sid, voice in win.truth.items():
        by_voice.setdefault(voice, set()).add(shown[sid])
    assert all(len(v) == 1 for v in by_voice.values()) and len(set().union(*by_voice.values())) == 3
    header = win.segments_model.headerData(models.COLUMN_INDEX["speaker"], Qt.Orientation.Horizontal)
    assert header == "Speaker"


def test_rename_from_the_segments_context_menu(qtbot, win):
    from mikupal_gui.speakers import SpeakerEdits, SpeakerMenu

    sid = next(s for s, v in sorted(win.truth.items()) if v == "A")
    menu = SpeakerMenu(SpeakerEdits(win.segments_view, win.project.db_path, win._speakers_changed), sid, win)
    answer_dialog(lambda d: d.setTextValue("Alice"))
    menu.act_rename.trigger()
    a_segments = [s for s, v in win.truth.items() if v == "A"]
    qtbot.waitUntil(lambda: all(table_speakers(qtbot, win)[s] == "Alice" for s in a_segments), timeout=30000)
    stored = db_speakers(win)
    assert {stored[s][1] for s in a_segments} == {"Alice"}
    assert all(stored[s][1] != "Alice" for s, v in win.truth.items() if v != "A")


def test_merge_two_speakers_in_the_speakers_dialog(qtbot, win):
    stored = db_speakers(win)
    spk = {v: stored[s][0] for s, v in win.truth.items()}
    win.act_speakers.trigger()
    dlg = win.speakers_dialog
    qtbot.waitUntil(dlg.isVisible, timeout=30000)
    assert dlg.table.rowCount() == 3
    dlg.table.selectRow(next(i for i, r in enumerate(dlg.rows) if r["id"] == spk["C"]))
    answer_dialog(choose_speaker(spk["B"]))
    qtbot.mouseClick(dlg.merge_btn, Qt.MouseButton.LeftButton)
    assert dlg.table.rowCount() == 2
    after = db_speakers(win)
    assert {after[s][0] for s, v in win.truth.items() if v in "BC"} == {spk["B"]}
    assert {after[s][0] for s, v in win.truth.items() if v == "A"} == {spk["A"]}
    b_name = after[next(s for s, v in win.truth.items() if v == "B")][1]
    qtbot.waitUntil(lambda: {table_speakers(qtbot, win)[s] for s, v in win.truth.items() if v in "BC"} == {b_name},
                    timeout=30000)


def test_split_a_segment_off_in_the_review_view(qtbot, win):
    sid = next(s for s, v in sorted(win.truth.items()) if v == "B")
    before = db_speakers(win)
    win.set_rater("alice")  # the review tab asks for a rater name first
    win.open_segment(sid)
    btn = win.review.speaker_btn
    qtbot.waitUntil(lambda: btn.segment_id == sid, timeout=20000)
    assert btn.text() == f"Speaker: {before[sid][1]}"
    btn.menu().act_split.trigger()
    after = db_speakers(win)
    new_id, new_name = after[sid]
    assert new_id not in {v[0] for v in before.values()} and new_name == f"Speaker {new_id}"
    assert [s for s, v in after.items() if v[0] == new_id] == [sid]
    assert all(after[s] == before[s] for s in before if s != sid)  # nobody else moved
    assert btn.text() == f"Speaker: {new_name}"
    qtbot.waitUntil(lambda: table_speakers(qtbot, win)[sid] == new_name, timeout=30000)

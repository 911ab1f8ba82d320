"""The rater names themself in the real "Who is reviewing?" dialog and picks a review queue in
the workspace's real combo boxes; what they then do lands in project.db under that name.

Driven through the widgets a person uses: the tab bar, the modal input dialog (typed into and
OK/Cancel clicked), the queue and emotion drop-downs (opened and an item clicked), review keys.
"""
from __future__ import annotations

import sqlite3

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QComboBox, QDialogButtonBox, QInputDialog, QLabel, QLineEdit

from mikupal.project import Project
from qt_dialogs import answer_next_modal
from review_fixture import build_project

from mikupal_gui.main_window import TAB_REVIEW


@pytest.fixture()
def settings(tmp_path):
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    return QSettings(str(tmp_path / "qsettings" / "test.ini"), QSettings.Format.IniFormat)


@pytest.fixture()
def window(qtbot, tmp_path, settings, monkeypatch):
    from mikupal_gui.app import build_window

    monkeypatch.setenv("MIKUPAL_PLAYER", "av")
    root = tmp_path / "rev"
    Project.create(root)
    rp = build_project(root)
    win = build_window(root, settings)
    qtbot.addWidget(win)
    qtbot.waitUntil(lambda: not win.segments_model.busy(), timeout=20000)
    assert win.rater == "" and win.review is not None  # nobody has named themself yet
    yield win, rp
    if win.review is not None:
        win.review.shutdown()
    win.dashboard.shutdown()
    win.close()


def _answer_rater_dialog(qtbot, name: str, ok: bool = True) -> dict:
    """Once the modal "Who is reviewing?" dialog is up (it runs its own event loop), type `name`
    into its line edit and click OK or Cancel. Returns what the dialog showed."""
    seen: dict = {}

    def act(dlg):
        seen["title"] = dlg.windowTitle()
        seen["label"] = " ".join(lb.text() for lb in dlg.findChildren(QLabel))
        edit = dlg.findChild(QLineEdit)
        edit.selectAll()
        qtbot.keyClicks(edit, name)
        button = dlg.findChild(QDialogButtonBox).button(
            QDialogButtonBox.StandardButton.Ok if ok else QDialogButtonBox.StandardButton.Cancel)
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
        seen["answered"] = True

    answer_next_modal(QInputDialog, act)  # the dialog appears after the click that asks for it
    return seen


def _click_tab(qtbot, win, index: int) -> None:
    bar = win.tabs.tabBar()
    qtbot.mouseClick(bar, Qt.MouseButton.LeftButton, pos=bar.tabRect(index).center())


def _pick(qtbot, combo: QComboBox, text: str) -> None:
    """Open the drop-down with a click, walk to the item showing `text` with the arrow keys and
    press Return (a mouse release right after the opening click is ignored by Qt for a moment)."""
    qtbot.mouseClick(combo, Qt.MouseButton.LeftButton)
    view = combo.view()
    qtbot.waitUntil(view.isVisible, timeout=30000)
    row = combo.findText(text)
    assert row >= 0, [combo.itemText(i) for i in range(combo.count())]
    qtbot.keyClick(view, Qt.Key.Key_Home)
    for _ in range(row):
        qtbot.keyClick(view, Qt.Key.Key_Down)
    assert view.currentIndex().row() == row
    qtbot.keyClick(view, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not view.isVisible(), timeout=30000)
    assert combo.currentText() == text


def _reviews(root) -> list[tuple]:
    """(rater name, annotation id, primary emotion, verdict) for every review, oldest first."""
    con = sqlite3.connect(root / "project.db")
    try:
        return con.execute(
            "SELECT ra.name, r.annotation_id, a.primary_emotion, r.verdict FROM reviews r"
            " JOIN raters ra ON ra.id = r.rater_id JOIN annotations a ON a.id = r.annotation_id"
            " ORDER BY r.id").fetchall()
    finally:
        con.close()


def _focus(qtbot, ws) -> None:
    """Keys reach the workspace once its window is active again (the modal dialog had it)."""
    ws.window().activateWindow()
    qtbot.waitUntil(ws.window().isActiveWindow, timeout=30000)
    ws.setFocus()


def _key(qtbot, ws, key) -> None:
    _focus(qtbot, ws)
    with qtbot.waitSignal(ws.verdictSaved, timeout=20000):
        qtbot.keyClick(ws, key)


def test_the_rater_named_in_the_dialog_owns_the_verdicts_and_the_queue_picked_is_reviewed(qtbot, window, settings):
    win, rp = window
    seen = _answer_rater_dialog(qtbot, "  zoe ")  # spaces around the name are not part of it
    _click_tab(qtbot, win, TAB_REVIEW)
    assert seen.get("answered") and seen["title"] == "Who is reviewing?" and "rater name" in seen["label"]
    assert win.tabs.currentIndex() == TAB_REVIEW and win.rater == "zoe"
    assert settings.value("review/rater") == "zoe"  # the default at the next start
    ws = win.review
    assert "zoe" in ws.rater_label.text()
    qtbot.waitUntil(lambda: ws.annotation_id == rp.annotation_ids[0], timeout=20000)
    _key(qtbot, ws, Qt.Key.Key_A)
    assert _reviews(rp.root) == [("zoe", rp.annotation_ids[0], "Joy", "accept")]

    # The queue drop-down: "One emotion", then "Anger" in the emotion drop-down beside it.
    _pick(qtbot, ws.queue_combo, "One emotion")
    assert ws.emotion_combo.isVisible()
    _pick(qtbot, ws.emotion_combo, "Anger")
    assert ws.kind == "emotion" and ws.emotion == "Anger"
    qtbot.waitUntil(lambda: ws.annotation_id == rp.annotation_ids[1], timeout=20000)  # the one Anger item
    _key(qtbot, ws, Qt.Key.Key_R)
    assert _reviews(rp.root)[-1] == ("zoe", rp.annotation_ids[1], "Anger", "reject")

    # "Unreviewed (mine)": zoe's two verdicts are gone from it, the other two items remain.
    _pick(qtbot, ws.queue_combo, "Unreviewed (mine)")
    assert ws.kind == "unreviewed" and not ws.emotion_combo.isVisible()
    assert sorted(ws.ids) == sorted(rp.annotation_ids[2:])
    qtbot.waitUntil(lambda: ws.annotation_id in rp.annotation_ids[2:], timeout=20000)
    first = ws.annotation_id
    _key(qtbot, ws, Qt.Key.Key_S)
    assert _reviews(rp.root)[-1][:2] == ("zoe", first) and _reviews(rp.root)[-1][3] == "skip"


def test_change_rater_from_the_menu_and_a_cancelled_dialog_writes_nothing(qtbot, window):
    win, rp = window
    seen = _answer_rater_dialog(qtbot, "nobody", ok=False)
    _click_tab(qtbot, win, TAB_REVIEW)
    assert seen.get("answered") and win.rater == ""
    ws = win.review
    assert "rater name" in ws.status.text()
    _focus(qtbot, ws)
    qtbot.keyClick(ws, Qt.Key.Key_A)  # no rater: the key does nothing
    assert _reviews(rp.root) == []

    seen = _answer_rater_dialog(qtbot, "amy")
    win.act_rater.trigger()  # Review > Change rater…
    assert seen.get("answered") and win.rater == "amy" and "amy" in ws.rater_label.text()
    qtbot.waitUntil(lambda: ws.annotation_id == rp.annotation_ids[0], timeout=20000)
    _key(qtbot, ws, Qt.Key.Key_A)
    seen = _answer_rater_dialog(qtbot, "ben")
    win.act_rater.trigger()
    assert win.rater == "ben"
    qtbot.waitUntil(lambda: ws.annotation_id == rp.annotation_ids[0], timeout=20000)  # ben's queue starts over
    _key(qtbot, ws, Qt.Key.Key_R)
    assert _reviews(rp.root) == [("amy", rp.annotation_ids[0], "Joy", "accept"),
                                 ("ben", rp.annotation_ids[0], "Joy", "reject")]

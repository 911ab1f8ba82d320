"""The review workspace on a real project: keys persist verdicts, radar data, painted frames."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["MIKUPAL_AUDIO"] = "none"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QColor  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import review_fixture as rf  # noqa: E402

from mikupal import review, store  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return rf.build_project(tmp_path_factory.mktemp("gui_review"))


@pytest.fixture
def proj(built, tmp_path):
    root = tmp_path / "p"
    shutil.copytree(built.root, root)
    built_copy = rf.ReviewProject(**{**built.__dict__, "root": root, "db_path": root / "project.db",
                                     "video_path": root / "clip.mp4"})
    db = store.connect(built_copy.db_path)
    db.conn.execute("UPDATE videos SET path = ?", (str(built_copy.video_path),))
    db.conn.close()
    return built_copy


def _workspace(qtbot, proj, rater="ann"):
    from mikupal_gui.review import ReviewWorkspace
    ws = ReviewWorkspace(proj.db_path, proj.root)
    qtbot.addWidget(ws)
    ws.resize(1200, 720)
    ws.show()
    qtbot.waitExposed(ws)
    ws.set_rater(rater)
    ws.activateWindow()
    ws.setFocus()
    qtbot.waitUntil(ws.isActiveWindow, timeout=30000)
    return ws


def _verdicts(proj, rater):
    db = store.connect(proj.db_path)
    try:
        return {a: (review.current_verdict(db, a, rater) or {}).get("verdict") for a in proj.annotation_ids}
    finally:
        db.conn.close()


def test_keys_navigate_save_and_undo(qtbot, proj):
    ws = _workspace(qtbot, proj)
    ids = proj.annotation_ids
    assert ws.ids == ids and ws.annotation_id == ids[0]
    qtbot.keyClick(ws, Qt.Key_Right)
    assert ws.annotation_id == ids[1]
    qtbot.keyClick(ws, Qt.Key_Left)
    assert ws.annotation_id == ids[0]

    with qtbot.waitSignal(ws.verdictSaved) as sig:
        qtbot.keyClick(ws, Qt.Key_A)
    assert sig.args == [ids[0], "accept"]
    assert ws.annotation_id == ids[1]  # moved on
    ws.correct_combo.setCurrentText("Anger")
    qtbot.keyClick(ws, Qt.Key_R)
    qtbot.keyClick(ws, Qt.Key_S)
    assert _verdicts(proj, "ann") == {ids[0]: "accept", ids[1]: "reject", ids[2]: "skip", ids[3]: None}
    db = store.connect(proj.db_path)
    assert review.current_verdict(db, ids[1], "ann")["corrected_label"] == "Anger"
    db.conn.close()

    qtbot.keyClick(ws, Qt.Key_U)  # the skip is gone and that item is on screen again
    assert _verdicts(proj, "ann")[ids[2]] is None
    assert ws.annotation_id == ids[2]
    assert "not reviewed" in ws.labels.verdict.text()
    qtbot.keyClick(ws, Qt.Key_Left)
    assert "REJECT" in ws.labels.verdict.text() and "Anger" in ws.labels.verdict.text()
    ws.shutdown()


def test_note_key_saves_a_comment_with_the_verdict(qtbot, proj):
    ws = _workspace(qtbot, proj, rater="noter")
    ids = proj.annotation_ids
    qtbot.keyClick(ws, Qt.Key_N)
    assert ws.note_edit.hasFocus()
    qtbot.keyClicks(ws.note_edit, "laughs, but sarcastic")  # letters go to the note, not to A/R/S
    assert _verdicts(proj, "noter")[ids[0]] is None and ws.annotation_id == ids[0]
    qtbot.keyClick(ws.note_edit, Qt.Key_Return)  # back to the review keys
    assert not ws.note_edit.hasFocus()
    qtbot.keyClick(ws, Qt.Key_R)
    db = store.connect(proj.db_path)
    assert review.current_verdict(db, ids[0], "noter")["comment"] == "laughs, but sarcastic"
    db.conn.close()
    assert ws.annotation_id == ids[1] and ws.note_edit.text() == ""  # a fresh note per item
    qtbot.keyClick(ws, Qt.Key_Left)
    assert ws.note_edit.text() == "laughs, but sarcastic"  # the saved note comes back
    ws.shutdown()


def test_queue_end_and_emotion_queue(qtbot, proj):
    ws = _workspace(qtbot, proj)
    for _ in proj.annotation_ids:
        qtbot.keyClick(ws, Qt.Key_A)
    assert ws.annotation_id is None and "Queue finished" in ws.status.text()
    assert not ws.accept_btn.isEnabled()
    ws.set_queue("unreviewed")
    assert ws.ids == []
    ws.set_queue("emotion", "Joy")
    assert ws.ids == [proj.annotation_ids[0], proj.annotation_ids[3]]
    ws.open_segment(proj.segment_ids[2])  # from the shell's segment table
    assert ws.annotation_id == proj.annotation_ids[2]
    ws.shutdown()


def test_radar_plots_stored_intensities_and_run_spread(qtbot, proj):
    ws = _workspace(qtbot, proj)
    qtbot.keyClick(ws, Qt.Key_Right)
    seg = proj.segment_ids[1]
    stored = proj.intensities[seg][0]
    plotted = ws.radar.plotted_values()
    assert ws.radar.categories == list(stored)  # taxonomy order
    assert plotted == pytest.approx(stored, abs=1e-9)
    lo, hi = ws.radar.spread()
    runs = np.array([[r[c] for c in ws.radar.categories] for r in proj.intensities[seg]])
    assert lo == pytest.approx(runs.min(axis=0)) and hi == pytest.approx(runs.max(axis=0))
    assert "Anger" in ws.labels.header.text() and "abc123def4" in ws.labels.header.text()
    ws.shutdown()


def _is(c: QColor, rgb, tol=60) -> bool:
    return all(abs(a - b) <= tol for a, b in zip((c.red(), c.green(), c.blue()), rgb))


def _box_problem(ws, proj) -> str | None:
    """None if the speaker box is drawn where the red rectangle of the displayed frame is (and
    the blue face's box on the blue face), else what is wrong. Safe to call from a slot."""
    view = ws.player.view
    r = view.box_rect(proj.red_track_id)
    if r is None:
        return f"no speaker box at {view.frame_time:.3f} s"
    img = view.grab().toImage()
    dpr = img.devicePixelRatio()
    y = int(r.center().y() * dpr)
    edge = int(round(r.left() * dpr))
    if not _is(img.pixelColor(edge, y), (0x39, 0xFF, 0x14)):
        return "speaker box not drawn at the stored box"
    if not _is(img.pixelColor(edge + int(5 * dpr), y), rf.RED):
        return f"box left edge is not on the red face at {view.frame_time:.3f} s"
    if _is(img.pixelColor(edge - int(5 * dpr), y), rf.RED):
        return f"red face extends left of the box at {view.frame_time:.3f} s"
    b = view.box_rect(proj.blue_track_id)
    if not _is(img.pixelColor(int(b.center().x() * dpr), int(b.center().y() * dpr)), rf.BLUE):
        return "blue face's box is not on the blue face"
    return None


def _check_box_on_frame(ws, proj):
    problem = _box_problem(ws, proj)
    assert problem is None, problem


def _red_frame_index(view) -> float:
    """Which video frame is on screen, read from the red rectangle's position in its pixels."""
    img = view.image
    y = int((rf.RED_Y[0] + rf.RED_Y[1]) / 2 * img.height() / rf.H)
    xs = [x for x in range(img.width()) if _is(img.pixelColor(x, y), rf.RED)]
    return (xs[0] * rf.W / img.width() - 20) / rf.SPEED_PX


@pytest.mark.parametrize("backend", ["av", "vlc"])
def test_player_paints_boxes_in_step_with_frames(qtbot, proj, backend, monkeypatch):
    _use_backend(backend, monkeypatch)
    ws = _workspace(qtbot, proj)
    player = ws.player
    assert player.backend == backend
    # paused: the exact frame at a time inside the segment
    player.seek(0.8)
    assert player.position == pytest.approx(0.8, abs=1e-6)
    assert _red_frame_index(player.view) == pytest.approx(20, abs=0.01)
    _check_box_on_frame(ws, proj)
    qtbot.keyClick(ws, Qt.Key_Period)  # one frame forward
    assert _red_frame_index(player.view) == pytest.approx(21, abs=0.01)
    qtbot.keyClick(ws, Qt.Key_Comma)
    qtbot.keyClick(ws, Qt.Key_Comma)
    assert _red_frame_index(player.view) == pytest.approx(19, abs=0.01)

    # playing: every picture shown (positionChanged) carries the time its boxes are drawn for;
    # it must match the picture within one frame, and the box must sit on the red face
    samples = []

    def on_frame(t):
        if player.playing and player.view.image is not None and t > 0.45:
            samples.append((t * rf.FPS, _red_frame_index(player.view), _box_problem(ws, proj)))

    player.positionChanged.connect(on_frame)
    qtbot.keyClick(ws, Qt.Key_Space)
    assert player.playing
    qtbot.waitUntil(lambda: not player.playing, timeout=60000)  # it stops by itself at the window end
    player.positionChanged.disconnect(on_frame)
    assert len({round(p) for _, p, _ in samples}) >= 2, f"it did not play: {samples}"
    off = [abs(shown - picture) for shown, picture, _ in samples]
    assert max(off) <= 1.0 + 1e-6, f"box time and picture differ by more than a frame: {samples}"
    if backend == "av":  # decoded frames carry their own time: always the picture's frame
        assert max(off) < 1e-6, samples
    assert [problem for *_, problem in samples if problem] == []
    # no loop: the last frame of the window stays on screen, and no time went backwards
    assert player.position == pytest.approx(player.window[1], abs=1 / rf.FPS)
    assert _red_frame_index(player.view) == pytest.approx(player.position * rf.FPS, abs=1e-6)
    assert all(b[0] >= a[0] for a, b in zip(samples, samples[1:])), samples
    ws.shutdown()


def test_vlc_missing_shows_message_and_still_plays_frames(qtbot, proj, monkeypatch):
    from mikupal_gui import player as player_mod
    monkeypatch.delenv("MIKUPAL_PLAYER", raising=False)
    monkeypatch.setitem(sys.modules, "vlc", None)  # `import vlc` raises ImportError
    ws = _workspace(qtbot, proj)
    assert ws.player.backend == "av"
    assert ws.player.view.message == player_mod.VLC_MISSING
    ws.player.seek(0.6)  # PyAV decodes the exact frame: picture 15 of the red box's walk
    assert _red_frame_index(ws.player.view) == pytest.approx(0.6 * rf.FPS, abs=0.01)
    _check_box_on_frame(ws, proj)
    ws.shutdown()


def _use_backend(backend, monkeypatch):
    if backend == "av":
        monkeypatch.setenv("MIKUPAL_PLAYER", "av")
        return
    monkeypatch.delenv("MIKUPAL_PLAYER", raising=False)
    import vlc  # python-vlc is a dependency; libVLC itself is optional (README)

    if vlc.Instance(["--aout=dummy", "--quiet"]) is None:
        pytest.skip("libVLC is not installed (apt install vlc)")


@pytest.mark.parametrize("backend", ["av", "vlc"])
def test_loop_and_rate_keys(qtbot, proj, monkeypatch, backend):
    _use_backend(backend, monkeypatch)
    ws = _workspace(qtbot, proj)
    qtbot.keyClick(ws, Qt.Key_BracketRight)
    qtbot.keyClick(ws, Qt.Key_BracketRight)
    assert ws.player.rate == 1.5
    qtbot.keyClick(ws, Qt.Key_BracketLeft)
    assert ws.player.rate == 1.25
    qtbot.keyClick(ws, Qt.Key_L)
    assert ws.player.loop and "loop" in ws.time_label.text()
    times, off = [], []

    def on_frame(t):
        if ws.player.playing:
            times.append(t)
            if t > 0.45:
                off.append(abs(t * rf.FPS - _red_frame_index(ws.player.view)))

    ws.player.positionChanged.connect(on_frame)
    qtbot.keyClick(ws, Qt.Key_Space)
    wrapped = lambda: any(b < a - 0.5 for a, b in zip(times, times[1:]))  # noqa: E731
    qtbot.waitUntil(wrapped, timeout=60000)  # at the window end it starts again from the start
    assert ws.player.playing
    qtbot.keyClick(ws, Qt.Key_BracketLeft)  # rate change while playing keeps boxes in step
    assert ws.player.rate == 1.0
    n = len(off)
    qtbot.waitUntil(lambda: len(off) >= n + 10, timeout=60000)
    ws.player.positionChanged.disconnect(on_frame)
    assert max(off) <= 1.0 + 1e-6, f"boxes out of step with the picture (frames): {off}"
    ws.shutdown()


def test_two_raters_on_one_project_keep_both_verdicts(qtbot, proj, monkeypatch):
    monkeypatch.setenv("MIKUPAL_PLAYER", "av")
    a = _workspace(qtbot, proj, "ann")
    b = _workspace(qtbot, proj, "bob")
    a.verdict("accept")
    b.verdict("reject")
    a.verdict("reject")
    b.verdict("accept")
    assert _verdicts(proj, "ann")[proj.annotation_ids[0]] == "accept"
    assert _verdicts(proj, "bob")[proj.annotation_ids[0]] == "reject"
    assert _verdicts(proj, "ann")[proj.annotation_ids[1]] == "reject"
    assert _verdicts(proj, "bob")[proj.annotation_ids[1]] == "accept"
    # each sees the other's verdict as "others"
    a.prev_item()
    assert "1 accept" in a.labels.verdict.text()
    a.shutdown()
    b.shutdown()



def test_segment_without_annotation_shows_media_and_no_verdict_buttons(qtbot, proj, monkeypatch):
    monkeypatch.setenv("MIKUPAL_PLAYER", "av")
    db = store.connect(proj.db_path)
    with store.transaction(db) as c:
        sid = c.execute("INSERT INTO segments (video_id, start_s, end_s, text, speaker_track_id)"
                        " VALUES (1, 0.5, 1.5, 'not analysed yet', ?)", (proj.red_track_id,)).lastrowid
    db.conn.close()
    ws = _workspace(qtbot, proj)
    with qtbot.waitSignal(ws.itemShown) as sig:
        ws.open_segment(sid)
    assert sig.args == [0] and ws.annotation_id is None
    assert not ws.accept_btn.isEnabled() and ws.pos_label.text() == "outside queue"
    assert "No emotion annotation" in ws.labels.header.text()
    assert ws.radar.plotted_values() == {}
    qtbot.keyClick(ws, Qt.Key_A)  # nothing to accept: nothing written
    assert _verdicts(proj, "ann") == {a: None for a in proj.annotation_ids}
    ws.player.seek(1.0)
    _check_box_on_frame(ws, proj)
    ws.shutdown()

"""A long video streams through the vision stages: the first label is stored while faces are
still being detected in the rest of the video (issue 17), with the real stages and weights."""
from __future__ import annotations

import sqlite3
import threading
import time

from mikupal.demo import DEMO_LINES, make_demo_clip
from mikupal.runner import Runner
from mikupal.vision.stages import FacesStage

from vision_fixtures import errors_of, project_with_video, segments_of, stage_info, tracks_of

GATE_TIMEOUT_S = 120.0  # generous: only a runner that holds the first label back reaches it


def test_first_label_arrives_before_faces_finish_the_video(tmp_path, shared_models, monkeypatch):
    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(shared_models))
    clip = make_demo_clip(tmp_path / "long.mp4", lines=DEMO_LINES * 2, speaker="left")
    proj, vid = project_with_video(tmp_path / "p", clip.path, [c[:2] for c in clip.cues],
                                   {"faces.detector": "ultraface", "asd.model": "light-asd",
                                    "emotion.backend": "baseline", "emotion.model": "baseline-v1"})
    db_path = proj.db_path
    segment_ids = [s["id"] for s in segments_of(proj, vid)]
    seen_label_before: dict[int, bool] = {}
    timed_out = threading.Event()

    def labels() -> int:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute("SELECT COUNT(*) FROM annotations").fetchone()[0]
        finally:
            con.close()

    class GatedFaces(FacesStage):
        """The real faces stage, which holds every segment after the first until a label exists."""

        def process(self, task):
            if task["segment_id"] != segment_ids[0]:
                deadline = time.monotonic() + GATE_TIMEOUT_S
                while labels() == 0 and time.monotonic() < deadline and not timed_out.is_set():
                    time.sleep(0.05)
                seen_label_before[task["segment_id"]] = labels() > 0
                if not seen_label_before[task["segment_id"]]:
                    timed_out.set()  # one wait is enough to fail: the others go on at once
            return super().process(task)

    events = []
    lock = threading.Lock()

    def on_event(ev):
        with lock:
            events.append((ev.kind, ev.stage, ev.done, ev.total))

    summary = Runner(proj, [GatedFaces, "asd", "emotion"], devices="cpu", on_event=on_event).run()
    assert summary.ok, (summary.message, errors_of(proj))
    # Every later segment's faces started only after the first segment had its label.
    assert set(seen_label_before) == set(segment_ids[1:]) and all(seen_label_before.values()), seen_label_before
    # Progress counts segments inside the one video.
    n = len(segment_ids)
    assert summary.stages["faces"].total == summary.stages["faces"].ok == n
    assert summary.stages["asd"].ok == n and summary.stages["emotion"].ok == n
    assert max(total for kind, stage, done, total in events if stage == "faces") == n
    # The generator's speaker, in every segment; each segment holds its own two face pieces.
    for seg in segments_of(proj, vid):
        assert seg["status"] == "ok" and seg["faces_key"] and seg["asd_key"], seg
        mine = [t for t in tracks_of(proj, vid) if t["segment_id"] == seg["id"]]
        assert len(mine) == 2 and seg["speaker_track_id"] in {t["id"] for t in mine}
        box = [t for t in mine if t["id"] == seg["speaker_track_id"]][0]["boxes"][0]
        assert (box[1] + box[3]) / 2 < 320  # the left face speaks
    # Once no segment is pending, the video holds one done state per vision stage.
    faces, asd = stage_info(proj, vid, "faces"), stage_info(proj, vid, "asd")
    assert faces["status"] == asd["status"] == "done"
    assert faces["info"]["segments"] == n and asd["info"]["statuses"] == {"ok": n}
    # Nothing left: a second run works on nothing.
    again = Runner(proj, ["faces", "asd", "emotion"], devices="cpu").run()
    assert again.ok and all(again.stages[s].total == 0 for s in ("faces", "asd", "emotion"))

"""Face detectors, the tracker, grid frame decoding and the `faces` stage end to end."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from mikupal.config import defaults
from mikupal.stage import ModelMissingError
from mikupal.vision import faces as F
from mikupal.vision.frames import DecodeStats, grid_indices, iter_frames, merge_spans
from mikupal.vision.tracks import link_pieces
from vision_fixtures import errors_of, project_with_video, run_stages, segments_of, stage_info, tracks_of

# The astronaut's face in skimage's picture, labelled by hand (hairline to chin, cheek to
# cheek; x1, y1, x2, y2): the truth detectors are judged against, not any detector's box.
ASTRONAUT_FACE = np.array([181, 76, 277, 180])


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


def _cfg(models_dir: Path, **faces) -> dict:
    cfg = defaults()
    cfg["models"]["dir"] = str(models_dir)
    cfg["models"]["allow_download"] = False
    cfg["faces"].update(faces)
    return cfg


# ---- detectors ---------------------------------------------------------------------------
def test_haar_finds_the_astronaut_face(astronaut):
    (dets,) = F.HaarDetector().detect([astronaut])
    assert dets.shape == (1, 5)
    assert F.box_iou(dets, ASTRONAUT_FACE[None])[0, 0] > 0.6  # Haar boxes stop at the mouth: ~0.69


@pytest.mark.parametrize("variant", [320, 640])
def test_ultraface_finds_the_astronaut_face(astronaut, shared_models, variant):
    det = F.UltraFaceDetector(shared_models / "ultraface" / f"version-RFB-{variant}.onnx", min_score=0.7)
    (dets,) = det.detect([astronaut])
    assert len(dets) == 1, dets  # NMS leaves one box per face
    assert dets[0, 4] > 0.9
    assert F.box_iou(dets, ASTRONAUT_FACE[None])[0, 0] > 0.5
    # a picture with no face gives nothing
    (none,) = det.detect([np.full((240, 320, 3), 128, np.uint8)])
    assert none.shape == (0, 5)


def test_s3fd_plumbing_with_random_weights(astronaut, tmp_path, monkeypatch):
    """No S3FD weights offline: a random-weight net through the real loader checks the batch
    path and the output shape only (what it finds is meaningless)."""
    import torch
    from face_alignment.detection.sfd.net_s3fd import s3fd

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no face-alignment cache here
    monkeypatch.delenv("MIKUPAL_MODELS_DIR", raising=False)
    torch.manual_seed(0)
    (tmp_path / "models" / "s3fd").mkdir(parents=True)
    torch.save(s3fd().state_dict(), tmp_path / "models" / "s3fd" / F.S3FD_FILE)
    det, warnings = F.make_detector("s3fd", _cfg(tmp_path / "models", min_score=0.99), device="cpu")
    assert isinstance(det, F.S3FDDetector) and warnings == []
    small = astronaut[::4, ::4].copy()  # 128x128 keeps the random net's candidate list short
    out = det.detect([small, small, small])
    assert len(out) == 3
    for d in out:
        assert d.ndim == 2 and d.shape[1] == 5 and np.isfinite(d).all()
        assert (d[:, 4] > 0.99).all()


def test_named_detector_without_weights_says_which_file_goes_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("MIKUPAL_MODELS_DIR", raising=False)
    with pytest.raises(ModelMissingError) as e:
        F.make_detector("s3fd", _cfg(tmp_path / "empty"), device="cpu")
    msg = str(e.value)
    assert "s3fd-619a316812.pth" in msg and str(tmp_path / "empty") in msg and "adrianbulat.com" in msg
    with pytest.raises(ModelMissingError) as e:
        F.make_detector("ultraface", _cfg(tmp_path / "empty"), device="cpu")
    assert "version-RFB-" in str(e.value) and str(tmp_path / "empty") in str(e.value)


def test_auto_falls_back_to_haar_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.delenv("MIKUPAL_MODELS_DIR", raising=False)
    det, warnings = F.make_detector("auto", _cfg(tmp_path / "empty"), device="cpu")
    assert det.name == "haar"
    assert len(warnings) == 1 and "ultraface" in warnings[0] and "version-RFB" in warnings[0]


def test_auto_is_ultraface_on_cpu(shared_models, monkeypatch):
    monkeypatch.delenv("MIKUPAL_MODELS_DIR", raising=False)
    det, warnings = F.make_detector("auto", _cfg(shared_models, detect_width=640), device="cpu")
    assert det.name == "ultraface" and det.size == (640, 480) and warnings == []
    det, _ = F.make_detector("auto", _cfg(shared_models, detect_width=320), device="cpu")
    assert det.size == (320, 240)


# ---- tracker -------------------------------------------------------------------------------
def _moving(k: int, x0: float, speed: float = 2.0) -> list[float]:
    x = x0 + speed * k
    return [x, 50.0, x + 60.0, 110.0, 0.99]


def test_tracker_links_two_faces_and_interpolates_missed_frames():
    dets = []
    for k in range(40):
        boxes = [_moving(k, 10)]
        if k not in (12, 13, 14):  # the right face is missed for three frames
            boxes.append(_moving(k, 300, speed=-1.0))
        dets.append((k, np.array(boxes)))
    tracks = F.track_faces(dets, iou_threshold=0.3, max_gap=5, min_frames=10, smooth=5)
    assert len(tracks) == 2
    left, right = sorted(tracks, key=lambda t: t.boxes[0, 0])
    assert list(left.frames) == list(range(40)) and list(right.frames) == list(range(40))
    assert not right.detected[12:15].any() and right.detected[:12].all()
    # the filled frames lie on the straight path the face was following
    np.testing.assert_allclose(right.boxes[13, 0], 300 - 13.0, atol=0.6)
    np.testing.assert_allclose(left.boxes[:, 0], 10 + 2.0 * np.arange(40), atol=0.6)


def test_tracker_gap_tolerance_and_minimum_length():
    dets = [(k, np.array([_moving(0, 100, 0)])) for k in list(range(0, 20)) + list(range(32, 52))]
    dets += [(k, np.array([[400, 40, 450, 90, 0.9]])) for k in range(60, 66)]  # too short: dropped
    split = F.track_faces(dets, max_gap=10, min_frames=10, smooth=1)
    assert [(t.start, t.end) for t in split] == [(0, 19), (32, 51)]
    joined = F.track_faces(dets, max_gap=12, min_frames=10, smooth=1)
    assert [(t.start, t.end) for t in joined] == [(0, 51)]
    assert joined[0].detected.sum() == 40


def test_tracker_starts_new_tracks_after_a_scene_cut():
    dets = [(k, np.array([_moving(0, 100, 0)])) for k in range(50)]
    tracks = F.track_faces(dets, cuts={25}, min_frames=10, smooth=1)
    assert [(t.start, t.end) for t in tracks] == [(0, 24), (25, 49)]


def test_tracker_median_smoothing_removes_a_one_frame_outlier():
    dets = [(k, np.array([[100, 100, 160, 160, 0.9]])) for k in range(30)]
    dets[15] = (15, np.array([[110, 104, 172, 166, 0.9]]))  # still the same face (IoU > 0.3), jumped
    (t,) = F.track_faces(dets, min_frames=10, smooth=5)
    np.testing.assert_allclose(t.boxes[15], [100, 100, 160, 160])
    (raw,) = F.track_faces(dets, min_frames=10, smooth=1)
    assert raw.boxes[15, 0] == 110


def test_histogram_distance_separates_shots(astronaut):
    a = F.frame_histogram(astronaut)
    shifted = F.frame_histogram(np.roll(astronaut, 7, axis=1))
    other = F.frame_histogram(np.full_like(astronaut, (150, 110, 60)))
    assert F.histogram_distance(a, shifted) < 0.1
    assert F.histogram_distance(a, other) > 0.45


# ---- frames ----------------------------------------------------------------------------------
def test_merge_spans_and_grid():
    assert merge_spans([(3, 4), (1, 2), (2.3, 2.5)], margin=0.5, duration=4.2) == [(0.5, 4.2)]
    assert merge_spans([(1, 2), (5, 6)], margin=0.5) == [(0.5, 2.5), (4.5, 6.5)]
    assert list(grid_indices(0.8, 1.0, 25)) == [20, 21, 22, 23, 24, 25]


@pytest.fixture(scope="module")
def left_clip(tmp_path_factory):
    from mikupal.demo import DEMO_LINES, make_demo_clip

    return make_demo_clip(tmp_path_factory.mktemp("vleft") / "left.mp4", lines=DEMO_LINES[:2], speaker="left")


def test_frames_only_inside_spans_and_downscaled(left_clip):
    spans = merge_spans([left_clip.cues[0][:2]], margin=0.5, duration=left_clip.duration_s)
    st = DecodeStats()
    frames = list(iter_frames(left_clip.path, spans, 25, width=320, stats=st))
    want = list(grid_indices(*spans[0], 25))
    assert [f.index for f in frames] == want
    assert frames[0].image.shape == (180, 320, 3) and frames[0].scale == 2.0
    assert st.corrupt == 0 and (st.width, st.height) == (640, 360)


def test_frames_skip_and_count_corrupt_packets(left_clip, tmp_path):
    bad = _corrupt_copy(left_clip.path, tmp_path, first=40, n=6)
    st = DecodeStats()
    frames = list(iter_frames(bad, [(0.0, 4.0)], 25, stats=st))
    assert st.corrupt == 6
    idx = [f.index for f in frames]
    assert 0 in idx and 100 in idx  # decoding went on after the damage
    assert len(idx) < 101  # and the lost stretch was not papered over


def _corrupt_copy(src: Path, tmp_path: Path, first: int, n: int) -> Path:
    """An MJPEG copy (every frame its own packet) with ``n`` packets overwritten by noise."""
    import av

    mj = tmp_path / "mj.mkv"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), "-c:v", "mjpeg", "-q:v", "5",
                    "-c:a", "copy", str(mj)], check=True)
    with av.open(str(mj)) as c:
        pk = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    data = bytearray(mj.read_bytes())
    rng = np.random.default_rng(0)
    for pos, size in pk[first: first + n]:
        data[pos + 20: pos + size - 20] = rng.integers(0, 256, size - 40, dtype=np.uint8).tobytes()
    out = tmp_path / "corrupt.mkv"
    out.write_bytes(bytes(data))
    return out


# ---- the faces stage --------------------------------------------------------------------------
def _side(box) -> str:
    return "left" if (box[0] + box[2]) / 2 < 320 else "right"


def test_faces_stage_tracks_both_faces_in_video_pixels(tmp_path, shared_models, monkeypatch):
    """1280x720 video, detection at 640 px: stored boxes must be in the video's own pixels."""
    from mikupal.demo import DEMO_LINES, make_demo_clip

    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(shared_models))
    clip = make_demo_clip(tmp_path / "hd.mp4", lines=DEMO_LINES[3:4], width=1280, height=720)
    proj, vid = project_with_video(tmp_path / "p", clip.path, [c[:2] for c in clip.cues])
    summary = run_stages(proj, ["faces"])
    assert summary.ok, summary.message
    info = stage_info(proj, vid, "faces")["info"]
    a, b = merge_spans([c[:2] for c in clip.cues], 0.5, clip.duration_s)[0]
    assert info["frames"] == len(grid_indices(a, b, 25)) and info["detector"] == "ultraface"
    tracks = tracks_of(proj, vid)
    assert len(tracks) == 2  # the jittering silent face stays one track
    for t in tracks:
        side = "left" if t["boxes"][0][1] < 640 else "right"
        truth = np.array(clip.face_boxes[side], float)
        times = [e[0] for e in t["boxes"]]
        assert np.allclose(np.diff(times), 0.04, atol=1e-3)  # one entry per analysed frame
        assert t["start_s"] == times[0] and t["end_s"] == times[-1]
        med = np.median(np.array([e[1:] for e in t["boxes"]]), axis=0)
        assert F.box_iou(med[None], truth[None])[0, 0] > 0.6, (side, med, truth)


def test_scene_cut_splits_tracks(tmp_path, monkeypatch):
    from mikupal.demo import DEMO_LINES, make_demo_clip

    clip = make_demo_clip(tmp_path / "cut.mp4", lines=DEMO_LINES[:2], scene_cut_at=4.0)
    proj, vid = project_with_video(tmp_path / "p", clip.path, [c[:2] for c in clip.cues], {"faces.detector": "haar"})
    assert run_stages(proj, ["faces"]).ok
    info = stage_info(proj, vid, "faces")["info"]
    assert len(info["scene_cuts"]) == 1 and abs(info["scene_cuts"][0] - 4.0) <= 0.04
    tracks = tracks_of(proj, vid)
    assert all(t["end_s"] < 4.0 or t["start_s"] >= 4.0 for t in tracks)  # no piece crosses the cut
    face_of = link_pieces(tracks, 25.0)
    before = {face_of[t["id"]] for t in tracks if t["end_s"] < 4.0}
    after = {face_of[t["id"]] for t in tracks if t["start_s"] >= 4.0}
    assert len(before) == 2 and len(after) == 2 and not before & after  # two faces each side, none joined across


def test_corrupt_video_is_processed_and_recorded(tmp_path, left_clip):
    bad = _corrupt_copy(left_clip.path, tmp_path, first=40, n=6)
    proj, vid = project_with_video(tmp_path / "p", bad, [left_clip.cues[0][:2]], {"faces.detector": "haar"})
    assert run_stages(proj, ["faces"]).status == "finished"
    st = stage_info(proj, vid, "faces")
    assert st["status"] == "done" and st["info"]["corrupt_frames"] == 6
    assert len(tracks_of(proj, vid)) == 2
    # Not a failure of the item (the runner owns the errors table): a warning in its state.
    assert errors_of(proj, "faces") == []
    (warning,) = [w for w in st["info"]["warnings"] if "corrupt" in w]
    assert "6 corrupt" in warning and "corrupt.mkv" in warning and "\n" not in warning


def test_audio_only_file_has_no_faces_and_its_segments_no_face(tmp_path, left_clip):
    """A file without a picture is not a failure: no tracks, asd says no_face, others go on."""
    audio_only = tmp_path / "speech.m4a"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(left_clip.path), "-vn", "-c:a", "copy",
                    str(audio_only)], check=True)
    proj, bad_vid = project_with_video(tmp_path / "p", audio_only, [left_clip.cues[0][:2]],
                                       {"faces.detector": "haar", "asd.model": "sync"})
    from mikupal import store
    from mikupal.ingest import add_videos

    db = proj.db()
    good_vid = add_videos(db, [left_clip.path]).added[0][0]
    with store.transaction(db):
        db.conn.execute("INSERT INTO segments (video_id, start_s, end_s) VALUES (?,?,?)", (good_vid, *left_clip.cues[0][:2]))
        store.set_stage_state(db, good_vid, "segments", "done", cache_key="test")
    db.conn.close()
    summary = run_stages(proj, ["faces", "asd"])
    assert summary.ok and summary.failed_items == 0, errors_of(proj)
    assert stage_info(proj, bad_vid, "faces")["status"] == stage_info(proj, good_vid, "faces")["status"] == "done"
    assert tracks_of(proj, bad_vid) == [] and len(tracks_of(proj, good_vid)) == 2
    (seg,) = segments_of(proj, bad_vid)
    assert seg["status"] == "no_face" and seg["speaker_track_id"] is None
    (good,) = segments_of(proj, good_vid)
    assert good["status"] == "ok" and good["speaker_track_id"] is not None


# ---- sparse detection: the detector on every 5th frame, boxes carried in between ---------------
def _faces_result(proj, vid, every: int) -> dict:
    from mikupal.project import Project
    from mikupal.vision.stages import FacesStage

    stage = FacesStage(Project.open(proj.root, [f"faces.detect_every={every}"]))
    db = proj.db()
    try:
        tasks = [stage.prepare(db, sid) for sid in stage.pending(db, [vid])]
    finally:
        db.conn.close()
    stage.load()
    results = [stage.process(t) for t in tasks]  # one per segment
    return {"tracks": [t for r in results for t in r["tracks"]],
            **{k: sum(r[k] for r in results) for k in ("frames", "detected_frames")}}


def _boxes_by_frame(result: dict) -> dict[tuple[str, int], np.ndarray]:
    return {(_side(row[1:]), round(row[0] * 25)): np.array(row[1:]) for t in result["tracks"] for row in t["boxes"]}


def test_sparse_detection_keeps_every_frame_boxes(tmp_path, shared_models, monkeypatch):
    """detect_every = 5 against detect_every = 1 (the reference) and the generator's truth:
    the same frames covered, boxes within a few pixels (IoU), a fifth of the detector calls."""
    from mikupal.demo import DEMO_LINES, make_demo_clip

    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(shared_models))
    clip = make_demo_clip(tmp_path / "two.mp4", lines=DEMO_LINES[:2], speaker="left")
    proj, vid = project_with_video(tmp_path / "p", clip.path, [c[:2] for c in clip.cues])
    dense, sparse = _faces_result(proj, vid, 1), _faces_result(proj, vid, 5)
    assert len(dense["tracks"]) == len(sparse["tracks"]) == 2 * len(clip.cues)  # both faces in each segment
    assert dense["detected_frames"] == dense["frames"] == sparse["frames"]
    # each segment: every 5th frame from its first, plus its last
    assert sparse["detected_frames"] <= dense["frames"] / 5 + 2 * len(clip.cues)
    ref, got = _boxes_by_frame(dense), _boxes_by_frame(sparse)
    assert set(got) == set(ref)  # every frame the dense tracks cover, and no other
    iou = np.array([F.box_iou(ref[k][None], got[k][None])[0, 0] for k in ref])
    dev = np.array([np.abs(ref[k] - got[k]).max() for k in ref])
    # The silent face jitters +-3 px every frame (the generator's rng): interpolation between
    # detections cannot follow that, so a corner may be off by jitter plus detector noise.
    assert iou.mean() > 0.93 and iou.min() > 0.75, (iou.mean(), iou.min())
    assert np.median(dev) <= 3.0 and dev.max() <= 14.0, (np.median(dev), dev.max())
    speaker = np.array([F.box_iou(ref[k][None], got[k][None])[0, 0] for k in ref if k[0] == clip.speaker_side])
    assert speaker.min() > 0.9  # the speaking face does not move: carried boxes stay on it
    for side, truth in clip.face_boxes.items():
        sel = np.array([got[k] for k in got if k[0] == side])
        truth_iou = F.box_iou(sel, np.array([truth], float))[:, 0]
        assert truth_iou.min() > 0.5, (side, truth_iou.min())


def test_detection_frames_follow_spans_and_cuts():
    from mikupal.vision.stages import _DetectionFrames

    pick = _DetectionFrames([(0.0, 1.0), (2.0, 2.6)], 25, 5)  # grids 0..25 and 50..65
    wanted = []
    for k in list(range(0, 26)) + list(range(50, 66)):
        if k == 12:
            pick.restart(12)  # a scene cut at frame 12: count again from there
        if pick.wants(k):
            wanted.append(k)
    # each span's first and last frame, every 5th in between, the cut frame and every 5th after
    assert wanted == [0, 5, 10, 12, 17, 22, 25, 50, 55, 60, 65]

"""The real face and speaker stages on files a user brings: an MPEG-TS capture whose
streams start at 4.4 s and a phone video stored sideways with a display matrix. The
issue these guard against: on such files faces were missed (TS: frames looked up on the
wrong clock) and the speaker box landed on the background (phone: the picture was
analysed sideways); the clip sent to the LLM was early by the TS offset and sideways.
"""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from media_fixtures import ffmpeg, lag_of
from vision_fixtures import errors_of, project_with_video, run_stages, segments_of, tracks_of

# the ffmpeg CLI builds the variants: make setup installs it (a missing one fails, it does not skip)

LINES = ("Thank you. That really means a lot to me.", "Wait, what was that noise?")


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    from mikupal.demo import make_demo_clip

    d = tmp_path_factory.mktemp("media_stages")
    clip = make_demo_clip(d / "plain.mp4", lines=LINES, speaker="left")
    ffmpeg("-i", clip.path, "-c", "copy", "-output_ts_offset", "3", "-f", "mpegts", d / "capture.ts")
    # a phone video: pixels stored turned clockwise, the display matrix turns them upright
    ffmpeg("-i", clip.path, "-vf", "transpose=1", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18",
           "-c:a", "copy", d / "sideways.mp4")
    ffmpeg("-i", d / "sideways.mp4", "-c", "copy", "-metadata:s:v:0", "rotate=90", d / "phone.mp4")
    # the reference audio: ffmpeg's own decode of the plain file (no offsets there)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip.path), "-f", "f32le", "-ac", "1", "-ar", "16000", "-"],
                         capture_output=True, check=True).stdout
    return clip, d, np.frombuffer(raw, np.float32)


@pytest.mark.parametrize("name", ["capture.ts", "phone.mp4"])
def test_speaker_found_on_the_face_and_clip_carries_the_segment(variants, name, shared_models, monkeypatch, tmp_path):
    from mikupal.emotion.clips import AUDIO_RATE, ClipSpec, cut_clip, parse_bbox, read_audio, sample_frames
    from mikupal.media import probe
    from mikupal.vision.faces import HaarDetector

    clip, d, ref = variants
    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(shared_models))
    src = d / name
    info = probe(src)
    assert (info.width, info.height) == (clip.width, clip.height)  # as shown
    proj, vid = project_with_video(tmp_path / "p", src, [c[:2] for c in clip.cues],
                                   {"faces.detector": "ultraface", "asd.model": "light-asd"})
    summary = run_stages(proj, ["faces", "asd"])
    assert summary.ok, (summary.message, errors_of(proj))
    for t in tracks_of(proj, vid):
        b = np.asarray(t["boxes"])[:, 1:]
        assert b.min() >= 0 and b[:, [0, 2]].max() <= clip.width and b[:, [1, 3]].max() <= clip.height
    x1, y1, x2, y2 = clip.face_boxes["left"]
    segs = segments_of(proj, vid)
    assert len(segs) == len(LINES)
    for seg in segs:
        assert seg["status"] == "ok", seg
        bx1, by1, bx2, by2 = json.loads(seg["speaker_bbox_json"])
        cx, cy = (bx1 + bx2) / 2, (by1 + by2) / 2
        assert x1 <= cx <= x2 and y1 <= cy <= y2, (seg["speaker_bbox_json"], clip.face_boxes["left"])
        assert 0.5 < (bx2 - bx1) / (x2 - x1) < 2.0  # a face-sized box, not a background blob
        # the LLM clip of this segment: upright head-and-shoulders crop with the segment's audio
        c = cut_clip(ClipSpec(str(src), "v", seg["start_s"], seg["end_s"], bbox=parse_bbox(seg["speaker_bbox_json"]),
                              crop="speaker", height=240, fps=5), tmp_path / "clips")
        x = read_audio(c.path)
        lag, corr = lag_of(x[: int(1.5 * AUDIO_RATE)], ref, AUDIO_RATE)
        assert corr > 0.8 and abs(lag - seg["start_s"]) <= 1.0 / clip.fps, (lag, corr, seg["start_s"])
        frames = sample_frames(c.path, 0.5, 3)
        found = HaarDetector().detect(frames)
        assert sum(len(f) > 0 for f in found) >= 2, "the clip shows an upright face"

"""Active-speaker detection: Light-ASD with the official weights, the AV-sync fallback, MFCC,
the per-segment decision and the `asd` stage end to end on synthetic two-face clips."""
from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import torch

from mikupal.project import Project
from mikupal.stage import ModelMissingError
from mikupal.vision import asd as A
from mikupal.vision.stages import _decide
from mikupal.vision.tracks import link_pieces
from vision_fixtures import chunk_by_chunk_scores, errors_of, project_with_video, run_stages, segments_of, stage_info, tracks_of

LINES = ("I can't believe you did that, this is wonderful news!", "Thank you. That really means a lot to me.")


# ---- the network and its inputs -----------------------------------------------------------
def test_light_asd_loads_the_official_state_dict_strictly(shared_models):
    path = shared_models / "light-asd" / "finetuning_TalkSet.model"
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = A.LightASD()
    assert set(net.state_dict()) == set(state)  # every key, no extras
    net = A.load_light_asd(path)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    with torch.inference_mode():
        out = net(torch.zeros(2, 4 * 30, 13), torch.full((2, 30, 112, 112), 110.0))
    assert out.shape == (2, 30)  # one logit per video frame


def test_light_asd_missing_weights_names_file_and_folder(tmp_path):
    with pytest.raises(ModelMissingError) as e:
        A.load_light_asd(tmp_path / "light-asd" / "finetuning_TalkSet.model")
    assert "finetuning_TalkSet.model" in str(e.value) and str(tmp_path / "light-asd") in str(e.value)


def test_mfcc_rate_and_shape():
    sr = 16000
    x = (np.sin(2 * np.pi * 440 * np.arange(sr * 2) / sr) * 8000).astype(np.int16)
    m = A.mfcc(x, sr)
    assert m.shape == (199, 13)  # 100 frames per second: 4 per 25 fps video frame
    loud, quiet = A.mfcc(x, sr)[:, 0].mean(), A.mfcc(x // 100, sr)[:, 0].mean()
    assert loud - quiet == pytest.approx(np.log(100**2), rel=1e-3)  # c0 is the log frame energy


def test_mfcc_matches_python_speech_features():
    import python_speech_features as psf  # the reference (dev extra)
    rng = np.random.default_rng(0)
    for n in (16000, 12345, 401, 300):
        x = (rng.standard_normal(n) * 3000).astype(np.int16)
        np.testing.assert_allclose(A.mfcc(x, 16000), psf.mfcc(x, 16000, numcep=13, winlen=0.025, winstep=0.010),
                                   rtol=1e-9, atol=1e-9)


def test_crop_face_geometry_matches_talknet():
    gray = np.zeros((360, 640), np.uint8)
    gray[100:200, 100:200] = 255  # a 100 px "face": box (100,100)-(200,200), half size 50
    (cx, cy, s), = A.smooth_track_boxes(np.array([[100, 100, 200, 200]]))
    assert (cx, cy, s) == (150, 150, 50)
    crop = A.crop_face(gray, cx, cy, s)
    assert crop.shape == (112, 112) and crop.dtype == np.uint8
    # Window: rows 100..240 (face top to 1.4 face heights below), cols 80..220, resized to
    # 224 (x1.6): the face covers rows 0..160, cols 32..192; the centre 112 (56..168) keeps
    # face everywhere except its bottom 8 rows (below the chin).
    assert crop[:102].min() > 250 and crop[106:].max() < 10


# ---- the decision ------------------------------------------------------------------------
CFG = {"min_score": 0.0, "multi_speaker_margin": 0.5}
BOX = {1: [0, 0, 1, 1], 2: [2, 2, 3, 3]}


@pytest.mark.parametrize("scores,status,speaker", [
    ({}, "no_face", None),
    ({1: 3.0, 2: -0.6}, "ok", 1),
    ({1: -0.4, 2: -0.6}, "low_asd", 1),
    ({1: 3.0, 2: 2.7}, "multi_speaker", 1),
    ({1: 2.0, 2: 3.0}, "ok", 2),
    ({1: 0.3, 2: -0.1}, "ok", 1),  # the second is within the margin but below min_score
])
def test_decide(scores, status, speaker):
    out = _decide([7, 1.0, 2.0, "ok"], scores, BOX, CFG)
    assert out["status"] == status and out["speaker_track_id"] == speaker and out["id"] == 7
    if speaker:
        assert out["bbox"] == BOX[speaker] and out["score"] == scores[speaker]
    else:
        assert out["bbox"] is None and out["score"] is None


# ---- end to end on synthetic clips ----------------------------------------------------------
def _build(tmp_path_factory, side: str, **clip_kw):
    from mikupal.demo import make_demo_clip

    d = tmp_path_factory.mktemp(f"asd_{side}")
    clip = make_demo_clip(d / f"{side}.mp4", lines=LINES, speaker=side, **clip_kw)
    proj, vid = project_with_video(d / "p", clip.path, [c[:2] for c in clip.cues])
    return clip, proj, vid


@pytest.fixture(scope="module", params=["left", "right"])
def tracked(request, tmp_path_factory, shared_models):
    """A clip with the given speaker, faces already tracked (UltraFace, real weights)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MIKUPAL_MODELS_DIR", str(shared_models))
    clip, proj, vid = _build(tmp_path_factory, request.param)
    summary = run_stages(proj, ["faces"])
    assert summary.ok, summary.message
    tracks = tracks_of(proj, vid)
    # one track piece per face in each segment, and the pieces join into the clip's two faces
    assert sorted(collections.Counter(t["segment_id"] for t in tracks).values()) == [2] * len(clip.cues)
    assert len(set(link_pieces(tracks, 25.0).values())) == 2
    yield clip, proj, vid
    mp.undo()


def _track_side(proj, vid) -> dict[int, str]:
    return {t["id"]: ("left" if (t["boxes"][0][1] + t["boxes"][0][3]) / 2 < 320 else "right") for t in tracks_of(proj, vid)}


def _run_asd(proj: Project, model: str):
    p = Project.open(proj.root, [f'asd.model="{model}"'])
    summary = run_stages(p, ["asd"])
    assert summary.ok, (summary.message, errors_of(p))
    return p


def test_light_asd_picks_the_true_speaker(tracked, shared_models, monkeypatch):
    clip, proj, vid = tracked
    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(shared_models))
    _run_asd(proj, "light-asd")
    sides = _track_side(proj, vid)
    info = stage_info(proj, vid, "asd")["info"]
    assert info["model"] == "light-asd" and info["statuses"] == {"ok": len(clip.cues)}
    for seg in segments_of(proj, vid):
        assert seg["status"] == "ok"
        assert sides[seg["speaker_track_id"]] == clip.speaker_side
        box = json.loads(seg["speaker_bbox_json"])
        assert (box[0] + box[2]) / 2 < 320 if clip.speaker_side == "left" else (box[0] + box[2]) / 2 > 320
        scores = {int(k): v for k, v in info["track_scores"][str(seg["id"])].items()}
        silent = [v for k, v in scores.items() if sides[k] != clip.speaker_side]
        # Clearly apart: the speaker's mean logit well above 0 and far above the silent face
        # (the silent face shakes +-3 px every frame, which Light-ASD reads as a little
        # motion: it scores about -0.7..+0.2 here, the speaker +2.5..+3.7).
        assert seg["asd_score"] > 1.5 and seg["asd_score"] - max(silent) > 2.0, scores
        assert max(silent) < 0.5, scores


def test_fast_defaults_keep_every_decision_of_the_official_protocol(tracked, shared_models, monkeypatch):
    """The defaults (one pass per track, bfloat16 where the CPU has it) against the official
    protocol (1..6 s chunk average, float32): the same speaker, on the generator's true side,
    in every segment, and every track's score keeps its sign."""
    clip, proj, vid = tracked
    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(shared_models))
    sides = _track_side(proj, vid)
    runs = {}
    for protocol, precision in (("multi-length", "fp32"), ("one-pass", "auto")):
        p = Project.open(proj.root, [f'asd.protocol="{protocol}"', f'asd.precision="{precision}"'])
        summary = run_stages(p, ["asd"])
        assert summary.ok, (summary.message, errors_of(p))
        info = stage_info(p, vid, "asd")["info"]
        assert info["protocol"] == protocol
        runs[protocol] = ({s["id"]: s["speaker_track_id"] for s in segments_of(p, vid)}, info["track_scores"])
    (official, official_scores), (fast, fast_scores) = runs["multi-length"], runs["one-pass"]
    assert fast == official and {sides[t] for t in fast.values()} == {clip.speaker_side}
    for seg_id, scores in official_scores.items():
        assert {k: v > 0 for k, v in scores.items()} == {k: v > 0 for k, v in fast_scores[seg_id].items()}, \
            (official_scores, fast_scores)


def test_sync_fallback_picks_the_true_speaker(tracked, shared_models, monkeypatch):
    clip, proj, vid = tracked
    _run_asd(proj, "sync")
    sides = _track_side(proj, vid)
    info = stage_info(proj, vid, "asd")["info"]
    assert info["model"] == "sync"
    for seg in segments_of(proj, vid):
        assert seg["status"] == "ok", seg
        assert sides[seg["speaker_track_id"]] == clip.speaker_side
        scores = {int(k): v for k, v in info["track_scores"][str(seg["id"])].items()}
        silent = [v for k, v in scores.items() if sides[k] != clip.speaker_side]
        assert seg["asd_score"] > 0 and max(silent) < 0, scores


def test_sync_correlation_values(tracked):
    """FACTS: mouth motion vs |delta RMS| correlates ~+0.8 for the speaker, ~0 for the other."""
    from mikupal.media import extract_audio, read_audio
    from mikupal.vision.frames import iter_frames

    clip, proj, vid = tracked
    a, b = clip.cues[0][:2]
    wav = proj.root / "cache" / "t16k.wav"
    extract_audio(clip.path, {"m": (wav, 16000, 1)})
    frames = list(iter_frames(clip.path, [(a, b)], 25, fmt="gray"))
    audio = read_audio(wav, frames[0].t, frames[-1].t + 0.04) * 32768
    r = {}
    for side, box in clip.face_boxes.items():
        g = A.smooth_track_boxes(np.array([box] * len(frames), float))
        crops = np.stack([A.crop_face(f.image, *g[i]) for i, f in enumerate(frames)])
        r[side] = A.sync_correlation(crops, audio, 16000)
    speaker, silent = r[clip.speaker_side], r["right" if clip.speaker_side == "left" else "left"]
    assert speaker > 0.5 and abs(silent) < 0.3, r


def test_segment_without_a_face_gets_no_face(tmp_path_factory, shared_models, monkeypatch):
    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(shared_models))
    from mikupal.demo import make_demo_clip

    d = tmp_path_factory.mktemp("noface")
    probe = make_demo_clip(d / "probe.mp4", lines=LINES, speaker="left")
    a, b = probe.cues[1][:2]  # blank the second utterance (and a margin around it)
    clip = make_demo_clip(d / "noface.mp4", lines=LINES, speaker="left", no_face_span=(a - 0.6, b + 0.6))
    proj, vid = project_with_video(d / "p", clip.path, [c[:2] for c in clip.cues],
                                   {"faces.detector": "haar", "asd.model": "sync"})
    assert run_stages(proj).ok
    first, second = segments_of(proj, vid)
    assert first["status"] == "ok" and first["speaker_track_id"] is not None
    assert second["status"] == "no_face" and second["speaker_track_id"] is None and second["speaker_bbox_json"] is None
    assert stage_info(proj, vid, "asd")["info"]["statuses"] == {"ok": 1, "no_face": 1}


def test_asd_keeps_statuses_set_by_earlier_stages(tmp_path_factory, shared_models, monkeypatch):
    """A segment an earlier stage marked (e.g. low SNR) keeps that status; speaker fields fill."""
    from mikupal import store

    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(shared_models))
    from mikupal.demo import make_demo_clip

    d = tmp_path_factory.mktemp("keep")
    clip = make_demo_clip(d / "k.mp4", lines=LINES[1:], speaker="right")
    proj, vid = project_with_video(d / "p", clip.path, [c[:2] for c in clip.cues],
                                   {"faces.detector": "haar", "asd.model": "sync"})
    db = proj.db()
    with store.transaction(db):
        db.conn.execute("UPDATE segments SET status='low_snr' WHERE video_id=?", (vid,))
    db.conn.close()
    assert run_stages(proj).ok
    (seg,) = segments_of(proj, vid)
    assert seg["status"] == "low_snr" and seg["speaker_track_id"] is not None and seg["asd_score"] > 0


def test_talknet_without_weights_stops_the_stage_with_a_clear_line(tmp_path_factory, monkeypatch):
    d = tmp_path_factory.mktemp("talknet")
    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(d / "models"))
    from mikupal.demo import make_demo_clip

    clip = make_demo_clip(d / "t.mp4", lines=LINES[1:], speaker="right")
    proj, vid = project_with_video(d / "p", clip.path, [c[:2] for c in clip.cues],
                                   {"faces.detector": "haar", "asd.model": "talknet"})
    summary = run_stages(proj)
    assert summary.stages["faces"].ok == 1 and summary.stages["asd"].failed == 1
    msgs = [e["message"] for e in errors_of(proj, "asd")]
    assert any("pretrain_TalkSet.model" in m and str(d / "models" / "talknet") in m for m in msgs), msgs
    assert stage_info(proj, vid, "asd")["status"] == "failed"


def test_batched_multi_length_scoring_equals_chunk_by_chunk():
    """The official protocol scores each chunk alone; batching equal chunks must not change it."""
    torch.manual_seed(0)
    net = A.LightASD().eval()
    rng = np.random.default_rng(0)
    for t in (20, 60, 113):
        faces = rng.integers(0, 255, (t, 112, 112), dtype=np.uint8)
        feats = rng.standard_normal((4 * t, 13)).astype(np.float32)
        want = chunk_by_chunk_scores(net, faces, feats)
        np.testing.assert_allclose(A.multi_length_scores(net, faces, feats), want, rtol=1e-4, atol=1e-4)


def test_one_pass_batches_equal_tracks_as_single_passes():
    """score_tracks batches the tracks of one segment; each must score as if alone."""
    torch.manual_seed(1)
    net = A.LightASD().eval()
    rng = np.random.default_rng(1)
    tracks = [(rng.integers(0, 255, (t, 112, 112), dtype=np.uint8), rng.standard_normal((4 * t, 13)).astype(np.float32))
              for t in (30, 47, 30)]
    got = A.score_tracks(net, tracks, protocol="one-pass", precision="fp32")
    with torch.inference_mode():
        for (faces, feats), g in zip(tracks, got):
            want = net(torch.from_numpy(feats)[None], torch.from_numpy(faces)[None])[0].numpy()
            np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-4)
    official = A.score_tracks(net, tracks[:1], protocol="multi-length", precision="fp32")[0]
    np.testing.assert_allclose(official, chunk_by_chunk_scores(net, *tracks[0]), rtol=1e-4, atol=1e-4)


def test_precision_and_protocol_settings():
    assert A.resolve_precision("fp32") == "fp32" and A.resolve_precision("bf16") == "bf16"
    assert A.resolve_precision("auto", "cuda:0") == "fp32"
    assert A.resolve_precision("auto", "cpu") in ("bf16", "fp32")
    with pytest.raises(ModelMissingError, match="precision"):
        A.resolve_precision("fp8")
    with pytest.raises(ModelMissingError, match="protocol"):
        A.score_tracks(A.LightASD().eval(), [(np.zeros((5, 112, 112), np.uint8), np.zeros((20, 13), np.float32))],
                       protocol="three-pass")


def test_folded_batchnorm_computes_the_plain_network(shared_models):
    """load_light_asd folds each BatchNorm into its conv for inference; the result must be
    the network as the state dict describes it (conv, then BatchNorm), state dict untouched."""
    net = A.load_light_asd(shared_models / "light-asd" / "finetuning_TalkSet.model")
    blocks = [net.model.visualEncoder.block1, net.model.visualEncoder.block2, net.model.visualEncoder.block3]
    assert all(b._folded for b in blocks)
    rng = np.random.default_rng(2)
    faces = torch.from_numpy(rng.integers(0, 255, (2, 30, 112, 112), dtype=np.uint8))
    feats = torch.from_numpy(rng.standard_normal((2, 120, 13)).astype(np.float32))
    with torch.inference_mode():
        folded = net(feats, faces)
        for b in blocks:
            b._folded = None
        plain = net(feats, faces)
    np.testing.assert_allclose(folded.numpy(), plain.numpy(), rtol=1e-4, atol=1e-4)
    state = torch.load(shared_models / "light-asd" / "finetuning_TalkSet.model", map_location="cpu", weights_only=True)
    assert set(net.state_dict()) == set(state)


def test_visual_windows_compute_the_whole_track_exactly(monkeypatch):
    """Long tracks go through the visual encoder in windows with a 6-frame halo (bounded
    memory); the logits must equal one window over the whole track."""
    torch.manual_seed(3)
    net = A.LightASD().eval()
    rng = np.random.default_rng(3)
    faces = torch.from_numpy(rng.integers(0, 255, (2, 61, 112, 112), dtype=np.uint8))
    feats = torch.from_numpy(rng.standard_normal((2, 244, 13)).astype(np.float32))
    with torch.inference_mode():
        whole, whole_v = net(feats, faces), net._visual(faces)
        monkeypatch.setattr(A.LightASD, "VISUAL_WINDOW", 16)  # four windows, the last one short
        windowed, windowed_v = net(feats, faces), net._visual(faces)
        monkeypatch.setattr(A.LightASD, "VISUAL_HALO", 3)  # too small a halo: the features differ
        wrong_v = net._visual(faces)
    np.testing.assert_allclose(windowed.numpy(), whole.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(windowed_v.numpy(), whole_v.numpy(), rtol=1e-4, atol=1e-5)
    assert np.abs(wrong_v.numpy() - whole_v.numpy()).max() > 100 * np.abs(windowed_v.numpy() - whole_v.numpy()).max()

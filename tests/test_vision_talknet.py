"""TalkNet-ASD: the architecture (size, layout), loading a file in the released format strictly,
the one-line refusal of a wrong file, and the `asd` stage end to end with `model = "talknet"`.

The released weights (pretrain_TalkSet.model / pretrain_AVA.model) are shared on Google Drive
and are not on the test machines, so every network here has random weights saved in the
released layout: these tests prove that the real file's keys and shapes load and that the
scoring path runs; they cannot and do not measure how well TalkNet finds the speaker.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mikupal.stage import StageError
from mikupal.vision import asd as A
from mikupal.vision import talknet as TN
from vision_fixtures import chunk_by_chunk_scores, project_with_video, run_stages, segments_of, stage_info, tracks_of

LINES = ("I can't believe you did that, this is wonderful news!", "Thank you. That really means a lot to me.")


def released_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random TalkNet in the released files' layout: the original saves the whole training
    wrapper (``torch.save(self.state_dict())``), so next to ``model.*`` and ``lossAV.FC`` it
    holds the audio-only and visual-only training heads ``lossA.FC``/``lossV.FC`` (128 -> 2)."""
    torch.manual_seed(seed)
    net = TN.TalkNet()
    with torch.no_grad():  # non-trivial BN statistics, so a mis-mapped one would show
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)
    state = dict(net.state_dict())
    for head in ("lossA", "lossV"):
        state[f"{head}.FC.weight"] = torch.randn(2, 128)
        state[f"{head}.FC.bias"] = torch.randn(2)
    return state


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("talknet_ckpt") / "pretrain_TalkSet.model"
    torch.save(released_state(), path)
    return path


# ---- architecture --------------------------------------------------------------------------
def test_parameter_count_is_the_papers():
    """The paper's 15.01 M is the backbone (``model``) counted as the original prints it,
    numel / 1024 / 1024 (talkNet.py's "Model para number"): 15,743,451 parameters."""
    net = TN.TalkNet()
    n = TN.backbone_params(net)
    assert n / 2**20 == pytest.approx(TN.PAPER_PARAMS_M, abs=0.005)
    assert n == 15_743_451
    assert sum(p.numel() for p in net.lossAV.parameters()) == 256 * 2 + 2


def test_released_layout_key_names():
    keys = set(TN.TalkNet().state_dict())
    # spot checks of the released names (module paths are the contract with the file)
    for k in ("model.visualFrontend.frontend3D.0.weight", "model.visualFrontend.resnet.layer1.downsample.weight",
              "model.visualTCN.net.4.net.4.gamma", "model.visualTCN.net.0.net.3.weight",
              "model.visualConv1D.net.3.bias", "model.audioEncoder.layer3.5.se.fc.2.weight",
              "model.audioEncoder.layer2.0.downsample.1.running_var", "model.crossA2V.self_attn.in_proj_weight",
              "model.selfAV.self_attn.out_proj.weight", "model.selfAV.norm2.bias", "lossAV.FC.weight"):
        assert k in keys, k
    assert not any(k.startswith(("lossA.", "lossV.")) for k in keys)
    assert "model.audioEncoder.layer1.0.downsample.0.weight" not in keys  # first stage keeps its width


# ---- loading --------------------------------------------------------------------------------
def test_released_checkpoint_loads_strictly(checkpoint):
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    net = A.load_talknet(checkpoint)
    mine = net.state_dict()
    assert set(mine) == {k for k in state if not k.startswith(("lossA.", "lossV."))}
    assert all(torch.equal(mine[k], state[k]) for k in mine)
    assert not net.training
    with torch.inference_mode():
        out = net(torch.zeros(2, 4 * 30, 13), torch.full((2, 30, 112, 112), 110.0))
    assert out.shape == (2, 30) and torch.isfinite(out).all()  # one logit per video frame


def test_dataparallel_prefix_is_stripped(tmp_path, checkpoint):
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    p = tmp_path / "dp.model"
    torch.save({f"module.{k}": v for k, v in state.items()}, p)
    net = A.load_talknet(p)
    assert torch.equal(net.state_dict()["lossAV.FC.weight"], state["lossAV.FC.weight"])


def _one_line_error(path) -> str:
    with pytest.raises(StageError) as e:
        A.load_talknet(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    assert "light-asd" in msg  # the line says what to do instead
    return msg


def test_missing_or_renamed_key_fails_with_one_line(tmp_path, checkpoint):
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    missing = dict(state)
    del missing["model.selfAV.norm1.weight"]
    torch.save(missing, tmp_path / "missing.model")
    msg = _one_line_error(tmp_path / "missing.model")
    assert "missing model.selfAV.norm1.weight" in msg

    renamed = {k.replace("model.crossV2A.", "model.crossV2Ax."): v for k, v in state.items()}
    torch.save(renamed, tmp_path / "renamed.model")
    msg = _one_line_error(tmp_path / "renamed.model")
    assert "missing model.crossV2A." in msg and "unexpected model.crossV2Ax." in msg


def test_wrong_shape_or_wrong_file_fails_with_one_line(tmp_path, checkpoint, shared_models):
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state["lossAV.FC.weight"] = torch.zeros(2, 128)
    torch.save(state, tmp_path / "shape.model")
    assert "lossAV.FC.weight has shape (2, 128)" in _one_line_error(tmp_path / "shape.model")
    # Light-ASD's file put where TalkNet's goes
    assert "not a TalkNet-ASD checkpoint" in _one_line_error(shared_models / "light-asd" / "finetuning_TalkSet.model")
    (tmp_path / "junk.model").write_bytes(b"<html>Google Drive: virus scan warning</html>")
    assert "cannot be read" in _one_line_error(tmp_path / "junk.model")


# ---- scoring ----------------------------------------------------------------------------------
def test_batched_multi_length_scoring_equals_chunk_by_chunk(checkpoint):
    """TalkNet's demo scores each chunk alone with batch 1 (its 3-D conv folds the batch into
    time); batching equal chunks through the shared scorer must not change a number."""
    net = A.load_talknet(checkpoint)
    rng = np.random.default_rng(1)
    for t in (30, 61):
        faces = rng.integers(0, 255, (t, 112, 112), dtype=np.uint8)
        feats = (rng.standard_normal((4 * t, 13)) * 5).astype(np.float32)
        want = chunk_by_chunk_scores(net, faces, feats)
        got = A.multi_length_scores(net, faces, feats)
        assert got.shape == (t,) and np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(A.multi_length_scores(net, faces, feats), got)  # deterministic


# ---- the asd stage end to end ------------------------------------------------------------------
def test_asd_stage_scores_every_track_with_talknet(tmp_path_factory, checkpoint, monkeypatch):
    """The demo clip through faces (Haar, no weights) and asd with ``model = "talknet"`` and
    the random-weight file at the registry's place: every segment gets a speaker and finite
    per-track scores, the same on a re-run. (Random weights: which face wins is meaningless.)"""
    import shutil

    from mikupal.demo import make_demo_clip
    from mikupal.project import Project

    d = tmp_path_factory.mktemp("talknet_stage")
    (d / "models" / "talknet").mkdir(parents=True)
    shutil.copyfile(checkpoint, d / "models" / "talknet" / "pretrain_TalkSet.model")
    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(d / "models"))
    clip = make_demo_clip(d / "t.mp4", lines=LINES, speaker="left")
    proj, vid = project_with_video(d / "p", clip.path, [c[:2] for c in clip.cues],
                                   {"faces.detector": "haar", "asd.model": "talknet"})
    summary = run_stages(proj)
    assert summary.ok, summary.message
    tracks = tracks_of(proj, vid)
    info = stage_info(proj, vid, "asd")["info"]
    assert info["model"] == "talknet" and sum(info["statuses"].values()) == len(clip.cues)
    first = info["track_scores"]
    for seg in segments_of(proj, vid):
        scores = first[str(seg["id"])]
        track_ids = {str(t["id"]) for t in tracks if t["segment_id"] == seg["id"]}
        assert len(track_ids) == 2 and set(scores) == track_ids, scores  # both faces are on screen in every segment
        assert all(math.isfinite(v) for v in scores.values())
        assert seg["status"] in ("ok", "low_asd", "multi_speaker")
        assert str(seg["speaker_track_id"]) in track_ids and seg["asd_score"] == max(scores.values())

    # A config change re-runs the stage; the same file and frames give the same scores.
    again = Project.open(proj.root, ['faces.detector="haar"', 'asd.model="talknet"', "asd.min_score=-1000.0"])
    rerun = run_stages(again, ["asd"])
    assert rerun.ok and rerun.stages["asd"].ok == len(clip.cues)  # every segment scored again, not skipped as done
    info2 = stage_info(again, vid, "asd")["info"]
    assert info2["track_scores"] == first
    assert "low_asd" not in info2["statuses"]

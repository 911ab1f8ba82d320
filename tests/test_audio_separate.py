"""Vocal separation through audio-separator's real MDX path, offline, with a tiny generated ONNX."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from audio_fixtures import (run_stages, TINY_MDX, add_video, audio_models_dir, audio_project, speech_scene,  # noqa: F401
                            tiny_mdx, write_video)
from mikupal import store
from mikupal.audio.separate import METADATA_FILES, VocalSeparator

from mikupal.stage import ModelMissingError


def _stereo_wav(path, x, rate=44100):
    sf.write(path, np.stack([x, x], axis=1), rate, subtype="PCM_16")
    return path


def _run(sep, path):
    out = []
    n = sep.separate_wav(path, out.append)
    y = np.concatenate(out)
    assert len(y) == n
    return y


def test_mdx_model_runs_and_masks(tmp_path, tiny_mdx):
    """The tiny model keeps 250-4000 Hz: a 100 Hz hum goes, a 1 kHz tone stays. Chunk joins are seamless."""
    rate = 44100
    t = np.arange(int(9.0 * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * 100 * t) + 0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    path = _stereo_wav(tmp_path / "mix.wav", x)
    sep = VocalSeparator(TINY_MDX, tiny_mdx.parent, chunk_s=600)
    sep.load()
    whole = _run(sep, path)
    assert len(whole) == len(x)
    mid = whole[rate:-rate]
    spec = np.abs(np.fft.rfft(mid * np.hanning(len(mid))))
    f = np.fft.rfftfreq(len(mid), 1 / rate)
    p100 = spec[np.abs(f - 100) < 3].max()
    p1k = spec[np.abs(f - 1000) < 3].max()
    assert p1k > 30 * p100

    sep_chunked = VocalSeparator(TINY_MDX, tiny_mdx.parent, chunk_s=3.0, margin_s=1.0)
    sep_chunked.load()
    chunked = _run(sep_chunked, path)
    assert len(chunked) == len(x)
    err = np.abs(chunked[rate:-rate] - whole[rate:-rate]).max()
    assert err < 0.02 * np.abs(whole).max(), err
    sep.close(), sep_chunked.close()


def test_missing_weights_say_which_files_and_where(tmp_path, tiny_mdx):
    empty = tmp_path / "models" / "audio-separator"
    sep = VocalSeparator("UVR-MDX-NET-Inst_HQ_3.onnx", empty, allow_download=False)
    with pytest.raises(ModelMissingError) as e:
        sep.load()
    msg = str(e.value)
    assert "\n" not in msg and str(empty) in msg and "UVR-MDX-NET-Inst_HQ_3.onnx" in msg
    for name in METADATA_FILES:
        assert name in msg
    # weights present, parameters file missing: only that one is named
    part = tmp_path / "part"
    part.mkdir()
    (part / TINY_MDX).write_bytes(tiny_mdx.read_bytes())
    (part / "download_checks.json").write_text((tiny_mdx.parent / "download_checks.json").read_text())
    (part / "vr_model_data.json").write_text("{}")
    with pytest.raises(ModelMissingError, match=r"missing mdx_model_data\.json in"):
        VocalSeparator(TINY_MDX, part).load()


def _scene_video(tmp_path, snr=0.0, background="music"):
    mix, _, truth = speech_scene(["hello there how are you doing today", "please pass me the salt"], 48000,
                                 snr_db=snr, background=background)
    return write_video(tmp_path / "scene.mp4", mix, 48000, channels=2), truth


def test_separate_stage_records_snr_gain(tmp_path, audio_project, tiny_mdx):
    video, _ = _scene_video(tmp_path)
    vid = add_video(audio_project, video)
    audio_project.config["separate"]["model"] = TINY_MDX
    assert run_stages(audio_project, ["separate"])["separate"] == {"done": 1, "failed": 0}
    db = audio_project.db()
    info = store.get_stage_state(db, vid, "separate")["info"]
    assert info["model"] == TINY_MDX
    # the band-pass "vocals" lose the bass-heavy music: measured SNR rises
    assert info["snr_before_db"] is not None and info["snr_after_db"] > info["snr_before_db"] + 2.0
    v16, v44 = sf.info(info["vocals16k"]), sf.info(info["vocals44k"])
    assert (v16.samplerate, v16.channels, v44.samplerate) == (16000, 1, 44100)
    assert abs(v16.duration - v44.duration) < 0.01 and abs(v16.duration - sf.info(info["mix16k"]).duration) < 0.01
    # done under the current key: nothing pending; a config change makes it pending again
    from mikupal.stages import make_stage

    assert make_stage("separate", audio_project).pending(db) == []
    audio_project.config["separate"]["model"] = "none"
    assert make_stage("separate", audio_project).pending(db) == [vid]


def test_model_none_passes_the_mix_through(tmp_path, audio_project):
    video, _ = _scene_video(tmp_path, snr=10.0, background="noise")
    vid = add_video(audio_project, video)
    audio_project.config["separate"]["model"] = "none"
    run_stages(audio_project, ["separate"])
    info = store.get_stage_state(audio_project.db(), vid, "separate")["info"]
    assert info["vocals16k"] == info["mix16k"] and info["vocals44k"] is None
    assert info["snr_before_db"] == info["snr_after_db"]
    assert 5.0 < info["snr_before_db"] < 20.0  # a 10 dB mix, speech frames from WebRTC VAD


def test_missing_model_fails_each_video_with_one_line(tmp_path, audio_project):
    video, _ = _scene_video(tmp_path, snr=10.0, background="noise")
    vid = add_video(audio_project, video)
    audio_project.config["separate"]["model"] = "Kim_Vocal_2.onnx"
    assert run_stages(audio_project, ["separate"])["separate"] == {"done": 0, "failed": 1}
    db = audio_project.db()
    msg = store.rows(db, "SELECT message FROM errors WHERE video_id=?", (vid,))[0]["message"]
    assert "Kim_Vocal_2.onnx" in msg and "audio-separator" in msg and str(video) in msg and "\n" not in msg
    assert store.get_stage_state(db, vid, "separate")["status"] == "failed"

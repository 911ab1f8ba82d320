"""Audio extraction: layouts, odd rates, VFR video, gaps, missing/silent audio, the memory bound."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from audio_fixtures import write_video
from mikupal.media import MediaError, extract_audio


def _tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


@pytest.mark.parametrize("rate,channels,codec,suffix,vfr", [
    (48000, 6, "aac", ".mp4", True),   # 5.1 with a variable-frame-rate video track
    (22050, 1, "aac", ".mp4", False),  # mono, an odd rate
    (11025, 2, "pcm_s16le", ".mkv", False),
    (32000, 1, "flac", ".mkv", True),
])
def test_extract_two_renderings(tmp_path, rate, channels, codec, suffix, vfr):
    x = _tone(440.0, 3.0, rate)
    src = write_video(tmp_path / f"in{suffix}", x, rate, channels=channels, codec=codec, vfr=vfr)
    out = extract_audio(src, {"a": (tmp_path / "a16.wav", 16000, 1), "b": (tmp_path / "b44.wav", 44100, 2)})
    for name, sr, ch in (("a", 16000, 1), ("b", 44100, 2)):
        y, got_sr = sf.read(out[name].path, dtype="float32", always_2d=True)
        assert got_sr == sr and y.shape[1] == ch
        assert abs(len(y) / sr - 3.0) < 0.1, f"{codec}/{rate}: duration {len(y) / sr:.3f}"
        mid = y[int(0.5 * sr): int(2.5 * sr), 0]
        assert abs(_peak_hz(mid, sr) - 440.0) < 3.0
        assert 0.2 < np.abs(mid).max() < 1.0  # a down-mix keeps the level, never clips
    assert not list(tmp_path.glob("*.part"))


def test_timestamp_gap_becomes_silence(tmp_path):
    """A 1 s hole in the audio timestamps (a dropout) stays a 1 s silence: later speech keeps its time."""
    rate = 16000
    x = _tone(300.0, 2.0, rate)
    path = tmp_path / "late.mkv"
    with av.open(str(path), "w") as c:
        a = c.add_stream("pcm_s16le", rate=rate)
        a.layout = "mono"
        for i in range(0, len(x), 1600):
            f = av.AudioFrame.from_ndarray((x[i:i + 1600] * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
            f.sample_rate, f.time_base = rate, Fraction(1, rate)
            f.pts = i if i < rate else i + rate  # after 1 s of tone, a 1 s jump
            for pk in a.encode(f):
                c.mux(pk)
        for pk in a.encode(None):
            c.mux(pk)
    out = extract_audio(path, {"a": (tmp_path / "a.wav", 16000, 1)})
    y, _ = sf.read(out["a"].path, dtype="float32")
    loud = np.abs(y) > 0.1
    assert loud[: int(0.95 * 16000)].mean() > 0.3  # tone
    assert not loud[int(1.05 * 16000): int(1.95 * 16000)].any()  # the hole
    assert abs(np.flatnonzero(loud[16000:])[0] / 16000 - 1.0) < 0.02  # tone resumes at 2 s
    assert abs(len(y) / 16000 - 3.0) < 0.05


def _write_mute_video(path, frames: int) -> None:
    """A 10 fps black 64x48 H.264 video with no audio stream."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=10)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            f.pts = i
            for pk in v.encode(f):
                c.mux(pk)
        for pk in v.encode(None):
            c.mux(pk)


def test_video_without_audio_names_the_file(tmp_path):
    path = tmp_path / "mute.mp4"
    _write_mute_video(path, frames=10)
    with pytest.raises(MediaError) as e:
        extract_audio(path, {"a": (tmp_path / "a.wav", 16000, 1)})
    assert str(path) in str(e.value) and "no audio stream" in str(e.value)
    assert not (tmp_path / "a.wav").exists()


def test_no_audio_stream_fails_the_separate_stage_for_that_video(project, tmp_path):
    """A video row without audio (e.g. its file was replaced) -> StageError naming the file, recorded per item."""
    from mikupal import store
    from audio_fixtures import run_stages

    path = tmp_path / "mute.mkv"
    _write_mute_video(path, frames=5)
    db = project.db()
    db.conn.execute("INSERT INTO videos (sha256, path, duration_s, added_at) VALUES ('x', ?, 0.5, ?)",
                    (str(path), store.now()))
    db.conn.close()
    project.config["separate"]["model"] = "none"
    summary = run_stages(project, ["separate"])
    assert summary["separate"] == {"done": 0, "failed": 1}
    db = project.db()
    err = store.rows(db, "SELECT stage, message FROM errors")
    assert err[0]["stage"] == "separate" and str(path) in err[0]["message"] and "\n" not in err[0]["message"]


_RSS_SCRIPT = r"""
import json, resource, sys, time
from mikupal.media import extract_audio
t = time.perf_counter()
out = extract_audio(sys.argv[1], {"a": (sys.argv[2] + "/a.wav", 16000, 1), "b": (sys.argv[2] + "/b.wav", 44100, 2)})
# VmHWM is this process image's own peak. ru_maxrss would do on a fresh process, but Linux
# carries the pre-exec high-water mark over exec, so a child of a 1 GB pytest reads >= 1 GB.
try:
    rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
except OSError:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rss_mb": rss,
                  "a_s": out["a"].duration_s, "b_s": out["b"].duration_s, "s": time.perf_counter() - t}))
"""


@pytest.mark.slow
def test_one_hour_extraction_stays_under_1gb(tmp_path):
    assert shutil.which("ffmpeg"), "ffmpeg CLI not installed (make setup installs it; used to generate the input)"
    src = tmp_path / "hour.mka"
    # 1 hour of stereo 48 kHz speech-band noise, Opus-coded (a long file that decodes like a real one)
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anoisesrc=d=3600:c=pink:r=48000:a=0.2",
                    "-ac", "2", "-c:a", "libopus", "-b:a", "24k", str(src)], check=True)
    r = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(src), str(tmp_path)], capture_output=True, text=True,
                       check=True, cwd=Path(__file__).resolve().parents[1])
    res = json.loads(r.stdout.strip().splitlines()[-1])
    print("1 h extraction:", res)
    assert abs(res["a_s"] - 3600) < 1.0 and abs(res["b_s"] - 3600) < 1.0
    assert res["rss_mb"] < 1024, f"peak RSS {res['rss_mb']:.0f} MB for one hour of audio"

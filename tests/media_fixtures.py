"""The media torture set: small files built by ffmpeg from one synthetic source whose
content is known exactly (tests build them; no binary fixtures).

The DISPLAYED picture (upright, square pixels) shows the astronaut's face at a known box
and the frame number as 7 black/white blocks along the bottom; the audio is seeded,
band-limited noise g(tau), so where a stretch of audio came from is found by
cross-correlation. Frame n is presented at tau = n / FPS and audio sample m at m / RATE.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

FPS = 25
RATE = 48000
BITS = 7
_CROP = (145, 35, 160, 180)  # the astronaut's head in skimage.data.astronaut()
_FACE_IN_CROP = (32, 31, 95, 95)  # x, y, w, h of the Haar face inside the crop


@dataclass
class Source:
    width: int
    height: int
    duration: float
    face_box: tuple[float, float, float, float]  # x1, y1, x2, y2 in displayed pixels
    audio: np.ndarray  # g at RATE
    frames: list = field(default_factory=list)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *map(str, args)], check=True)


def noise(seconds: float, seed: int, rate: int = RATE) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    x = np.random.default_rng(seed).normal(0, 1, int(seconds * rate))
    x = sosfilt(butter(6, 3500, fs=rate, output="sos"), x)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def displayed_frames(w: int, h: int, n: int, face_scale: float = 1.0):
    """Upright frames with the face (at a known box) and the frame code; and that box."""
    from skimage import data
    from skimage.transform import rescale

    x, y, cw, ch = _CROP
    face = data.astronaut()[y: y + ch, x: x + cw]
    if face_scale != 1.0:
        face = (rescale(face, face_scale, channel_axis=2, anti_aliasing=True) * 255).astype(np.uint8)
    fh, fw = face.shape[:2]
    px, py = min(int(w * 0.55), w - fw - 4), max(0, (h - fh) // 2 - int(h * 0.08))
    fx, fy, fs, _ = (v * face_scale for v in _FACE_IN_CROP)
    box = (px + fx, py + fy, px + fx + fs, py + fy + fs)
    base = np.zeros((h, w, 3), np.uint8)
    base[:] = (70, 90, 110)
    base[py: py + fh, px: px + fw] = face
    out = []
    for i in range(n):
        f = base.copy()
        f[: int(h * 0.1), : int(w * 0.1)] = (i * 37) % 256  # a little motion for the encoder
        write_code(f, i)
        out.append(f)
    return out, box


def _cells(h: int, w: int):
    s = max(8, w // 20)
    y0 = h - s - 2
    return [(y0, 2 + k * s, s) for k in range(BITS)]


def write_code(img: np.ndarray, n: int) -> None:
    for k, (y, x, s) in enumerate(_cells(*img.shape[:2])):
        img[y: y + s, x: x + s] = 255 if (n >> k) & 1 else 0


def read_code(img: np.ndarray) -> int:
    """The frame number shown in a displayed picture (any size)."""
    g = img.mean(axis=2) if img.ndim == 3 else img
    n = 0
    for k, (y, x, s) in enumerate(_cells(*g.shape[:2])):
        m = s // 4
        if g[y + m: y + s - m, x + m: x + s - m].mean() > 128:
            n |= 1 << k
    return n


def write_source(path: Path, frames, audio: np.ndarray | None, *, rate: int = RATE, sar: str | None = None,
                 extra_audio: list[tuple[np.ndarray, str]] = ()) -> None:
    """Near-lossless MKV (H.264 crf 12, PCM audio) that ffmpeg then turns into each case."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", format="matroska") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"crf": "12", "preset": "ultrafast", "g": "25"}
        tracks = [(audio, None)] if audio is not None else []
        tracks += list(extra_audio)
        ass = []
        for samples, lang in tracks:
            a = out.add_stream("pcm_s16le", rate=rate)
            a.layout = "mono"
            if lang:
                a.metadata["language"] = lang
            ass.append((a, samples))
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            for p in vs.encode(vf):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        for a, samples in ass:
            pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
            for i0 in range(0, len(pcm), 1024):
                af = av.AudioFrame.from_ndarray(pcm[None, i0: i0 + 1024], format="s16", layout="mono")
                af.sample_rate = rate
                af.pts = i0
                for p in a.encode(af):
                    out.mux(p)
            for p in a.encode(None):
                out.mux(p)


def lag_of(x: np.ndarray, ref: np.ndarray, rate: int) -> tuple[float, float]:
    """(seconds into `ref` where `x` best matches, normalised correlation there)."""
    from scipy.signal import fftconvolve

    x = x - x.mean()
    c = fftconvolve(ref, x[::-1], mode="valid")
    k = int(np.argmax(c))
    seg = ref[k: k + len(x)]
    corr = float(np.dot(seg, x) / (np.linalg.norm(seg) * np.linalg.norm(x) + 1e-12))
    return k / rate, corr

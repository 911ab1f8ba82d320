"""The demo clip: a short, fully synthetic talking-head video built offline.

Two copies of skimage's astronaut face sit side by side; the mouth of the speaker is
stretched open by the envelope of espeak-ng speech, the other face stays silent (and may
jitter). Optional scene cut and a face-less span exercise the vision stages. A sidecar
`.srt` holds the exact cue times, so the whole pipeline can run without Whisper.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .media import write_mp4

DEMO_LINES = (
    "I can't believe you did that, this is wonderful news!",
    "Honestly, I am so tired of waiting here every single day.",
    "Wait, what was that noise? Did you hear it too?",
    "Thank you. That really means a lot to me.",
)

# Face crop taken from skimage.data.astronaut(): the Haar face box there is (177, 66, 95, 95).
_CROP = (145, 35, 160, 180)  # x, y, w, h
_FACE_IN_CROP = (32, 31, 95, 95)  # x, y, w, h of the face inside the crop
_MOUTH_ROWS = (98, 122)  # rows of the crop holding the lips
_MOUTH_COLS = (48, 112)


@dataclass
class DemoClip:
    path: Path
    srt_path: Path
    cues: list[tuple[float, float, str]]
    speaker_side: str
    width: int
    height: int
    fps: int
    duration_s: float
    # Face boxes (x1, y1, x2, y2) in video pixels, before any scene cut.
    face_boxes: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    scene_cut_at: float | None = None
    no_face_span: tuple[float, float] | None = None


def _espeak(text: str, rate_hz: int, speed: int = 160, pitch: int = 50, voice: str = "en") -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed; install it (apt-get install espeak-ng) to build the demo clip")
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = os.path.join(tmp, "s.wav")
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", wav_path, text],
            check=True, capture_output=True,
        )
        with wave.open(wav_path, "rb") as w:
            sr = w.getframerate()
            x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0
    # Trim espeak's leading/trailing silence so cue times are the voiced span.
    voiced = np.flatnonzero(np.abs(x) > 0.01)
    if voiced.size:
        x = x[voiced[0]: voiced[-1] + 1]
    n_out = int(round(len(x) * rate_hz / sr))
    return np.interp(np.linspace(0, len(x) - 1, n_out), np.arange(len(x)), x).astype(np.float32)


def _face_crop() -> np.ndarray:
    from skimage import data

    x, y, w, h = _CROP
    return data.astronaut()[y: y + h, x: x + w].copy()


def _open_mouth(face: np.ndarray, amount: float) -> np.ndarray:
    """Stretch the lip rows downwards by `amount` (0..1) and darken the opening."""
    if amount <= 0.02:
        return face
    out = face.copy()
    r0, r1 = _MOUTH_ROWS
    c0, c1 = _MOUTH_COLS
    band = face[r0:r1, c0:c1].astype(np.float32)
    new_h = int(round((r1 - r0) * (1.0 + 1.2 * amount)))
    rows = np.linspace(0, band.shape[0] - 1, new_h)
    stretched = band[np.round(rows).astype(int)]
    end = min(out.shape[0], r0 + new_h)
    out[r0:end, c0:c1] = stretched[: end - r0].astype(np.uint8)
    # A dark ellipse between the lips, as an open mouth shows.
    cy, cx = r0 + new_h // 2, (c0 + c1) // 2
    ry, rx = max(1, int(9 * amount)), int((c1 - c0) * 0.32)
    yy, xx = np.ogrid[: out.shape[0], : out.shape[1]]
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    out[mask] = (out[mask] * 0.25).astype(np.uint8)
    return out


def _write_srt(path: Path, cues: list[tuple[float, float, str]]) -> None:
    def ts(t: float) -> str:
        ms = int(round(t * 1000))
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    lines = []
    for i, (a, b, text) in enumerate(cues, 1):
        lines += [str(i), f"{ts(a)} --> {ts(b)}", text, ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def make_demo_clip(
    path: str | Path,
    *,
    lines: tuple[str, ...] | list[str] = DEMO_LINES,
    speaker: str = "left",
    jitter_silent: bool = True,
    scene_cut_at: float | None = None,
    no_face_span: tuple[float, float] | None = None,
    gap_s: float = 1.0,
    lead_s: float = 0.8,
    width: int = 640,
    height: int = 360,
    fps: int = 25,
    audio_rate: int = 48000,
    speech_speeds: tuple[int, ...] | None = None,
    seed: int = 0,
) -> DemoClip:
    """Write an H.264 + AAC mp4 at `path` and a sidecar `.srt`; return what was made."""
    if speaker not in ("left", "right"):
        raise ValueError("speaker must be 'left' or 'right'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    # --- audio: the lines at known times --------------------------------------------
    pieces, cues, t = [], [], lead_s
    for i, text in enumerate(lines):
        speed = speech_speeds[i % len(speech_speeds)] if speech_speeds else 160
        x = _espeak(text, audio_rate, speed=speed)
        pieces.append((t, x))
        cues.append((round(t, 3), round(t + len(x) / audio_rate, 3), text))
        t += len(x) / audio_rate + gap_s
    duration = t + 0.5
    n_audio = int(round(duration * audio_rate))
    audio = np.zeros(n_audio, dtype=np.float32)
    for start, x in pieces:
        i0 = int(round(start * audio_rate))
        audio[i0: i0 + len(x)] += x * 0.8
    audio += rng.normal(0, 0.002, n_audio).astype(np.float32)  # a faint room tone

    # Envelope per video frame drives the mouth.
    n_frames = int(round(duration * fps))
    spf = audio_rate // fps
    env = np.array([np.sqrt(np.mean(audio[i * spf:(i + 1) * spf] ** 2)) for i in range(n_frames)])
    env = np.clip(env / (np.percentile(env, 95) + 1e-9), 0, 1)

    # --- video ---------------------------------------------------------------------
    face = _face_crop()
    fh, fw = face.shape[:2]
    base_pos = {"left": (width // 4 - fw // 2, (height - fh) // 2), "right": (3 * width // 4 - fw // 2, (height - fh) // 2)}
    cut_pos = {"left": (base_pos["left"][0] + 40, base_pos["left"][1] - 20), "right": (base_pos["right"][0] - 30, base_pos["right"][1] + 10)}
    fx, fy, fsz, _ = _FACE_IN_CROP
    boxes = {side: (x + fx, y + fy, x + fx + fsz, y + fy + fsz) for side, (x, y) in base_pos.items()}

    bg1 = np.zeros((height, width, 3), np.uint8)
    bg1[:] = (40, 60, 90)
    bg1[:, :, 1] += np.linspace(0, 60, width, dtype=np.uint8)[None, :]
    bg2 = np.zeros((height, width, 3), np.uint8)
    bg2[:] = (150, 110, 60)

    def frames():
        for i in range(n_frames):
            ts = i / fps
            after_cut = scene_cut_at is not None and ts >= scene_cut_at
            frame = (bg2 if after_cut else bg1).copy()
            if not (no_face_span and no_face_span[0] <= ts < no_face_span[1]):
                pos = cut_pos if after_cut else base_pos
                for side in ("left", "right"):
                    x, y = pos[side]
                    img = _open_mouth(face, float(env[i])) if side == speaker else face
                    if side != speaker and jitter_silent:
                        x += int(rng.integers(-3, 4))
                        y += int(rng.integers(-3, 4))
                    frame[y: y + fh, x: x + fw] = img
            yield frame

    # s16 first, as a recorder would store it (the faint room tone stays below 1 LSB-exact)
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16).astype(np.float32) / 32768.0
    write_mp4(path, frames(), fps, pcm, audio_rate, crf=20, preset="veryfast", gop=fps * 2, threads=0,
              audio_bitrate=128000)

    srt = path.with_suffix(".srt")
    _write_srt(srt, cues)
    return DemoClip(
        path=path, srt_path=srt, cues=cues, speaker_side=speaker, width=width, height=height, fps=fps,
        duration_s=duration, face_boxes=boxes, scene_cut_at=scene_cut_at, no_face_span=no_face_span,
    )

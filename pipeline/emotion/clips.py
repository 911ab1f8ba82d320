"""The utterance clip sent to the annotator: cut from the source through mikupal.media.

Times are on the project clock (0 = the source's first presented frame or sample) and the
speaker box is in displayed pixels (rotation and SAR applied), as every stage stores them;
the clip shows the picture upright, and its audio is the chosen track ([media]
audio_track) at exactly the segment's place, so the model hears what the label is for.

The clip covers the segment (plus ``[clips] context_s`` each side), cropped around the active
speaker when ``[clips] crop = "speaker"`` and a speaker box is known (else the full frame),
scaled to ``[clips] height`` at ``[clips] fps``, H.264 + AAC mono. Files live in the clips
cache named by the sha256 of what the model is shown: the decoded pixels and samples plus the
encoder settings. (Not of the file's bytes: x264 is not bit-exact from run to run, so a byte
hash would change when a lost cache is rebuilt and answers keyed by it would be orphaned.) A
small index maps the cut's inputs to that sha so the same cut is never decoded twice.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileutil import write_text_atomic
from ..media import MediaError, NoVideoError, VideoReader, decode_span, probe, write_mp4, write_wav


AUDIO_RATE = 16000  # what the annotators resample speech to anyway
VIDEO_MIME = "video/mp4"
AUDIO_MIME = "audio/wav"  # audio-only sources: 16 kHz PCM WAV, a format every backend accepts


class ClipError(Exception):
    """The source cannot be cut (unreadable, no streams in range); message says what to do."""


@dataclass(frozen=True)
class ClipSpec:
    video_path: str
    video_sha: str
    start_s: float
    end_s: float
    bbox: tuple[float, float, float, float] | None = None  # speaker face x1, y1, x2, y2, displayed pixels
    crop: str = "speaker"
    height: int = 360
    fps: float = 5.0
    context_s: float = 0.0
    audio_track: str = "default"  # [media] audio_track

    @property
    def t0(self) -> float:
        return max(0.0, self.start_s - self.context_s)

    @property
    def t1(self) -> float:
        return self.end_s + self.context_s

    def key(self) -> str:
        """Hash of everything that determines the clip's content (the index key)."""
        use_box = self.bbox if self.crop == "speaker" else None
        d = [self.video_sha, round(self.t0, 3), round(self.t1, 3), self.crop,
             [round(float(v), 1) for v in use_box] if use_box else None, int(self.height), round(float(self.fps), 3), 2]
        if str(self.audio_track) != "default":
            d.append(str(self.audio_track))
        return hashlib.sha256(json.dumps(d).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Clip:
    path: str
    sha: str
    size_bytes: int
    duration_s: float
    has_video: bool
    mime_type: str


def parse_bbox(raw) -> tuple[float, float, float, float] | None:
    """segments.speaker_bbox_json -> (x1, y1, x2, y2): a list, or a dict with x1..y2 / box / bbox."""
    if raw in (None, "", "null"):
        return None
    try:
        v = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return None
    if isinstance(v, dict):
        if all(k in v for k in ("x1", "y1", "x2", "y2")):
            v = [v["x1"], v["y1"], v["x2"], v["y2"]]
        else:
            v = v.get("box") or v.get("bbox")
    if isinstance(v, (list, tuple)) and len(v) == 4 and all(isinstance(x, (int, float)) for x in v):
        x1, y1, x2, y2 = map(float, v)
        if x2 > x1 and y2 > y1:
            return (x1, y1, x2, y2)
    return None


def _crop_box(bbox, w: int, h: int) -> tuple[int, int, int, int]:
    """A square around the face, three face-heights tall (head and shoulders), inside the frame."""
    x1, y1, x2, y2 = bbox
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + 0.25 * (y2 - y1)
    side = min(max(x2 - x1, y2 - y1) * 3.0, w, h)
    left = int(round(min(max(0, cx - side / 2), w - side)))
    top = int(round(min(max(0, cy - side / 2), h - side)))
    return left, top, int(side), int(side)


def _even(n: float) -> int:
    return max(2, int(round(n / 2)) * 2)


def _decode_audio(path: str, t0: float, t1: float, audio_track: str = "default") -> np.ndarray:
    """Mono float32 at AUDIO_RATE for [t0, t1) on the project clock (empty: no audio)."""
    return decode_span(path, t0, t1, AUDIO_RATE, audio_track=audio_track)


def _video_frames(path: str, spec: ClipSpec):
    """(RGB frames at spec.fps over [t0, t1) cropped around the speaker, out_w, out_h), or
    None for a file without video. The picture is read at the size the clip needs (a 4K
    source is scaled by libswscale before it is cropped, never converted at full size)."""
    try:
        reader = VideoReader(path)
    except NoVideoError:
        return None
    with reader as r:
        W, H = r.display_size
        if spec.crop == "speaker" and spec.bbox is not None:
            cx, cy, cw, ch = _crop_box(spec.bbox, W, H)
        else:
            cx, cy, cw, ch = 0, 0, W, H
        out_h = _even(min(spec.height, ch))
        out_w = _even(cw * out_h / ch)
        s = min(1.0, out_h / ch)  # read scale: the crop comes out at (about) the clip size
        r.resize((max(2, int(round(W * s))), max(2, int(round(H * s)))))
        box = (int(round(cx * s)), int(round(cy * s)), max(1, int(round(cw * s))), max(1, int(round(ch * s))))
        n_out = max(1, int(round((spec.t1 - spec.t0) * spec.fps)))
        targets = [spec.t0 + k / spec.fps for k in range(n_out)]
        got: dict[int, np.ndarray] = {}
        for fr in r.frames_at(targets):
            x, y, w, h = box
            got[fr.index] = np.ascontiguousarray(fr.image[y: y + h, x: x + w])
    if not got:
        return [], out_w, out_h
    black = np.zeros_like(next(iter(got.values())))
    frames, last = [], None
    for k in range(n_out):
        last = got.get(k, last)  # a picture lost to damage or past the end: hold the last one
        frames.append(last if last is not None else black)  # before the video starts: black
    return frames, out_w, out_h


def cut_clip(spec: ClipSpec, out_dir: str | Path) -> Clip:
    """Cut (or reuse) the clip for `spec` under `out_dir`; returns its content-hash name."""
    out_dir = Path(out_dir)
    index = out_dir / "index"
    index.mkdir(parents=True, exist_ok=True)
    key_file = index / f"{spec.key()}.json"
    if key_file.exists():
        try:
            meta = json.loads(key_file.read_text())
            if (out_dir / Path(meta["path"]).name).exists():
                meta["path"] = str(out_dir / Path(meta["path"]).name)
                return Clip(**meta)
        except (ValueError, KeyError, TypeError):
            pass  # a damaged index entry: cut again
    if spec.t1 <= spec.t0:
        raise ClipError(f"empty time range {spec.start_s:.2f}-{spec.end_s:.2f} s; fix the segment times")
    try:
        audio = _decode_audio(spec.video_path, spec.t0, spec.t1, spec.audio_track)
        vid = _video_frames(spec.video_path, spec)
    except MediaError as e:
        raise ClipError(str(e)) from None
    except OSError as e:
        raise ClipError(f"cannot read {spec.video_path} ({type(e).__name__}: {e}); re-add the file or remove it") from None
    if vid is None and not len(audio):
        raise ClipError(f"{spec.video_path} has neither video nor audio in {spec.t0:.2f}-{spec.t1:.2f} s")
    has_video = vid is not None and bool(vid[0])
    suffix = ".mp4" if has_video else ".wav"
    sha = _content_sha(vid if has_video else None, audio, spec.fps, suffix)
    final = out_dir / f"{sha}{suffix}"
    if not final.exists():
        _encode(str(final), vid if has_video else None, audio, spec.fps)
    clip = Clip(path=str(final), sha=sha, size_bytes=final.stat().st_size, duration_s=round(spec.t1 - spec.t0, 3),
                has_video=has_video, mime_type=VIDEO_MIME if has_video else AUDIO_MIME)
    try:  # parallel cuts of one segment each write a whole entry under their own temp name
        write_text_atomic(key_file, json.dumps(clip.__dict__))
    except OSError:
        pass  # the index only saves a re-decode; the clip itself is complete
    return clip


# Bump when _encode's settings change, so new encodings get new names.
ENCODER_SETTINGS = "h264 veryfast crf26 yuv420p; aac mono 48k; wav s16 mono"


def _content_sha(vid, audio: np.ndarray, fps: float, suffix: str) -> str:
    """sha256 of the clip's content: settings, size, rate, every frame's pixels, the samples."""
    h = hashlib.sha256(f"{ENCODER_SETTINGS}|{suffix}|{fps!r}|{AUDIO_RATE}".encode())
    if vid is not None:
        frames, w, ht = vid
        h.update(f"|{w}x{ht}|{len(frames)}|".encode())
        for f in frames:
            h.update(f.shape.__repr__().encode())
            h.update(np.ascontiguousarray(f).tobytes())
    h.update(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
    return h.hexdigest()


def _encode(path: str, vid, audio: np.ndarray, fps: float) -> None:
    """The clip file: WAV for audio-only sources, else H.264 + AAC mono (written atomically)."""
    if path.endswith(".wav"):
        write_wav(path, audio, AUDIO_RATE)
        return
    frames, w, h = vid if vid is not None else (None, 0, 0)
    write_mp4(path, frames, fps, audio, AUDIO_RATE, crf=26, preset="veryfast", size=(w, h) if vid else None)


def read_audio(clip_path: str) -> np.ndarray:
    """The clip's audio as mono float32 at AUDIO_RATE (for the baseline and OpenAI backends)."""
    return decode_span(clip_path, 0.0, None, AUDIO_RATE)


def sample_frames(clip_path: str, every_s: float = 1.0, max_frames: int = 8) -> list[np.ndarray]:
    """RGB frames about every `every_s` seconds (for backends that take images)."""
    try:
        reader = VideoReader(clip_path)
    except MediaError:
        return []
    with reader as r:
        dur = probe(clip_path).duration_s
        times = [k * every_s for k in range(max_frames) if k * every_s < max(dur, 1e-3)]
        return [f.image for f in r.frames_at(times)]

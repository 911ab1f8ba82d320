"""The utterance clip sent to the annotator: cut from the source video with PyAV.

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
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


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
    bbox: tuple[float, float, float, float] | None = None  # speaker face x1, y1, x2, y2 in source pixels
    crop: str = "speaker"
    height: int = 360
    fps: float = 5.0
    context_s: float = 0.0

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
             [round(float(v), 1) for v in use_box] if use_box else None, int(self.height), round(float(self.fps), 3), 1]
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


def _decode_audio(path: str, t0: float, t1: float) -> np.ndarray:
    """Mono float32 at AUDIO_RATE for [t0, t1) (empty if the file has no audio)."""
    with av.open(path) as c:
        if not c.streams.audio:
            return np.zeros(0, np.float32)
        st = c.streams.audio[0]
        res = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        if t0 > 1.0:
            c.seek(int((t0 - 1.0) / st.time_base), stream=st)
        chunks, first_t = [], None
        for frame in c.decode(st):
            if frame.time is not None and frame.time > t1 + 0.5:
                break
            for rf in res.resample(frame):
                if first_t is None:
                    first_t = rf.time if rf.time is not None else (frame.time or 0.0)
                chunks.append(rf.to_ndarray().reshape(-1))
        for rf in res.resample(None):
            chunks.append(rf.to_ndarray().reshape(-1))
    if not chunks:
        return np.zeros(0, np.float32)
    x = np.concatenate(chunks).astype(np.float32)
    i0 = int(round((t0 - (first_t or 0.0)) * AUDIO_RATE))
    n = int(round((t1 - t0) * AUDIO_RATE))
    if i0 < 0:
        x = np.concatenate([np.zeros(-i0, np.float32), x])
        i0 = 0
    out = x[i0: i0 + n]
    return np.pad(out, (0, max(0, n - len(out))))


def _video_frames(path: str, spec: ClipSpec):
    """Yield RGB frames at spec.fps over [t0, t1), cropped and scaled; None if no video stream."""
    with av.open(path) as c:
        if not c.streams.video:
            return None
        st = c.streams.video[0]
        st.thread_type = "AUTO"
        w, h = st.codec_context.width, st.codec_context.height
        if spec.crop == "speaker" and spec.bbox is not None:
            cx, cy, cw, ch = _crop_box(spec.bbox, w, h)
        else:
            cx, cy, cw, ch = 0, 0, w, h
        out_h = _even(min(spec.height, ch))
        out_w = _even(cw * out_h / ch)
        if spec.t0 > 0.5:
            c.seek(int((spec.t0 - 0.5) / st.time_base), stream=st)
        n_out = max(1, int(round((spec.t1 - spec.t0) * spec.fps)))
        targets = [spec.t0 + k / spec.fps for k in range(n_out)]
        frames, k, last = [], 0, None
        for frame in c.decode(st):
            t = float(frame.time or 0.0)
            if t < spec.t0 - 1e-6 and (k == 0):
                last = frame
                continue
            while k < n_out and t + 1e-6 >= targets[k]:
                src = frame if last is None or abs(t - targets[k]) <= abs(float(last.time or 0) - targets[k]) else last
                img = src.to_ndarray(format="rgb24")[cy: cy + ch, cx: cx + cw]
                frames.append(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24").reformat(out_w, out_h))
                k += 1
            last = frame
            if k >= n_out or t > spec.t1 + 1.0:
                break
        while k < n_out and last is not None and frames:  # source ended early: hold the last frame
            frames.append(frames[-1])
            k += 1
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
        audio = _decode_audio(spec.video_path, spec.t0, spec.t1)
        vid = _video_frames(spec.video_path, spec)
    except (av.error.FFmpegError, OSError) as e:
        raise ClipError(f"cannot read {spec.video_path} ({type(e).__name__}: {e}); re-add the file or remove it") from None
    if vid is None and not len(audio):
        raise ClipError(f"{spec.video_path} has neither video nor audio in {spec.t0:.2f}-{spec.t1:.2f} s")
    has_video = vid is not None and bool(vid[0])
    suffix = ".mp4" if has_video else ".wav"
    sha = _content_sha(vid if has_video else None, audio, spec.fps, suffix)
    final = out_dir / f"{sha}{suffix}"
    if not final.exists():
        fd, tmp = tempfile.mkstemp(suffix=suffix, dir=out_dir)
        os.close(fd)
        try:
            _encode(tmp, vid if has_video else None, audio, spec.fps)
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    clip = Clip(path=str(final), sha=sha, size_bytes=final.stat().st_size, duration_s=round(spec.t1 - spec.t0, 3),
                has_video=has_video, mime_type=VIDEO_MIME if has_video else AUDIO_MIME)
    tmpk = key_file.with_suffix(f".{os.getpid()}.tmp")
    tmpk.write_text(json.dumps(clip.__dict__))
    os.replace(tmpk, key_file)
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
            h.update(np.ascontiguousarray(f.to_ndarray(format="rgb24")).tobytes())
    h.update(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
    return h.hexdigest()


def _encode(path: str, vid, audio: np.ndarray, fps: float) -> None:
    if path.endswith(".wav"):
        import wave

        with wave.open(path, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(AUDIO_RATE)
            w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
        return
    fmt = "mp4" if path.endswith(".mp4") else "ipod"
    with av.open(path, mode="w", format=fmt) as out:
        out.metadata.clear() if hasattr(out.metadata, "clear") else None
        vs = None
        if vid is not None:
            frames, w, h = vid
            rate = Fraction(fps).limit_denominator(1000)
            vs = out.add_stream("libx264", rate=rate)
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            vs.options = {"preset": "veryfast", "crf": "26", "threads": "1"}
        as_ = None
        if len(audio):
            as_ = out.add_stream("aac", rate=AUDIO_RATE)
            as_.layout = "mono"
            as_.bit_rate = 48000
        if vs is not None:
            for i, f in enumerate(frames):
                f = f.reformat(format="yuv420p")
                f.pts = i
                f.time_base = 1 / Fraction(fps).limit_denominator(1000)
                for p in vs.encode(f):
                    out.mux(p)
            for p in vs.encode(None):
                out.mux(p)
        if as_ is not None:
            pcm = audio.reshape(1, -1).astype(np.float32)
            step = 1024
            for i0 in range(0, pcm.shape[1], step):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, i0: i0 + step]), format="flt", layout="mono")
                af.sample_rate = AUDIO_RATE
                af.pts = i0
                af.time_base = Fraction(1, AUDIO_RATE)
                for p in as_.encode(af):
                    out.mux(p)
            for p in as_.encode(None):
                out.mux(p)


def read_audio(clip_path: str) -> np.ndarray:
    """The clip's audio as mono float32 at AUDIO_RATE (for the baseline and OpenAI backends)."""
    with av.open(clip_path) as c:
        dur = float(c.duration / av.time_base) if c.duration else 1e9
    return _decode_audio(clip_path, 0.0, dur)


def sample_frames(clip_path: str, every_s: float = 1.0, max_frames: int = 8) -> list[np.ndarray]:
    """RGB frames about every `every_s` seconds (for backends that take images)."""
    out: list[np.ndarray] = []
    with av.open(clip_path) as c:
        if not c.streams.video:
            return out
        next_t = 0.0
        for frame in c.decode(c.streams.video[0]):
            t = float(frame.time or 0.0)
            if t + 1e-6 >= next_t:
                out.append(frame.to_ndarray(format="rgb24"))
                next_t += every_s
                if len(out) >= max_frames:
                    break
    return out

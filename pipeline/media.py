"""Media access with PyAV: probing, hashing, audio extraction and clip cutting.

Everything streams: no function here holds a whole video or its audio in memory.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import av

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv"}


class MediaError(Exception):
    """A file that cannot be used; the message names it and says what to do."""


@dataclass
class ProbeInfo:
    duration_s: float
    fps: float | None
    width: int | None
    height: int | None
    has_audio: bool
    has_video: bool
    audio_rate: int | None
    audio_channels: int | None
    size_bytes: int

    def as_row(self) -> dict:
        d = asdict(self)
        d["has_audio"] = int(self.has_audio)
        d["has_video"] = int(self.has_video)
        return d


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def probe(path: str | Path) -> ProbeInfo:
    """Read container metadata. Raises MediaError for empty, unreadable or stream-less files."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise MediaError(f"{path}: cannot read ({e.strerror}); check the path and permissions") from None
    if size == 0:
        raise MediaError(f"{path}: empty file (0 bytes); re-copy or re-download it")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise MediaError(f"{path}: not a readable video ({type(e).__name__}); re-encode it with ffmpeg or remove it") from None
    with container:
        v = container.streams.video[0] if container.streams.video else None
        a = container.streams.audio[0] if container.streams.audio else None
        if v is None and a is None:
            raise MediaError(f"{path}: no audio or video stream; this is not a media file")
        duration = None
        if container.duration:
            duration = container.duration / av.time_base
        for s in (v, a):
            if duration is None and s is not None and s.duration and s.time_base:
                duration = float(s.duration * s.time_base)
        fps = None
        if v is not None:
            rate = v.average_rate or v.guessed_rate or v.base_rate
            fps = float(rate) if rate else None
        return ProbeInfo(
            duration_s=float(duration or 0.0),
            fps=fps,
            width=v.codec_context.width if v is not None else None,
            height=v.codec_context.height if v is not None else None,
            has_audio=a is not None,
            has_video=v is not None,
            audio_rate=a.codec_context.sample_rate if a is not None else None,
            audio_channels=a.codec_context.channels if a is not None else None,
            size_bytes=size,
        )

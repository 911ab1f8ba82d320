"""Decode only the frames the vision stages need, on a fixed time grid.

Frames are sampled at ``fps`` on the grid t = k / fps (k is the frame *index* every vision
result is keyed by), only inside the given spans. Each span is reached with one seek, then
decoded with PyAV's threaded decoder; for every grid time the nearest decoded frame is
emitted, converted (and downscaled) only once. A packet the decoder rejects is skipped and
counted, so a damaged stretch costs its frames, not the video.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from ..stage import StageError


@dataclass
class Frame:
    index: int  # grid index: t = index / fps
    t: float
    image: np.ndarray  # HxWx3 RGB or HxW gray, possibly downscaled
    scale: float  # original pixels per image pixel


@dataclass
class DecodeStats:
    frames: int = 0  # grid frames emitted
    corrupt: int = 0  # packets/frames the decoder rejected
    width: int = 0  # original size
    height: int = 0
    spans: list[tuple[float, float]] = field(default_factory=list)


def merge_spans(spans, margin: float = 0.0, duration: float | None = None) -> list[tuple[float, float]]:
    """Widen each (start, end) by ``margin``, clip to [0, duration], merge overlaps."""
    out: list[list[float]] = []
    for a, b in sorted((float(a) - margin, float(b) + margin) for a, b in spans):
        a = max(a, 0.0)
        if duration:
            b = min(b, float(duration))
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def grid_indices(start: float, end: float, fps: float) -> range:
    """Grid frame indices k with start <= k/fps <= end."""
    return range(int(math.ceil(start * fps - 1e-6)), int(math.floor(end * fps + 1e-6)) + 1)


def open_video(path: str | Path):
    """Open a file and its first video stream; StageError naming the file otherwise."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise StageError(f"{path}: cannot open the video ({type(e).__name__}); check the file or re-encode it with ffmpeg") from None
    if not container.streams.video:
        container.close()
        raise StageError(f"{path}: has no video stream, so faces cannot be detected; remove it from the project or add the video")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _frame_time(frame, stream, t0: float) -> float | None:
    if frame.pts is None:
        return None
    return float(frame.pts * stream.time_base) - t0


def iter_frames(
    path: str | Path,
    spans,
    fps: float,
    *,
    width: int | None = None,
    fmt: str = "rgb24",
    stats: DecodeStats | None = None,
) -> Iterator[Frame]:
    """Yield grid frames inside ``spans`` (already merged, sorted), downscaled to ``width``
    (never upscaled). ``stats`` collects frame and corrupt-packet counts."""
    stats = stats if stats is not None else DecodeStats()
    container, stream = open_video(path)
    try:
        cc = stream.codec_context
        stats.width, stats.height = cc.width, cc.height
        out_w = cc.width if not width or width >= cc.width else int(width)
        out_h = max(2, int(round(cc.height * out_w / cc.width))) if cc.width else cc.height
        scale = cc.width / out_w if out_w else 1.0
        src_fps = float(stream.average_rate or stream.guessed_rate or fps)
        # A grid time takes the nearest decoded frame if it is this close: nearest-neighbour
        # resampling between frame rates, but a run of lost frames stays lost (not filled).
        tol = 0.5 / src_fps + 0.5 / fps
        # Times are on the container clock from its start, as media.extract_audio writes audio.
        t0 = container.start_time / av.time_base if container.start_time is not None else 0.0
        for a, b in spans:
            stats.spans.append((a, b))
            yield from _decode_span(container, stream, a, b, fps, out_w, out_h, scale, fmt, tol, t0, stats)
    finally:
        container.close()


def _decode_span(container, stream, a, b, fps, out_w, out_h, scale, fmt, tol, t0, stats):
    targets = grid_indices(a, b, fps)
    if not len(targets):
        return
    ti = 0
    try:
        container.seek(int((max(a - 0.05, 0.0) + t0) / stream.time_base), stream=stream, backward=True, any_frame=False)
    except av.error.FFmpegError:
        container.seek(0)
    prev = None  # (time, av frame, converted image or None)

    def convert(entry):
        if entry[2] is None:
            entry[2] = entry[1].to_ndarray(format=fmt, width=out_w, height=out_h)
        return entry[2]

    demux = container.demux(stream)
    while ti < len(targets):
        try:
            packet = next(demux)
        except StopIteration:
            break
        except av.error.FFmpegError:
            stats.corrupt += 1
            continue
        try:
            decoded = packet.decode()
        except (av.error.FFmpegError, ValueError):
            stats.corrupt += 1
            continue
        for frame in decoded:
            ft = _frame_time(frame, stream, t0)
            if ft is None:
                continue
            if prev is not None:
                mid = (prev[0] + ft) / 2
                while ti < len(targets) and targets[ti] / fps <= mid:
                    k = targets[ti]
                    if abs(k / fps - prev[0]) <= tol:
                        stats.frames += 1
                        yield Frame(k, k / fps, convert(prev), scale)
                    ti += 1
            prev = [ft, frame, None]
        if ti < len(targets) and prev is not None and prev[0] > targets[-1] / fps + tol:
            break
    # end of stream: the last frame serves grid times just after it
    while prev is not None and ti < len(targets) and targets[ti] / fps <= prev[0] + tol:
        k = targets[ti]
        if abs(k / fps - prev[0]) <= tol:
            stats.frames += 1
            yield Frame(k, k / fps, convert(prev), scale)
        ti += 1

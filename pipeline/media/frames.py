"""Pictures as they are shown, on the project clock.

`VideoReader` opens a file's first video stream and converts every frame to the displayed
picture: the display matrix's rotation (90/180/270) and the sample aspect ratio are applied
and the frame is scaled straight to the requested analysis width by libswscale (a 4K frame
is never converted at full size). Its time is seconds on the clock probe.py defines.

Which frame belongs to a time t is decided once, here, for every consumer (the vision
stages' frame grid, the utterance clip, the review player): the frame ON SCREEN at t, i.e.
the last frame whose presentation time is <= t (1 ms tolerance for timestamp rounding).
The first frame also serves times up to one frame before it (audio often starts a few
ms earlier: AAC priming). After a damaged stretch (packets the decoder rejected) a frame
serves only times within half a frame of its own, so lost frames stay lost, not filled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from .probe import (NoVideoError, clock_origin, display_size, first_frame_rotation, open_input, stream_start,
                    video_fps)

EPS = 1e-3  # timestamp rounding (ms-rounded times, 90 kHz ticks, float grid times)


@dataclass
class Frame:
    index: int  # grid index (t = index / fps) or position in the request
    t: float  # requested time on the clock
    image: np.ndarray  # HxWx3 RGB or HxW gray, displayed orientation, possibly downscaled
    scale: float  # displayed pixels per image pixel
    pts_s: float = 0.0  # the shown frame's own presentation time on the clock


@dataclass
class DecodeStats:
    frames: int = 0  # frames emitted
    corrupt: int = 0  # packets/frames the decoder rejected
    width: int = 0  # displayed picture size (rotation and SAR applied)
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


def fit_width(size: tuple[int, int], width: int | None, even: bool = False) -> tuple[int, int]:
    """`size` scaled down to `width` (never up), same aspect."""
    w, h = size
    if width and width < w:
        h = max(2, int(round(h * width / w)))
        w = int(width)
    if even:
        w, h = max(2, w - w % 2), max(2, h - h % 2)
    return w, h


_ROTATION_CACHE: dict[tuple, int] = {}


def _rotation(path: Path, container, stream) -> int:
    try:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _ROTATION_CACHE:
        return _ROTATION_CACHE[key]
    rot = first_frame_rotation(container, stream)
    if key is not None:
        if len(_ROTATION_CACHE) > 256:
            _ROTATION_CACHE.clear()
        _ROTATION_CACHE[key] = rot
    return rot


class VideoReader:
    """One video stream, read as displayed pictures of `size` (default: the displayed size
    scaled down to `width`)."""

    def __init__(self, path: str | Path, *, width: int | None = None, size: tuple[int, int] | None = None,
                 fmt: str = "rgb24"):
        self.path = Path(path)
        self.container = open_input(path)
        if not self.container.streams.video:
            self.container.close()
            raise NoVideoError(f"{path}: has no video stream (audio only), so there is no picture to analyse; "
                             "faces and speakers are not detected for it")
        self.stream = st = self.container.streams.video[0]
        st.thread_type = "AUTO"
        cc = st.codec_context
        self.origin = clock_origin(self.container)
        vs = stream_start(st)
        self.video_start = (vs - self.origin) if vs is not None else 0.0  # first frame on the clock
        self.fps = video_fps(st) or 25.0
        self.sar = Fraction(st.sample_aspect_ratio or cc.sample_aspect_ratio or 1) or Fraction(1)
        self.rotation = _rotation(self.path, self.container, st)
        self.fmt = fmt
        self._iter = None
        self._cur = None  # [time, av frame, converted or None, lost before]
        self._next = None
        self.coded_size = (cc.width, cc.height)
        self.display_size = display_size(cc.width, cc.height, self.sar, self.rotation)
        self._k = self.rotation // 90
        self.resize(tuple(size) if size else fit_width(self.display_size, width))

    def resize(self, size: tuple[int, int]) -> None:
        """Output pictures of `size` (displayed orientation) from now on."""
        self.size = (int(size[0]), int(size[1]))
        self.scale = self.display_size[0] / self.size[0] if self.size[0] else 1.0
        w, h = self.size  # libswscale's target before rotation (90/270 swap the axes)
        self._sws = (h, w) if self.rotation in (90, 270) else (w, h)
        if self._cur is not None:
            self._cur[2] = None

    # ---- basics ----------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.container.close()

    def time_of(self, frame) -> float | None:
        if frame.pts is None:
            return None
        return float(frame.pts * self.stream.time_base) - self.origin

    def convert(self, frame, fmt: str | None = None) -> np.ndarray:
        """The displayed picture of a decoded frame at self.size."""
        img = frame.to_ndarray(format=fmt or self.fmt, width=self._sws[0], height=self._sws[1])
        if self._k:
            img = np.ascontiguousarray(np.rot90(img, self._k))
        return img

    def seek(self, t: float) -> None:
        """Position the demuxer at or before clock time t (the file's start when t is at or
        before the first frame)."""
        if t <= self.video_start + EPS:
            self.container.seek(0)
            return
        try:
            self.container.seek(int((t + self.origin) / self.stream.time_base), stream=self.stream,
                                backward=True, any_frame=False)
        except av.error.FFmpegError:
            self.container.seek(0)

    def decode_from(self, t: float, stats: DecodeStats | None = None) -> Iterator[list]:
        """Decoded entries starting with the frame on screen at t (or the first frame, when t
        is before it). A seek does not always land on a keyframe at or before t (MPEG-TS
        seeks by byte position; the decoder then waits for the next keyframe): when the first
        frame decoded is later than t, seek further back."""
        back = 0.05
        while True:
            target = t - back
            self.seek(target)
            gen = self._decoded(stats)
            first = next(gen, None)
            at_start = target <= self.video_start + EPS
            if first is not None and (first[0] <= t + EPS or at_start):
                yield first
                yield from gen
                return
            if first is None and at_start:
                return
            back = back * 4 + 1.0

    def _decoded(self, stats: DecodeStats | None = None) -> Iterator[list]:
        """[time, frame, None, lost_before] entries in presentation order; corrupt packets
        are counted and flag the next frame."""
        lost = False
        demux = self.container.demux(self.stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                return
            except av.error.FFmpegError:
                lost = True
                if stats is not None:
                    stats.corrupt += 1
                continue
            try:
                decoded = packet.decode()
            except (av.error.FFmpegError, ValueError):
                lost = True
                if stats is not None:
                    stats.corrupt += 1
                continue
            for frame in decoded:
                ft = self.time_of(frame)
                if ft is None:
                    continue
                yield [ft, frame, None, lost]
                lost = False

    def _image(self, entry) -> np.ndarray:
        if entry[2] is None:
            entry[2] = self.convert(entry[1])
        return entry[2]

    # ---- the frame on screen at given times ------------------------------------------
    def frames_at(self, times, stats: DecodeStats | None = None, indices=None) -> Iterator[Frame]:
        """The frame on screen at each of `times` (ascending), one seek then decoding on.
        Times before the first frame, or lost to damage, yield nothing."""
        times = [float(t) for t in times]
        if not times:
            return
        idx = list(indices) if indices is not None else list(range(len(times)))
        tol = 0.5 / self.fps
        frame_dur = 1.0 / self.fps
        ti, prev = 0, None

        def emit(entry, i):
            if stats is not None:
                stats.frames += 1
            return Frame(idx[i], times[i], self._image(entry), self.scale, entry[0])

        for entry in self.decode_from(times[0], stats):
            ft = entry[0]
            while ti < len(times) and times[ti] < ft - EPS:
                if prev is not None and (not entry[3] or times[ti] - prev[0] <= tol):
                    yield emit(prev, ti)
                elif prev is None and ft - times[ti] <= frame_dur:
                    yield emit(entry, ti)  # just before the first frame (e.g. AAC priming put audio first)
                ti += 1
            prev = entry
            if ti >= len(times):
                break
        while prev is not None and ti < len(times) and times[ti] <= prev[0] + frame_dur + EPS:
            yield emit(prev, ti)  # end of stream: the last frame stays up for its duration
            ti += 1

    def grid(self, spans, fps: float, stats: DecodeStats | None = None) -> Iterator[Frame]:
        """Frames on the grid t = k / fps inside each (start, end) span (merged, sorted)."""
        for a, b in spans:
            if stats is not None:
                stats.spans.append((a, b))
            ks = grid_indices(a, b, fps)
            yield from self.frames_at([k / fps for k in ks], stats, ks)

    def frame_at(self, t: float) -> tuple[np.ndarray, float] | None:
        """The frame on screen at t and its own time; consecutive calls decode on (the
        review player steps and plays through this)."""
        if self._cur is None or t < self._cur[0] - EPS or t > self._cur[0] + 2.0:
            self._iter = self.decode_from(t)
            self._cur, self._next = None, None
        while True:
            if self._next is None:
                self._next = next(self._iter, None)
                if self._next is None:
                    break
            if self._next[0] <= t + EPS or self._cur is None:
                self._cur, self._next = self._next, None
            else:
                break
        if self._cur is None:
            return None
        return self._image(self._cur), self._cur[0]


def iter_frames(path: str | Path, spans, fps: float, *, width: int | None = None, fmt: str = "rgb24",
                stats: DecodeStats | None = None) -> Iterator[Frame]:
    """Grid frames inside ``spans`` (merged, sorted) of the displayed picture, downscaled to
    ``width`` (never upscaled). ``stats`` collects frame and corrupt-packet counts and the
    displayed size."""
    stats = stats if stats is not None else DecodeStats()
    with VideoReader(path, width=width, fmt=fmt) as r:
        stats.width, stats.height = r.display_size
        yield from r.grid(spans, fps, stats)

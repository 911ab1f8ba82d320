"""Segment player: libVLC decodes (with sound) into a buffer, Qt paints frames plus face boxes.

Why not a native VLC window: libVLC draws over child widgets (no overlays) and its clock moves
in ~250 ms steps. Frames come instead through libVLC's video callbacks (RV32 into a ctypes
buffer) and are painted by QPainter together with every face-track box at the frame's time.

Frame time while playing: every (re)start stops VLC and opens it at the middle of the wanted
frame (VLC lands one frame early on an exact frame start; stopping flushes queued pictures).
The first few pictures are recognised by content among thumbnails of the frames PyAV decodes
around the start (VLC sometimes shows the first one twice). After that, VLC displays each
picture at its presentation time, so the display instant (monotonic clock, slowly smoothed)
gives the frame even when late pictures are dropped. VLC's own clock (~250 ms steps) is only
a safety net: two of its samples disagreeing by more than 3.5 frames re-anchor to it. Speed
changes restart playback too. While paused, the frame is decoded exactly with PyAV, so
stepping with , and . is frame accurate.

Pictures and times come from mikupal.media.VideoReader: the project clock (0 = the file's
first presented frame or sample, the clock of every stored time) and the picture as shown
(rotation and SAR applied, the pixels face boxes are stored in). Which frame is on screen
at t is the media layer's rule, the same one the vision stages analysed.

Without libVLC (or with MIKUPAL_PLAYER=av) frames are decoded with PyAV and timed by a
monotonic clock — review still works, without sound, and the player says why.
"""
from __future__ import annotations

import ctypes
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mikupal.media import MediaError, VideoReader, select_audio

from . import qt_compat  # noqa: F401  (PySide6 6.12 emit refcount fix, before any emit)
from PySide6.QtCore import QObject, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen
from PySide6.QtWidgets import QWidget

IDENTIFY_PICTURES = 4  # pictures after a (re)start recognised by content (VLC may repeat the first)
RATES = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
MAX_DECODE_WIDTH = 960
SPEAKER_COLOR = QColor("#39ff14")
OTHER_COLOR = QColor(255, 255, 255, 190)
VLC_MISSING = "VLC not found: install vlc / libvlc (Debian: apt install vlc) — showing frames without sound"


def decode_size(width: int, height: int, max_width: int = MAX_DECODE_WIDTH) -> tuple[int, int]:
    """Even-sized frame no wider than max_width, same aspect."""
    width, height = int(width or 640), int(height or 360)
    if width > max_width:
        height = round(height * max_width / width)
        width = max_width
    return width - width % 2, height - height % 2


# ---- exact frames with PyAV ------------------------------------------------------------

class AvFrames:
    """Frame-accurate access: frame_at(t) seeks to the keyframe before t and decodes forward;
    consecutive requests just decode on (mikupal.media.VideoReader.frame_at)."""

    def __init__(self, path: str | Path, size: tuple[int, int] | None = None):
        self.reader = VideoReader(path)
        self.fps = self.reader.fps
        self.size = tuple(size) if size else decode_size(*self.reader.display_size)
        self.reader.resize(self.size)

    def frame_at(self, t: float) -> tuple[np.ndarray, float] | None:
        """The frame on screen at time t (the last one starting at or before t)."""
        return self.reader.frame_at(t)

    def close(self) -> None:
        self.reader.close()


def poster(path: str | Path, t: float, size: tuple[int, int] | None = None) -> tuple[np.ndarray, float] | None:
    """One exact frame (for prefetching the next item's first picture)."""
    try:
        fr = AvFrames(path, size)
    except (MediaError, OSError):
        return None
    try:
        return fr.frame_at(t)
    finally:
        fr.close()


def _thumb(rgb: np.ndarray) -> np.ndarray:
    """A small grey thumbnail (channel order does not matter: RV32 is BGR, PyAV gives RGB)."""
    step = max(1, rgb.shape[1] // 96)
    return rgb[::step, ::step].astype(np.float32).mean(axis=2)


def to_qimage(rgb: np.ndarray) -> QImage:
    h, w = rgb.shape[:2]
    rgb = np.ascontiguousarray(rgb)
    return QImage(rgb.data, w, h, w * 3, QImage.Format_RGB888).copy()


# ---- the painted frame with boxes ---------------------------------------------------------

@dataclass
class Track:
    id: int
    times: np.ndarray   # sorted box times (s)
    boxes: np.ndarray   # (n, 4) x1 y1 x2 y2 in original video pixels

    def box_at(self, t: float, tolerance: float) -> np.ndarray | None:
        if len(self.times) == 0 or t < self.times[0] - tolerance or t > self.times[-1] + tolerance:
            return None
        i = int(np.searchsorted(self.times, t))
        cands = [j for j in (i - 1, i) if 0 <= j < len(self.times)]
        j = min(cands, key=lambda k: abs(self.times[k] - t))
        return self.boxes[j] if abs(self.times[j] - t) <= tolerance else None


class FrameView(QWidget):
    """Paints the current frame letterboxed, with each face track's box nearest the frame time."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumSize(320, 200)
        self.setAttribute(Qt.WA_OpaquePaintEvent)
        self.image: QImage | None = None
        self.frame_time: float = 0.0
        self.tracks: list[Track] = []
        self.speaker_id: int | None = None
        self.video_size = (640, 360)
        self.tolerance = 0.5
        self.message = ""

    def set_tracks(self, tracks: list[dict], speaker_id: int | None, video_size: tuple[int, int], fps: float) -> None:
        self.tracks = []
        for t in tracks:
            b = np.asarray(t["boxes"], float).reshape(-1, 5)
            order = np.argsort(b[:, 0])
            self.tracks.append(Track(int(t["id"]), b[order, 0], b[order, 1:5]))
        self.speaker_id = speaker_id
        self.video_size = video_size
        # a detector sampled at a lower rate still shows its box between samples
        gaps = [float(np.median(np.diff(t.times))) for t in self.tracks if len(t.times) > 1]
        self.tolerance = max([1.5 / max(fps, 1.0)] + [0.6 * g for g in gaps])
        self.update()

    def set_frame(self, image: QImage | None, t: float) -> None:
        self.image, self.frame_time = image, t
        self.update()

    def set_message(self, text: str) -> None:
        self.message = text
        self.update()

    def target_rect(self) -> QRectF:
        w, h = (self.image.width(), self.image.height()) if self.image is not None else self.video_size
        s = min(self.width() / max(w, 1), self.height() / max(h, 1))
        return QRectF((self.width() - w * s) / 2, (self.height() - h * s) / 2, w * s, h * s)

    def box_rect(self, track_id: int) -> QRectF | None:
        """Where the track's box is drawn now (widget coordinates), or None."""
        tr = next((t for t in self.tracks if t.id == track_id), None)
        if tr is None:
            return None
        b = tr.box_at(self.frame_time, self.tolerance)
        if b is None:
            return None
        r = self.target_rect()
        sx, sy = r.width() / max(self.video_size[0], 1), r.height() / max(self.video_size[1], 1)
        return QRectF(r.x() + b[0] * sx, r.y() + b[1] * sy, (b[2] - b[0]) * sx, (b[3] - b[1]) * sy)

    def paintEvent(self, ev) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#111214"))
        if self.image is not None:
            p.setRenderHint(QPainter.SmoothPixmapTransform)
            p.drawImage(self.target_rect(), self.image)
        p.save()
        p.setClipRect(self.target_rect().adjusted(-2, -18, 2, 2))  # boxes stay on the picture
        for tr in self.tracks:
            rect = self.box_rect(tr.id)
            if rect is None:
                continue
            speaker = tr.id == self.speaker_id
            pen = QPen(SPEAKER_COLOR if speaker else OTHER_COLOR, 3 if speaker else 1.5)
            if not speaker:
                pen.setStyle(Qt.DashLine)
            p.setPen(pen)
            p.drawRect(rect)
            p.setFont(QFont(self.font().family(), 9, QFont.Bold if speaker else QFont.Normal))
            text = ("speaker · " if speaker else "") + f"track {tr.id}"
            tw = p.fontMetrics().horizontalAdvance(text)
            p.fillRect(QRectF(rect.x(), rect.y() - 17, tw + 6, 16), QColor(0, 0, 0, 150))  # legible on any picture
            p.drawText(QPointF(rect.x() + 3, rect.y() - 4), text)
        p.restore()
        if self.message:
            p.setPen(QColor("#ffb74d"))
            f = self.font()
            f.setPointSize(11)
            p.setFont(f)
            band = QRectF(0, 0, self.width(), 28)
            p.fillRect(band, QColor(0, 0, 0, 170))
            p.drawText(band.adjusted(8, 0, -8, 0), Qt.AlignVCenter | Qt.AlignLeft, self.message)
        p.end()


# ---- libVLC with video callbacks ----------------------------------------------------------

def vlc_instance():
    """A libVLC instance, or None (with the reason) when VLC is missing or disabled."""
    if os.environ.get("MIKUPAL_PLAYER", "").lower() == "av":
        return None, "VLC disabled by MIKUPAL_PLAYER=av — showing frames without sound"
    try:
        import vlc
    except (ImportError, OSError):
        return None, VLC_MISSING
    args = ["--quiet", "--no-video-title-show", "--no-snapshot-preview", "--no-xlib"]
    if os.environ.get("MIKUPAL_AUDIO", "").lower() == "none":
        args.append("--aout=dummy")
    try:
        inst = vlc.Instance(args)
    except (OSError, NameError, AttributeError):
        inst = None
    return (inst, "") if inst is not None else (None, VLC_MISSING)


class VlcFrames(QObject):
    """A MediaPlayer whose pictures land in a buffer; frameReady fires from VLC's thread."""

    frameReady = Signal()

    def __init__(self, instance, parent=None):
        super().__init__(parent)
        import vlc
        self._vlc = vlc
        self.inst = instance
        self.mp = instance.media_player_new()
        self.size = (0, 0)
        self._buf = None
        self._lock = threading.Lock()
        self._latest: tuple[bytes, int, float] | None = None  # (RV32 bytes, frame count, monotonic)
        self.count = 0
        # keep the ctypes callbacks alive as long as the player
        self._cb_lock = vlc.CallbackDecorators.VideoLockCb(self._on_lock)
        self._cb_unlock = vlc.CallbackDecorators.VideoUnlockCb(self._on_unlock)
        self._cb_display = vlc.CallbackDecorators.VideoDisplayCb(self._on_display)
        self.mp.video_set_callbacks(self._cb_lock, self._cb_unlock, self._cb_display, None)
        self.path: str | None = None
        self._armed: int | None = None
        self.first_pics: dict[int, bytes] = {}

    # VLC thread: never call libVLC from here (stop() would deadlock on its input lock)
    def _on_lock(self, opaque, planes):
        planes[0] = ctypes.addressof(self._buf)
        return None

    def _on_unlock(self, opaque, picture, planes):
        return None

    def _on_display(self, opaque, picture):
        data = ctypes.string_at(ctypes.addressof(self._buf), ctypes.sizeof(self._buf))
        with self._lock:
            self.count += 1
            self._latest = (data, self.count, time.monotonic())
            if self._armed is not None and self._armed <= self.count < self._armed + IDENTIFY_PICTURES:
                self.first_pics[self.count] = data
        self.frameReady.emit()

    def arm(self, count: int) -> None:
        """Keep the first pictures from number `count` on (after a restart) for identification."""
        with self._lock:
            self._armed, self.first_pics = count, {}

    def latest(self) -> tuple[bytes, int, float] | None:
        with self._lock:
            return self._latest

    def open(self, path: str, size: tuple[int, int], start_s: float) -> None:
        self.mp.stop()
        if size != self.size:
            w, h = size
            self._buf = (ctypes.c_ubyte * (w * h * 4))()
            self.mp.video_set_format("RV32", w, h, w * 4)
            self.size = size
        m = self.inst.media_new(str(path))
        m.add_option(f":start-time={max(0.0, start_s):.3f}")
        self.mp.set_media(m)
        self.path = str(path)
        with self._lock:
            self._latest = None

    def state(self):
        return self.mp.get_state()

    def release(self) -> None:
        self.mp.stop()
        self.mp.release()


class Player(QWidget):
    """Frame view + playback control for one segment window [start - context, end + context]."""

    positionChanged = Signal(float)
    stateChanged = Signal(bool)        # playing?
    rateChanged = Signal(float)

    def __init__(self, parent=None, context_s: float = 0.5):
        super().__init__(parent)
        from PySide6.QtWidgets import QVBoxLayout
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.view = FrameView(self)
        lay.addWidget(self.view)
        self.context_s = context_s
        self.audio_track = "default"  # [media] audio_track: VLC plays the track the stages analysed
        self._audio_index: int | None = None  # that track's position among the file's audio streams
        self._track_set = False
        self.loop = False
        self.rate = 1.0
        self.playing = False
        self.fps = 25.0
        self.window = (0.0, 0.0)
        self.segment = (0.0, 0.0)
        self.path: str | None = None
        self._av: AvFrames | None = None
        inst, why = vlc_instance()
        self.vlc: VlcFrames | None = VlcFrames(inst, self) if inst is not None else None
        self._vlc_all = self.vlc  # self.vlc is None for files VLC cannot time (MPEG-TS)
        self.backend = "vlc" if self.vlc else "av"
        self._why = why
        self.view.set_message(why)
        if self.vlc:
            self.vlc.frameReady.connect(self._vlc_frame, Qt.QueuedConnection)
        # while playing: VLC clock samples (ms, monotonic) and the frame count anchor
        self._clock: tuple[float, float] | None = None
        self._last_vlc_ms = -1
        self._anchor: tuple[int, float] | None = None  # (frame count at anchor, frame time)
        self._base: float | None = None
        self._disagree = None
        self._starting = False
        self._candidates: list = []
        self._ident_until = 0
        self.reanchors = 0  # times the frame count was corrected by the clock (dropped frames)
        self._play_t0: tuple[float, float] = (0.0, 0.0)  # PyAV path: (media time, monotonic)
        self._tick = QTimer(self)
        self._tick.setInterval(10)
        self._tick.timeout.connect(self._on_tick)

    # ---- loading -------------------------------------------------------------------------
    def load(self, path: str, video_size: tuple[int, int], fps: float | None, segment: tuple[float, float],
             tracks: list[dict], speaker_id: int | None, first: tuple[np.ndarray, float] | None = None) -> None:
        """Show a new segment at once (poster frame from the prefetch); VLC opens lazily on play."""
        self.pause()
        self.segment = segment
        self.window = (max(0.0, segment[0] - self.context_s), segment[1] + self.context_s)
        if self.path != path or self._av is None:
            if self._av:
                self._av.close()
            self._av = None
            try:
                self._av = AvFrames(path)
            except (MediaError, OSError) as e:
                self.view.set_message(str(e) if isinstance(e, MediaError) else f"{path}: video cannot be decoded; check the file")
            self.path = path
            self._audio_index = self._track_index()
            self._choose_backend()
            if self.vlc:
                self.vlc.path = None  # reopen on next play
        if self._av:
            self.fps = fps or self._av.fps
        size = self._av.size if self._av else decode_size(*video_size)
        self.view.set_tracks(tracks, speaker_id, video_size, self.fps)
        if first is not None:
            self._show_rgb(first[0], first[1])
        else:
            self.seek(self.window[0])

    def _track_index(self) -> int | None:
        if self._av is None or str(self.audio_track) == "default":
            return None  # VLC's own default is the track flagged default, as the media layer's
        c = self._av.reader.container
        try:
            st = select_audio(c, self.audio_track, self.path)
        except MediaError as e:
            self.view.set_message(str(e))
            return None
        return list(c.streams.audio).index(st) if st is not None else None

    def _choose_backend(self) -> None:
        """VLC cannot time two kinds of files on the analysis clock: MPEG-TS (it counts from
        the first PCR and seeks by byte estimates) and files whose video starts after the
        audio (after a seek it ignores an MP4 edit list's delay). Those play their exact
        PyAV frames, without sound, and the player says why."""
        why = ""
        if self._av is not None and self._vlc_all is not None:
            r = self._av.reader
            if r.container.format.name == "mpegts":
                why = "MPEG-TS plays without sound here; remux for sound: ffmpeg -i IN.ts -c copy OUT.mp4"
            elif r.video_start > 0.1:
                why = (f"The video starts {r.video_start:.2f} s after the audio: exact frames without sound, "
                       "so pictures match the analysis")
        if self._vlc_all is not None:
            if why and self.vlc is not None:
                self.vlc.mp.stop()
            self.vlc = None if why else self._vlc_all
        self.backend = "vlc" if self.vlc else "av"
        if why:
            self.view.set_message(why)
        elif self._av is not None:
            self.view.set_message(self._why)

    def _show_rgb(self, rgb: np.ndarray, t: float) -> None:
        self.view.set_frame(to_qimage(rgb), t)
        self.positionChanged.emit(t)

    @property
    def position(self) -> float:
        return self.view.frame_time

    # ---- transport ---------------------------------------------------------------------------
    def toggle(self) -> None:
        self.pause() if self.playing else self.play()

    def play(self) -> None:
        if self.playing or self.path is None:
            return
        t = self.view.frame_time
        if t >= self.window[1] - 0.5 / self.fps or t < self.window[0]:
            t = self.window[0]
        self.playing = True
        if self.vlc:
            self._vlc_start(t)
        else:
            self._play_t0 = (t, time.monotonic())
        self._tick.start()
        self.stateChanged.emit(True)

    def _vlc_start(self, t: float) -> None:
        """(Re)start VLC at t. Stop + open flushes pictures queued for the old position, so the
        first picture shown is the frame at t (a seek while playing could show stale ones)."""
        self.vlc.mp.stop()  # first: a picture shown after the anchor is taken would shift the count
        self._restart_clock(t)
        self._starting = True  # until its first picture, the frame on screen is the old one
        self._track_set = False
        # aim at the middle of the frame: VLC lands one frame early on an exact frame start
        self.vlc.open(self.path, self._av.size if self._av else decode_size(*self.view.video_size),
                      t + 0.5 / self.fps)
        self.vlc.mp.set_rate(self.rate)
        self.vlc.mp.play()

    def _restart_clock(self, t: float) -> None:
        """The next picture VLC displays is the frame at t: anchor the frame count there."""
        self._clock = None
        self._last_vlc_ms = self.vlc.mp.get_time()  # a value from before the seek is no clock
        self._anchor = (self.vlc.count + 1, math.floor(t * self.fps + 1e-6) / self.fps)
        self.vlc.arm(self._anchor[0])
        self._ident_until = self._anchor[0] + IDENTIFY_PICTURES
        self._candidates = self._frames_near(self._anchor[1])
        self._base: float | None = None  # monotonic instant of the anchor frame's display
        self._disagree = None  # the clock sample that first disagreed with the frame count
        self.reanchors = 0

    def _frames_near(self, t: float) -> list[tuple[float, np.ndarray]]:
        """Thumbnails of the frames around t, decoded exactly, to recognise VLC's first picture:
        its start lands on t or a frame beside it, depending on timestamps rounding."""
        out = []
        if self._av is None:
            return out
        for k in range(-1, IDENTIFY_PICTURES + 1):
            got = self._av.frame_at(t + k / self.fps)
            if got is not None and not any(abs(got[1] - ct) < 1e-6 for ct, _ in out):
                out.append((got[1], _thumb(got[0])))
        return out

    def _identify(self, pic: bytes | None, guess: float) -> float:
        """The time of the decoded frame this VLC picture shows; the guess unless another
        candidate clearly matches better (in a still scene they all tie)."""
        if pic is None or len(self._candidates) < 2:
            return guess
        w, h = self.vlc.size
        th = _thumb(np.frombuffer(pic, np.uint8).reshape(h, w, 4)[:, :, :3])
        errs = [(float(np.mean((th - c) ** 2)), ct) for ct, c in self._candidates if c.shape == th.shape]
        if not errs:
            return guess
        best_err, best_t = min(errs)
        own = next((e for e, ct in errs if abs(ct - guess) < 1e-6), None)
        return best_t if own is None or best_err < 0.5 * own else guess

    def pause(self) -> None:
        if not self.playing:
            return
        self.playing = False
        self._tick.stop()
        if self.vlc:
            self.vlc.mp.set_pause(1)
        # the paused picture is decoded exactly, so its boxes and time are frame-accurate
        self.seek(self.view.frame_time)
        self.stateChanged.emit(False)

    def stop(self) -> None:
        self.pause()
        if self.vlc:
            self.vlc.mp.stop()

    def seek(self, t: float) -> None:
        t = min(max(t, self.window[0]), self.window[1])
        if self.playing:
            if self.vlc:
                self._vlc_start(t)
            else:
                self._play_t0 = (t, time.monotonic())
            return
        if self._av:
            got = self._av.frame_at(t)
            if got is not None:
                self._show_rgb(*got)
                return
        self.view.set_frame(self.view.image, t)
        self.positionChanged.emit(t)

    def step(self, frames: int) -> None:
        """Pause and move by whole frames (exact, decoded with PyAV)."""
        self.pause()
        self.seek(self.view.frame_time + frames / self.fps)

    def set_rate(self, rate: float) -> None:
        self.rate = rate
        if self.vlc:
            if self.playing:
                # restart at the picture on screen: pictures VLC queued at the old speed keep
                # their old display dates, which would put the boxes out of step for a while
                self._vlc_start(self.view.frame_time)
            else:
                self.vlc.mp.set_rate(rate)
        elif self.playing:
            self._play_t0 = (self.view.frame_time, time.monotonic())
        self.rateChanged.emit(rate)

    def faster(self) -> None:
        i = min(range(len(RATES)), key=lambda k: abs(RATES[k] - self.rate))
        self.set_rate(RATES[min(i + 1, len(RATES) - 1)])

    def slower(self) -> None:
        i = min(range(len(RATES)), key=lambda k: abs(RATES[k] - self.rate))
        self.set_rate(RATES[max(i - 1, 0)])

    def set_loop(self, on: bool) -> None:
        self.loop = on

    # ---- playing -------------------------------------------------------------------------
    def _vlc_clock(self, mono: float) -> float | None:
        if self._clock is None:
            return None
        ms, m0 = self._clock
        return ms / 1000.0 + (mono - m0) * self.rate

    def _vlc_frame(self) -> None:
        if not self.playing or self.vlc is None:
            return
        got = self.vlc.latest()
        if got is None:
            return
        data, count, mono = got
        if count < self._anchor[0]:
            return  # a picture from before the restart
        if self._audio_index is not None and not self._track_set:
            # VLC lists a file's tracks once it plays; ids follow the file's audio stream order
            ids = [i for i, _ in (self.vlc.mp.audio_get_track_description() or []) if i >= 0]
            if self._audio_index < len(ids):
                self.vlc.mp.audio_set_track(ids[self._audio_index])
                self._track_set = True
        self._starting = False
        fdur = 1.0 / self.fps
        c0, t0 = self._anchor
        if self._candidates and count < self._ident_until:
            # the first pictures since (re)start: recognise each among the frames decoded near t0
            guess = t0 + (count - c0) * fdur
            t = self._identify(self.vlc.first_pics.get(count), guess)
            self._anchor, self._base = (count, t), mono
        elif self._base is None:
            t = t0 + (count - c0) * fdur
            self._base = mono
            self._anchor = (count, t)
        else:
            # VLC displays each picture at its presentation time, so the display instant gives the
            # frame even when late pictures were dropped; smoothing follows slow clock drift
            elapsed = (mono - self._base) * self.rate
            k = max(0, round(elapsed / fdur))
            t = t0 + k * fdur
            self._base += 0.2 * (elapsed - k * fdur) / self.rate
        est = self._vlc_clock(mono)
        off = est is not None and abs(est - t) > 3.5 * fdur * max(1.0, self.rate)
        if not off:
            self._disagree = None
        elif self._disagree is None or self._disagree == self._clock:
            self._disagree, off = self._clock, False  # wait for a second clock sample to agree
        if off:
            # a seek landed elsewhere: trust VLC's (coarse) clock and start counting again
            t = round(est * self.fps) / self.fps
            self._anchor, self._base = (count, t), mono
            self.reanchors += 1
            if os.environ.get("MIKUPAL_PLAYER_DEBUG"):
                print(f"player: re-anchor at frame {count} to {t:.3f} (clock {est:.3f})")
        w, h = self.vlc.size
        img = QImage(data, w, h, w * 4, QImage.Format_RGB32).copy()
        self.view.set_frame(img, t)
        self.positionChanged.emit(t)

    def _on_tick(self) -> None:
        if not self.playing:
            return
        if self.vlc:
            ms = self.vlc.mp.get_time()
            if ms is not None and ms != self._last_vlc_ms:
                self._last_vlc_ms = ms
                if self.window[0] - 1.0 <= ms / 1000.0 <= self.window[1] + 1.0:
                    self._clock = (float(ms), time.monotonic())
            if self.vlc.state() == self.vlc._vlc.State.Ended:
                self._at_end()
                return
        else:
            t = self._play_t0[0] + (time.monotonic() - self._play_t0[1]) * self.rate
            if self._av and t < self.window[1]:
                got = self._av.frame_at(t)
                if got is not None and abs(got[1] - self.view.frame_time) > 1e-6:
                    self._show_rgb(*got)
            elif t >= self.window[1]:
                self._at_end()
                return
        if self.vlc and self._starting:
            return
        if self.view.frame_time >= self.window[1] - 0.5 / self.fps:
            self._at_end()

    def _at_end(self) -> None:
        if self.loop:
            if self.vlc and self.vlc.state() == self.vlc._vlc.State.Ended:
                self.vlc.path = None
                self.playing = False
                self.view.frame_time = self.window[0]
                self.play()
            else:
                self.seek(self.window[0])
        else:
            self.pause()
            self.seek(self.window[1])  # the window's last frame, however late the last tick came

    def shutdown(self) -> None:
        self._tick.stop()
        self.playing = False
        if self._vlc_all:
            self._vlc_all.release()
            self.vlc = self._vlc_all = None
        if self._av:
            self._av.close()
            self._av = None

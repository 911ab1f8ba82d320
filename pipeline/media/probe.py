"""Opening media files, the project's clock, and what a file holds.

THE CLOCK. Every time MIKU-PAL stores (segments, tracks, clips, exports) is seconds from the
first presented frame or sample of the file: 0 = the earliest start time of its audio and
video streams, after the container has applied its edit lists. A stream that starts later
(an MP4 whose video edit list delays it, an MPEG-TS capture whose streams begin at 4.4 s on
the broadcast clock) keeps its place relative to the others: its first frame or sample sits
at (stream start - clock origin). Every reader in this package subtracts `clock_origin()`.

THE PICTURE. Every pixel coordinate is in the picture as it is shown: the display matrix's
rotation (90/180/270) and the sample aspect ratio are applied (see frames.py).

This module is the only place that calls `av.open`, for reading (`open_input`) and writing
(`open_output`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts",
                  ".flv", ".wmv", ".3gp"}
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus"}

# ffmpeg's error hierarchy plus what a broken path raises.
READ_ERRORS = (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError)


class MediaError(Exception):
    """A file that cannot be used; the message names it and says what to do."""


class NoVideoError(MediaError):
    """The file has no video stream (audio only): there is no picture to read."""


def open_input(path: str | Path):
    """Open a media file for reading; MediaError naming it otherwise."""
    try:
        return av.open(str(path))
    except READ_ERRORS as e:
        raise MediaError(f"{path}: not a readable video or audio file ({type(e).__name__}); "
                         "re-encode it with ffmpeg or remove it") from None


def open_output(path: str | Path, fmt: str | None = None):
    """Open a media file for writing (the clip and demo encoders)."""
    return av.open(str(path), mode="w", format=fmt)


def stream_start(stream) -> float | None:
    if stream.start_time is None or stream.time_base is None:
        return None
    return float(stream.start_time * stream.time_base)


def clock_origin(container) -> float:
    """Container seconds of t = 0 on the project clock: the earliest audio/video start."""
    starts = [s for s in (stream_start(st) for st in (*container.streams.video, *container.streams.audio))
              if s is not None]
    if starts:
        return min(starts)
    return container.start_time / av.time_base if container.start_time is not None else 0.0


# ---- audio track choice -----------------------------------------------------------------

@dataclass
class AudioTrackInfo:
    index: int  # position among the file's audio streams (what [media] audio_track counts)
    language: str | None
    default: bool
    channels: int
    sample_rate: int
    codec: str


def _is_default(stream) -> bool:
    try:
        return bool(stream.disposition & av.stream.Disposition.default)
    except (AttributeError, TypeError):
        return False


def audio_tracks(container) -> list[AudioTrackInfo]:
    out = []
    for i, st in enumerate(container.streams.audio):
        cc = st.codec_context
        lang = st.language or st.metadata.get("language")
        out.append(AudioTrackInfo(index=i, language=None if lang in (None, "", "und") else lang,
                                  default=_is_default(st), channels=int(cc.channels or 0),
                                  sample_rate=int(cc.sample_rate or 0), codec=cc.name))
    return out


# ISO 639-1 codes users type -> the 639-2 tags containers carry (T and B forms)
_ISO639 = {"en": ("eng",), "ja": ("jpn",), "zh": ("zho", "chi"), "ko": ("kor",), "de": ("deu", "ger"),
           "fr": ("fra", "fre"), "es": ("spa",), "it": ("ita",), "pt": ("por",), "ru": ("rus",),
           "nl": ("nld", "dut"), "ar": ("ara",), "hi": ("hin",), "pl": ("pol",), "tr": ("tur",),
           "sv": ("swe",), "cs": ("ces", "cze"), "el": ("ell", "gre"), "he": ("heb",), "fa": ("fas", "per")}


def _lang_matches(want: str, have: str | None) -> bool:
    if not have:
        return False
    want, have = want.lower(), have.lower()
    if want == have:
        return True
    for short, longs in _ISO639.items():
        group = {short, *longs}
        if want in group and have in group:
            return True
    return False


def select_audio(container, choice: str | int | None = "default", path: str | Path = ""):
    """The audio stream `choice` names: "default" (the stream flagged default, else the
    first), an index among the audio streams ("0", "1", ...), or a language ("en", "jpn").
    None when the file has no audio. MediaError when the choice matches nothing."""
    streams = list(container.streams.audio)
    if not streams:
        return None
    choice = "default" if choice in (None, "") else str(choice).strip()
    if choice == "default":
        flagged = [s for s in streams if _is_default(s)]
        return flagged[0] if flagged else streams[0]
    tracks = audio_tracks(container)
    have = ", ".join(f"{t.index}" + (f" ({t.language})" if t.language else "") for t in tracks)
    if choice.isdigit():
        i = int(choice)
        if i < len(streams):
            return streams[i]
        raise MediaError(f"{path}: [media] audio_track = {i} but the file has audio tracks {have}; "
                         "set [media] audio_track to one of them or to \"default\"")
    for t in tracks:
        if _lang_matches(choice, t.language):
            return streams[t.index]
    raise MediaError(f"{path}: no audio track in language {choice!r} (tracks: {have}); "
                     "set [media] audio_track to an index, a language the file has, or \"default\"")


# ---- probe ------------------------------------------------------------------------------

@dataclass
class ProbeInfo:
    duration_s: float
    fps: float | None
    width: int | None  # displayed picture (rotation and SAR applied)
    height: int | None
    has_audio: bool
    has_video: bool
    audio_rate: int | None
    audio_channels: int | None
    size_bytes: int
    # not stored in the videos table; what the readers need to know
    start_s: float = 0.0  # container seconds of t = 0 (clock_origin)
    video_start_s: float | None = None  # first frame on the project clock
    rotation: int = 0  # degrees counter-clockwise the stored picture is turned for display
    sar: Fraction = Fraction(1)
    coded_width: int | None = None
    coded_height: int | None = None
    vfr: bool = False
    audio_tracks: list[AudioTrackInfo] = field(default_factory=list)
    format_name: str = ""

    def as_row(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k in ROW_FIELDS}
        d["has_audio"] = int(self.has_audio)
        d["has_video"] = int(self.has_video)
        return d


ROW_FIELDS = ("duration_s", "fps", "width", "height", "has_audio", "has_video", "audio_rate", "audio_channels",
              "size_bytes")


def video_fps(stream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def is_vfr(stream) -> bool:
    """Average and nominal rates differ by more than 1 %: frames are not evenly spaced."""
    avg, base = stream.average_rate, stream.base_rate
    if not avg or not base:
        return False
    return abs(float(avg) - float(base)) > 0.01 * float(base)


def first_frame_rotation(container, stream) -> int:
    """Display rotation (degrees counter-clockwise: 0, 90, 180, 270) from the first frame's
    display matrix (ffmpeg attaches the stream's matrix to every decoded frame)."""
    try:
        for frame in container.decode(stream):
            return quarter_turns(float(frame.rotation or 0), container.name)
    except (av.error.FFmpegError, ValueError):
        return 0
    return 0


def quarter_turns(degrees: float, path: str | Path = "") -> int:
    """A display rotation as 0/90/180/270; MediaError for angles in between (no upright
    picture exists to analyse, and boxes could not be stored in displayed pixels)."""
    q = int(round(degrees / 90.0))
    if abs(degrees - 90.0 * q) > 1.0:
        raise MediaError(f"{path}: its display matrix turns the picture by {degrees:.0f} degrees, not a multiple of "
                         "90; re-encode it upright with ffmpeg (ffmpeg -i IN -c:a copy OUT.mp4 applies the rotation)")
    return q % 4 * 90


def display_size(coded_w: int, coded_h: int, sar, rotation: int) -> tuple[int, int]:
    sar = Fraction(sar) if sar else Fraction(1)
    w = int(round(coded_w * sar)) if sar > 0 else coded_w
    return (coded_h, w) if rotation in (90, 270) else (w, coded_h)


def probe(path: str | Path) -> ProbeInfo:
    """Read container metadata. Raises MediaError for empty, unreadable or stream-less files."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise MediaError(f"{path}: cannot read ({e.strerror}); check the path and permissions") from None
    if size == 0:
        raise MediaError(f"{path}: empty file (0 bytes); re-copy or re-download it")
    with open_input(path) as container:
        v = container.streams.video[0] if container.streams.video else None
        tracks = audio_tracks(container)
        a = select_audio(container, "default") if tracks else None
        if v is None and a is None:
            raise MediaError(f"{path}: no audio or video stream; this is not a media file")
        t0 = clock_origin(container)
        duration = None
        if container.duration:
            duration = container.duration / av.time_base
        for s in (v, a):
            if duration is None and s is not None and s.duration and s.time_base:
                duration = float(s.duration * s.time_base)
        info = ProbeInfo(duration_s=float(duration or 0.0), fps=None, width=None, height=None,
                         has_audio=a is not None, has_video=v is not None,
                         audio_rate=a.codec_context.sample_rate if a is not None else None,
                         audio_channels=a.codec_context.channels if a is not None else None,
                         size_bytes=size, start_s=t0, audio_tracks=tracks, format_name=container.format.name)
        if v is not None:
            cc = v.codec_context
            info.fps = video_fps(v)
            info.vfr = is_vfr(v)
            info.sar = Fraction(v.sample_aspect_ratio or cc.sample_aspect_ratio or 1) or Fraction(1)
            info.coded_width, info.coded_height = cc.width, cc.height
            vs = stream_start(v)
            info.video_start_s = (vs - t0) if vs is not None else 0.0
            info.rotation = first_frame_rotation(container, v)
            info.width, info.height = display_size(cc.width, cc.height, info.sar, info.rotation)
        return info

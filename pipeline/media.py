"""Media access with PyAV: probing, audio extraction and clip cutting.

Everything streams: no function here holds a whole video or its audio in memory.
"""
from __future__ import annotations

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


# ---- audio extraction (audio front-end) ----------------------------------------------

# The two renderings every video gets: speech analysis and the separator's input.
ASR_RATE, ASR_CHANNELS = 16000, 1
SEP_RATE, SEP_CHANNELS = 44100, 2
_GAP_FILL_S = 0.02  # timestamp jumps above this become silence, keeping audio on the video clock


@dataclass
class AudioTrack:
    path: Path
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / float(self.sample_rate)


def _layout(channels: int) -> str:
    return {1: "mono", 2: "stereo"}[channels]


def extract_audio(
    src: str | Path,
    outputs: dict[str, tuple[str | Path, int, int]],
    *,
    stream_index: int = 0,
) -> dict[str, AudioTrack]:
    """Decode the audio stream once and write each output as 16-bit PCM WAV.

    `outputs` maps a name to (wav path, sample rate, channels). Decoding, down-mixing and
    resampling stream frame by frame (bounded memory for any length); gaps in the stream's
    timestamps are filled with silence so sample n sits at n / rate seconds on the
    container clock. Files are written to a temporary name and renamed when complete.
    """
    import os

    import numpy as np
    import soundfile as sf

    src = Path(src)
    try:
        container = av.open(str(src))
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"{src}: not a readable media file ({type(e).__name__}); re-encode it with ffmpeg") from None
    tracks: dict[str, AudioTrack] = {}
    with container:
        if len(container.streams.audio) <= stream_index:
            raise MediaError(f"{src}: has no audio stream; MIKU-PAL needs speech, use the version with sound")
        stream = container.streams.audio[stream_index]
        stream.thread_type = "AUTO"
        t0 = (container.start_time / av.time_base) if container.start_time is not None else 0.0
        writers, resamplers, tmp_paths, counts = {}, {}, {}, {}
        try:
            for name, (path, rate, channels) in outputs.items():
                path = Path(path)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".part")
                tmp_paths[name] = (tmp, path)
                writers[name] = sf.SoundFile(str(tmp), "w", samplerate=rate, channels=channels,
                                             subtype="PCM_16", format="WAV")
                resamplers[name] = av.AudioResampler(format="s16", layout=_layout(channels), rate=rate)
                counts[name] = 0

            pending: dict[str, list] = {name: [] for name in outputs}
            pending_n = dict.fromkeys(outputs, 0)

            def flush(name):
                if pending[name]:
                    writers[name].write(np.concatenate(pending[name]))
                    pending[name].clear()
                    pending_n[name] = 0

            def write(name, arr):
                # ~1 s per file write: one soundfile call per decoded frame costs more than the decode
                pending[name].append(arr)
                pending_n[name] += arr.shape[0]
                counts[name] += arr.shape[0]
                if pending_n[name] >= outputs[name][1]:
                    flush(name)

            def emit(name, frames):
                ch = outputs[name][2]
                for rf in frames:
                    write(name, rf.to_ndarray().reshape(-1, ch))

            expected = 0.0  # seconds of input consumed, on the container clock
            started = False
            try:
                for frame in container.decode(stream):
                    ft = frame.time
                    if ft is not None:
                        rel = ft - t0
                        gap = rel - expected
                        if (not started and rel > _GAP_FILL_S) or (started and gap > _GAP_FILL_S):
                            for name, (_, rate, ch) in outputs.items():
                                n = int(round(gap * rate))
                                while n > 0:  # in blocks: a long gap must not allocate at once
                                    k = min(n, rate * 10)
                                    write(name, np.zeros((k, ch), dtype=np.int16))
                                    n -= k
                            expected = rel
                    started = True
                    expected += frame.samples / float(frame.sample_rate or 1)
                    frame.pts = None  # the resampler re-times; our clock is `expected`
                    for name in outputs:
                        emit(name, resamplers[name].resample(frame))
            except av.error.FFmpegError as e:
                raise MediaError(f"{src}: audio decoding failed ({type(e).__name__}: {e}); re-encode the file with ffmpeg") from None
            for name in outputs:
                emit(name, resamplers[name].resample(None))
                flush(name)
        finally:
            for w in writers.values():
                w.close()
        if not started:
            for tmp, _ in tmp_paths.values():
                tmp.unlink(missing_ok=True)
            raise MediaError(f"{src}: the audio stream holds no decodable samples; re-encode the file with ffmpeg")
        for name, (tmp, final) in tmp_paths.items():
            os.replace(tmp, final)
            _, rate, ch = outputs[name]
            tracks[name] = AudioTrack(path=final, sample_rate=rate, channels=ch, frames=counts[name])
    return tracks


def read_audio(path: str | Path, start_s: float = 0.0, end_s: float | None = None):
    """float32 samples of a WAV span: 1-D for mono, (n, channels) otherwise."""
    import soundfile as sf

    with sf.SoundFile(str(path)) as f:
        a = max(0, int(round(start_s * f.samplerate)))
        b = f.frames if end_s is None else min(f.frames, int(round(end_s * f.samplerate)))
        if b <= a:
            import numpy as np

            return np.zeros((0,) if f.channels == 1 else (0, f.channels), dtype="float32")
        f.seek(a)
        x = f.read(b - a, dtype="float32", always_2d=False)
    return x


def iter_audio_blocks(path: str | Path, block_s: float = 60.0):
    """Yield (start_s, float32 block) through a WAV file without loading it whole."""
    import soundfile as sf

    with sf.SoundFile(str(path)) as f:
        n = max(1, int(block_s * f.samplerate))
        pos = 0
        while pos < f.frames:
            x = f.read(n, dtype="float32", always_2d=False)
            if len(x) == 0:
                break
            yield pos / float(f.samplerate), x
            pos += len(x)


def wav_info(path: str | Path) -> AudioTrack:
    import soundfile as sf

    i = sf.info(str(path))
    return AudioTrack(path=Path(path), sample_rate=i.samplerate, channels=i.channels, frames=i.frames)

"""Audio on the project clock: decode, down-mix, resample, write WAV, read spans back.

Sample n of every rendering sits at n / rate seconds on the clock probe.py defines (0 = the
file's first presented frame or sample): audio that starts after the video gets leading
silence, timestamp gaps become silence. Any channel layout is down-mixed by libswresample's
standard matrix (5.1 -> stereo/mono keeps the centre dialogue channel), any sample rate is
resampled. Everything streams: no function here holds a whole file's audio in memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from ..fileutil import atomic_write
from .probe import MediaError, clock_origin, open_input, select_audio

# The two renderings every video gets: speech analysis and the separator's input.
ASR_RATE, ASR_CHANNELS = 16000, 1
SEP_RATE, SEP_CHANNELS = 44100, 2
GAP_FILL_S = 0.02  # timestamp jumps above this become silence, keeping audio on the clock


@dataclass
class AudioTrack:
    path: Path
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / float(self.sample_rate)


def layout_name(channels: int) -> str:
    return {1: "mono", 2: "stereo"}[channels]


def resampler(rate: int, channels: int = 1, fmt: str = "flt") -> av.AudioResampler:
    return av.AudioResampler(format=fmt, layout=layout_name(channels), rate=rate)


def _placed(container, stream, src, origin: float, from_start: bool) -> Iterator[tuple[float, object]]:
    """Decoded frames as ("start", clock time), ("gap", seconds of silence) and ("frame",
    (frame, its clock time)) events, so that the
    samples emitted so far always end at the frame's own time on the project clock.
    `from_start`: the first frame is placed at its time from t = 0 (leading silence);
    otherwise (after a seek) the first frame is where the output begins."""
    expected = None
    if from_start:
        expected = 0.0
        yield "start", 0.0
    try:
        for frame in container.decode(stream):
            ft = frame.time
            if ft is not None:
                rel = ft - origin
                if expected is None:
                    expected = rel
                    yield "start", rel
                elif rel - expected > GAP_FILL_S:
                    yield "gap", rel - expected
                    expected = rel
            elif expected is None:
                expected = 0.0
                yield "start", 0.0
            at = expected
            expected += frame.samples / float(frame.sample_rate or 1)
            frame.pts = None  # the resampler re-times; our clock is `expected`
            yield "frame", (frame, at)
    except av.error.FFmpegError as e:
        raise MediaError(f"{src}: audio decoding failed ({type(e).__name__}: {e}); "
                         "re-encode the file with ffmpeg") from None


def _resample(res, frame, src) -> list:
    try:
        return res.resample(frame)
    except (ValueError, av.error.FFmpegError) as e:
        raise MediaError(f"{src}: audio channel layout or format cannot be converted ({type(e).__name__}: {e}); "
                         "re-encode the audio to stereo with ffmpeg (-ac 2)") from None


def _audio_stream(container, src, audio_track):
    stream = select_audio(container, audio_track, src)
    if stream is None:
        raise MediaError(f"{src}: has no audio stream; MIKU-PAL needs speech, use the version with sound")
    stream.thread_type = "AUTO"
    return stream


def extract_audio(
    src: str | Path,
    outputs: dict[str, tuple[str | Path, int, int]],
    *,
    audio_track: str | int = "default",
) -> dict[str, AudioTrack]:
    """Decode the chosen audio stream once and write each output as 16-bit PCM WAV.

    `outputs` maps a name to (wav path, sample rate, channels). Decoding, down-mixing and
    resampling stream frame by frame (bounded memory for any length). Files are written to
    a unique temporary name and renamed when complete.
    """
    src = Path(src)
    tracks: dict[str, AudioTrack] = {}
    with open_input(src) as container, _Outputs(outputs) as outs:
        stream = _audio_stream(container, src, audio_track)
        origin = clock_origin(container)
        res = {name: resampler(rate, ch, "s16") for name, (_, rate, ch) in outputs.items()}
        started = False
        for kind, val in _placed(container, stream, src, origin, from_start=True):
            if kind in ("start", "gap"):
                for name in outputs:
                    outs.silence(name, val)
            else:
                started = True
                for name in outputs:
                    outs.frames(name, _resample(res[name], val[0], src))
        if not started:
            raise MediaError(f"{src}: the audio stream holds no decodable samples; re-encode the file with ffmpeg")
        for name in outputs:
            outs.frames(name, res[name].resample(None))
        for name, (path, rate, ch) in outputs.items():
            tracks[name] = AudioTrack(path=Path(path), sample_rate=rate, channels=ch, frames=outs.counts[name])
    return tracks


class _Outputs:
    """WAV writers behind atomic_write, buffering ~1 s per write (one soundfile call per
    decoded frame costs more than the decode)."""

    def __init__(self, outputs):
        self.outputs = outputs
        self.counts = dict.fromkeys(outputs, 0)
        self._pending = {name: [] for name in outputs}
        self._pending_n = dict.fromkeys(outputs, 0)

    def __enter__(self):
        import contextlib

        import soundfile as sf

        self._stack = contextlib.ExitStack()
        self.writers = {}
        try:
            for name, (path, rate, ch) in self.outputs.items():
                tmp = self._stack.enter_context(atomic_write(path))
                self.writers[name] = self._stack.enter_context(
                    sf.SoundFile(str(tmp), "w", samplerate=rate, channels=ch, subtype="PCM_16", format="WAV"))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            for name in self.outputs:
                self._flush(name)
        return self._stack.__exit__(*exc)

    def _flush(self, name):
        if self._pending[name]:
            self.writers[name].write(np.concatenate(self._pending[name]))
            self._pending[name].clear()
            self._pending_n[name] = 0

    def _write(self, name, arr):
        self._pending[name].append(arr)
        self._pending_n[name] += arr.shape[0]
        self.counts[name] += arr.shape[0]
        if self._pending_n[name] >= self.outputs[name][1]:
            self._flush(name)

    def silence(self, name, seconds: float):
        _, rate, ch = self.outputs[name]
        n = int(round(seconds * rate))
        while n > 0:  # in blocks: a long gap must not allocate at once
            k = min(n, rate * 10)
            self._write(name, np.zeros((k, ch), dtype=np.int16))
            n -= k

    def frames(self, name, frames):
        ch = self.outputs[name][2]
        for rf in frames:
            self._write(name, rf.to_ndarray().reshape(-1, ch))


def decode_span(src: str | Path, t0: float, t1: float | None, rate: int = ASR_RATE, *,
                audio_track: str | int = "default", container=None) -> np.ndarray:
    """Mono float32 samples for [t0, t1) on the project clock (zeros where the file has no
    audio; t1 None: to the end; empty array when it has no audio stream at all). Same
    placement as extract_audio."""
    n = None if t1 is None else max(0, int(round((t1 - t0) * rate)))
    own = container is None
    c = open_input(src) if own else container
    try:
        stream = select_audio(c, audio_track, src)
        if stream is None:
            return np.zeros(0, np.float32)
        origin = clock_origin(c)
        from_start = t0 <= 1.0
        if not from_start:
            c.seek(int((t0 - 1.0 + origin) / stream.time_base), stream=stream)
        res = resampler(rate, 1, "flt")
        chunks, pos = [], None  # pos: clock time of the first collected sample
        for kind, val in _placed(c, stream, src, origin, from_start=from_start):
            if kind == "start":
                pos = val
            elif kind == "gap":
                chunks.append(np.zeros(int(round(val * rate)), np.float32))
            else:
                for rf in _resample(res, val[0], src):
                    chunks.append(rf.to_ndarray().reshape(-1))
                if t1 is not None and val[1] > t1 + 0.5:
                    break
        for rf in res.resample(None):
            chunks.append(rf.to_ndarray().reshape(-1))
    finally:
        if own:
            c.close()
    if not chunks or pos is None:
        return np.zeros(n or 0, np.float32)
    x = np.concatenate(chunks).astype(np.float32)
    i0 = int(round((t0 - pos) * rate))
    if i0 < 0:
        x = np.concatenate([np.zeros(-i0, np.float32), x])
        i0 = 0
    if n is None:
        return x[i0:]
    out = x[i0: i0 + n]
    return np.pad(out, (0, max(0, n - len(out))))


# ---- WAV files on disk ------------------------------------------------------------------

def read_audio(path: str | Path, start_s: float = 0.0, end_s: float | None = None):
    """float32 samples of a WAV span: 1-D for mono, (n, channels) otherwise."""
    import soundfile as sf

    with sf.SoundFile(str(path)) as f:
        a = max(0, int(round(start_s * f.samplerate)))
        b = f.frames if end_s is None else min(f.frames, int(round(end_s * f.samplerate)))
        if b <= a:
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


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Mono float32 (-1..1) as 16-bit PCM WAV with the plain 44-byte header, atomically."""
    import wave

    with atomic_write(path) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())

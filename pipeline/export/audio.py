"""Audio for exports: find each video's source (separated vocals or the original mix), stream
it through PyAV at the export sample rate, cut clips in one pass, and write 16-bit WAV.

Decoding streams: only the samples between the earliest unfinished clip and the read
position are held, so a long video costs the memory of its longest clip, not of its audio.
"""
from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np

from .. import store


class SourceError(Exception):
    """A video whose audio cannot be read; the message names it and the fix (export goes on)."""


@dataclass(frozen=True)
class AudioSource:
    path: Path
    kind: str  # "vocals" or "mix"


# Keys under which the separate stage may record its vocals file in stage_state.info.
_VOCALS_KEYS = ("vocals_path", "vocals", "path")


def _vocals_path(project, info: dict) -> Path | None:
    for key in _VOCALS_KEYS:
        val = info.get(key)
        if isinstance(val, str) and val:
            p = Path(val)
            if not p.is_absolute():
                # relative paths are relative to the project root, or to the stage cache
                for base in (project.root, project.cache_dir / "separate"):
                    if (base / p).is_file():
                        return base / p
                return None
            return p if p.is_file() else None
    return None


def resolve_source(project, db, video: dict, prefer: str) -> AudioSource:
    """Vocals when asked for and present, else the original video's audio track."""
    if prefer == "vocals":
        st = store.get_stage_state(db, video["id"], "separate")
        if st is not None and st["status"] == "done":
            p = _vocals_path(project, st["info"])
            if p is not None:
                return AudioSource(p, "vocals")
    p = Path(video["path"])
    if not p.is_absolute():
        p = project.root / p
    if not p.is_file():
        raise SourceError(f"video {video['sha256'][:12]} ({Path(video['path']).name}): source file is missing and "
                          "no separated vocals are cached; restore the file or run the separate stage")
    return AudioSource(p, "mix")


def decode(path: Path, sample_rate: int) -> Iterator[np.ndarray]:
    """Mono int16 chunks of the first audio stream at `sample_rate`, from its first sample."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise SourceError(f"{path.name}: cannot open audio ({type(e).__name__}); re-encode it with ffmpeg") from None
    with container:
        if not container.streams.audio:
            raise SourceError(f"{path.name}: has no audio stream; nothing to cut clips from")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1)
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1)
        except av.error.FFmpegError as e:
            raise SourceError(f"{path.name}: audio stream is damaged ({type(e).__name__}); re-encode it with ffmpeg") from None


def cut_clips(chunks: Iterable[np.ndarray], spans: list[tuple[str, int, int]]) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (key, samples) for spans (key, first sample, end sample) in (start, end, key) order.

    A clip that runs past the end of the audio is cut short; one that starts after it is
    yielded empty (the caller reports it).
    """
    pending = sorted(spans, key=lambda s: (s[1], s[2], s[0]))
    held: list[np.ndarray] = []
    held_start = 0  # sample index of held[0][0]
    pos = 0         # samples read so far

    def take(a: int, b: int) -> np.ndarray:
        if not held:
            return np.zeros(0, np.int16)
        buf = np.concatenate(held) if len(held) > 1 else held[0]
        return buf[max(a - held_start, 0):max(b - held_start, 0)].copy()

    i = 0
    for chunk in chunks:
        if i >= len(pending):
            break  # every clip is out: stop decoding
        held.append(chunk)
        pos += len(chunk)
        while i < len(pending) and pending[i][2] <= pos:
            key, a, b = pending[i]
            yield key, take(a, b)
            i += 1
        # forget what no remaining clip needs
        keep_from = pending[i][1] if i < len(pending) else pos
        while held and held_start + len(held[0]) <= keep_from:
            held_start += len(held.pop(0))
    for key, a, b in pending[i:]:
        yield key, take(a, min(b, pos))


def write_wav(path: Path, samples: np.ndarray | Iterable[np.ndarray], sample_rate: int) -> None:
    """16-bit mono PCM WAV with a fixed 44-byte header: same samples, same bytes."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        parts = [samples] if isinstance(samples, np.ndarray) else samples
        for part in parts:
            w.writeframes(np.asarray(part, dtype="<i2").tobytes())


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """The same WAV in memory (for tar members)."""
    import io

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return buf.getvalue()

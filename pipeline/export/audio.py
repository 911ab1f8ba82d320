"""Audio for exports: find each video's source (separated vocals or the original mix), render
it once at the export sample rate with media.extract_audio (the clock every stage uses),
read clip spans from that file, and write 16-bit WAV with a fixed header.
"""
from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

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


def render(source: Path, dest: Path, sample_rate: int) -> int:
    """The source's audio as mono 16-bit WAV at `sample_rate` on the pipeline's clock
    (media.extract_audio: sample n sits at n / rate seconds, gaps filled); returns frames."""
    from ..media import MediaError, extract_audio

    try:
        return extract_audio(source, {"export": (dest, sample_rate, 1)})["export"].frames
    except MediaError as e:
        # media names the file by its full path; an export names it by file name only
        raise SourceError(str(e).replace(str(source), source.name)) from None


def read_span(wav: sf.SoundFile, first: int, end: int) -> np.ndarray:
    """int16 samples [first, end) of an open WAV; shorter (or empty) past its end."""
    first = max(first, 0)
    if end <= first or first >= wav.frames:
        return np.zeros(0, np.int16)
    wav.seek(first)
    return wav.read(min(end, wav.frames) - first, dtype="int16", always_2d=False)


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit mono PCM WAV with the plain 44-byte header: same samples, same bytes."""
    import io

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return buf.getvalue()


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    Path(path).write_bytes(wav_bytes(samples, sample_rate))

"""Audio for exports: find each video's source (separated vocals or the original mix), render
it once at the export sample rate with media.extract_audio (the project clock every stage
uses: 0 = the file's first presented frame or sample), read clip spans from that file, and
write 16-bit WAV with a fixed header. The mix is the [media] audio_track the stages heard.
"""
from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .. import store
from ..stage import StageError


class SourceError(Exception):
    """A video whose audio cannot be read; the message names it and the fix (export goes on)."""


@dataclass(frozen=True)
class AudioSource:
    path: Path
    kind: str  # "vocals" or "mix"


def _existing(project, value) -> Path | None:
    if not isinstance(value, str) or not value:
        return None
    p = Path(value)
    if not p.is_absolute():
        p = project.root / p
    return p if p.is_file() else None


def resolve_source(project, db, video: dict, prefer: str, sample_rate: int) -> AudioSource:
    """Separated vocals when asked for and present (the separate stage's vocals44k/vocals16k
    in stage_state.info), else the original video, else its extracted mix in the cache."""
    by_rate = ("44k", "16k") if sample_rate > 16000 else ("16k", "44k")
    if prefer == "vocals":
        st = store.get_stage_state(db, video["id"], "separate")
        # separate.model = "none" passes the mix through: that is not vocals
        if st is not None and st["status"] == "done" and st["info"].get("model") != "none":
            for suffix in by_rate:
                p = _existing(project, st["info"].get(f"vocals{suffix}"))
                if p is not None:
                    return AudioSource(p, "vocals")
    from ..audio.stages import audio_paths, audio_track, ensure_audio  # the audio stages' cache layout

    p = _existing(project, video["path"])
    if p is not None and audio_track(project) != "default":
        # another track than the file's default: the rendering the stages analysed
        try:
            got = ensure_audio(project, str(p), video["sha256"], stereo44=sample_rate > 16000)
        except StageError as e:
            raise SourceError(str(e).replace(str(p), p.name)) from None
        return AudioSource(Path(got["mix44k" if sample_rate > 16000 else "mix16k"]), "mix")
    if p is not None:
        return AudioSource(p, "mix")

    cached = audio_paths(project, video["sha256"])
    for suffix in by_rate:
        if cached[f"mix{suffix}"].is_file():
            return AudioSource(cached[f"mix{suffix}"], "mix")
    raise SourceError(f"video {video['sha256'][:12]} ({Path(video['path']).name}): source file is missing and "
                      "no separated or extracted audio is cached; restore the file or re-add it")


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

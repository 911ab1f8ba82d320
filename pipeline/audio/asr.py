"""Transcription with faster-whisper over VAD regions, with guards against Whisper's failures.

The model is a size name (`large-v3`, resolved under `<models dir>/whisper/`) or a local
CTranslate2 folder. Regions are grouped into clips of at most 30 s (Whisper's window) and
decoded batched (BatchedInferencePipeline) or sequentially; long files are processed in
windows so at most a few minutes of samples are in memory.

Guards (each dropped row keeps its reason in `dropped`): no_speech_prob above the
threshold with a low log-prob, a gzip compression ratio of a repetition loop, one 3-gram
repeated too often, empty text. Timestamps are clamped into the clip they came from.
"""
from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..media import read_audio
from ..stage import ModelMissingError

RATE = 16000
WINDOW_S = 30.0
SIZES = ("tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en", "large-v1",
         "large-v2", "large-v3", "large", "distil-large-v2", "distil-large-v3", "large-v3-turbo", "turbo")


def model_candidates(name: str, models_dir: str | Path) -> list[Path]:
    p = Path(name).expanduser()
    root = Path(models_dir)
    return [p, root / name, root / "whisper" / name, root / "whisper" / f"faster-whisper-{name}"]


def resolve_model(name: str, models_dir: str | Path, *, allow_download: bool = False) -> Path:
    """A folder holding model.bin, or a download into <models>/whisper/faster-whisper-NAME."""
    for c in model_candidates(name, models_dir):
        if (c / "model.bin").is_file():
            return c
    target = Path(models_dir) / "whisper" / f"faster-whisper-{name}"
    if allow_download and name in SIZES:
        try:
            from faster_whisper.utils import download_model

            return Path(download_model(name, output_dir=str(target)))  # shows a progress bar
        except Exception as e:  # offline, hub unreachable, disk full
            reason = f" (download failed: {type(e).__name__})"
    else:
        reason = ""
    raise ModelMissingError(
        f"asr: Whisper model {name!r} not found{reason}: put the CTranslate2 files (model.bin, config.json, "
        f"tokenizer.json, vocabulary.json, preprocessor_config.json) in {target}, or set asr.model to a local folder")


def auto_device(device: str = "auto", compute_type: str = "auto") -> tuple[str, str]:
    if device == "auto":
        import ctranslate2

        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device.startswith("cuda") else "int8"
    return device, compute_type


# ---- guards ---------------------------------------------------------------------------

def compression_ratio(text: str) -> float:
    b = text.encode("utf-8")
    return len(b) / max(1, len(zlib.compress(b)))


def max_ngram_repeats(text: str, n: int = 3) -> int:
    words = re.findall(r"\w+", text.lower())
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return max(grams.values(), default=0)


@dataclass
class Guards:
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4
    max_repeat_ngram: int = 4

    def reason(self, text: str, avg_logprob: float | None, no_speech_prob: float | None,
               ratio: float | None = None) -> str | None:
        """Why a decoded segment is not speech text (None = keep)."""
        if not text.strip() or not re.search(r"\w", text):
            return "empty"
        if (no_speech_prob is not None and avg_logprob is not None and no_speech_prob > self.no_speech_threshold
                and avg_logprob < self.logprob_threshold):
            return "no_speech"
        ratio = compression_ratio(text) if ratio is None else ratio
        if ratio > self.compression_ratio_threshold:
            return "compression_ratio"
        if max_ngram_repeats(text) > self.max_repeat_ngram:
            return "repeated_ngram"
        return None


# ---- clips ------------------------------------------------------------------------------

def clips_from_regions(regions: Sequence[tuple[float, float]], max_s: float = WINDOW_S) -> list[tuple[float, float]]:
    """Speech regions packed into clips of at most max_s (long regions are cut)."""
    out: list[list[float]] = []
    for s, e in regions:
        while e - s > max_s:
            out.append([s, s + max_s])
            s += max_s
        if e - s < 0.05:
            continue
        if out and e - out[-1][0] <= max_s and s - out[-1][1] < 1.0:
            out[-1][1] = e
        else:
            out.append([s, e])
    return [(float(a), float(b)) for a, b in out]


@dataclass
class Transcript:
    start_s: float
    end_s: float
    text: str
    words: list[dict] = field(default_factory=list)
    language: str | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    dropped: str | None = None

    def row(self) -> dict:
        import json

        return {"start_s": self.start_s, "end_s": self.end_s, "text": self.text,
                "words_json": json.dumps(self.words), "language": self.language, "avg_logprob": self.avg_logprob,
                "no_speech_prob": self.no_speech_prob, "compression_ratio": self.compression_ratio,
                "dropped": self.dropped}


def _clamp(x: float, lo: float, hi: float) -> float:
    return round(min(max(x, lo), hi), 3)


class WhisperTranscriber:
    def __init__(self, model_path: str | Path, *, device: str = "auto", compute_type: str = "auto",
                 batch_size: int = 8, beam_size: int = 5, language: str = "", guards: Guards | None = None,
                 batched: bool = True, window_s: float = 600.0, cpu_threads: int = 0,
                 temperatures: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0), device_index: int = 0):
        self.model_path = str(model_path)
        if device.startswith("cuda:"):  # the runner hands out "cuda:N"
            device, device_index = "cuda", int(device.split(":", 1)[1])
        self.device, self.compute_type = auto_device(device, compute_type)
        self.device_index = device_index
        self.batch_size, self.beam_size = int(batch_size), int(beam_size)
        self.language = language or None
        self.guards = guards or Guards()
        self.batched = batched
        self.window_s = window_s
        self.cpu_threads = cpu_threads
        self.temperatures = list(temperatures)  # fallback schedule when a decode fails the guards
        self.model = None
        self.pipeline = None

    def load(self) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.model = WhisperModel(self.model_path, device=self.device, device_index=self.device_index,
                                  compute_type=self.compute_type, cpu_threads=self.cpu_threads)
        self.pipeline = BatchedInferencePipeline(self.model)

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        assert self.model is not None
        lang, prob, _ = self.model.detect_language(audio[: int(WINDOW_S * RATE)])
        return lang, float(prob)

    def transcribe_wav(self, wav16k: str | Path, regions: Sequence[tuple[float, float]]) -> tuple[list[Transcript], dict]:
        """All regions of a 16 kHz mono WAV, window by window. Returns (rows incl. dropped, info)."""
        clips = clips_from_regions(regions)
        rows: list[Transcript] = []
        language, lang_prob = self.language, None
        i = 0
        while i < len(clips):
            w0 = clips[i][0]
            j = i
            while j < len(clips) and clips[j][1] - w0 <= self.window_s:
                j += 1
            j = max(j, i + 1)
            group = clips[i:j]
            audio = read_audio(wav16k, w0, group[-1][1])
            if language is None:  # detect once, on the first speech, then keep it for the file
                first = read_audio(wav16k, group[0][0], group[0][1])
                language, lang_prob = self.detect_language(first)
            rows += self._transcribe_group(audio, w0, group, language)
            i = j
        info = {"language": language, "language_probability": lang_prob, "clips": len(clips),
                "kept": sum(r.dropped is None for r in rows), "dropped": sum(r.dropped is not None for r in rows),
                "batched": self.batched, "device": self.device, "compute_type": self.compute_type}
        return rows, info

    def _transcribe_group(self, audio: np.ndarray, w0: float, clips: list[tuple[float, float]],
                          language: str | None) -> list[Transcript]:
        assert self.model is not None and self.pipeline is not None
        rel = [(s - w0, e - w0) for s, e in clips]
        if self.batched:
            segs, _ = self.pipeline.transcribe(
                audio, language=language, clip_timestamps=[{"start": s, "end": e} for s, e in rel],
                word_timestamps=True, batch_size=self.batch_size, beam_size=self.beam_size,
                temperature=self.temperatures)
        else:
            segs, _ = self.model.transcribe(
                audio, language=language, clip_timestamps=[t for se in rel for t in se], vad_filter=False,
                word_timestamps=True, beam_size=self.beam_size, condition_on_previous_text=False,
                temperature=self.temperatures)
        out = []
        for seg in segs:
            # the clip this segment belongs to: the one holding its start (else the nearest before)
            k = max([n for n, (s, _) in enumerate(rel) if s <= seg.start + 1e-3] or [0])
            lo, hi = clips[k]
            start, end = _clamp(w0 + seg.start, lo, hi), _clamp(w0 + seg.end, lo, hi)
            words = []
            for w in seg.words or []:
                ws, we = _clamp(w0 + w.start, lo, hi), _clamp(w0 + w.end, lo, hi)
                words.append({"start": ws, "end": max(ws, we), "word": w.word, "p": round(float(w.probability), 4)})
            text = seg.text.strip()
            ratio = float(seg.compression_ratio) if seg.compression_ratio is not None else None
            reason = self.guards.reason(text, seg.avg_logprob, seg.no_speech_prob, ratio)
            if reason == "empty":
                continue  # nothing to audit
            if reason is None and end - start < 0.02:
                reason = "outside_clip"
            out.append(Transcript(start, max(start, end), text, words, language, float(seg.avg_logprob),
                                  float(seg.no_speech_prob), ratio, reason))
        return out

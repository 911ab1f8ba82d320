"""Voice activity detection on 16 kHz mono speech audio: WebRTC VAD or Silero (ONNX).

Regions are (start_s, end_s) pairs. Both engines stream a WAV file in blocks, so a
two-hour file costs a few MB of frame flags, not its samples. Post-processing (padding,
gap merging, minimum length) is shared, and so is the frame-energy SNR the separate and
segments stages report.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..media import iter_audio_blocks, wav_info

RATE = 16000
Region = tuple[float, float]


@dataclass
class VadParams:
    engine: str = "webrtc"
    aggressiveness: int = 2
    frame_ms: int = 30
    padding_s: float = 0.2
    merge_gap_s: float = 0.3
    min_speech_s: float = 0.25
    silero_threshold: float = 0.5

    @classmethod
    def from_config(cls, section: dict) -> "VadParams":
        known = {k: section[k] for k in cls.__dataclass_fields__ if k in section}
        p = cls(**known)
        if p.frame_ms not in (10, 20, 30):
            raise ValueError(f"vad.frame_ms = {p.frame_ms}; WebRTC VAD accepts 10, 20 or 30")
        return p


def _to_int16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


def webrtc_flags(blocks: Iterable[tuple[float, np.ndarray]], aggressiveness: int = 2, frame_ms: int = 30) -> np.ndarray:
    """One speech/non-speech flag per frame over 16 kHz float blocks (as from iter_audio_blocks)."""
    import webrtcvad

    vad = webrtcvad.Vad(int(aggressiveness))
    n = RATE * frame_ms // 1000
    out: list[np.ndarray] = []
    carry = np.zeros(0, dtype=np.float32)
    for _, x in blocks:
        x = np.concatenate([carry, x]) if carry.size else x
        k = len(x) // n
        pcm = _to_int16(x[: k * n]).tobytes()
        step = 2 * n
        out.append(np.fromiter((vad.is_speech(pcm[i * step:(i + 1) * step], RATE) for i in range(k)), dtype=bool, count=k))
        carry = x[k * n:]
    return np.concatenate(out) if out else np.zeros(0, dtype=bool)


def frame_power(blocks: Iterable[tuple[float, np.ndarray]], frame_ms: int = 30, rate: int = RATE) -> np.ndarray:
    """Mean power per frame (mono or down-mixed), streaming."""
    n = rate * frame_ms // 1000
    out: list[np.ndarray] = []
    carry = np.zeros(0, dtype=np.float32)
    for _, x in blocks:
        if x.ndim == 2:
            x = x.mean(axis=1)
        x = np.concatenate([carry, x]) if carry.size else x
        k = len(x) // n
        if k:
            out.append((x[: k * n].astype(np.float64).reshape(k, n) ** 2).mean(axis=1))
        carry = x[k * n:]
    return np.concatenate(out) if out else np.zeros(0)


def flags_to_regions(flags: np.ndarray, frame_ms: int) -> list[Region]:
    """Runs of True frames as (start_s, end_s)."""
    if flags.size == 0:
        return []
    f = np.concatenate([[False], flags.astype(bool), [False]])
    d = np.diff(f.astype(np.int8))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    sec = frame_ms / 1000.0
    return [(float(s * sec), float(e * sec)) for s, e in zip(starts, ends)]


def regions_to_flags(regions: Sequence[Region], n_frames: int, frame_ms: int) -> np.ndarray:
    flags = np.zeros(n_frames, dtype=bool)
    sec = frame_ms / 1000.0
    for s, e in regions:
        a, b = max(0, int(math.floor(s / sec))), min(n_frames, int(math.ceil(e / sec)))
        flags[a:b] = True
    return flags


def postprocess(regions: Sequence[Region], *, padding_s: float, merge_gap_s: float, min_speech_s: float,
                duration_s: float | None = None) -> list[Region]:
    """Drop clicks shorter than min_speech_s, pad each region, merge regions closer than merge_gap_s."""
    kept = [(s, e) for s, e in sorted(regions) if e - s >= min_speech_s]
    out: list[list[float]] = []
    for s, e in kept:
        s, e = max(0.0, s - padding_s), e + padding_s
        if duration_s is not None:
            e = min(e, duration_s)
        if out and s - out[-1][1] <= merge_gap_s:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(round(s, 3), round(e, 3)) for s, e in out]


def silero_regions(blocks: Iterable[tuple[float, np.ndarray]], threshold: float = 0.5) -> list[Region]:
    """Silero VAD v6 (faster-whisper's shipped ONNX), block by block; raw regions before post-processing."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    opts = VadOptions(threshold=float(threshold), min_speech_duration_ms=0, min_silence_duration_ms=100,
                      speech_pad_ms=0)
    out: list[Region] = []
    for t0, x in blocks:
        for ts in get_speech_timestamps(np.ascontiguousarray(x, dtype=np.float32), opts, sampling_rate=RATE):
            out.append((t0 + ts["start"] / RATE, t0 + ts["end"] / RATE))
    return out


def detect(path: str | Path, params: VadParams, *, block_s: float = 600.0) -> tuple[list[Region], float]:
    """Speech regions of a 16 kHz mono WAV after post-processing, plus its duration."""
    info = wav_info(path)
    if info.sample_rate != RATE or info.channels != 1:
        raise ValueError(f"{path}: VAD needs 16 kHz mono audio, got {info.sample_rate} Hz x {info.channels}")
    if params.engine == "silero":
        raw = silero_regions(iter_audio_blocks(path, block_s), params.silero_threshold)
    elif params.engine == "webrtc":
        raw = flags_to_regions(webrtc_flags(iter_audio_blocks(path, block_s), params.aggressiveness, params.frame_ms),
                               params.frame_ms)
    else:
        raise ValueError(f"vad.engine = {params.engine!r}; choose webrtc or silero")
    regions = postprocess(raw, padding_s=params.padding_s, merge_gap_s=params.merge_gap_s,
                          min_speech_s=params.min_speech_s, duration_s=info.duration_s)
    return regions, info.duration_s


def snr_db(power: np.ndarray, speech: np.ndarray, floor: float = 1e-10) -> float | None:
    """Speech-to-noise ratio from frame classes: 10 log10((P_speech - P_noise) / P_noise).

    P_speech is the mean power of speech frames (speech plus noise), P_noise that of the
    non-speech frames. None when either class is empty (the ratio is undefined). The floor
    keeps digital silence finite (~100 dB for a full-scale signal); the result is >= -30 dB.
    """
    n = min(len(power), len(speech))
    power, speech = power[:n], speech[:n].astype(bool)
    if n == 0 or speech.all() or not speech.any():
        return None
    pn = max(float(power[~speech].mean()), floor)
    ps = float(power[speech].mean()) - pn  # speech frames hold the noise too: take it out
    return round(10.0 * math.log10(max(ps, pn * 1e-3) / pn), 2)


def iou(a: Sequence[Region], b: Sequence[Region], resolution_s: float = 0.01) -> float:
    """Intersection over union of two region sets on a time grid (1.0 when both are empty)."""
    end = max([e for _, e in list(a) + list(b)] or [0.0])
    n = int(math.ceil(end / resolution_s)) + 1
    fa = regions_to_flags(a, n, int(resolution_s * 1000))
    fb = regions_to_flags(b, n, int(resolution_s * 1000))
    union = np.logical_or(fa, fb).sum()
    return 1.0 if union == 0 else float(np.logical_and(fa, fb).sum() / union)

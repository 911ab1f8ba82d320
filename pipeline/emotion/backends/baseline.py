"""The offline baseline annotator: measured cues, no network, no language model.

Arousal comes from prosody measured on the clip's audio (loudness, pitch level, pitch
spread, speaking rate); valence from the words through the VADER lexicon. The pair is
placed in the circumplex and each category's intensity falls off with its distance from
the category's (valence, arousal) point in the taxonomy data. The rationale cites the
measured values. Labelled everywhere as backend "baseline", model "baseline-v1".
"""
from __future__ import annotations

import asyncio
import json
import math
import time

import numpy as np

from ..clips import AUDIO_RATE, read_audio
from ..prices import Usage
from ..schema import Answer
from .base import Backend, Reply, Request

MODEL = "baseline-v1"
FRAME = int(0.040 * AUDIO_RATE)  # 40 ms analysis window
HOP = int(0.010 * AUDIO_RATE)
SIGMA = 0.3  # distance in the circumplex at which intensity falls to 1/e


class BaselineError(Exception):
    """The label set lacks what the baseline needs."""


def _frames(x: np.ndarray) -> np.ndarray:
    if len(x) < FRAME:
        x = np.pad(x, (0, FRAME - len(x)))
    n = 1 + (len(x) - FRAME) // HOP
    idx = np.arange(FRAME)[None, :] + HOP * np.arange(n)[:, None]
    return x[idx]


def _pitch(frame: np.ndarray) -> float | None:
    """F0 by normalised autocorrelation in 75-400 Hz; None when unvoiced."""
    f = frame - frame.mean()
    energy = float(np.dot(f, f))
    if energy <= 1e-8:
        return None
    ac = np.correlate(f, f, mode="full")[len(f) - 1:] / energy
    lo, hi = AUDIO_RATE // 400, AUDIO_RATE // 75
    seg = ac[lo:hi]
    k = int(np.argmax(seg))
    if seg[k] < 0.45:
        return None
    return AUDIO_RATE / (lo + k)


def measure_prosody(x: np.ndarray, transcript: str) -> dict:
    """Loudness (dBFS of voiced frames), median F0 and spread (semitones), rate (words or syllable peaks per s)."""
    fr = _frames(x.astype(np.float32))
    rms = np.sqrt(np.mean(fr ** 2, axis=1) + 1e-12)
    db = 20 * np.log10(rms)
    floor = max(-50.0, float(np.percentile(db, 95)) - 30.0) if len(db) else -50.0
    voiced = db > floor
    speech_s = float(voiced.sum()) * HOP / AUDIO_RATE
    loud = float(np.mean(db[voiced])) if voiced.any() else -90.0
    f0 = [p for i in np.flatnonzero(voiced)[::2] if (p := _pitch(fr[i])) is not None]
    f0_med = float(np.median(f0)) if f0 else 0.0
    f0_sd = float(np.std(12 * np.log2(np.array(f0) / f0_med))) if len(f0) > 2 else 0.0
    words = len((transcript or "").split())
    if words >= 2 and speech_s > 0.2:
        rate, unit = words / speech_s, "words/s"
    else:  # no usable transcript: count energy peaks (roughly syllables), scaled to words (~1.4 syllables/word)
        env = np.convolve(rms, np.ones(5) / 5, mode="same")
        peaks = int(np.sum((env[1:-1] > env[:-2]) & (env[1:-1] >= env[2:]) & voiced[1:-1])) if len(env) > 2 else 0
        rate, unit = (peaks / 1.4) / max(speech_s, 0.2), "words/s (from syllable peaks)"
    return {"loudness_dbfs": round(loud, 1), "f0_median_hz": round(f0_med, 1), "f0_spread_st": round(f0_sd, 2),
            "rate": round(rate, 2), "rate_unit": unit, "speech_s": round(speech_s, 2), "voiced_pitch_frames": len(f0)}


def _clip01(v: float) -> float:
    return float(min(1.0, max(0.0, v)))


def arousal_from(p: dict) -> tuple[float, dict]:
    """Each cue normalised to [0, 1] over the range of ordinary speech, then weighted."""
    parts = {
        "loudness": _clip01((p["loudness_dbfs"] + 40.0) / 30.0),  # -40 dBFS quiet .. -10 dBFS shouting
        "pitch": _clip01(math.log2(p["f0_median_hz"] / 90.0) / math.log2(3.0)) if p["f0_median_hz"] > 0 else 0.0,
        "pitch_spread": _clip01(p["f0_spread_st"] / 6.0),
        "rate": _clip01((p["rate"] - 1.5) / 3.0),  # 1.5 words/s slow .. 4.5 words/s fast
    }
    w = {"loudness": 0.35, "pitch": 0.2, "pitch_spread": 0.15, "rate": 0.3}
    return round(sum(parts[k] * w[k] for k in w), 3), parts


_VADER = None


def valence_from(text: str) -> dict:
    global _VADER
    if _VADER is None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        _VADER = SentimentIntensityAnalyzer()
    return _VADER.polarity_scores(text or "")


def intensities(ls, valence: float, arousal: float) -> dict[str, float]:
    missing = [c.name for c in ls.categories if c.va is None]
    if missing:
        raise BaselineError(f"label set {ls.name!r} has no 'va' (valence, arousal) for {', '.join(missing[:4])}; "
                            "add \"va\": [v, a] to each category in its file to use the baseline backend")
    out = {}
    for c in ls.categories:
        cv, ca = c.va
        d = math.hypot((valence - cv) / 2.0, arousal - ca)  # valence spans 2, arousal 1: same scale
        out[c.name] = round(math.exp(-((d / SIGMA) ** 2)), 3)
    return out


def analyse(clip_path: str, transcript: str, ls) -> tuple[Answer, dict]:
    audio = read_audio(clip_path)
    p = measure_prosody(audio, transcript)
    arousal, parts = arousal_from(p)
    vs = valence_from(transcript)
    valence = round(float(vs["compound"]), 3)
    emo = intensities(ls, valence, arousal)
    ranked = sorted(emo, key=lambda n: (-emo[n], ls.names.index(n)))
    primary = ranked[0]
    audio_txt = (f"Loudness {p['loudness_dbfs']} dBFS over {p['speech_s']} s of speech; median pitch "
                 f"{p['f0_median_hz']} Hz with {p['f0_spread_st']} semitones spread; rate {p['rate']} {p['rate_unit']}. "
                 f"Normalised cues: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()) + f" -> arousal {arousal:.2f}.")
    text_txt = (f"VADER lexicon: positive {vs['pos']:.2f}, neutral {vs['neu']:.2f}, negative {vs['neg']:.2f}, "
                f"compound {valence:+.2f} -> valence {valence:+.2f}." if transcript.strip() else
                "No transcript: valence assumed neutral (0).")
    rationale = (f"Offline baseline (prosody + word lexicon, no language model). Arousal {arousal:.2f} from loudness "
                 f"{p['loudness_dbfs']} dBFS, pitch {p['f0_median_hz']} Hz and {p['rate']} {p['rate_unit']}; valence "
                 f"{valence:+.2f} from the words. Nearest categories: "
                 + ", ".join(f"{n} ({emo[n]:.2f})" for n in ranked[:3]) + ".")
    answer = Answer(visual_analysis="Not analysed: the baseline uses no facial model.", audio_analysis=audio_txt,
                    text_analysis=text_txt, emotions=emo, primary_emotion=primary, rationale=rationale)
    return answer, {"prosody": p, "arousal": arousal, "valence": valence, "cues": parts}


class BaselineBackend(Backend):
    name = "baseline"
    model = MODEL

    def __init__(self, cfg: dict):
        self.cfg = cfg

    async def annotate(self, req: Request) -> Reply:
        t = time.monotonic()
        answer, measured = await asyncio.get_running_loop().run_in_executor(
            None, analyse, req.clip.path, req.transcript, req.prompt.label_set)
        raw = json.dumps({"backend": "baseline", "model": MODEL, "answer": answer.to_dict(), "measured": measured})
        return Reply(answer, raw, Usage(), 0.0, time.monotonic() - t, meta=measured)

"""Utterance building: transcript units -> segments of min_s..max_s trimmed to voiced audio.

1. Each kept transcript row (Whisper segment or subtitle cue) is a unit; with word
   timestamps its edges snap to the first/last word.
2. Units are trimmed to the VAD regions they overlap (loose subtitle cues and Whisper's
   padded timestamps both shrink onto the voice); a unit with no voice is dropped.
3. Short neighbours (under min_s) merge when the pause between them is at most
   merge_gap_s and the result stays within max_s.
4. Units over max_s split at their longest pause (between words, else between VAD
   regions), recursively.
5. Units still under min_s are dropped. Retention = kept seconds / input seconds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Sequence

Region = tuple[float, float]


@dataclass
class Unit:
    start: float
    end: float
    text: str
    words: list[dict] = field(default_factory=list)
    language: str | None = None

    @property
    def dur(self) -> float:
        return self.end - self.start


def _voiced_span(start: float, end: float, regions: Sequence[Region]) -> Region | None:
    hits = [(max(s, start), min(e, end)) for s, e in regions if e > start and s < end]
    hits = [h for h in hits if h[1] - h[0] > 0.0]
    if not hits:
        return None
    return hits[0][0], hits[-1][1]


def _words_text(words: list[dict]) -> str:
    return "".join(w["word"] for w in words).strip()


def _trim(u: Unit, regions: Sequence[Region]) -> Unit | None:
    start, end = u.start, u.end
    if u.words:
        start, end = max(start, u.words[0]["start"]), min(end, max(w["end"] for w in u.words))
        if end <= start:
            start, end = u.start, u.end
    span = _voiced_span(start, end, regions) if regions else (start, end)
    if span is None:
        return None
    s, e = span
    words = [w for w in u.words if s <= (w["start"] + w["end"]) / 2 <= e]
    text = _words_text(words) if u.words and words else u.text
    if u.words and not words:
        return None
    return Unit(round(s, 3), round(e, 3), text, words, u.language)


def _join(a: Unit, b: Unit) -> Unit:
    return Unit(a.start, max(a.end, b.end), f"{a.text} {b.text}".strip(), a.words + b.words, a.language or b.language)


def _merge_short(units: list[Unit], min_s: float, max_s: float, gap_s: float) -> list[Unit]:
    out: list[Unit] = []
    for u in units:
        if out:
            p = out[-1]
            close = u.start - p.end <= gap_s
            fits = max(p.end, u.end) - p.start <= max_s
            if close and fits and (p.dur < min_s or u.dur < min_s):
                out[-1] = _join(p, u)
                continue
        out.append(u)
    return out


def _pauses(u: Unit, regions: Sequence[Region]) -> list[Region]:
    """Silent spans inside a unit: between words, else between VAD regions."""
    if len(u.words) >= 2:
        return [(a["end"], b["start"]) for a, b in zip(u.words, u.words[1:]) if b["start"] >= a["end"]]
    inside = [(max(s, u.start), min(e, u.end)) for s, e in regions if e > u.start and s < u.end]
    return [(a[1], b[0]) for a, b in zip(inside, inside[1:]) if b[0] > a[1]]


def _split_text(text: str, frac: float) -> tuple[str, str]:
    """Cut text at the word boundary nearest `frac` of its length (no word times to go by)."""
    words = text.split()
    if len(words) < 2:
        return text, ""
    k = min(len(words) - 1, max(1, round(frac * len(words))))
    return " ".join(words[:k]), " ".join(words[k:])


def _split_long(u: Unit, regions: Sequence[Region], min_s: float, max_s: float) -> list[Unit]:
    if u.dur <= max_s:
        return [u]
    pauses = _pauses(u, regions)
    # prefer pauses that leave both halves at least min_s; among them the longest
    good = [p for p in pauses if p[0] - u.start >= min_s and u.end - p[1] >= min_s] or pauses
    if good:
        a, b = max(good, key=lambda p: (p[1] - p[0], -abs((p[0] + p[1]) / 2 - (u.start + u.end) / 2)))
    else:  # continuous voice: cut in the middle
        a = b = (u.start + u.end) / 2
    if u.words:
        lw = [w for w in u.words if w["end"] <= a + 1e-6]
        rw = [w for w in u.words if w["start"] >= b - 1e-6]
        if not lw or not rw:  # the cut fell inside a word: fall back to word index
            k = len(u.words) // 2
            lw, rw = u.words[:k], u.words[k:]
            a, b = lw[-1]["end"], rw[0]["start"]
        left = Unit(u.start, round(a, 3), _words_text(lw), lw, u.language)
        right = Unit(round(b, 3), u.end, _words_text(rw), rw, u.language)
    else:
        lt, rt = _split_text(u.text, (a - u.start) / max(u.dur, 1e-6))
        left, right = Unit(u.start, round(a, 3), lt, [], u.language), Unit(round(b, 3), u.end, rt, [], u.language)
    return _split_long(left, regions, min_s, max_s) + _split_long(right, regions, min_s, max_s)


def build_segments(transcripts: Sequence[dict], regions: Sequence[Region], *, min_s: float = 2.0,
                   max_s: float = 30.0, merge_gap_s: float = 0.6) -> list[Unit]:
    """Transcript rows (start_s, end_s, text, words_json|words, language) -> utterances."""
    units = []
    for t in sorted(transcripts, key=lambda r: (r["start_s"], r["end_s"])):
        words = t.get("words")
        if words is None:
            words = json.loads(t.get("words_json") or "[]")
        u = _trim(Unit(float(t["start_s"]), float(t["end_s"]), (t.get("text") or "").strip(), list(words),
                       t.get("language")), regions)
        if u is not None and u.dur > 0:
            units.append(u)
    units.sort(key=lambda u: u.start)
    units = _merge_short(units, min_s, max_s, merge_gap_s)
    out: list[Unit] = []
    for u in units:
        out += _split_long(u, regions, min_s, max_s)
    return [u for u in out if u.dur >= min_s and u.text]


def segment_snr(wav16k, start: float, end: float, regions: Sequence[Region], *, context_s: float = 10.0,
                frame_ms: int = 30) -> float | None:
    """SNR of one utterance: its voiced frames against the non-voiced frames within context_s around it."""
    from .audio.vad import frame_power, regions_to_flags, snr_db
    from .media import read_audio

    a = max(0.0, start - context_s)
    x = read_audio(wav16k, a, end + context_s)
    power = frame_power([(a, x)], frame_ms)
    n = len(power)
    voiced = regions_to_flags([(s - a, e - a) for s, e in regions], n, frame_ms)
    inside = regions_to_flags([(start - a, end - a)], n, frame_ms)
    speech = voiced & inside
    noise = ~voiced
    if not speech.any() or not noise.any():
        return None
    sel = speech | noise
    return snr_db(power[sel], speech[sel])

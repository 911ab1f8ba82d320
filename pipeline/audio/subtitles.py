"""Sidecar subtitles as transcripts: SRT, WebVTT and MELD-style CSV rows.

A sidecar sits next to the video with the same stem (`clip.srt`, `clip.en.vtt`, `clip.csv`).
Cues keep their own times; overlapping cues (two speakers) stay separate rows, sorted by
start. Text loses markup (`<i>`, `{\\an8}`, VTT voice tags) and line breaks.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

SUFFIXES = (".srt", ".vtt", ".csv")

_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")
_ARROW = re.compile(r"^\s*(\S+)\s*-->\s*(\S+)")
_TAGS = re.compile(r"<[^>]*>|\{\\[^}]*\}")


class SubtitleError(ValueError):
    """A sidecar that cannot be read; the message names the file and the line."""


@dataclass
class Cue:
    start_s: float
    end_s: float
    text: str
    speaker: str | None = None


def parse_time(text: str) -> float:
    """`00:01:02,500`, `01:02.5`, `1:02:03.250` -> seconds; MELD's `0:00:02,500` too."""
    m = _TIME.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not a timestamp: {text!r}")
    h, mi, s, frac = m.groups()
    return int(h or 0) * 3600 + int(mi) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000.0


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    for enc in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def _clean(lines: list[str]) -> str:
    return re.sub(r"\s+", " ", _TAGS.sub("", " ".join(lines))).strip()


def _parse_blocks(text: str, path: Path, vtt: bool) -> list[Cue]:
    cues: list[Cue] = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    i = 0
    while i < len(lines):
        m = _ARROW.match(lines[i])
        if not m:
            i += 1
            continue
        try:
            start, end = parse_time(m.group(1)), parse_time(m.group(2))
        except ValueError:
            raise SubtitleError(f"{path}:{i + 1}: bad cue time {lines[i].strip()!r}; fix or remove the cue") from None
        body = []
        i += 1
        while i < len(lines) and lines[i].strip():
            body.append(lines[i])
            i += 1
        speaker = None
        if vtt and body:
            v = re.match(r"<v(?:\.[^ >]*)?\s+([^>]+)>", body[0])
            speaker = v.group(1).strip() if v else None
        t = _clean(body)
        if t and end > start:
            cues.append(Cue(round(start, 3), round(end, 3), t, speaker))
    return sorted(cues, key=lambda c: (c.start_s, c.end_s))


def parse_srt(path: str | Path) -> list[Cue]:
    path = Path(path)
    return _parse_blocks(_read_text(path), path, vtt=False)


def parse_vtt(path: str | Path) -> list[Cue]:
    path = Path(path)
    text = _read_text(path)
    if not text.lstrip().startswith("WEBVTT"):
        raise SubtitleError(f"{path}: not a WebVTT file (first line must be WEBVTT); save it as .srt or fix the header")
    # NOTE/STYLE blocks hold no "-->" line, so the block parser skips them.
    return _parse_blocks(text, path, vtt=True)


def parse_meld_csv(path: str | Path, video_name: str | None = None) -> list[Cue]:
    """MELD rows (Utterance, Speaker, StartTime, EndTime, Dialogue_ID, Utterance_ID).

    With `video_name` like `dia3_utt1`, only that row is kept and its times become
    relative to the clip (MELD clips are already cut to one utterance: 0..duration).
    """
    path = Path(path)
    reader = csv.DictReader(io.StringIO(_read_text(path)))
    need = {"Utterance", "StartTime", "EndTime"}
    if not reader.fieldnames or not need <= set(reader.fieldnames):
        raise SubtitleError(f"{path}: CSV needs columns {', '.join(sorted(need))} (MELD layout); got {reader.fieldnames}")
    cues = []
    for n, row in enumerate(reader, start=2):
        if video_name and {"Dialogue_ID", "Utterance_ID"} <= set(row):
            if f"dia{row['Dialogue_ID']}_utt{row['Utterance_ID']}" != video_name:
                continue
        try:
            start, end = parse_time(row["StartTime"]), parse_time(row["EndTime"])
        except ValueError:
            raise SubtitleError(f"{path}:{n}: bad StartTime/EndTime {row['StartTime']!r}/{row['EndTime']!r}") from None
        text = _clean([row["Utterance"].replace("\u0092", "'")])
        if text and end > start:
            cues.append(Cue(round(start, 3), round(end, 3), text, row.get("Speaker") or None))
    if video_name and len(cues) == 1:
        c = cues[0]
        cues = [Cue(0.0, round(c.end_s - c.start_s, 3), c.text, c.speaker)]
    return sorted(cues, key=lambda c: (c.start_s, c.end_s))


def find_sidecar(video: str | Path) -> Path | None:
    """`clip.srt`, `clip.vtt`, `clip.<lang>.srt|vtt` or `clip.csv` beside the video (first found)."""
    video = Path(video)
    for suffix in SUFFIXES:
        p = video.with_suffix(suffix)
        if p.is_file():
            return p
    for suffix in (".srt", ".vtt"):
        found = sorted(video.parent.glob(f"{video.stem}.*{suffix}"))
        if found:
            return found[0]
    if re.fullmatch(r"dia\d+_utt\d+", video.stem):  # a MELD clip: the split's CSV sits in the folder
        for csv_path in sorted(video.parent.glob("*.csv")):
            try:
                if parse_meld_csv(csv_path, video.stem):
                    return csv_path
            except SubtitleError:
                continue
    return None


def read_sidecar(path: str | Path, video: str | Path | None = None) -> list[Cue]:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".srt":
        return parse_srt(path)
    if suffix == ".vtt":
        return parse_vtt(path)
    if suffix == ".csv":
        return parse_meld_csv(path, Path(video).stem if video else None)
    raise SubtitleError(f"{path}: unknown subtitle type; use .srt, .vtt or a MELD-style .csv")

"""The dataset card (README.md) and SHA256SUMS every export carries."""
from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from pathlib import Path

from ..fileutil import sha256_file
from .fields import FIELDS, SPLIT_NAMES, written_fields
from .formats import dumps

HOW_TO_LOAD = {
    "jsonl": "Read `manifest.jsonl` (one JSON object per clip; `audio` is relative to this folder).",
    "hf": "```python\nimport datasets\nds = datasets.load_dataset(\"audiofolder\", data_dir=\"PATH/TO/THIS/FOLDER\")\n```\n"
          "Each split folder holds its WAVs and `metadata.parquet` (typed columns, so every split loads alike; "
          "datasets 3.4 or newer reads it); "
          "`audio` is the decoded audio column.",
    "webdataset": "Tar shards `<split>-NNNNNN.tar`; each sample is `KEY.wav` + `KEY.json` (the record), e.g. "
                  "`webdataset.WebDataset(\"train-{000000..000009}.tar\")`.",
    "lab": "Fish-Speech fine-tuning layout: one folder per speaker with `ID.wav` + `ID.lab` (lab template "
           "`{lab_template}`); clips without a known speaker are in `unknown-<video>` folders. "
           "`manifest.jsonl` holds every clip's record (`audio` points into the speaker folders).",
    "elan": "One `.eaf` per source video (tiers: transcript, speaker, primary emotion, verdict, rationale; the "
            "source's URL, title and licence as header properties) next to the video's audio as `.wav`; open the "
            "`.eaf` in ELAN. `manifest.jsonl` holds every clip's record (`audio` is the video's `.wav`, "
            "`start_s`/`end_s` are times in it).",
    "lhotse": "```python\nfrom lhotse import CutSet\ncuts = CutSet.from_file(\"cuts_train.jsonl.gz\")"
              ".with_recording_path_prefix(\"PATH/TO/THIS/FOLDER\")\n```\n"
              "`recordings_<split>.jsonl.gz`, `supervisions_<split>.jsonl.gz` and `cuts_<split>.jsonl.gz` (one "
              "MonoCut per clip) over `audio/<split>/<id>.wav`. A supervision's `id`, `text`, `language` and "
              "`speaker` are the record's; every other record field is in its `custom`, and `audio` is the "
              "recording's source path (relative: give the folder as the path prefix).",
}


def _cell(value) -> str:
    """A Markdown table cell: no line breaks, pipes escaped, null as an en dash."""
    if value is None or value == "":
        return "–"
    return " ".join(str(value).split()).replace("|", "\\|")


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return out


def _sources(records: list[dict]) -> list[str]:
    """One row per source video, and a warning for clips whose licence is unknown."""
    by_video: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_video[r["source_video"]].append(r)
    rows = []
    for sha, recs in sorted(by_video.items(), key=lambda kv: (kv[1][0]["source_title"] or "", kv[0])):
        r = recs[0]
        rows.append((f"`{sha[:12]}`", _cell(r["source_title"]), _cell(r["source_uploader"]),
                     _cell(r["source_upload_date"]), _cell(r["source_license"]), _cell(r["source_url"]), len(recs)))
    lines = ["## Sources", "",
             *_table(("video", "title", "uploader", "uploaded", "licence", "URL", "clips"), rows), ""]
    unknown = [v for v in by_video.values() if v[0]["source_license"] is None]
    if unknown:
        n = sum(len(v) for v in unknown)
        lines += [f"**Warning: the licence of {n} clips from {len(unknown)} source videos is unknown.** "
                  "Check the rights to each source before redistributing this dataset.", ""]
    return lines


def _speakers(records: list[dict]) -> list[str]:
    per: Counter = Counter(r["speaker"] for r in records if r["speaker"] is not None)
    unknown = sum(1 for r in records if r["speaker"] is None)
    lines = ["## Speakers", ""]
    if per:
        hours: dict[str, float] = defaultdict(float)
        for r in records:
            if r["speaker"] is not None:
                hours[r["speaker"]] += r["duration_s"] / 3600
        lines += _table(("speaker", "clips", "hours"),
                        [(_cell(k), n, f"{hours[k]:.4f}") for k, n in sorted(per.items(), key=lambda kv: (-kv[1], kv[0]))])
        lines.append("")
    lines += [f"{len(per)} speakers; {unknown} clips without a known speaker.", ""]
    return lines


def readme(*, title: str, fmt: str, records: list[dict], filters: dict, options: dict,
           annotation_sets: list[dict], rationality: dict, skipped: list[str]) -> str:
    """Counts, hours per emotion and split, speakers, sources, filters, models and prompt
    hashes, and the fields written: no dates, no paths."""
    per_emotion: dict[str, list[float]] = defaultdict(list)
    per_split: Counter = Counter()
    videos_per_split: dict[str, set] = defaultdict(set)
    audio_sources: Counter = Counter()
    for r in records:
        per_emotion[r["primary_emotion"]].append(r["duration_s"])
        per_split[r["split"]] += 1
        videos_per_split[r["split"]].add(r["source_video"])
        audio_sources[r["audio_source"]] += 1
    total_h = sum(r["duration_s"] for r in records) / 3600
    lines = [
        "---",
        "task_categories:",
        "- audio-classification",
        "- text-to-speech",
        "tags:",
        "- emotion",
        "- speech",
        "- mikupal",
        "---",
        "",
        f"# {title}",
        "",
        "Emotion-labelled speech exported by MIKU-PAL: utterances cut from video, labelled by a",
        "multimodal LLM (intensities for every category of the label set, a primary emotion and a",
        "rationale) and reviewed by human raters.",
        "",
        f"- Format: `{fmt}`",
        f"- Clips: {len(records)} from {len({r['source_video'] for r in records})} source videos, "
        f"{total_h:.3f} hours",
        f"- Audio: 16-bit mono WAV, {options['sample_rate']} Hz, "
        + ", ".join(f"{n} from {k}" for k, n in sorted(audio_sources.items())),
        f"- Label set: {', '.join(sorted({s['label_set'] for s in annotation_sets}))}",
        "",
        "## How to load",
        "",
        HOW_TO_LOAD[fmt].replace("{lab_template}", options.get("lab_template", "")),
        "",
        "## Splits (by source video, no video in two splits)",
        "",
        *_table(("split", "clips", "videos"),
                [(s, per_split[s], len(videos_per_split[s])) for s in SPLIT_NAMES]),
        "",
        f"Seed {options['seed']}, fractions {options['splits']}.",
        "",
        "## Primary emotions",
        "",
        *_table(("emotion", "clips", "hours", "rater accept rate"),
                [(e, len(d), f"{sum(d) / 3600:.4f}",
                  "-" if rationality.get(e) is None else f"{rationality[e]:.3f}")
                 for e, d in sorted(per_emotion.items(), key=lambda kv: (-len(kv[1]), kv[0]))]),
        "",
        *_speakers(records),
        *_sources(records),
        "## Models and prompts",
        "",
        *_table(("backend", "model", "label set", "prompt sha256"),
                [(s["backend"], s["model"], s["label_set"], s["prompt_sha"]) for s in annotation_sets]),
        "",
        "## Filters",
        "",
        "```json",
        dumps(filters),
        "```",
        "",
        "## Export options",
        "",
        "```json",
        dumps(options),
        "```",
        "",
        "## Record fields",
        "",
        "Every clip's record has exactly these fields. A value that is unknown or empty is `null` "
        "(never `\"\"` or NaN); split names are train, validation and test in every format.",
        "",
        *_table(("field", "type", "meaning"),
                [(f"`{k}`", FIELDS[k][0], FIELDS[k][1]) for k in written_fields(records)]),
        "",
    ]
    if skipped:
        lines += ["## Left out while exporting", "", *[f"- {s}" for s in skipped], ""]
    lines += ["Integrity: `sha256sum -c SHA256SUMS`.", ""]
    return "\n".join(lines)


def write_sha256sums(root: Path) -> str:
    """SHA256SUMS over every file (sorted relative paths); returns the file's own SHA-256."""
    lines = []
    for p in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
        if p.is_file() and p.name != "SHA256SUMS":
            lines.append(f"{sha256_file(p)}  {p.relative_to(root).as_posix()}\n")
    data = "".join(lines).encode("utf-8")
    (root / "SHA256SUMS").write_bytes(data)
    return hashlib.sha256(data).hexdigest()

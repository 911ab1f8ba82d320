"""The dataset card (README.md) and SHA256SUMS every export carries."""
from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from pathlib import Path

from ..fileutil import sha256_file
from .formats import dumps

HOW_TO_LOAD = {
    "jsonl": "Read `manifest.jsonl` (one JSON object per clip; `audio` is relative to this folder).",
    "hf": "```python\nimport datasets\nds = datasets.load_dataset(\"audiofolder\", data_dir=\"PATH/TO/THIS/FOLDER\")\n```\n"
          "The `dev` split is stored as `validation`. Missing values are `\"\"` for text and NaN for numbers "
          "(every split must have the same column types).",
    "webdataset": "Tar shards `<split>-NNNNNN.tar`; each sample is `KEY.wav` + `KEY.json`, e.g. "
                  "`webdataset.WebDataset(\"train-{000000..000009}.tar\")`.",
    "lab": "One folder per source video with `NAME.wav` + `NAME.lab` (transcript with an emotion marker); "
           "`splits.json` lists the folders of each split.",
    "elan": "One `.eaf` per source video (tiers: transcript, primary emotion, verdict, rationale) next to the "
            "video's audio as `.wav`; open the `.eaf` in ELAN. `splits.json` lists the files of each split.",
}


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return out


def readme(*, title: str, fmt: str, records: list[dict], filters: dict, options: dict,
           annotation_sets: list[dict], rationality: dict, skipped: list[str]) -> str:
    """Counts, hours per emotion and split, filters, models and prompt hashes: no dates, no paths."""
    per_emotion: dict[str, list[float]] = defaultdict(list)
    per_split: Counter = Counter()
    videos_per_split: dict[str, set] = defaultdict(set)
    sources: Counter = Counter()
    for r in records:
        per_emotion[r["primary_emotion"]].append(r["duration_s"])
        per_split[r["split"]] += 1
        videos_per_split[r["split"]].add(r["source_video"])
        sources[r["audio_source"]] += 1
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
        + ", ".join(f"{n} from {k}" for k, n in sorted(sources.items())),
        f"- Label set: {', '.join(sorted({s['label_set'] for s in annotation_sets}))}",
        "",
        "## How to load",
        "",
        HOW_TO_LOAD[fmt],
        "",
        "## Splits (by source video, no video in two splits)",
        "",
        *_table(("split", "clips", "videos"),
                [(s, per_split[s], len(videos_per_split[s])) for s in ("train", "dev", "test")]),
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
        "`id`, `audio` (relative path), `text`, `start_s`/`end_s` (seconds in the source video), "
        "`source_video` (SHA-256 of the source file), `label_set`, `primary_emotion`, `primary_intensity`, "
        "`emotions` (every category's intensity in [0, 1]), `rationale`, `visual_analysis`, `audio_analysis`, "
        "`text_analysis`, `review` (accepts, rejects, skips, raters, majority verdict, corrected label), "
        "`backend`, `model`, `prompt_sha`, `run_index`, `snr_db`, `asd_score`, `language`, `split`, "
        "`audio_source` (vocals or mix).",
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

"""Project settings: `mikupal.toml` with every key documented, plus per-run `--set` overrides.

SPEC is the single source of truth: the template written by `mikupal init`, the defaults,
type checks for `--set`, and the README's configuration reference all come from it.
"""
from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

CONFIG_NAME = "mikupal.toml"


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    default: Any
    help: str
    choices: tuple | None = None


SECTION_HELP = {
    "project": "Project-wide settings.",
    "models": "Where model weights live. MIKUPAL_MODELS_DIR overrides `dir`.",
    "media": "Reading media files: which audio track the pipeline listens to.",
    "separate": "Vocal separation (MDX-Net through audio-separator).",
    "vad": "Voice activity detection on the separated vocals.",
    "asr": "Transcription (faster-whisper) or imported subtitles.",
    "segments": "Utterance building and retention filters.",
    "faces": "Face detection and tracking.",
    "asd": "Active-speaker detection.",
    "speakers": "Who speaks: voice embeddings (GE2E, resemblyzer) clustered per video with the ASD face tracks, linked across videos.",
    "clips": "The utterance clip sent to the emotion model.",
    "emotion": "The multimodal LLM annotator.",
    "runner": "Scheduling, parallelism and devices.",
    "export": "Dataset export defaults.",
}

SPEC: list[Setting] = [
    Setting("project", "name", "", "Free-form project name shown in the app and dataset cards."),
    Setting("models", "dir", "", "Model weights folder; empty = ~/.cache/mikupal/models."),
    Setting("models", "allow_download", True, "Download missing weights from their upstream URL (with progress)."),
    Setting("media", "audio_track", "default",
            "Audio track analysed and exported: \"default\" (the track flagged default, else the first), "
            "an index among the file's audio tracks (0, 1, ...) or a language code (\"en\", \"jpn\")."),
    Setting("separate", "model", "UVR-MDX-NET-Inst_HQ_3.onnx",
            "audio-separator model file name (MDX-Net), or \"none\" to pass the mix through."),
    Setting("separate", "segment_size", 256, "MDX chunk length in spectrogram frames (the model's dim_t keeps it on onnxruntime)."),
    Setting("separate", "batch_size", 1, "Chunks per forward pass."),
    Setting("vad", "engine", "webrtc", "\"webrtc\" or \"silero\" (ONNX shipped with faster-whisper).", ("webrtc", "silero")),
    Setting("vad", "aggressiveness", 2, "WebRTC aggressiveness 0 (lenient) .. 3 (strict).", (0, 1, 2, 3)),
    Setting("vad", "frame_ms", 30, "WebRTC frame length: 10, 20 or 30 ms.", (10, 20, 30)),
    Setting("vad", "padding_s", 0.2, "Seconds added before and after each speech region."),
    Setting("vad", "merge_gap_s", 0.3, "Regions closer than this merge into one."),
    Setting("vad", "min_speech_s", 0.25, "Shorter regions are dropped as clicks."),
    Setting("vad", "silero_threshold", 0.5, "Silero speech probability threshold."),
    Setting("asr", "model", "large-v3", "Whisper size (tiny .. large-v3) or a local CTranslate2 model folder."),
    Setting("asr", "source", "auto",
            "\"whisper\", \"subtitles\" (a sidecar .srt/.vtt/.csv is required) or \"auto\" (a sidecar wins).",
            ("whisper", "subtitles", "auto")),
    Setting("asr", "language", "", "Force a language code (e.g. \"en\"); empty = detect."),
    Setting("asr", "device", "auto", "\"auto\", \"cpu\" or \"cuda\"."),
    Setting("asr", "compute_type", "auto", "CTranslate2 compute type; auto = float16 on GPU, int8 on CPU."),
    Setting("asr", "batch_size", 8, "VAD regions decoded per batch (BatchedInferencePipeline)."),
    Setting("asr", "batched", True, "Decode VAD regions in batches (fast); false = one by one (WhisperModel.transcribe)."),
    Setting("asr", "beam_size", 5, "Beam width."),
    Setting("asr", "no_speech_threshold", 0.6, "Drop a segment whose no_speech_prob is above this and log-prob is low."),
    Setting("asr", "logprob_threshold", -1.0, "Average log-prob below which text is suspect."),
    Setting("asr", "compression_ratio_threshold", 2.4, "gzip ratio above which text is a repetition loop."),
    Setting("asr", "max_repeat_ngram", 4, "Drop text where one 3-gram repeats more than this many times."),
    Setting("segments", "min_s", 2.0, "Shortest utterance kept (shorter neighbours merge)."),
    Setting("segments", "max_s", 30.0, "Longest utterance (longer ones split at the longest pause)."),
    Setting("segments", "merge_gap_s", 0.6, "Neighbours closer than this may merge into one utterance."),
    Setting("segments", "min_snr_db", -100.0, "Drop segments below this SNR (dB) from retention."),
    Setting("segments", "drop_statuses", ["no_face", "multi_speaker", "low_asd"],
            "Segment statuses excluded from emotion analysis and retention."),
    Setting("faces", "detector", "auto", "\"s3fd\", \"ultraface\", \"haar\" or \"auto\" (s3fd on GPU, ultraface on CPU).",
            ("auto", "s3fd", "ultraface", "haar")),
    Setting("faces", "fps", 25.0, "Frames per second analysed inside segments."),
    Setting("faces", "detect_width", 640, "Frames are downscaled to this width for detection."),
    Setting("faces", "detect_every", 5, "Run the detector on every Nth analysed frame (and at cuts); boxes in between are interpolated. 1 = every frame."),
    Setting("faces", "min_score", 0.7, "Detector confidence threshold."),
    Setting("faces", "margin_s", 0.5, "Seconds decoded before/after each segment."),
    Setting("faces", "iou_threshold", 0.3, "Tracker: minimum IoU to continue a track."),
    Setting("faces", "max_gap_frames", 10, "Tracker: frames a track may miss before it ends."),
    Setting("faces", "min_track_frames", 10, "Tracker: shorter tracks are dropped."),
    Setting("faces", "smooth_frames", 5, "Tracker: median window for box centre/size."),
    Setting("faces", "scene_cut_threshold", 0.45, "Histogram distance that starts new tracks (scene cut)."),
    Setting("asd", "model", "light-asd", "\"light-asd\", \"talknet\" (user-supplied weights) or \"sync\" (no weights).",
            ("light-asd", "talknet", "sync")),
    Setting("asd", "weights", "light-asd/finetuning_TalkSet.model", "Weights file, relative to the models dir."),
    Setting("asd", "protocol", "one-pass", "\"one-pass\" scores each track once per segment; \"multi-length\" averages the official 1..6 s chunkings (about 3-6x the work).",
            ("one-pass", "multi-length")),
    Setting("asd", "precision", "auto", "\"auto\" (bfloat16 on CPUs with native bf16, else float32), \"bf16\" or \"fp32\".",
            ("auto", "bf16", "fp32")),
    Setting("asd", "min_score", 0.0, "Below this mean score the segment gets status low_asd."),
    Setting("asd", "multi_speaker_margin", 0.5, "Two tracks within this score margin, both above min_score: multi_speaker."),
    Setting("speakers", "audio", "vocals", "Embed the separated \"vocals\" (when the separate stage ran) or the \"mix\".", ("vocals", "mix")),
    Setting("speakers", "use_faces", True, "Segments the ASD gave one face track start as one speaker; faces on screen together are two."),
    Setting("speakers", "cluster_threshold", 0.80, "Within a video: groups merge while their mean voice cosine similarity is >= this."),
    Setting("speakers", "link_threshold", 0.82, "Across videos: a cluster joins a project speaker whose centroid cosine is >= this."),
    Setting("speakers", "face_voice_min", 0.65, "A segment leaves its face track's group when its voice is less similar than this."),
    Setting("speakers", "min_voiced_s", 0.5, "Below this much speech after silence trimming the untrimmed audio is embedded."),
    Setting("clips", "crop", "speaker", "\"speaker\" (centred on the active speaker) or \"full\" frame.", ("speaker", "full")),
    Setting("clips", "height", 360, "Clip height in pixels."),
    Setting("clips", "fps", 5.0, "Clip frame rate sent to the model."),
    Setting("clips", "context_s", 0.0, "Seconds of context added around the utterance."),
    Setting("clips", "inline_max_mb", 15.0, "Clips above this size go through the Files API."),
    Setting("emotion", "backend", "gemini", "\"gemini\", \"openai\" (OpenAI-compatible server) or \"baseline\" (offline).",
            ("gemini", "openai", "baseline")),
    Setting("emotion", "model", "gemini-2.5-flash", "Model name passed to the backend."),
    Setting("emotion", "label_set", "cowen26", "Label set name (cowen26, meld7, iemocap4, iemocap9, ekman6) or a file path."),
    Setting("emotion", "language", "English", "Language the analyses and rationale are written in."),
    Setting("emotion", "runs", 1, "Independent answers per segment (run_index 0..runs-1) for consistency."),
    Setting("emotion", "temperature", 0.0, "Sampling temperature (fixed for consistency)."),
    Setting("emotion", "seed", 1234, "Sampling seed; run i uses seed + i."),
    Setting("emotion", "concurrency", 8, "Requests in flight at most; a rate limit (429) halves it for a while, successes grow it back."),
    Setting("emotion", "rpm", 1000, "Requests per minute limit."),
    Setting("emotion", "tpm", 4000000, "Tokens per minute limit."),
    Setting("emotion", "max_retries", 6, "Retries on 408/429/5xx and timeouts (exponential backoff with jitter)."),
    Setting("emotion", "backoff_s", 1.0, "First retry delay; doubles per retry (capped by max_backoff_s); the server's RetryInfo wait wins when longer."),
    Setting("emotion", "max_backoff_s", 60.0, "Longest wait between two retries."),
    Setting("emotion", "max_output_tokens", 2048, "Answer length cap (the JSON with three analyses and a rationale)."),
    Setting("emotion", "thinking_budget", 0,
            "Gemini thinking tokens, billed at the output price: 0 = off (default; Flash models only, Pro models cannot "
            "turn it off and keep their default), -1 = the model's own (dynamic) budget, N = cap. Off trades some depth "
            "on ambiguous clips for cost: ~800 thought tokens per answer would double an hour's bill on Flash."),
    Setting("emotion", "timeout_s", 120.0, "Per-request timeout."),
    Setting("emotion", "media_resolution", "low", "Gemini media resolution: low, medium or high.", ("low", "medium", "high")),
    Setting("emotion", "batch", False,
            "Send requests through the Gemini Batch API (half price, answers within 24 h; same as `mikupal run --batch`). "
            "Jobs are recorded in project.db: a stopped run resumes polling and never submits twice."),
    Setting("emotion", "batch_poll_s", 30.0, "Seconds between two polls of a pending Batch API job."),
    Setting("runner", "workers", {}, "Per-stage worker counts, e.g. {faces = 2, emotion = 1}."),
    Setting("runner", "devices", "auto", "\"auto\", \"cpu\" or a list like \"cuda:0,cuda:1\"."),
    Setting("runner", "queue_size", 8, "Items buffered between two stages (back-pressure)."),
    Setting("runner", "cpu_threads", 0, "Math-library threads per CPU worker (torch, ONNX Runtime, CTranslate2); 0 = faces and asd workers, which stream side by side, share the cores equally and other stages use all of them."),
    Setting("runner", "num_gpus", {}, "Ray: GPUs per stage actor, e.g. {asr = 1, faces = 0.5}."),
    Setting("runner", "num_cpus", {}, "Ray: CPUs reserved per stage actor, e.g. {faces = 2}; unset = 0 (actors share the CPUs)."),
    Setting("runner", "max_task_retries", 2, "Ray: times a task is retried when its actor's process or node dies."),
    Setting("export", "sample_rate", 24000, "WAV sample rate of exported clips."),
    Setting("export", "audio", "vocals", "\"vocals\" (separated) or \"mix\" (original).", ("vocals", "mix")),
    Setting("export", "seed", 0, "Split seed."),
    Setting("export", "splits", [0.8, 0.1, 0.1], "train/validation/test fractions, by source video."),
    Setting("export", "shard_size_mb", 256.0, "WebDataset: target size of one tar shard in MB."),
    Setting("export", "lab_template", "{text}",
            "lab format: transcript line (Fish-Speech wants the bare text); fields {text} {fish_emotion} {emotion} {label} {intensity} {language}."),
]

_BY_KEY = {(s.section, s.key): s for s in SPEC}

# Sane ranges (inclusive) for sizes, rates, counts and thresholds: a value outside is a
# typo (`--set clips.height=0` would make 2x2-pixel clips), refused with the range and default.
RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("separate", "segment_size"): (1, 4096), ("separate", "batch_size"): (1, 256),
    ("vad", "padding_s"): (0, 10), ("vad", "merge_gap_s"): (0, 30), ("vad", "min_speech_s"): (0, 30),
    ("vad", "silero_threshold"): (0, 1),
    ("asr", "batch_size"): (1, 256), ("asr", "beam_size"): (1, 64), ("asr", "no_speech_threshold"): (0, 1),
    ("asr", "compression_ratio_threshold"): (0.1, 100), ("asr", "max_repeat_ngram"): (1, 1000),
    ("segments", "min_s"): (0.1, 600), ("segments", "max_s"): (0.1, 3600), ("segments", "merge_gap_s"): (0, 60),
    ("faces", "fps"): (0.1, 240), ("faces", "detect_width"): (32, 8192), ("faces", "detect_every"): (1, 250), ("faces", "min_score"): (0, 1),
    ("faces", "margin_s"): (0, 60), ("faces", "iou_threshold"): (0, 1), ("faces", "max_gap_frames"): (0, 10000),
    ("faces", "min_track_frames"): (1, 10000), ("faces", "smooth_frames"): (1, 1000),
    ("faces", "scene_cut_threshold"): (0, 1), ("asd", "multi_speaker_margin"): (0, 100),
    ("speakers", "cluster_threshold"): (-1, 1), ("speakers", "link_threshold"): (-1, 1),
    ("speakers", "face_voice_min"): (-1, 1), ("speakers", "min_voiced_s"): (0, 60),
    ("clips", "height"): (32, 4320), ("clips", "fps"): (0.1, 60), ("clips", "context_s"): (0, 60),
    ("clips", "inline_max_mb"): (0, 100),
    ("emotion", "runs"): (1, 100), ("emotion", "temperature"): (0, 2), ("emotion", "concurrency"): (1, 1000),
    ("emotion", "rpm"): (1, 10_000_000), ("emotion", "tpm"): (1, 10**12), ("emotion", "max_retries"): (0, 100),
    ("emotion", "backoff_s"): (0, 3600), ("emotion", "max_backoff_s"): (0, 86400),
    ("emotion", "max_output_tokens"): (1, 1_000_000), ("emotion", "thinking_budget"): (-1, 1_000_000),
    ("emotion", "timeout_s"): (0.01, 86400), ("emotion", "batch_poll_s"): (0, 86400),
    ("runner", "queue_size"): (1, 100_000), ("runner", "cpu_threads"): (0, 1024), ("runner", "max_task_retries"): (0, 100),
    ("export", "sample_rate"): (8000, 192000), ("export", "shard_size_mb"): (0.01, 100_000),
}


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _check_range(section: str, key: str, value: Any, where: str) -> None:
    rng = RANGES.get((section, key))
    if rng is not None and not (rng[0] <= value <= rng[1]):
        d = _BY_KEY[(section, key)].default
        raise ConfigError(f"{where}: {section}.{key} = {_fmt(value)} is out of range; use a value from "
                          f"{_fmt(rng[0])} to {_fmt(rng[1])}, e.g. --set {section}.{key}={_fmt(d)} (the default)")
    if (section, key) == ("export", "splits") and (
            len(value) != 3 or any(not isinstance(x, (int, float)) or x < 0 for x in value)
            or abs(sum(value) - 1) > 1e-6):
        raise ConfigError(f"{where}: export.splits = {value!r} must be three fractions >= 0 that sum to 1, "
                          f"e.g. --set export.splits=[0.8,0.1,0.1]")


def _check_together(cfg: dict, where: str) -> None:
    seg = cfg.get("segments", {})
    if seg.get("min_s", 0) > seg.get("max_s", float("inf")):
        raise ConfigError(f"{where}: segments.min_s = {_fmt(seg['min_s'])} is longer than segments.max_s = "
                          f"{_fmt(seg['max_s'])}; make min_s <= max_s")


class ConfigError(ValueError):
    """A bad setting; the message names it and says how to fix it."""


def defaults() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for s in SPEC:
        out.setdefault(s.section, {})[s.key] = copy.deepcopy(s.default)
    return out


def _toml_value(v: Any) -> str:
    """One TOML value, written by tomli-w (quotes, escapes and inline tables done right)."""
    if isinstance(v, dict):  # inline, under its key (tomli-w would write a [section])
        return "{" + ", ".join(f"{tomli_w.dumps({k: 0}).rsplit('=', 1)[0].strip()} = {_toml_value(x)}"
                               for k, x in v.items()) + "}"
    if isinstance(v, list):  # on one line (tomli-w breaks longer arrays over several)
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return tomli_w.dumps({"v": v}).split("=", 1)[1].strip()


def template(values: dict[str, dict[str, Any]] | None = None) -> str:
    """The commented `mikupal.toml` that `mikupal init` writes (`values` replace defaults)."""
    lines = [
        "# MIKU-PAL project settings. Every key is shown with its default.",
        "# Override per run with: mikupal run PROJECT --set section.key=value",
        "",
    ]
    section = None
    for s in SPEC:
        if s.section != section:
            if section is not None:
                lines.append("")
            section = s.section
            lines.append(f"# {SECTION_HELP[section]}")
            lines.append(f"[{section}]")
        lines.append(f"# {s.help}")
        value = (values or {}).get(s.section, {}).get(s.key, s.default)
        lines.append(f"{s.key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def markdown_reference() -> str:
    """The README's configuration reference (tests keep the README in step with SPEC).

    Regenerate with: python -m mikupal.config --markdown
    """
    out: list[str] = []
    section = None
    for s in SPEC:
        if s.section != section:
            section = s.section
            if out:
                out.append("")
            out += [f"**`[{section}]`** {SECTION_HELP[section]}", "", "| key | default | meaning |", "|---|---|---|"]
        help_ = s.help.replace("|", "\\|")
        if s.choices:
            help_ += " Choices: " + ", ".join(f"`{c}`" for c in s.choices) + "."
        out.append(f"| `{s.key}` | `{_toml_value(s.default)}` | {help_} |")
    return "\n".join(out) + "\n"


def parse_override(text: str) -> tuple[str, str, Any]:
    """`section.key=value` -> (section, key, typed value). Values parse as TOML, else as a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. --set asr.model=tiny")
    lhs, raw = text.split("=", 1)
    section, key = lhs.strip().split(".", 1)
    if (section, key) not in _BY_KEY:
        known = ", ".join(sorted(f"{a}.{b}" for a, b in _BY_KEY if a == section)) or ", ".join(sorted(SECTION_HELP))
        raise ConfigError(f"--set {text!r}: unknown setting {section}.{key}; known: {known}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key, value


def _check(section: str, key: str, value: Any, where: str) -> Any:
    spec = _BY_KEY.get((section, key))
    if spec is None:
        return value  # unknown keys are kept (forward compatibility) but not validated
    d = spec.default
    if isinstance(d, bool):
        ok = isinstance(value, bool)
    elif isinstance(d, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(d, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(d, str):
        ok = isinstance(value, str)
        if not ok and isinstance(value, (int, float)):
            value, ok = str(value), True
    elif isinstance(d, list):
        ok = isinstance(value, list)
    elif isinstance(d, dict):
        ok = isinstance(value, dict)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{where}: {section}.{key} = {value!r} should be a {type(d).__name__} (default {d!r})")
    if spec.choices and value not in spec.choices:
        raise ConfigError(f"{where}: {section}.{key} = {value!r}; choose one of {', '.join(map(str, spec.choices))}")
    _check_range(section, key, value, where)
    return value


def load(project_dir: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Defaults <- the project's mikupal.toml <- `--set` overrides (validated)."""
    cfg = defaults()
    if project_dir is not None:
        path = Path(project_dir) / CONFIG_NAME
        if path.exists():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{path}: not valid TOML ({e}); fix the file or re-create it with mikupal init") from None
            for section, values in data.items():
                if not isinstance(values, dict):
                    raise ConfigError(f"{path}: top-level key {section!r} must be a [section]")
                for key, value in values.items():
                    cfg.setdefault(section, {})[key] = _check(section, key, value, str(path))
    for text in overrides:
        section, key, value = parse_override(text)
        cfg[section][key] = _check(section, key, value, f"--set {text}")
    _check_together(cfg, "--set" if overrides else str(Path(project_dir or ".") / CONFIG_NAME))
    return cfg


if __name__ == "__main__":
    import sys

    sys.stdout.write(markdown_reference() if "--markdown" in sys.argv else template())

"""The one record schema every export format writes, and the rules that keep it one:

- split names are SPLIT_NAMES (train / validation / test) in every format and folder name;
- a value that is unknown or empty is null (JSON null, a parquet null, None in Python),
  never "" and never NaN; only text carriers that cannot hold a null (a `.lab` line, an
  ELAN annotation value) write an empty string there.

The dataset card's "Record fields" table is generated from FIELDS for the keys actually
written, and a test reads every format back with its own reader against that table.
"""
from __future__ import annotations

SPLIT_NAMES = ("train", "validation", "test")

# name -> (type, meaning). Order is the card's order.
FIELDS: dict[str, tuple[str, str]] = {
    "id": ("string", "clip id: first 12 hex digits of the source video's SHA-256, start and end in ms"),
    "split": ("string", "train, validation or test; whole source videos go to one split"),
    "audio": ("string", "the clip's WAV, relative to the dataset folder (elan: the video's WAV)"),
    "sample_rate": ("int", "WAV sample rate in Hz"),
    "audio_source": ("string", "vocals (separated) or mix (the original audio)"),
    "start_s": ("float", "start in seconds on the source video's clock"),
    "end_s": ("float", "end in seconds on the source video's clock"),
    "duration_s": ("float", "end_s - start_s"),
    "text": ("string", "transcript (null when none)"),
    "language": ("string", "language code of the transcript (null when unknown)"),
    "speaker_id": ("int", "speaker number in the project (same voice, same number across videos; null when unknown)"),
    "speaker": ("string", "speaker name as named in the project (null when unknown)"),
    "source_video": ("string", "SHA-256 of the source video file"),
    "source_url": ("string", "where the video was downloaded from (null when unknown)"),
    "source_id": ("string", "extractor:id of the video at its site, for de-duplication (null when unknown)"),
    "source_title": ("string", "title of the source video (null when unknown)"),
    "source_uploader": ("string", "uploader or channel (null when unknown)"),
    "source_upload_date": ("string", "upload date, YYYY-MM-DD (null when unknown)"),
    "source_license": ("string", "licence stated by the source (null when unknown: check before redistributing)"),
    "label_set": ("string", "emotion label set of the annotation"),
    "primary_emotion": ("string", "the model's primary emotion"),
    "primary_intensity": ("float", "intensity of the primary emotion in [0, 1]"),
    "emotions": ("struct", "intensity in [0, 1] of every category of the label set"),
    "rationale": ("string", "the model's reasoning"),
    "visual_analysis": ("string", "the model's description of face, gaze and gesture"),
    "audio_analysis": ("string", "the model's description of the prosody"),
    "text_analysis": ("string", "the model's reading of the words"),
    "review": ("struct", "raters' latest verdicts: accepts, rejects, skips, raters, verdict "
                         "(accept, reject, tie, unreviewed), corrected_label (null when none)"),
    "backend": ("string", "annotation backend"),
    "model": ("string", "annotation model"),
    "prompt_sha": ("string", "SHA-256 of the prompt"),
    "run_index": ("int", "which independent annotation run"),
    "snr_db": ("float", "signal-to-noise ratio in dB (null when not measured)"),
    "asd_score": ("float", "active-speaker score of the chosen face (null when not measured)"),
}


def text_or_null(value) -> str | None:
    """The empty-value rule for text: stripped, and None when nothing is left."""
    if value is None:
        return None
    s = str(value).strip()
    return s or None


def float_or_null(value, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def speaker_label(speaker_id, name) -> str | None:
    if speaker_id is None:
        return None
    return text_or_null(name) or f"speaker-{speaker_id}"


def clip_id(sha: str, start_s: float, end_s: float) -> str:
    return f"{sha[:12]}_{round(start_s * 1000):09d}_{round(end_s * 1000):09d}"


def record(c: dict, split: str) -> dict:
    """One selected clip (select.select's dict) as an export record (without audio fields,
    which the driver adds once the audio source is known)."""
    r = round
    rec = {
        "id": clip_id(c["video_sha"], c["start_s"], c["end_s"]),
        "split": split,
        "text": text_or_null(c["text"]),
        "start_s": r(c["start_s"], 3),
        "end_s": r(c["end_s"], 3),
        "duration_s": r(c["end_s"] - c["start_s"], 3),
        "language": text_or_null(c["language"]),
        "speaker_id": c.get("speaker_id"),
        "speaker": speaker_label(c.get("speaker_id"), c.get("speaker_name")),
        "source_video": c["video_sha"],
        **{k: text_or_null(c.get(k)) for k in ("source_url", "source_id", "source_title", "source_uploader",
                                               "source_upload_date", "source_license")},
        "label_set": c["label_set"],
        "primary_emotion": c["primary_emotion"],
        "primary_intensity": c["primary_intensity"],
        "emotions": {k: float(v) for k, v in sorted(c["emotions"].items())},
        "rationale": text_or_null(c["rationale"]),
        "visual_analysis": text_or_null(c["visual_analysis"]),
        "audio_analysis": text_or_null(c["audio_analysis"]),
        "text_analysis": text_or_null(c["text_analysis"]),
        "review": {**c["review"], "corrected_label": text_or_null(c["review"].get("corrected_label"))},
        "backend": c["backend"],
        "model": c["model"],
        "prompt_sha": c["prompt_sha"],
        "run_index": c["run_index"],
        "snr_db": float_or_null(c["snr_db"], 3),
        "asd_score": float_or_null(c["asd_score"], 4),
    }
    return rec


def written_fields(records: list[dict]) -> list[str]:
    """The public keys of the records, in FIELDS order; a key FIELDS does not describe is a bug."""
    keys = {k for rec in records for k in rec if not k.startswith("_")}
    unknown = keys - set(FIELDS)
    if unknown:
        raise AssertionError(f"export record fields without a description in export/fields.py: {sorted(unknown)}")
    return [k for k in FIELDS if k in keys]

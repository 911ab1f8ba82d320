"""Which clips an export holds: the annotation set, the filters, and the train/validation/test split.

Everything here reads the store and returns plain dicts in a fixed order, so two exports of
the same project with the same filters select the same rows in the same order.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import metrics, queries, store
from .fields import SPLIT_NAMES, speaker_label


class ExportError(ValueError):
    """Bad export request or an empty selection; the message is one line saying what to change."""


@dataclass
class ExportFilters:
    """What goes into an export. None / empty means "no limit"."""

    accepted_only: bool = False          # majority of raters' non-skip verdicts are accept
    min_rationality: float | None = None  # accept rate of the clip's primary emotion class
    emotions: tuple[str, ...] = ()        # primary emotions kept (case-insensitive)
    min_intensity: float | None = None    # intensity of the primary emotion
    min_duration: float | None = None     # seconds
    max_duration: float | None = None
    min_snr: float | None = None          # dB; clips without an SNR are dropped when set
    languages: tuple[str, ...] = ()       # segment language codes (case-insensitive)
    min_asd: float | None = None          # active-speaker score; clips without one dropped when set
    max_per_video: int | None = None      # keep the most intense N clips of each source video
    speakers: tuple[str, ...] = ()        # speaker names or numbers (case-insensitive); needs speakers
    label_set: str | None = None
    run_index: int = 0
    backend: str | None = None
    model: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["emotions"] = sorted(self.emotions)
        d["languages"] = sorted(self.languages)
        d["speakers"] = sorted(self.speakers)
        return d


@dataclass
class Selection:
    clips: list[dict]                      # one dict per clip, ordered by (video sha, start, id)
    annotation_sets: list[dict]            # distinct backend/model/label_set/prompt_sha used
    rationality: dict[str, float | None]   # per primary emotion accept rate in the chosen set
    steps: list[tuple[str, int]] = field(default_factory=list)  # (filter, clips left after it)


def _review_summary(verdicts: list[tuple[str, str | None]]) -> dict[str, Any]:
    """verdicts: each rater's latest (verdict, corrected_label)."""
    acc = sum(1 for v, _ in verdicts if v == "accept")
    rej = sum(1 for v, _ in verdicts if v == "reject")
    skip = sum(1 for v, _ in verdicts if v == "skip")
    if acc == 0 and rej == 0:
        verdict = "unreviewed"
    elif acc > rej:
        verdict = "accept"
    elif rej > acc:
        verdict = "reject"
    else:
        verdict = "tie"
    corrections = Counter(c for v, c in verdicts if v == "reject" and c)
    # most common correction; ties broken by name so the choice is stable
    corrected = sorted(corrections.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if corrections else None
    return {"accepts": acc, "rejects": rej, "skips": skip, "raters": len(verdicts),
            "verdict": verdict, "corrected_label": corrected}


def _choose_set(db, f: ExportFilters, cfg: dict) -> tuple[str, str, str]:
    """The (backend, model, label_set) to export; ambiguity is an error unless config settles it."""
    where, params = ["run_index = ?"], [f.run_index]
    for col, val in (("backend", f.backend), ("model", f.model), ("label_set", f.label_set)):
        if val:
            where.append(f"{col} = ?")
            params.append(val)
    sets = [(r["backend"], r["model"], r["label_set"]) for r in store.rows(
        db, "SELECT DISTINCT backend, model, label_set FROM annotations WHERE " + " AND ".join(where)
        + " ORDER BY backend, model, label_set", params)]
    if not sets:
        have = store.rows(db, "SELECT COUNT(*) AS n FROM annotations")[0]["n"]
        if have == 0:
            raise ExportError("nothing to export: the project has no emotion annotations yet; "
                              "run `mikupal run PROJECT --stages emotion` first")
        asked = ", ".join(f"{k}={v}" for k, v in (("run_index", f.run_index), ("backend", f.backend),
                                                    ("model", f.model), ("label_set", f.label_set)) if v is not None)
        raise ExportError(f"nothing to export: no annotations match {asked}; "
                          "see `mikupal status PROJECT` for the backends, models and label sets present")
    if len(sets) == 1:
        return sets[0]
    emo = cfg["emotion"]
    preferred = [s for s in sets if s == (emo["backend"], emo["model"], emo["label_set"])]
    if preferred:
        return preferred[0]
    listing = "; ".join("/".join(s) for s in sets)
    raise ExportError(f"several annotation sets match ({listing}); choose one with --backend, --model and --label-set")


def select(db, f: ExportFilters, cfg: dict) -> Selection:
    """Apply the filters in a fixed order; an emptied selection names the filter that did it."""
    backend, model, label_set = _choose_set(db, f, cfg)
    # which answer of each segment (queries: a changed prompt leaves older answers behind)
    primary = [a["id"] for a in queries.primary_in_set(db, backend, model, label_set, f.run_index)]
    speaker_cols, speaker_join = _speaker_sql(db)
    anns = store.rows(db, f"""
        SELECT a.id AS annotation_id, a.segment_id, a.backend, a.model, a.prompt_sha, a.run_index,
               a.label_set, a.primary_emotion, a.intensities_json, a.rationale, a.visual_analysis,
               a.audio_analysis, a.text_analysis,
               s.video_id, s.start_s, s.end_s, s.text, s.language, s.snr_db, s.asd_score, s.status,
               {speaker_cols},
               v.sha256 AS video_sha, v.path AS video_path, {", ".join("v." + c for c in SOURCE_FIELDS)}
        FROM annotations a JOIN segments s ON s.id = a.segment_id JOIN videos v ON v.id = s.video_id
        {speaker_join}
        WHERE a.id IN (SELECT value FROM json_each(?))""", (json.dumps(primary),))
    clips = sorted(anns, key=lambda c: (c["video_sha"], c["start_s"], c["segment_id"]))

    # Each rater's latest verdict counts once (queries.latest_verdicts).
    verdicts: dict[int, dict[str, tuple[str, str | None]]] = {}
    for r in queries.latest_verdicts(db, primary):
        verdicts.setdefault(r["annotation_id"], {})[r["rater"]] = (r["verdict"], r["corrected_label"])
    for c in clips:
        c["emotions"] = json.loads(c.pop("intensities_json") or "{}")
        c["review"] = _review_summary([verdicts.get(c["annotation_id"], {})[k]
                                       for k in sorted(verdicts.get(c["annotation_id"], {}))])
        c["duration_s"] = c["end_s"] - c["start_s"]
        c["primary_intensity"] = _intensity(c["emotions"], c["primary_emotion"])

    rationality = _rationality(clips, verdicts)
    steps: list[tuple[str, int]] = [(f"annotation set {backend}/{model}/{label_set} run {f.run_index}", len(clips))]
    drop_statuses = set(cfg["segments"]["drop_statuses"])

    def keep(name: str, pred) -> None:
        nonlocal clips
        before = len(clips)
        clips = [c for c in clips if pred(c)]
        steps.append((name, len(clips)))
        if before and not clips:
            raise ExportError(f"nothing to export: {name} removed the last {before} clips; relax that filter")

    keep(f"segment status (dropped: {', '.join(sorted(drop_statuses)) or 'none'})",
         lambda c: c["status"] not in drop_statuses)
    if f.languages:
        langs = {x.lower() for x in f.languages}
        keep(f"--language {','.join(sorted(langs))}", lambda c: (c["language"] or "").lower() in langs)
    if f.speakers:
        if "speaker_id" not in _columns(db, "segments"):
            raise ExportError("--speaker: this project has no speakers yet; run the speakers stage first")
        wanted_spk = {x.strip().lower() for x in f.speakers}
        keep(f"--speaker {','.join(sorted(wanted_spk))}",
             lambda c: c["speaker_id"] is not None
             and ({str(c["speaker_id"]), (speaker_label(c["speaker_id"], c["speaker_name"]) or "").lower()} & wanted_spk))
    if f.min_duration is not None:
        keep(f"--min-duration {f.min_duration:g}", lambda c: c["duration_s"] >= f.min_duration)
    if f.max_duration is not None:
        keep(f"--max-duration {f.max_duration:g}", lambda c: c["duration_s"] <= f.max_duration)
    if f.min_snr is not None:
        keep(f"--min-snr {f.min_snr:g}", lambda c: c["snr_db"] is not None and c["snr_db"] >= f.min_snr)
    if f.min_asd is not None:
        keep(f"--min-asd {f.min_asd:g}", lambda c: c["asd_score"] is not None and c["asd_score"] >= f.min_asd)
    if f.emotions:
        _check_emotions(f.emotions, label_set)
        wanted = {e.lower() for e in f.emotions}
        keep(f"--emotions {','.join(sorted(wanted))}", lambda c: c["primary_emotion"].lower() in wanted)
    if f.min_intensity is not None:
        keep(f"--min-intensity {f.min_intensity:g}", lambda c: c["primary_intensity"] >= f.min_intensity)
    if f.accepted_only:
        keep("--accepted-only", lambda c: c["review"]["verdict"] == "accept")
    if f.min_rationality is not None:
        keep(f"--min-rationality {f.min_rationality:g}",
             lambda c: (rationality.get(c["primary_emotion"]) is not None
                        and rationality[c["primary_emotion"]] >= f.min_rationality))
    if f.max_per_video is not None:
        if f.max_per_video < 1:
            raise ExportError(f"--max-per-video {f.max_per_video}: must be at least 1")
        capped = _cap_per_video(clips, f.max_per_video)
        keep(f"--max-per-video {f.max_per_video}", lambda c: c["segment_id"] in capped)

    sets = sorted({(c["backend"], c["model"], c["label_set"], c["prompt_sha"]) for c in clips})
    return Selection(clips=clips, rationality=rationality, steps=steps,
                     annotation_sets=[dict(zip(("backend", "model", "label_set", "prompt_sha"), s)) for s in sets])


SOURCE_FIELDS = ("source_url", "source_id", "source_title", "source_uploader", "source_upload_date", "source_license")


def _columns(db, table: str) -> set[str]:
    return {r[1] for r in db.conn.execute(f"PRAGMA table_info({table})")}


def _speaker_sql(db) -> tuple[str, str]:
    """(select columns, join) for the segment's speaker: segments.speaker_id and the speakers
    table's name through a LEFT JOIN, or NULLs while the project has no speakers schema."""
    if "speaker_id" not in _columns(db, "segments"):
        return "NULL AS speaker_id, NULL AS speaker_name", ""
    name = next((c for c in ("name", "label") if c in _columns(db, "speakers")), None)
    if name is None:
        return "s.speaker_id AS speaker_id, NULL AS speaker_name", ""
    return f"s.speaker_id AS speaker_id, sp.{name} AS speaker_name", "LEFT JOIN speakers sp ON sp.id = s.speaker_id"


def _check_emotions(emotions, label_set: str) -> None:
    """A misspelt emotion is a usage error, not an empty export."""
    from ..taxonomy import TaxonomyError, load_label_set

    try:
        names = load_label_set(label_set).names
    except (TaxonomyError, OSError):
        return  # a user label-set file that is gone: the filter still works on stored names
    known = {n.lower() for n in names}
    unknown = [e for e in emotions if e.lower() not in known]
    if unknown:
        raise ExportError(f"--emotions: {', '.join(unknown)} not in label set {label_set}; "
                          f"choose from {', '.join(names)}")


def choices(db) -> dict[str, Any]:
    """What a filter can choose from (for the GUI's export dialog): annotation sets with
    counts, primary emotions, languages and speakers present."""
    sets = store.rows(db, """SELECT backend, model, label_set, run_index, COUNT(DISTINCT segment_id) AS segments
                             FROM annotations GROUP BY backend, model, label_set, run_index
                             ORDER BY backend, model, label_set, run_index""")
    emotions = [r["primary_emotion"] for r in store.rows(
        db, "SELECT DISTINCT primary_emotion FROM annotations ORDER BY primary_emotion")]
    languages = [r["language"] for r in store.rows(
        db, "SELECT DISTINCT language FROM segments WHERE language IS NOT NULL ORDER BY language")]
    speakers: list[str] = []
    if "speaker_id" in _columns(db, "segments"):
        cols, join = _speaker_sql(db)
        speakers = sorted({speaker_label(r["speaker_id"], r["speaker_name"]) for r in store.rows(
            db, f"SELECT DISTINCT {cols} FROM segments s {join} WHERE s.speaker_id IS NOT NULL")})
    return {"annotation_sets": sets, "emotions": emotions, "languages": languages, "speakers": speakers}


def _intensity(emotions: dict, name: str) -> float:
    if name in emotions:
        return float(emotions[name])
    low = {k.lower(): v for k, v in emotions.items()}
    return float(low.get(name.lower(), 0.0))


def _rationality(clips: list[dict], verdicts: dict[int, dict]) -> dict[str, float | None]:
    """metrics.rationality per primary emotion (each rater's latest verdict; skips ignored)."""
    reviews = [{"verdict": v, "emotion": c["primary_emotion"]}
               for c in clips for v, _ in verdicts.get(c["annotation_id"], {}).values()]
    per = metrics.rationality(reviews).per_emotion
    return {e: (per[e].score if e in per and per[e].reviewed else None)
            for e in sorted({c["primary_emotion"] for c in clips})}


def _cap_per_video(clips: list[dict], cap: int) -> set[int]:
    """The `cap` most intense clips of each video (ties: earlier first)."""
    by_video: dict[str, list[dict]] = {}
    for c in clips:
        by_video.setdefault(c["video_sha"], []).append(c)
    keep: set[int] = set()
    for items in by_video.values():
        items = sorted(items, key=lambda c: (-c["primary_intensity"], c["start_s"], c["segment_id"]))
        keep.update(c["segment_id"] for c in items[:cap])
    return keep


def normalise_splits(fractions) -> tuple[float, float, float]:
    try:
        vals = [float(x) for x in fractions]
    except (TypeError, ValueError):
        raise ExportError(f"splits {fractions!r}: give up to three numbers for train/validation/test, e.g. 0.8,0.1,0.1") from None
    if not 1 <= len(vals) <= 3 or any(v < 0 for v in vals) or sum(vals) <= 0:
        raise ExportError(f"splits {fractions!r}: give up to three non-negative numbers for train/validation/test, "
                          "e.g. 0.8,0.1,0.1")
    vals += [0.0] * (3 - len(vals))
    total = sum(vals)
    return tuple(v / total for v in vals)  # type: ignore[return-value]


def assign_splits(clips: list[dict], fractions, seed: int) -> dict[str, str]:
    """video sha -> split name. Whole videos go to one split (no speaker/scene leaks).

    Videos are ordered by a seeded hash of their content hash (independent of paths, insert
    order and Python's RNG), then each goes to the split in which the midpoint of its clips
    falls on the cumulative train/validation/test line, so clip counts follow the fractions.
    """
    fr = normalise_splits(fractions)
    counts = Counter(c["video_sha"] for c in clips)
    order = sorted(counts, key=lambda sha: (hashlib.sha256(f"{seed}:{sha}".encode()).hexdigest(), sha))
    total = sum(counts.values())
    bounds = [fr[0], fr[0] + fr[1], 1.0]
    last = max(i for i in range(3) if fr[i] > 0)
    out: dict[str, str] = {}
    done = 0
    for sha in order:
        mid = (done + counts[sha] / 2) / total
        # splits asked to be empty are never chosen; the last non-empty one takes the rest
        k = next(i for i in range(3) if fr[i] > 0 and (mid < bounds[i] or i == last))
        out[sha] = SPLIT_NAMES[k]
        done += counts[sha]
    return out

"""`export_dataset`: select, split, cut audio, write one of the layouts, then swap it into place.

Everything is written into a hidden temporary folder beside OUT and renamed onto OUT only
when complete, so an interrupted export (crash, Ctrl-C, an exception raised by the progress
callback to cancel) leaves OUT exactly as it was.
"""
from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import soundfile as sf

from .. import store
from ..fileutil import pid_alive
from ..project import Project
from . import audio as audio_mod
from .card import readme, write_sha256sums
from .fields import SPLIT_NAMES, record
from .formats import FORMATS, WRITERS, check_lab_template, dumps, safe_name, video_folder
from .select import ExportError, ExportFilters, assign_splits, choices, normalise_splits, select

Progress = Callable[[int, int, str], None]


@dataclass
class ExportOptions:
    audio: str
    sample_rate: int
    seed: int
    splits: tuple[float, float, float]
    shard_size_mb: float
    lab_template: str

    def as_dict(self) -> dict:
        return {"audio": self.audio, "sample_rate": self.sample_rate, "seed": self.seed,
                "splits": [round(x, 6) for x in self.splits], "shard_size_mb": self.shard_size_mb,
                "lab_template": self.lab_template}


@dataclass
class ExportResult:
    out: Path
    format: str
    n_items: int
    n_videos: int
    hours: float
    per_split: dict[str, int]
    per_emotion: dict[str, int]
    skipped: list[str] = field(default_factory=list)
    manifest_sha256: str = ""
    export_id: int | None = None
    unknown_license: int = 0  # clips whose source states no licence


    def summary(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in self.per_split.items() if v)
        line = (f"exported {self.n_items} clips ({self.hours:.3f} h) from {self.n_videos} videos "
                f"as {self.format} to {self.out} [{splits}]")
        if self.unknown_license:
            line += f"; licence unknown for {self.unknown_license} clips (check before sharing; see README.md)"
        return line + (f"; {len(self.skipped)} left out (see README.md)" if self.skipped else "")


def _options(cfg: dict, *, audio, sample_rate, seed, splits, shard_size_mb, lab_template) -> ExportOptions:
    ex = cfg["export"]  # every key is there (config.SPEC holds the defaults)
    opts = ExportOptions(
        audio=audio or ex["audio"],
        sample_rate=int(sample_rate or ex["sample_rate"]),
        seed=int(ex["seed"] if seed is None else seed),
        splits=normalise_splits(ex["splits"] if splits is None else splits),
        shard_size_mb=float(shard_size_mb or ex["shard_size_mb"]),
        lab_template=lab_template or ex["lab_template"],
    )
    if opts.audio not in ("vocals", "mix"):
        raise ExportError(f"--audio {opts.audio!r}: choose vocals or mix")
    if not 8000 <= opts.sample_rate <= 192000:
        raise ExportError(f"--sample-rate {opts.sample_rate}: choose a rate between 8000 and 192000 Hz, e.g. 24000")
    if opts.shard_size_mb <= 0:
        raise ExportError(f"--shard-size {opts.shard_size_mb:g}: must be a positive number of MB")
    problem = check_lab_template(opts.lab_template)
    if problem:
        raise ExportError(problem)
    return opts


def _check_out(out: Path, project_root: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder; choose a folder path for the dataset")
    root = project_root.resolve()
    if out == root or out in root.parents:
        raise ExportError(f"{out}: would replace the project itself; export into a new folder, e.g. {root / 'exports' / 'v1'}")
    if (out / "mikupal.toml").exists() or (out / "project.db").exists():
        raise ExportError(f"{out}: holds a MIKU-PAL project; export into a new folder, not over a project")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"{out}: folder is not empty; choose an empty one or pass --force to replace it")


def _remove_stale(out: Path) -> None:
    """Temporary folders of exports to OUT whose process died (killed, power cut) go away."""
    for p in out.parent.glob(f".{out.name}.partial-*"):
        pid = p.name.rsplit(".partial-", 1)[1].split("-")[0]
        if p.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _install(tmp: Path, out: Path) -> None:
    """Put the finished export at OUT; a previous OUT is moved aside first and then deleted."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{secrets.token_hex(4)}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _speaker_folders(recs: list[dict]) -> None:
    """lab: one folder per speaker (named by the speaker, unique by number); clips without a
    speaker go to one unknown-<video> folder per video."""
    names: dict[int, str] = {}
    for rec in recs:
        if rec["speaker_id"] is not None and rec["speaker_id"] not in names:
            names[rec["speaker_id"]] = safe_name(rec["speaker"], "speaker")
    clash = {n for n in names.values() if list(names.values()).count(n) > 1}
    for rec in recs:
        sid = rec["speaker_id"]
        if sid is None:
            rec["_speaker_folder"] = f"unknown-{rec['_folder']}"
        else:
            rec["_speaker_folder"] = names[sid] + (f"-{sid}" if names[sid] in clash else "")


def export_dataset(
    project: Project | str | Path,
    out: str | Path,
    fmt: str,
    filters: ExportFilters | None = None,
    *,
    force: bool = False,
    progress: Progress | None = None,
    audio: str | None = None,
    sample_rate: int | None = None,
    seed: int | None = None,
    splits=None,
    shard_size_mb: float | None = None,
    lab_template: str | None = None,
) -> ExportResult:
    """Export the selected clips of `project` to the folder `out` in layout `fmt`.

    Options left as None come from the project's [export] settings. `progress(done, total,
    message)` is called after each clip; raising from it cancels the export (OUT untouched).
    Raises ExportError (one line) for bad options, a non-empty OUT without `force`, or an
    empty selection (naming the filter that emptied it).
    """
    proj = _open(project)
    filters = filters or ExportFilters()
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    opts = _options(proj.config, audio=audio, sample_rate=sample_rate, seed=seed, splits=splits,
                    shard_size_mb=shard_size_mb, lab_template=lab_template)
    out = Path(out).expanduser().resolve()
    _check_out(out, proj.root, force)

    db = proj.db()
    try:
        sel = select(db, filters, proj.config)
        split_of = assign_splits(sel.clips, opts.splits, opts.seed)
        videos = {v["sha256"]: v for v in store.rows(db, "SELECT id, sha256, path FROM videos")}
        by_video: dict[str, list[dict]] = {}
        seen: set[str] = set()
        for c in sel.clips:
            rec = record(c, split_of[c["video_sha"]])
            if rec["id"] in seen:  # two segments with the same millisecond span: keep ids unique
                rec["id"] += f"_{c['segment_id']}"
            seen.add(rec["id"])
            rec["_folder"] = video_folder(videos[c["video_sha"]]["path"], c["video_sha"])
            by_video.setdefault(c["video_sha"], []).append(rec)
        _speaker_folders([r for recs in by_video.values() for r in recs])

        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(out)
        tmp = out.with_name(f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
        tmp.mkdir()
        try:
            written, skipped = _write(proj, db, tmp, fmt, opts, videos, by_video, len(sel.clips), progress)
            if not written:
                raise ExportError("nothing to export: no clip's audio could be read (" + "; ".join(skipped[:3])
                                  + "); fix the sources or use --audio mix")
            card = readme(
                title=proj.config["project"]["name"] or "MIKU-PAL emotional speech dataset",
                fmt=fmt, records=written, filters=filters.as_dict(), options=opts.as_dict(),
                annotation_sets=sel.annotation_sets, rationality=sel.rationality, skipped=skipped)
            (tmp / "README.md").write_text(card, encoding="utf-8", newline="\n")
            manifest_sha = write_sha256sums(tmp)
            _check_out(out, proj.root, force)  # OUT may have changed while we worked
            _install(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

        result = _result(out, fmt, written, skipped, manifest_sha)
        with store.transaction(db) as conn:
            cur = conn.execute(
                "INSERT INTO exports (created_at, out_name, format, filters_json, n_items, manifest_sha256)"
                " VALUES (?,?,?,?,?,?)",
                (store.now(), str(out), fmt, dumps({"filters": filters.as_dict(), "options": opts.as_dict()}),
                 len(written), manifest_sha))
            result.export_id = int(cur.lastrowid)
        return result
    finally:
        db.conn.close()


def _open(project) -> Project:
    return project if isinstance(project, Project) else Project.open(project)


def export_choices(project: Project | str | Path) -> dict:
    """Annotation sets (with segment counts), primary emotions and languages present: what the
    export dialog offers."""
    db = _open(project).db()
    try:
        return choices(db)
    finally:
        db.conn.close()


def preview_export(project: Project | str | Path, filters: ExportFilters | None = None) -> dict:
    """What an export with these filters would hold, without cutting audio: clip and video
    counts, hours, clips per emotion and the clips left after each filter. Raises ExportError
    like export_dataset (e.g. naming the filter that removes everything)."""
    proj = _open(project)
    db = proj.db()
    try:
        sel = select(db, filters or ExportFilters(), proj.config)
    finally:
        db.conn.close()
    per_emotion: dict[str, int] = {}
    for c in sel.clips:
        per_emotion[c["primary_emotion"]] = per_emotion.get(c["primary_emotion"], 0) + 1
    return {"clips": len(sel.clips), "videos": len({c["video_sha"] for c in sel.clips}),
            "hours": sum(c["duration_s"] for c in sel.clips) / 3600,
            "per_emotion": dict(sorted(per_emotion.items())), "steps": sel.steps,
            "annotation_sets": sel.annotation_sets}


def _write(proj, db, tmp, fmt, opts, videos, by_video, total, progress):
    """Write every video's clips; a video whose audio cannot be read is left out and recorded."""
    writer = WRITERS[fmt](tmp, opts)
    scratch = tmp / ".scratch"  # inside tmp: removed with it on failure
    scratch.mkdir()
    written: list[dict] = []
    skipped: list[str] = []
    try:
        _write_videos(proj, db, writer, scratch, opts, videos, by_video, total, progress, written, skipped)
    except BaseException:
        writer.abort()
        raise
    writer.finish()
    shutil.rmtree(scratch)
    return written, skipped


def _write_videos(proj, db, writer, scratch, opts, videos, by_video, total, progress, written, skipped) -> None:
    for sha in sorted(by_video):
        recs, video = by_video[sha], videos[sha]
        try:
            source = audio_mod.resolve_source(proj, db, video, opts.audio, opts.sample_rate)
            for rec in recs:
                rec["audio_source"] = source.kind
                rec["sample_rate"] = opts.sample_rate
                rec["audio"] = writer.audio_path(rec)
            if writer.clip_based:
                wav = scratch / "source.wav"
                audio_mod.render(source.path, wav, opts.sample_rate)
                with sf.SoundFile(str(wav)) as f:
                    for rec in recs:
                        a, b = round(rec["start_s"] * opts.sample_rate), round(rec["end_s"] * opts.sample_rate)
                        samples = audio_mod.read_span(f, a, b)
                        if len(samples) == 0:
                            msg = f"clip {rec['id']}: starts after the end of the audio of video {sha[:12]}; left out"
                            skipped.append(msg)
                            store.record_error(db, "export", msg, video_id=video["id"])
                            continue
                        writer.add(rec, samples)
                        written.append(rec)
                        if progress:
                            progress(len(written), total, rec["id"])
                wav.unlink()
            else:
                writer.add_video(recs[0]["_folder"], source.kind, recs, source.path)
                written.extend(recs)
                if progress:
                    progress(len(written), total, recs[0]["_folder"])
        except audio_mod.SourceError as e:
            skipped.append(f"{len(recs)} clips of video {sha[:12]}: {e}")
            store.record_error(db, "export", str(e), video_id=video["id"])


def _result(out, fmt, written, skipped, manifest_sha) -> ExportResult:
    per_split = {s: sum(1 for r in written if r["split"] == s) for s in SPLIT_NAMES}
    per_emotion: dict[str, int] = {}
    for r in written:
        per_emotion[r["primary_emotion"]] = per_emotion.get(r["primary_emotion"], 0) + 1
    return ExportResult(out=out, format=fmt, n_items=len(written), n_videos=len({r["source_video"] for r in written}),
                        hours=sum(r["duration_s"] for r in written) / 3600, per_split=per_split,
                        per_emotion=dict(sorted(per_emotion.items())), skipped=skipped, manifest_sha256=manifest_sha,
                        unknown_license=sum(1 for r in written if r["source_license"] is None))

"""The four audio stages (video scope): separate -> vad -> asr -> segments.

Files: `cache/audio/<sha16>/mix16k.wav|mix44k.wav` (extracted once per video, shared by
every config), `cache/separate/<sha16>-<key8>/vocals16k.wav|vocals44k.wav`.
Per-video results live in stage_state.info (paths, SNR, VAD regions, ASR language);
transcripts and segments go to their tables.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import store
from ..media import ASR_CHANNELS, ASR_RATE, SEP_CHANNELS, SEP_RATE, MediaError, extract_audio, iter_audio_blocks, wav_info
from ..stage import ModelMissingError, Stage, StageError
from . import vad as vad_mod


def _video(db, video_id: int) -> dict:
    rows = store.rows(db, "SELECT id, path, sha256, duration_s FROM videos WHERE id=?", (video_id,))
    if not rows:
        raise StageError(f"video {video_id}: not in the project; add it with mikupal add")
    return rows[0]


def _done_info(db, video: dict, stage: str, needed_by: str) -> dict:
    st = store.get_stage_state(db, video.get("id", video.get("video_id")), stage)
    if st is None or st["status"] != "done":
        raise StageError(f"{video['path']}: {needed_by} needs stage {stage} first; run with --stages {stage},{needed_by}")
    return st["info"]


def audio_paths(project, sha256: str) -> dict[str, Path]:
    track = audio_track(project)  # another [media] audio_track is another rendering
    d = project.stage_cache("audio") / (sha256[:16] + ("" if track == "default" else f"-track-{track}"))
    return {"mix16k": d / "mix16k.wav", "mix44k": d / "mix44k.wav"}


def audio_track(project) -> str:
    return str(project.config["media"]["audio_track"])


def ensure_audio(project, path: str, sha256: str, *, stereo44: bool = True) -> dict[str, str]:
    """Extract the video's audio once (both renderings in one decode); reuse it afterwards."""
    paths = audio_paths(project, sha256)
    want = {"mix16k": (paths["mix16k"], ASR_RATE, ASR_CHANNELS)}
    if stereo44:
        want["mix44k"] = (paths["mix44k"], SEP_RATE, SEP_CHANNELS)
    todo = {k: v for k, v in want.items() if not v[0].is_file()}
    if todo:
        if not Path(path).is_file():
            raise StageError(f"{path}: video file is missing; restore it or remove the video from the project")
        try:
            extract_audio(path, todo, audio_track=audio_track(project))
        except MediaError as e:
            raise StageError(str(e)) from None
    return {k: str(v[0]) for k, v in want.items()}


def _snr_pair(mix16k: str, vocals16k: str, params: vad_mod.VadParams) -> tuple[float | None, float | None]:
    """SNR of the mix and of the vocals over the same speech frames (WebRTC VAD on the vocals)."""
    fm = params.frame_ms
    speech = vad_mod.webrtc_flags(iter_audio_blocks(vocals16k, 600.0), params.aggressiveness, fm)
    before = vad_mod.snr_db(vad_mod.frame_power(iter_audio_blocks(mix16k, 600.0), fm), speech)
    after = vad_mod.snr_db(vad_mod.frame_power(iter_audio_blocks(vocals16k, 600.0), fm), speech)
    return before, after


class _AudioStage(Stage):
    def prepare(self, db, item_id: int) -> dict[str, Any]:
        v = _video(db, item_id)
        return {"video_id": v["id"], "path": v["path"], "sha256": v["sha256"], "duration_s": v["duration_s"],
                "cache_key": self.cache_key(db, item_id)}



class SeparateStage(_AudioStage):
    name = "separate"
    config_sections = ("separate", "media")
    num_gpus = 0.5
    _separator = None
    _load_error: StageError | None = None  # a missing model is reported per video, the run goes on

    def load(self) -> None:
        self._separator, self._load_error = None, None
        model = self.cfg["separate"]["model"]
        if model == "none":
            return
        from .separate import VocalSeparator, model_dir

        sep = VocalSeparator(model, model_dir(self.project.models_dir),
                             segment_size=self.cfg["separate"]["segment_size"],
                             batch_size=self.cfg["separate"]["batch_size"],
                             allow_download=bool(self.cfg["models"]["allow_download"]))
        try:
            sep.load()
            self._separator = sep
        except StageError as e:  # reported per video, so the run goes on and says why
            self._load_error = e

    def process(self, task: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        model = self.cfg["separate"]["model"]
        if model != "none" and self._separator is None:
            err = self._load_error or StageError("the separation model is not loaded (load() was not called)")
            raise type(err)(f"{task['path']}: {err}")
        mix = ensure_audio(self.project, task["path"], task["sha256"], stereo44=(model != "none"))
        out = {"model": model, "mix16k": mix["mix16k"], "mix44k": mix.get("mix44k")}
        if model == "none":
            out.update(vocals16k=mix["mix16k"], vocals44k=None)
        else:
            out.update(self._separate(task, mix["mix44k"]))
        params = vad_mod.VadParams.from_config({**self.cfg["vad"], "engine": "webrtc"})
        out["snr_before_db"], out["snr_after_db"] = _snr_pair(out["mix16k"], out["vocals16k"], params)
        out["duration_s"] = round(wav_info(out["vocals16k"]).duration_s, 3)
        out["seconds"] = round(time.perf_counter() - t0, 3)
        return out

    def _separate(self, task: dict, mix44k: str) -> dict:
        import soundfile as sf

        from ..fileutil import atomic_write

        from ..media.resample import StreamResampler

        d = self.project.stage_cache("separate") / f"{task['sha256'][:16]}-{task['cache_key'][:8]}"
        d.mkdir(parents=True, exist_ok=True)
        v44, v16 = d / "vocals44k.wav", d / "vocals16k.wav"
        if v44.is_file() and v16.is_file():
            return {"vocals44k": str(v44), "vocals16k": str(v16)}
        to16k = StreamResampler(SEP_RATE, ASR_RATE)
        # unique temporary names, renamed when both are complete, removed on failure
        with atomic_write(v16) as t16, atomic_write(v44) as t44, \
                sf.SoundFile(str(t44), "w", SEP_RATE, 1, "PCM_16", format="WAV") as w44, \
                sf.SoundFile(str(t16), "w", ASR_RATE, 1, "PCM_16", format="WAV") as w16:

            def writer(block: np.ndarray) -> None:
                block = np.clip(block, -1.0, 1.0).astype(np.float32)
                w44.write(block)
                w16.write(to16k.feed(block))

            try:
                self._separator.separate_wav(mix44k, writer)
            except StageError:
                raise
            except Exception as e:
                raise StageError(f"{task['path']}: separation failed ({type(e).__name__}: {str(e)[:200]}); "
                                 f"try separate.model = \"none\"") from None
            w16.write(to16k.flush())
        return {"vocals44k": str(v44), "vocals16k": str(v16)}

    def commit(self, db, task: dict[str, Any], result: dict[str, Any]) -> dict:
        return result


class VadStage(_AudioStage):
    name = "vad"
    requires = ("separate",)
    config_sections = ("vad",)

    def prepare(self, db, item_id: int) -> dict[str, Any]:
        task = super().prepare(db, item_id)
        task["vocals16k"] = _done_info(db, task, "separate", self.name)["vocals16k"]
        return task

    def process(self, task: dict[str, Any]) -> dict[str, Any]:
        try:
            params = vad_mod.VadParams.from_config(self.cfg["vad"])
        except ValueError as e:
            raise StageError(f"{task['path']}: {e}") from None
        if not Path(task["vocals16k"]).is_file():
            raise StageError(f"{task['path']}: separated audio {task['vocals16k']} is gone; re-run stage separate")
        regions, duration = vad_mod.detect(task["vocals16k"], params)
        speech = sum(e - s for s, e in regions)
        return {"engine": params.engine, "regions": [list(r) for r in regions], "duration_s": round(duration, 3),
                "speech_s": round(speech, 3), "speech_ratio": round(speech / duration, 4) if duration else 0.0}

    def commit(self, db, task: dict[str, Any], result: dict[str, Any]) -> dict:
        return result


class AsrStage(_AudioStage):
    name = "asr"
    requires = ("vad",)
    config_sections = ("asr",)
    num_gpus = 1.0
    _transcriber = None
    _load_error: StageError | None = None  # a missing model fails only the videos that need Whisper

    def prepare(self, db, item_id: int) -> dict[str, Any]:
        from .subtitles import SubtitleError, find_sidecar, read_sidecar

        task = super().prepare(db, item_id)
        sep = _done_info(db, task, "separate", self.name)
        task["vocals16k"] = sep["vocals16k"]
        task["regions"] = _done_info(db, task, "vad", self.name)["regions"]
        source = self.cfg["asr"]["source"]
        task["cues"] = None
        if source in ("auto", "subtitles"):
            side = find_sidecar(task["path"])
            if side is None and source == "subtitles":
                raise StageError(f"{task['path']}: asr.source = subtitles but no .srt/.vtt/.csv sits next to it; "
                                 f"add one with the same name or set asr.source = auto")
            if side is not None:
                try:
                    cues = read_sidecar(side, task["path"])
                except SubtitleError as e:
                    raise StageError(str(e)) from None
                task["sidecar"] = str(side)
                task["cues"] = [[c.start_s, c.end_s, c.text] for c in cues]
        return task

    def load(self) -> None:
        self._transcriber, self._load_error = None, None
        a = self.cfg["asr"]
        if a["source"] == "subtitles":
            return
        from .asr import Guards, WhisperTranscriber, resolve_model

        try:
            path = resolve_model(a["model"], self.project.models_dir,
                                 allow_download=bool(self.cfg["models"]["allow_download"]))
            guards = Guards(a["no_speech_threshold"], a["logprob_threshold"], a["compression_ratio_threshold"],
                            a["max_repeat_ngram"])
            # [asr] device wins; else the runner's device for this worker (cpu / cuda:N)
            device = a["device"] if a["device"] != "auto" else (self.device or "auto")
            t = WhisperTranscriber(path, device=device, compute_type=a["compute_type"], batch_size=a["batch_size"],
                                   beam_size=a["beam_size"], language=a["language"], guards=guards,
                                   batched=bool(a["batched"]), cpu_threads=self.cpu_threads or 0)
            t.load()
            self._transcriber = t
        except ModelMissingError as e:
            self._load_error = e

    def process(self, task: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        if task.get("cues") is not None:
            rows = [{"start_s": s, "end_s": e, "text": t, "words_json": "[]", "language": self.cfg["asr"]["language"] or None,
                     "source": "subtitles"} for s, e, t in task["cues"]]
            return {"rows": rows, "info": {"source": "subtitles", "sidecar": task.get("sidecar"), "kept": len(rows),
                                           "dropped": 0, "seconds": round(time.perf_counter() - t0, 3)}}
        if self._transcriber is None:
            err = self._load_error or StageError("the Whisper model is not loaded (load() was not called)")
            raise type(err)(f"{task['path']}: {err}")
        regions = [tuple(r) for r in task["regions"]]
        if not regions:
            return {"rows": [], "info": {"source": "whisper", "kept": 0, "dropped": 0, "language": None,
                                         "note": "no speech found by VAD"}}
        trs, info = self._transcriber.transcribe_wav(task["vocals16k"], regions)
        rows = [{**t.row(), "source": "whisper"} for t in trs]
        info.update(source="whisper", seconds=round(time.perf_counter() - t0, 3))
        return {"rows": rows, "info": info}

    def commit(self, db, task: dict[str, Any], result: dict[str, Any]) -> None:
        cols = ("start_s", "end_s", "text", "words_json", "language", "source", "avg_logprob", "no_speech_prob",
                "compression_ratio", "dropped")
        conn = db.conn
        conn.execute("DELETE FROM transcripts WHERE video_id=?", (task["video_id"],))
        conn.executemany(
            f"INSERT INTO transcripts (video_id, {', '.join(cols)}) VALUES (?{', ?' * len(cols)})",
            [(task["video_id"], *(r.get(c) for c in cols)) for r in result["rows"]])
        return result["info"]


def _annotated(db, video_id: int) -> int:
    return db.conn.execute("SELECT COUNT(*) FROM annotations a JOIN segments s ON s.id=a.segment_id WHERE s.video_id=?",
                           (video_id,)).fetchone()[0]


class SegmentsStage(_AudioStage):
    name = "segments"
    requires = ("asr", "vad")
    config_sections = ("segments",)

    def _guard(self, db, task: dict) -> None:
        n = _annotated(db, task["video_id"])
        if n:
            raise StageError(f"{task['path']}: its segments already have {n} emotion annotation(s); rebuilding them would "
                             f"orphan those labels. Keep the current segments, or export and delete the annotations first")

    def prepare(self, db, item_id: int) -> dict[str, Any]:
        task = super().prepare(db, item_id)
        self._guard(db, task)
        task["vocals16k"] = _done_info(db, task, "separate", self.name)["vocals16k"]
        vad_info = _done_info(db, task, "vad", self.name)
        _done_info(db, task, "asr", self.name)
        task["regions"] = vad_info["regions"]
        task["duration_s"] = vad_info.get("duration_s") or task["duration_s"]
        task["transcripts"] = store.rows(
            db, "SELECT start_s, end_s, text, words_json, language FROM transcripts "
                "WHERE video_id=? AND dropped IS NULL ORDER BY start_s", (item_id,))
        return task

    def process(self, task: dict[str, Any]) -> dict[str, Any]:
        from ..segments import build_segments, segment_snr

        c = self.cfg["segments"]
        regions = [tuple(r) for r in task["regions"]]
        units = build_segments(task["transcripts"], regions, min_s=c["min_s"], max_s=c["max_s"],
                               merge_gap_s=c["merge_gap_s"])
        rows, low_snr = [], 0
        for u in units:
            snr = segment_snr(task["vocals16k"], u.start, u.end, regions)
            if snr is not None and snr < c["min_snr_db"]:
                low_snr += 1
                continue
            rows.append({"start_s": u.start, "end_s": u.end, "text": u.text, "words_json": json.dumps(u.words),
                         "language": u.language, "snr_db": snr, "status": "ok"})
        kept = sum(r["end_s"] - r["start_s"] for r in rows)
        dur = float(task["duration_s"] or 0.0)
        info = {"segments": len(rows), "kept_s": round(kept, 3), "duration_s": round(dur, 3),
                "retention": round(kept / dur, 4) if dur else None, "dropped_low_snr": low_snr,
                "transcripts_in": len(task["transcripts"])}
        return {"rows": rows, "info": info}

    def commit(self, db, task: dict[str, Any], result: dict[str, Any]) -> None:
        cols = ("start_s", "end_s", "text", "words_json", "language", "snr_db", "status")
        conn = db.conn
        self._guard(db, task)  # annotations may have arrived since prepare
        conn.execute("DELETE FROM segments WHERE video_id=?", (task["video_id"],))
        conn.executemany(
            f"INSERT INTO segments (video_id, {', '.join(cols)}) VALUES (?{', ?' * len(cols)})",
            [(task["video_id"], *(r[c] for c in cols)) for r in result["rows"]])
        return result["info"]

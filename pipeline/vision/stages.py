"""The two vision stages (video scope): ``faces`` (detect + track) and ``asd`` (who speaks).

``faces`` writes the ``tracks`` table. ``tracks.boxes_json`` is a JSON list with one entry
per analysed frame of the track, ``[t, x1, y1, x2, y2]``: ``t`` the time in seconds on the
video's clock (frame index / ``[faces] fps``, rounded to ms), the box in ORIGINAL video
pixels (not the downscaled detection frame), top-left and bottom-right corners, floats
rounded to 0.1 px. The detector runs on every ``[faces] detect_every``-th frame (and on both
sides of a scene cut and at each span's end); frames between detections, and frames where
the detector missed the face, are interpolated, so entries are consecutive on the grid; the
GUI draws the entry nearest to the playback time.

``asd`` reads those tracks and the segments and sets, per segment: ``speaker_track_id``,
``speaker_bbox_json`` (the speaker's median box over the segment, ``[x1, y1, x2, y2]`` in
video pixels), ``asd_score`` (the speaker's mean score; Light-ASD or TalkNet logit, or for
``sync`` the correlation's Fisher z minus 2 — all > 0 mean "speaking") and ``status``:
``ok``, ``no_face`` (no track covers the segment), ``low_asd`` (best score < ``[asd]
min_score``) or ``multi_speaker`` (a second track also >= min_score and within
``multi_speaker_margin`` of the best). A status set by an earlier stage that is not one of
these four is kept. Every segment is written; none is dropped here. Each track is scored once
over the part inside the segment (``[asd] protocol = "one-pass"``; the tracks of a segment
go through the network as one batch) or with the official 1..6 s multi-length average.

Streaming inside a long video (not built: it needs the runner and a schema slot). ``asd``
would become ``scope = "segment"``: items = segment ids of videos whose ``faces`` state is
done; ``prepare`` takes the segment and only the boxes of the tracks inside it; ``commit``
writes that segment's speaker fields and a per-segment cache key (``segments.asd_key``, a
migration); the runner would forward each committed segment to the next segment-scope stage
(emotion) instead of waiting for all of the video's items. ``faces`` stays per video (tracks
cross segments) or becomes per chunk of segments (items = (video, chunk), tracks keyed by
chunk) so that the first labels do not wait for the whole video's detection.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .. import store
from ..stage import ModelMissingError, Stage, StageError
from . import faces as faces_mod
from .frames import DecodeStats, grid_indices, iter_frames, merge_spans


def _asd():
    """The ASD networks (torch), imported when a worker needs them: `mikupal status` builds
    these stages only to ask what is pending and must not pay torch's import."""
    from . import asd

    return asd

log = logging.getLogger(__name__)

ASD_STATUSES = ("ok", "no_face", "multi_speaker", "low_asd")
MIN_ASD_FRAMES = 5  # a face seen for less than 0.2 s of a segment is not a speaker candidate


def _video_row(db, video_id: int) -> dict:
    rows = store.rows(db, "SELECT id, path, sha256, duration_s, has_video FROM videos WHERE id=?", (video_id,))
    if not rows:
        raise StageError(f"video {video_id}: not in the project; add it with mikupal add")
    return rows[0]


def _segments(db, video_id: int) -> list[list]:
    return [[r[0], r[1], r[2], r[3]] for r in db.conn.execute(
        "SELECT id, start_s, end_s, status FROM segments WHERE video_id=? ORDER BY start_s, id", (video_id,))]


def _device(device: str) -> str:
    return device if device and device != "auto" else "cpu"


# ---------------------------------------------------------------------------------------
class FacesStage(Stage):
    """Detect faces in the frames inside segments (+ margin) and link them into tracks."""

    name = "faces"
    scope = "video"
    requires = ("segments",)
    config_sections = ("faces",)

    def prepare(self, db, item_id: int) -> dict[str, Any]:
        v = _video_row(db, item_id)
        return {"video_id": v["id"], "path": v["path"], "duration_s": v["duration_s"],
                "segments": _segments(db, item_id), "cache_key": self.cache_key(db, item_id)}

    def load(self) -> None:
        c = self.cfg["faces"]
        self.detector, self.warnings = faces_mod.make_detector(c["detector"], self.cfg, device=_device(self.device))

    def process(self, task: dict[str, Any]) -> dict[str, Any]:
        c = self.cfg["faces"]
        fps = float(c["fps"])
        path = task["path"]
        if not Path(path).is_file():
            raise StageError(f"{path}: video file is missing; restore it or remove the video from the project")
        spans = merge_spans([(s[1], s[2]) for s in task["segments"]], float(c["margin_s"]), task.get("duration_s"))
        every = int(c["detect_every"])
        thr, max_gap = float(c["scene_cut_threshold"]), max(int(c["max_gap_frames"]), every)
        stats = DecodeStats()
        picker = _DetectionFrames(spans, fps, every)
        detections: list[tuple[int, np.ndarray]] = []
        cuts: set[int] = set()
        batch = []
        prev = None  # (frame, histogram, chosen for detection)

        def choose(fr):
            batch.append(fr)
            if len(batch) >= self.detector.batch_size:
                flush()

        def flush():
            for fr, dets in zip(batch, self.detector.detect([f.image for f in batch])):
                detections.append((fr.index, dets))
            batch.clear()

        scale = 1.0
        # Every frame is decoded (H.264 needs it anyway) and its colour histogram checked for
        # a cut; the detector runs on every `detect_every`-th frame, on both sides of a cut
        # and on a span's last frame. The tracker interpolates the boxes in between. The
        # choice for frame k waits for frame k+1 (one frame of look-ahead for cuts).
        for fr in iter_frames(path, spans, fps, width=int(c["detect_width"]), fmt="rgb24", stats=stats):
            hist = faces_mod.frame_histogram(fr.image)
            cut = (prev is not None and fr.index - prev[0].index <= max_gap + 1
                   and faces_mod.histogram_distance(prev[1], hist) > thr)
            if cut:
                cuts.add(fr.index)
                picker.restart(fr.index)
            if prev is not None and (prev[2] or cut):
                choose(prev[0])
            prev = (fr, hist, picker.wants(fr.index))
            scale = fr.scale
        if prev is not None:
            choose(prev[0])  # the last decoded frame always: tracks reach the end
        if batch:
            flush()
        if spans and stats.frames == 0:
            raise StageError(f"{path}: no decodable video frames inside the speech segments "
                             f"({stats.corrupt} corrupt packets); re-encode the file with ffmpeg")
        tracks = faces_mod.track_faces(
            detections, cuts=cuts, iou_threshold=float(c["iou_threshold"]), max_gap=max_gap,
            # min_track_frames counts frames; a sparse detector sees 1 in `every` of them
            min_frames=max(1, -(-int(c["min_track_frames"]) // every)), smooth=int(c["smooth_frames"]),
        )
        w, h = stats.width, stats.height
        out = []
        for t in tracks:
            b = t.boxes * scale
            b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
            b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
            boxes = [[round(k / fps, 3), *(round(float(x), 1) for x in row)] for k, row in zip(t.frames, b)]
            out.append({"start_s": round(t.start / fps, 3), "end_s": round(t.end / fps, 3), "boxes": boxes,
                        "detected_frames": int(t.detected.sum())})
        warnings = list(self.warnings)
        if stats.corrupt:
            warnings.append(f"{stats.corrupt} corrupt video packets skipped during face detection in "
                            f"{Path(path).name}; faces there are interpolated or missing — re-encode the file "
                            "with ffmpeg to recover them")
            log.warning("video %s: %s", task["video_id"], warnings[-1])
        return {"tracks": out, "frames": stats.frames, "detected_frames": len(detections),
                "corrupt_frames": stats.corrupt, "scene_cuts": [round(k / fps, 3) for k in sorted(cuts)],
                "detector": self.detector.name, "warnings": warnings, "width": w, "height": h}

    def commit(self, db, task: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        """Replace the video's tracks; return the stage_state info (the runner stores it)."""
        vid = task["video_id"]
        db.conn.execute("DELETE FROM tracks WHERE video_id=?", (vid,))
        for t in result["tracks"]:
            db.conn.execute("INSERT INTO tracks (video_id, start_s, end_s, boxes_json) VALUES (?,?,?,?)",
                            (vid, t["start_s"], t["end_s"], json.dumps(t["boxes"], separators=(",", ":"))))
        info = {k: result[k] for k in ("frames", "detected_frames", "corrupt_frames", "scene_cuts", "detector", "warnings")}
        info["tracks"] = len(result["tracks"])
        return info


class _DetectionFrames:
    """Which grid frames the detector sees: every ``every``-th counted from the start of each
    span and from each scene cut, plus each span's last grid frame. Asked in frame order."""

    def __init__(self, spans, fps: float, every: int):
        grids = [g for g in (grid_indices(a, b, fps) for a, b in spans) if len(g)]
        self.every = max(1, every)
        self.starts = sorted(g[0] for g in grids)
        self.ends = {g[-1] for g in grids}
        self.anchor, self.next_start = None, 0

    def restart(self, k: int) -> None:
        self.anchor = k

    def wants(self, k: int) -> bool:
        while self.next_start < len(self.starts) and self.starts[self.next_start] <= k:
            self.anchor = max(self.anchor if self.anchor is not None else -1, self.starts[self.next_start])
            self.next_start += 1
        if self.every == 1 or k in self.ends or self.anchor is None:
            return True
        return (k - self.anchor) % self.every == 0


# ---------------------------------------------------------------------------------------
class AsdStage(Stage):
    """Score every face track inside every segment and pick the active speaker."""

    name = "asd"
    scope = "video"
    requires = ("faces",)
    config_sections = ("asd",)

    def prepare(self, db, item_id: int) -> dict[str, Any]:
        v = _video_row(db, item_id)
        tracks = [[r[0], json.loads(r[1])] for r in db.conn.execute(
            "SELECT id, boxes_json FROM tracks WHERE video_id=? ORDER BY start_s, id", (item_id,))]
        return {"video_id": v["id"], "path": v["path"], "sha256": v["sha256"], "duration_s": v["duration_s"],
                "segments": _segments(db, item_id), "tracks": tracks, "fps": float(self.cfg["faces"]["fps"]),
                "cache_key": self.cache_key(db, item_id)}

    def load(self) -> None:
        from .. import models

        c = self.cfg["asd"]
        self.model_name = c["model"]
        self.net = None
        dev = _device(self.device)
        if self.model_name == "light-asd":
            self.net = _asd().load_light_asd(self._light_asd_path(models, c["weights"]), dev)
        elif self.model_name == "talknet":
            self.net = _asd().load_talknet(models.ensure("talknet", self.cfg), dev)
        elif self.model_name != "sync":
            raise ModelMissingError(f"[asd] model = {self.model_name!r}: use light-asd, talknet or sync")
        self.protocol = c["protocol"]
        self.precision = _asd().resolve_precision(c["precision"], dev)

    def _light_asd_path(self, models, weights: str) -> Path:
        # Weights known to the model registry are fetched/checked there; others are a local file.
        for m in models.REGISTRY.values():
            if m.stage == "asd" and any(f.relpath == weights for f in m.files):
                return models.ensure(m.id, self.cfg)
        return _asd().resolve_local_weights(self.project.models_dir, weights)

    def process(self, task: dict[str, Any]) -> dict[str, Any]:
        from ..audio.stages import ensure_audio
        from ..media import read_audio

        fps = float(task["fps"])
        path = task["path"]
        tracks = {tid: _TrackGeometry(boxes, fps) for tid, boxes in task["tracks"]}
        audio_path = ensure_audio(self.project, path, task["sha256"], stereo44=False)["mix16k"] if tracks else None
        stats = DecodeStats()
        results = []
        # One segment at a time (each <= [segments] max_s): memory stays bounded whatever the
        # video length; only the frames inside the segment are decoded.
        for seg in task["segments"]:
            a, b = float(seg[1]), float(seg[2])
            ks = grid_indices(a, b, fps)
            active = {tid: g for tid, g in tracks.items() if len(ks) and g.first <= ks[-1] and g.last >= ks[0]}
            crops: dict[int, dict[int, np.ndarray]] = {tid: {} for tid in active}
            if active:
                for fr in iter_frames(path, [(a, b)], fps, fmt="gray", stats=stats):
                    for tid, g in active.items():
                        if g.first <= fr.index <= g.last:
                            crops[tid][fr.index] = _asd().crop_face(fr.image, *g.crop_geometry(fr.index, fr.scale))
            spans, inputs = {}, []
            for tid in active:
                have = sorted(crops[tid])
                if len(have) < MIN_ASD_FRAMES:
                    continue
                k0, k1 = have[0], have[-1]
                # int16 scale, as TalkNet reads its wav files (the MFCC energy term depends on it)
                audio = read_audio(audio_path, k0 / fps, (k1 + 1) / fps) * 32768.0
                spans[tid] = (k0, k1)
                inputs.append((_fill(crops[tid], k0, k1), audio))
            del crops
            scores = dict(zip(spans, self._score(inputs)))
            bbox = {tid: tracks[tid].median_box(*spans[tid]) for tid in scores}
            results.append(_decide(seg, scores, bbox, self.cfg["asd"]))
        return {"segments": results, "model": self.model_name, "frames": stats.frames, "corrupt_frames": stats.corrupt,
                "protocol": None if self.model_name == "sync" else self.protocol,
                "precision": None if self.model_name == "sync" else self.precision}

    def _score(self, inputs: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
        """Mean speaking score of each (crops, audio) track of one segment."""
        if self.model_name == "sync":
            return [_asd().sync_score(faces, samples, 16000) for faces, samples in inputs]
        # Light-ASD and TalkNet share inputs, interface and the scoring protocols.
        logits = _asd().score_tracks(self.net, [(f, _asd().mfcc(a, 16000)) for f, a in inputs],
                                      protocol=self.protocol, precision=self.precision, device=_device(self.device))
        return [float(np.mean(x)) for x in logits]

    def commit(self, db, task: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        """Write every segment's speaker fields; return the stage_state info (the runner stores it)."""
        vid = task["video_id"]
        counts: dict[str, int] = {}
        keep = ",".join("?" * len(ASD_STATUSES))
        for r in result["segments"]:
            db.conn.execute(
                "UPDATE segments SET speaker_track_id=?, speaker_bbox_json=?, asd_score=?,"
                f" status=CASE WHEN status IN ({keep}) THEN ? ELSE status END WHERE id=? AND video_id=?",
                (r["speaker_track_id"], json.dumps(r["bbox"]) if r["bbox"] else None, r["score"],
                 *ASD_STATUSES, r["status"], r["id"], vid),
            )
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        return {"model": result["model"], "protocol": result["protocol"], "precision": result["precision"],
                "statuses": counts, "frames": result["frames"], "corrupt_frames": result["corrupt_frames"],
                "track_scores": {str(r["id"]): r["scores"] for r in result["segments"]}}


def _decide(seg: list, scores: dict[int, float], bbox: dict[int, list], cfg: dict) -> dict:
    """Pick the speaker of one segment from its tracks' scores and name the outcome."""
    out = {"id": seg[0], "speaker_track_id": None, "bbox": None, "score": None, "status": "no_face",
           "scores": {str(k): round(v, 4) for k, v in scores.items()}}
    if not scores:
        return out
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    best_id, best = ranked[0]
    out.update(speaker_track_id=best_id, bbox=bbox[best_id], score=round(best, 4))
    lo, margin = float(cfg["min_score"]), float(cfg["multi_speaker_margin"])
    if best < lo:
        out["status"] = "low_asd"
    elif len(ranked) > 1 and ranked[1][1] >= lo and best - ranked[1][1] <= margin:
        out["status"] = "multi_speaker"
    else:
        out["status"] = "ok"
    return out


def _fill(crops: dict[int, np.ndarray], k0: int, k1: int) -> np.ndarray:
    """Crops for every frame k0..k1; a frame the decoder lost repeats the previous one."""
    seq, last = [], crops[k0]
    for k in range(k0, k1 + 1):
        last = crops.get(k, last)
        seq.append(last)
    return np.stack(seq)


class _TrackGeometry:
    """A stored track on the frame grid, with TalkNet's smoothed crop geometry."""

    def __init__(self, boxes: list, fps: float):
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
        self.index = np.rint(b[:, 0] * fps).astype(int)
        self.boxes = b[:, 1:]
        self.first, self.last = int(self.index[0]), int(self.index[-1])
        self.geom = _asd().smooth_track_boxes(self.boxes)

    def _row(self, k: int) -> int:
        return int(np.clip(np.searchsorted(self.index, k), 0, len(self.index) - 1))

    def crop_geometry(self, k: int, scale: float) -> tuple[float, float, float]:
        cx, cy, s = self.geom[self._row(k)]
        return cx / scale, cy / scale, s / scale

    def median_box(self, k0: int, k1: int) -> list[float]:
        sel = self.boxes[(self.index >= k0) & (self.index <= k1)]
        return [round(float(x), 1) for x in np.median(sel, axis=0)]

"""The two vision stages (segment scope): ``faces`` (detect + track) and ``asd`` (who speaks).

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

Both stages work per segment (``scope = "segment"``), so a long video streams: a segment
whose faces are tracked goes on to ``asd`` and then to ``emotion`` while the rest of the
video is still being detected, and two workers share one video. Each segment's tracks cover
the segment plus ``[faces] margin_s``; a face on screen across segments is one track piece per
segment (``tracks.segment_id``), joined again by ``tracks.link_pieces`` where a face
identity is needed (speakers, the review view). ``segments.faces_key`` and ``asd_key`` say
what each segment was computed under; a stale or missing key is pending. When no segment
of a video is pending the runner records the video's ``faces`` and ``asd`` stage_state.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .. import store
from ..stage import ModelMissingError, Stage, StageError, key_of
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


_SEGMENT_COLS = "id, video_id, start_s, end_s, status, faces_key, asd_key"


def _segment_rows(db, *, video_ids=None, segment_ids=None) -> list[dict]:
    """The vision columns of the segments of these videos (or these segments), in time order."""
    if segment_ids is not None:
        where, arg = "id IN (SELECT value FROM json_each(?))", json.dumps([int(s) for s in segment_ids])
    elif video_ids is not None:
        where, arg = "video_id IN (SELECT value FROM json_each(?))", json.dumps([int(v) for v in video_ids])
    else:
        where, arg = "1", None
    return store.rows(db, f"SELECT {_SEGMENT_COLS} FROM segments WHERE {where} ORDER BY video_id, start_s, id",
                      () if arg is None else (arg,))


def _segment_row(db, segment_id: int) -> dict:
    rows = _segment_rows(db, segment_ids=[segment_id])
    if not rows:
        raise StageError(f"segment {segment_id}: no longer in the project (segments were rebuilt); run again")
    return rows[0]


def _segment_key(video_key: str, seg: dict) -> str:
    """The faces key of one segment: the video's faces key (config, file, segmentation) and its bounds."""
    return key_of(video_key, f"{float(seg['start_s']):.3f}", f"{float(seg['end_s']):.3f}")


def _device(device: str) -> str:
    return device if device and device != "auto" else "cpu"


# ---------------------------------------------------------------------------------------
class FacesStage(Stage):
    """Detect faces in one segment's frames (+ margin) and link them into that segment's tracks."""

    name = "faces"
    scope = "segment"
    video_state = True
    requires = ("segments",)
    config_sections = ("faces",)

    # ---- driver side -------------------------------------------------------------------
    def _stale(self, db, rows: list[dict]) -> list[int]:
        vkeys: dict[int, str] = {}
        out = []
        for r in rows:
            if r["video_id"] not in vkeys:
                vkeys[r["video_id"]] = self.cache_key(db, r["video_id"])
            if r["faces_key"] != _segment_key(vkeys[r["video_id"]], r):
                out.append(r["id"])
        return out

    def pending(self, db, video_ids=None) -> list[int]:
        return self._stale(db, _segment_rows(db, video_ids=video_ids))

    def pending_segments(self, db, video_id: int, segment_ids: list[int]) -> list[int]:
        return self._stale(db, _segment_rows(db, segment_ids=segment_ids))

    def done_count(self, db) -> int:
        return db.conn.execute("SELECT COUNT(*) FROM segments WHERE faces_key IS NOT NULL").fetchone()[0]

    def video_info(self, db, video_id: int) -> dict[str, Any]:
        """The video's segments together: frames, detections, cuts, corrupt packets, warnings."""
        info: dict[str, Any] = {"segments": 0, "frames": 0, "detected_frames": 0, "corrupt_frames": 0,
                                "scene_cuts": [], "detector": None, "warnings": []}
        for (raw,) in db.conn.execute("SELECT faces_json FROM segments WHERE video_id=? AND faces_key IS NOT NULL"
                                      " ORDER BY start_s, id", (video_id,)):
            r = json.loads(raw or "{}")
            info["segments"] += 1
            for k in ("frames", "detected_frames", "corrupt_frames"):
                info[k] += int(r.get(k) or 0)
            info["scene_cuts"] = sorted(set(info["scene_cuts"]) | set(r.get("scene_cuts") or []))
            info["detector"] = r.get("detector") or info["detector"]
            info["warnings"] += [w for w in r.get("warnings") or [] if w not in info["warnings"]]
        info["tracks"] = db.conn.execute("SELECT COUNT(*) FROM tracks WHERE video_id=?", (video_id,)).fetchone()[0]
        if info["corrupt_frames"]:
            name = Path(_video_row(db, video_id)["path"]).name
            info["warnings"].append(
                f"{info['corrupt_frames']} corrupt video packets skipped during face detection in {name}; faces "
                "there are interpolated or missing - re-encode the file with ffmpeg to recover them")
        return info

    def prepare(self, db, item_id: int) -> dict[str, Any]:
        seg = _segment_row(db, item_id)
        v = _video_row(db, seg["video_id"])
        return {"video_id": v["id"], "segment_id": seg["id"], "path": v["path"], "duration_s": v["duration_s"],
                "has_video": v["has_video"], "start_s": seg["start_s"], "end_s": seg["end_s"],
                "faces_key": _segment_key(self.cache_key(db, v["id"]), seg)}

    def commit(self, db, task: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        """Replace the segment's tracks (and a video's tracks from before tracking per segment)."""
        vid, sid = task["video_id"], task["segment_id"]
        db.conn.execute("DELETE FROM tracks WHERE segment_id=? OR (video_id=? AND segment_id IS NULL)", (sid, vid))
        for t in result["tracks"]:
            db.conn.execute("INSERT INTO tracks (video_id, segment_id, start_s, end_s, boxes_json) VALUES (?,?,?,?,?)",
                            (vid, sid, t["start_s"], t["end_s"], json.dumps(t["boxes"], separators=(",", ":"))))
        seen = {k: result[k] for k in ("frames", "detected_frames", "corrupt_frames", "scene_cuts", "detector", "warnings")}
        seen["tracks"] = len(result["tracks"])
        # The segment's speaker (if any) pointed at a replaced track: asd runs it again.
        db.conn.execute("UPDATE segments SET faces_key=?, faces_json=?, asd_key=NULL WHERE id=?",
                        (task["faces_key"], json.dumps(seen, separators=(",", ":")), sid))
        return seen

    # ---- worker side -------------------------------------------------------------------
    def load(self) -> None:
        c = self.cfg["faces"]
        self.detector, self.warnings = faces_mod.make_detector(c["detector"], self.cfg, device=_device(self.device),
                                                               threads=self.cpu_threads)

    def process(self, task: dict[str, Any]) -> dict[str, Any]:
        c = self.cfg["faces"]
        fps = float(c["fps"])
        path = task["path"]
        none = {"tracks": [], "frames": 0, "detected_frames": 0, "corrupt_frames": 0, "scene_cuts": [],
                "detector": self.detector.name, "warnings": list(self.warnings)}
        if not task.get("has_video", 1):
            return none  # an audio-only file: no faces (asd calls its segments no_face)
        if not Path(path).is_file():
            raise StageError(f"{path}: video file is missing; restore it or remove the video from the project")
        spans = merge_spans([(task["start_s"], task["end_s"])], float(c["margin_s"]), task.get("duration_s"))
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
        # and on the span's last frame. The tracker interpolates the boxes in between. The
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
        where = f"{path} ({task['start_s']:.2f}-{task['end_s']:.2f} s)"
        if stats.frames == 0:
            if stats.corrupt:
                raise StageError(f"{where}: no decodable video frames in this segment ({stats.corrupt} corrupt "
                                 "packets); re-encode the file with ffmpeg")
            return none  # the picture ends before the sound: nothing on screen to track
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
        if stats.corrupt:
            log.warning("%s: %d corrupt video packets skipped during face detection; faces there are interpolated "
                        "or missing - re-encode the file with ffmpeg to recover them", where, stats.corrupt)
        return {"tracks": out, "frames": stats.frames, "detected_frames": len(detections),
                "corrupt_frames": stats.corrupt, "scene_cuts": [round(k / fps, 3) for k in sorted(cuts)],
                "detector": self.detector.name, "warnings": list(self.warnings), "width": w, "height": h}


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
    """Score every face track of one segment and pick the active speaker."""

    name = "asd"
    scope = "segment"
    video_state = True
    requires = ("faces",)
    config_sections = ("asd",)

    # ---- driver side -------------------------------------------------------------------
    def _asd_key(self, faces_key: str) -> str:
        return key_of(self.name, self.config_json(), faces_key)

    def _stale(self, rows: list[dict]) -> list[int]:
        # A segment is ready once faces tracked it; its key follows the faces key it read.
        return [r["id"] for r in rows if r["faces_key"] and r["asd_key"] != self._asd_key(r["faces_key"])]

    def pending(self, db, video_ids=None) -> list[int]:
        return self._stale(_segment_rows(db, video_ids=video_ids))

    def pending_segments(self, db, video_id: int, segment_ids: list[int]) -> list[int]:
        return self._stale(_segment_rows(db, segment_ids=segment_ids))

    def done_count(self, db) -> int:
        return db.conn.execute("SELECT COUNT(*) FROM segments WHERE asd_key IS NOT NULL").fetchone()[0]

    def video_info(self, db, video_id: int) -> dict[str, Any]:
        c = self.cfg["asd"]
        statuses: dict[str, int] = {}
        scores, frames, corrupt, precision = {}, 0, 0, None
        for sid, raw in db.conn.execute("SELECT id, asd_json FROM segments WHERE video_id=? AND asd_key IS NOT NULL"
                                        " ORDER BY start_s, id", (video_id,)):
            r = json.loads(raw or "{}")
            statuses[r.get("status")] = statuses.get(r.get("status"), 0) + 1
            scores[str(sid)] = r.get("scores", {})
            frames += r.get("frames", 0)
            corrupt += r.get("corrupt_frames", 0)
            precision = r.get("precision") or precision
        sync = c["model"] == "sync"
        return {"model": c["model"], "protocol": None if sync else c["protocol"], "precision": precision,
                "statuses": statuses, "frames": frames, "corrupt_frames": corrupt, "track_scores": scores}

    def prepare(self, db, item_id: int) -> dict[str, Any]:
        seg = _segment_row(db, item_id)
        v = _video_row(db, seg["video_id"])
        tracks = [[r[0], json.loads(r[1])] for r in db.conn.execute(
            "SELECT id, boxes_json FROM tracks WHERE segment_id=? ORDER BY start_s, id", (item_id,))]
        return {"video_id": v["id"], "path": v["path"], "sha256": v["sha256"], "duration_s": v["duration_s"],
                "segment": [seg["id"], seg["start_s"], seg["end_s"], seg["status"]], "tracks": tracks,
                "fps": float(self.cfg["faces"]["fps"]), "asd_key": self._asd_key(seg["faces_key"] or "")}

    def commit(self, db, task: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        """Write the segment's speaker fields and what ASD saw."""
        r = result["segment"]
        keep = ",".join("?" * len(ASD_STATUSES))
        seen = {"status": r["status"], "scores": r["scores"], "frames": result["frames"],
                "corrupt_frames": result["corrupt_frames"], "precision": result["precision"]}
        db.conn.execute(
            "UPDATE segments SET speaker_track_id=?, speaker_bbox_json=?, asd_score=?, asd_key=?, asd_json=?,"
            f" status=CASE WHEN status IN ({keep}) THEN ? ELSE status END WHERE id=? AND video_id=?",
            (r["speaker_track_id"], json.dumps(r["bbox"]) if r["bbox"] else None, r["score"], task["asd_key"],
             json.dumps(seen, separators=(",", ":")), *ASD_STATUSES, r["status"], r["id"], task["video_id"]),
        )
        return seen

    # ---- worker side -------------------------------------------------------------------
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
        if self.cpu_threads and dev == "cpu":
            import torch

            torch.set_num_threads(self.cpu_threads)  # process-wide: the runner gives every CPU worker the same

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
        seg = task["segment"]
        tracks = {tid: _TrackGeometry(boxes, fps) for tid, boxes in task["tracks"] if boxes}
        stats = DecodeStats()
        a, b = float(seg[1]), float(seg[2])
        ks = grid_indices(a, b, fps)
        active = {tid: g for tid, g in tracks.items() if len(ks) and g.first <= ks[-1] and g.last >= ks[0]}
        crops: dict[int, dict[int, np.ndarray]] = {tid: {} for tid in active}
        # Only the frames inside the segment (<= [segments] max_s) are decoded: memory stays
        # bounded whatever the video length.
        if active:
            for fr in iter_frames(path, [(a, b)], fps, fmt="gray", stats=stats):
                for tid, g in active.items():
                    if g.first <= fr.index <= g.last:
                        crops[tid][fr.index] = _asd().crop_face(fr.image, *g.crop_geometry(fr.index, fr.scale))
        spans, inputs = {}, []
        audio_path = None
        for tid in active:
            have = sorted(crops[tid])
            if len(have) < MIN_ASD_FRAMES:
                continue
            if audio_path is None:
                audio_path = ensure_audio(self.project, path, task["sha256"], stereo44=False)["mix16k"]
            k0, k1 = have[0], have[-1]
            # int16 scale, as TalkNet reads its wav files (the MFCC energy term depends on it)
            audio = read_audio(audio_path, k0 / fps, (k1 + 1) / fps) * 32768.0
            spans[tid] = (k0, k1)
            inputs.append((_fill(crops[tid], k0, k1), audio))
        del crops
        scores = dict(zip(spans, self._score(inputs)))
        bbox = {tid: tracks[tid].median_box(*spans[tid]) for tid in scores}
        return {"segment": _decide(seg, scores, bbox, self.cfg["asd"]), "model": self.model_name,
                "frames": stats.frames, "corrupt_frames": stats.corrupt,
                "protocol": None if self.model_name == "sync" else self.protocol,
                "precision": None if self.model_name == "sync" else self.precision}

    def _score(self, inputs: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
        """Mean speaking score of each (crops, audio) track of one segment."""
        if not inputs:
            return []
        if self.model_name == "sync":
            return [_asd().sync_score(faces, samples, 16000) for faces, samples in inputs]
        # Light-ASD and TalkNet share inputs, interface and the scoring protocols.
        logits = _asd().score_tracks(self.net, [(f, _asd().mfcc(a, 16000)) for f, a in inputs],
                                      protocol=self.protocol, precision=self.precision, device=_device(self.device))
        return [float(np.mean(x)) for x in logits]


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

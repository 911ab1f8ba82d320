"""The ``speakers`` stage (video scope, after ``asd``): a speaker id for every segment.

Worker side: each segment's audio (the separated vocals when the ``separate`` stage ran,
else the 16 kHz mix) through the GE2E speaker encoder, then clustering within the video
with the ASD face tracks as extra evidence (see ``cluster.py``). Driver side (``commit``):
the video's clusters are linked to the speakers already in the project, so one voice keeps
one id across videos; segments a person moved in the app (``speaker_source = 'user'``) stay
where they were put.

Writes ``segment_voices`` (one embedding per segment), ``segments.speaker_id /
speaker_source / speaker_score`` (cosine of the segment's voice to its cluster centroid) and
``speakers`` rows (centroid embeddings); empty auto-named speakers are removed.
"""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from .. import store
from ..stage import Stage, StageError
from . import cluster as cl
from . import table
from ..vision.tracks import link_pieces
from .encoder import MODEL_NAME, RATE, SpeakerEncoder

OPTIONAL = ("separate", "asd")  # read when done (vocals, face tracks); their keys join ours
# A correction made in the app while this video was being processed wins over the run.
USER_KEPT_UPDATE = "UPDATE segments SET {sets} WHERE id=? AND COALESCE(speaker_source, '') != 'user'"


def _b64(vec: np.ndarray) -> str:
    return base64.b64encode(table.pack(vec)).decode("ascii")


def _unb64(text: str) -> np.ndarray:
    return table.unpack(base64.b64decode(text))


class SpeakersStage(Stage):
    name = "speakers"
    scope = "video"
    requires = ("segments",)
    config_sections = ("speakers",)
    # The LSTM is ~95% of the time (14x real time on one CPU thread): with --devices cuda:N the
    # runner gives each instance a device, and on Ray a quarter GPU by default.
    num_gpus = 0.25

    # ---- driver side -------------------------------------------------------------------
    def cache_key(self, db, video_id: int) -> str:
        parts = [super().cache_key(db, video_id)]
        for dep in OPTIONAL:
            st = store.get_stage_state(db, video_id, dep)
            parts.append(st["cache_key"] or "" if st and st["status"] == "done" else "")
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]

    def prepare(self, db, item_id: int) -> dict[str, Any]:
        v = store.rows(db, "SELECT id, path, sha256 FROM videos WHERE id=?", (item_id,))
        if not v:
            raise StageError(f"video {item_id}: not in the project; add it with mikupal add")
        v = v[0]
        c = self.cfg["speakers"]
        sep = store.get_stage_state(db, item_id, "separate")
        vocals = (sep or {}).get("info", {}).get("vocals16k") if sep and sep["status"] == "done" else None
        mix = (sep or {}).get("info", {}).get("mix16k") if sep else None
        audio = "vocals" if c["audio"] == "vocals" and vocals and vocals != mix else "mix"
        model = f"{MODEL_NAME}:{audio}"
        asd = store.get_stage_state(db, item_id, "asd")
        faces = bool(c["use_faces"]) and asd is not None and asd["status"] == "done"
        # Track pieces (one per segment) joined into faces: a face's segments start together.
        face_of, spans = (self._faces(db, item_id) if faces else ({}, {}))
        segs = []
        for r in store.rows(db, "SELECT s.id, s.start_s, s.end_s, s.status, s.speaker_track_id, s.speaker_source,"
                                " v.embedding, v.model FROM segments s LEFT JOIN segment_voices v ON v.segment_id = s.id"
                                " WHERE s.video_id=? ORDER BY s.start_s, s.id", (item_id,)):
            segs.append({
                "id": r["id"], "start_s": r["start_s"], "end_s": r["end_s"],
                "track_id": face_of.get(r["speaker_track_id"]) if faces and r["status"] == "ok" else None,
                "any_track_id": face_of.get(r["speaker_track_id"]) if faces else None,
                "locked": r["speaker_source"] == "user",
                # an embedding from an earlier run with the same encoder and audio is reused
                "embedding": base64.b64encode(r["embedding"]).decode("ascii") if r["embedding"] and r["model"] == model else None,
            })
        return {"video_id": item_id, "path": v["path"], "sha256": v["sha256"], "audio": audio,
                "audio_path": vocals if audio == "vocals" else None, "model": model, "segments": segs,
                "track_spans": spans, "cache_key": self.cache_key(db, item_id)}

    def _faces(self, db, video_id: int) -> tuple[dict[int, int], dict[str, list[float]]]:
        """Track id -> face id, and each face's time on screen (for the cannot-link rule)."""
        fc = self.cfg["faces"]
        rows = store.rows(db, "SELECT id, segment_id, start_s, end_s, boxes_json FROM tracks WHERE video_id=?", (video_id,))
        face_of = link_pieces(({"id": r["id"], "segment_id": r["segment_id"], "boxes": json.loads(r["boxes_json"])}
                               for r in rows), float(fc["fps"]), iou_threshold=float(fc["iou_threshold"]),
                              max_gap_s=int(fc["max_gap_frames"]) / float(fc["fps"]))
        spans: dict[str, list[float]] = {}
        for r in rows:
            f = str(face_of[r["id"]])
            lo, hi = spans.get(f, [r["start_s"], r["end_s"]])
            spans[f] = [min(lo, r["start_s"]), max(hi, r["end_s"])]
        return face_of, spans

    # ---- worker side -------------------------------------------------------------------
    def load(self) -> None:
        dev = self.device if self.device and self.device != "auto" else "cpu"
        self.encoder = SpeakerEncoder(self.project.models_dir, dev)

    def process(self, task: dict[str, Any]) -> dict[str, Any]:
        from ..audio.stages import ensure_audio
        from ..media import read_audio

        c = self.cfg["speakers"]
        path = task["audio_path"]
        if task["segments"] and not (path and Path(path).is_file()):
            if task["audio"] == "vocals":
                raise StageError(f"{task['path']}: separated audio {path} is gone; re-run stage separate")
            path = ensure_audio(self.project, task["path"], task["sha256"], stereo44=False)["mix16k"]
        voices: dict[str, dict] = {}
        segs = []
        for s in task["segments"]:
            if s["embedding"]:
                vec = _unb64(s["embedding"])
            else:
                vec, voiced = self.encoder.embed(read_audio(path, s["start_s"], s["end_s"]), float(c["min_voiced_s"]))
                if vec is not None:
                    voices[str(s["id"])] = {"e": _b64(vec), "voiced_s": round(voiced, 3)}
            if vec is not None:
                vec = cl.normalise(vec.astype(np.float64))
            if not s["locked"]:
                segs.append(cl.Segment(s["id"], s["start_s"], s["end_s"], vec, s["track_id"]))
        spans = {int(k): tuple(v) for k, v in task["track_spans"].items()}
        clusters = cl.cluster_video(segs, cluster_threshold=float(c["cluster_threshold"]),
                                    face_voice_min=float(c["face_voice_min"]), track_spans=spans)
        return {"voices": voices, "clusters": clusters, "model": task["model"]}

    # ---- driver side: link to the project's speakers and write --------------------------
    def commit(self, db, task: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        vid, model = task["video_id"], result["model"]
        c = self.cfg["speakers"]
        for sid, v in result["voices"].items():
            db.conn.execute("INSERT OR REPLACE INTO segment_voices (segment_id, model, embedding, voiced_s) VALUES (?,?,?,?)",
                            (int(sid), model, base64.b64decode(v["e"]), v["voiced_s"]))
        emb = {int(r[0]): table.unpack(r[1]) for r in db.conn.execute(
            "SELECT v.segment_id, v.embedding FROM segment_voices v JOIN segments s ON s.id = v.segment_id"
            " WHERE s.video_id=? AND v.model=?", (vid, model))}
        old = [r[0] for r in db.conn.execute(
            "SELECT DISTINCT speaker_id FROM segments WHERE video_id=? AND speaker_id IS NOT NULL", (vid,))]
        db.conn.execute("UPDATE segments SET speaker_id=NULL, speaker_source=NULL, speaker_score=NULL"
                        " WHERE video_id=? AND COALESCE(speaker_source, '') != 'user'", (vid,))
        # Candidates keep their stored centroids (this video's earlier share included), so a
        # re-run with the same answer keeps the same ids.
        speakers = {int(r[0]): cl.normalise(table.unpack(r[1]).astype(np.float64)) for r in db.conn.execute(
            "SELECT id, embedding FROM speakers WHERE embedding IS NOT NULL")}
        clusters = [[s for s in members if s in emb] for members in result["clusters"]]
        clusters = [m for m in clusters if m]
        cents = [cl.centroid(np.stack([emb[s] for s in m])) for m in clusters]
        links = cl.link_clusters(cents, speakers, link_threshold=float(c["link_threshold"]))
        seg_speaker: dict[int, int] = {}
        new = 0
        for members, cent, link in zip(clusters, cents, links):
            spk = link
            if spk is None:
                spk = table.new_speaker(db, embedding=cent, model=model)
                new += 1
            for s in members:
                seg_speaker[s] = spk
                db.conn.execute(USER_KEPT_UPDATE.format(sets="speaker_id=?, speaker_source='auto', speaker_score=?"),
                                (spk, round(float(cl.normalise(emb[s].astype(np.float64)) @ cent), 4), s))
        # A segment with no usable voice follows its face: the speaker of its track's other segments.
        by_track: dict[int, int] = {}
        for s in task["segments"]:
            if s["any_track_id"] is not None and s["id"] in seg_speaker:
                by_track.setdefault(s["any_track_id"], seg_speaker[s["id"]])
        by_face = 0
        for s in task["segments"]:
            if not s["locked"] and s["id"] not in seg_speaker and by_track.get(s["any_track_id"]) is not None:
                db.conn.execute(USER_KEPT_UPDATE.format(sets="speaker_id=?, speaker_source='auto'"),
                                (by_track[s["any_track_id"]], s["id"]))
                seg_speaker[s["id"]] = by_track[s["any_track_id"]]
                by_face += 1
        table.refresh(db, set(old) | set(seg_speaker.values()))
        locked = sum(1 for s in task["segments"] if s["locked"])
        return {"model": model, "audio": task["audio"], "segments": len(task["segments"]),
                "embedded": len(result["voices"]), "reused": sum(1 for s in task["segments"] if s["embedding"]),
                "clusters": len(clusters), "linked": sum(1 for x in links if x is not None), "new_speakers": new,
                "by_face": by_face, "kept_user": locked,
                "unassigned": len(task["segments"]) - len(seg_speaker) - locked,
                "thresholds": {k: float(c[k]) for k in ("cluster_threshold", "link_threshold", "face_voice_min")}}

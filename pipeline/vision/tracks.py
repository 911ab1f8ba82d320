"""Face tracks as stored, without a detector: box overlap and linking tracks into faces.

The ``faces`` stage tracks each segment on its own (segment scope), so one face that stays on
screen across several segments is stored as one track piece per segment. ``link_pieces``
joins those pieces back into faces: two pieces of different segments are one face when they
overlap in time (the segments' margins) and their boxes at the shared frames overlap, or when
one starts within ``max_gap_s`` of the other's end where the other's last box overlaps its
first. numpy only: the driver side (``speakers`` prepare, the review view) uses it.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between boxes a (N, 4+) and b (M, 4+)."""
    a, b = np.asarray(a, float)[:, :4], np.asarray(b, float)[:, :4]
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


class _Piece:
    def __init__(self, tid: int, segment_id, boxes, fps: float):
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
        self.id, self.segment_id = int(tid), segment_id
        self.frames = np.rint(b[:, 0] * fps).astype(np.int64)
        self.boxes = b[:, 1:5]
        self.start = float(b[0, 0]) if len(b) else 0.0
        self.end = float(b[-1, 0]) if len(b) else 0.0


def _same_face(p: _Piece, q: _Piece, iou_threshold: float) -> bool:
    common, ip, iq = np.intersect1d(p.frames, q.frames, assume_unique=True, return_indices=True)
    if len(common):
        ious = [box_iou(p.boxes[i:i + 1], q.boxes[j:j + 1])[0, 0] for i, j in zip(ip, iq)]
        return float(np.mean(ious)) >= iou_threshold
    first, second = (p, q) if p.end <= q.start else (q, p)
    return float(box_iou(first.boxes[-1:], second.boxes[:1])[0, 0]) >= iou_threshold


def link_pieces(tracks: Iterable[dict], fps: float, *, iou_threshold: float = 0.3,
                max_gap_s: float = 0.4) -> dict[int, int]:
    """Track id -> face id (the smallest track id of its face) for the tracks of one video.

    Each track is ``{"id", "boxes": [[t, x1, y1, x2, y2], ...], "segment_id"}``; pieces of
    the same segment are never joined (the tracker already decided they are two faces).
    """
    tracks = list(tracks)
    parent = {int(t["id"]): int(t["id"]) for t in tracks}  # a track without boxes is a face of its own
    pieces = sorted((_Piece(t["id"], t.get("segment_id"), t["boxes"], fps) for t in tracks if t["boxes"]),
                    key=lambda p: (p.start, p.id))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, p in enumerate(pieces):
        for q in pieces[i + 1:]:
            if q.start > p.end + max_gap_s:
                break  # sorted by start: no later piece comes close enough
            if p.segment_id is not None and p.segment_id == q.segment_id:
                continue
            if root(p.id) != root(q.id) and _same_face(p, q, iou_threshold):
                a, b = root(p.id), root(q.id)
                parent[max(a, b)] = min(a, b)
    return {tid: root(tid) for tid in parent}

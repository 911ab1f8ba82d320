"""Joining a face's track pieces across segments (``tracks.link_pieces``), on hand-made boxes."""
from __future__ import annotations

from mikupal.vision.tracks import link_pieces

FPS = 25.0


def piece(tid: int, seg: int, t0: float, t1: float, box=(100, 100, 200, 200), dx: float = 0.0) -> dict:
    """A track piece from t0 to t1 (inclusive, on the 25 fps grid), its box moving dx px per frame."""
    n = int(round((t1 - t0) * FPS)) + 1
    x1, y1, x2, y2 = box
    return {"id": tid, "segment_id": seg,
            "boxes": [[round(t0 + k / FPS, 3), x1 + dx * k, y1, x2 + dx * k, y2] for k in range(n)]}


def faces(links: dict[int, int]) -> set[frozenset]:
    groups: dict[int, set] = {}
    for tid, face in links.items():
        groups.setdefault(face, set()).add(tid)
    return {frozenset(g) for g in groups.values()}


def test_overlapping_pieces_of_one_face_join_and_two_faces_stay_apart():
    # Segments 1 and 2 overlap from 4.0 to 4.5 s (their margins); two faces side by side.
    tracks = [piece(1, 1, 0.0, 4.5), piece(2, 1, 0.0, 4.5, box=(400, 100, 500, 200)),
              piece(3, 2, 4.0, 9.0), piece(4, 2, 4.0, 9.0, box=(400, 100, 500, 200))]
    assert faces(link_pieces(tracks, FPS)) == {frozenset({1, 3}), frozenset({2, 4})}
    assert link_pieces(tracks, FPS)[3] == 1  # a face is named by its smallest track id


def test_a_short_gap_joins_by_the_boundary_boxes_a_long_one_does_not():
    near = [piece(1, 1, 0.0, 2.0), piece(2, 2, 2.2, 4.0)]  # 0.2 s apart, same place
    far = [piece(1, 1, 0.0, 2.0), piece(2, 2, 3.0, 4.0)]  # 1 s apart
    moved = [piece(1, 1, 0.0, 2.0), piece(2, 2, 2.2, 4.0, box=(300, 100, 400, 200))]  # no overlap at the seam
    assert faces(link_pieces(near, FPS, max_gap_s=0.4)) == {frozenset({1, 2})}
    assert faces(link_pieces(far, FPS, max_gap_s=0.4)) == {frozenset({1}), frozenset({2})}
    assert faces(link_pieces(moved, FPS, max_gap_s=0.4)) == {frozenset({1}), frozenset({2})}


def test_pieces_of_one_segment_never_join():
    # The tracker split these (e.g. at a scene cut that left the framing unchanged): keep them apart.
    tracks = [piece(1, 7, 0.0, 2.0), piece(2, 7, 2.04, 4.0)]
    assert faces(link_pieces(tracks, FPS)) == {frozenset({1}), frozenset({2})}


def test_a_face_across_three_segments_is_one_face_whatever_the_order():
    a, b, c = piece(5, 1, 0.0, 3.0, dx=1.0), piece(9, 2, 2.6, 6.0), piece(2, 3, 5.6, 8.0)
    b["boxes"] = [[t, x1 + 78, y1, x2 + 78, y2] for t, x1, y1, x2, y2 in b["boxes"]]  # where a has moved to
    c["boxes"] = [[t, x1 + 78, y1, x2 + 78, y2] for t, x1, y1, x2, y2 in c["boxes"]]
    for order in ([a, b, c], [c, a, b], [b, c, a]):
        assert link_pieces(order, FPS) == {5: 2, 9: 2, 2: 2}


def test_boxes_that_overlap_too_little_at_shared_frames_stay_apart():
    # IoU of two 100 px boxes 60 px apart: 40*100 / (2*10000 - 4000) = 0.25 < 0.3
    tracks = [piece(1, 1, 0.0, 4.5), piece(2, 2, 4.0, 8.0, box=(160, 100, 260, 200))]
    assert faces(link_pieces(tracks, FPS, iou_threshold=0.3)) == {frozenset({1}), frozenset({2})}
    assert faces(link_pieces(tracks, FPS, iou_threshold=0.2)) == {frozenset({1, 2})}


def test_a_track_without_boxes_is_a_face_of_its_own():
    assert link_pieces([{"id": 4, "segment_id": None, "boxes": []}, piece(6, 1, 0.0, 1.0)], FPS) == {4: 4, 6: 6}

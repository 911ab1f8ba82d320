"""Who speaks which segment, from voice embeddings and face tracks (pure numpy, no store).

Within one video (`cluster_video`):
1. Segments whose active speaker (ASD, status ``ok``) is the same face track start in one
   group: a face track is one person on screen. A segment whose voice disagrees with the rest
   of its track group (cosine to the group's leave-one-out centroid < ``face_voice_min``)
   leaves it: ASD picked a visible face while someone off screen spoke.
2. Tracks visible at the same instant are two people, so their groups can never merge
   ("cannot-link").
3. Groups merge by average-linkage agglomerative clustering on cosine similarity while the
   best pair's mean pairwise similarity is >= ``cluster_threshold``.

Across videos (`link_clusters`): each video cluster's centroid joins the most similar
project speaker whose centroid is >= ``link_threshold``, one cluster per speaker (a video's
clusters are different people by construction), greedily best pair first; the rest become
new speakers.

Thresholds (GE2E / resemblyzer embeddings, measured on espeak-ng voices here: pairs of
utterances of one voice >= 0.83, of two voices <= 0.79; real speech is noisier): 0.80 within a
video, where segments share recording conditions and one false merge mixes two people in every
export; 0.82 across videos on centroids, which average away per-utterance noise (same-speaker
centroids sit higher than pairs) while cross-speaker centroids do not move up — so a stricter
bar costs little recall and keeps a project-wide false merge, the expensive error, rare.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEG = -np.inf


@dataclass
class Segment:
    id: int
    start_s: float
    end_s: float
    embedding: np.ndarray | None  # L2-normalised, or None (no usable voice)
    track_id: int | None = None  # the ASD-chosen face track when ASD was confident (status ok)


def normalise(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def centroid(vectors: np.ndarray) -> np.ndarray:
    return normalise(np.asarray(vectors, dtype=np.float64).mean(axis=0))


def _track_groups(segs: list[Segment], face_voice_min: float) -> list[list[int]]:
    """Indices grouped by face track (voice-checked); segments without a track stand alone."""
    by_track: dict[int, list[int]] = {}
    groups: list[list[int]] = []
    for i, s in enumerate(segs):
        if s.track_id is not None:
            by_track.setdefault(s.track_id, []).append(i)
        else:
            groups.append([i])
    for members in by_track.values():
        if len(members) < 3:  # two segments: no majority to tell which one ASD got wrong
            keep = members if len(members) == 1 or float(segs[members[0]].embedding @ segs[members[1]].embedding) >= face_voice_min else []
            groups += [keep] if keep else [[m] for m in members]
            continue
        E = np.stack([segs[m].embedding for m in members])
        total = E.sum(axis=0)
        keep, out = [], []
        for k, m in enumerate(members):
            loo = normalise(total - E[k])
            (keep if float(E[k] @ loo) >= face_voice_min else out).append(m)
        groups += ([keep] if keep else []) + [[m] for m in out]
    return groups


def _tracks_cooccur(segs: list[Segment], groups: list[list[int]], track_spans: dict[int, tuple[float, float]]) -> np.ndarray:
    """cannot[i, j]: groups i and j hold segments of two face tracks on screen at the same time."""
    g_tracks = [{segs[m].track_id for m in g if segs[m].track_id is not None} for g in groups]
    n = len(groups)
    cannot = np.zeros((n, n), dtype=bool)
    with_tracks = [i for i in range(n) if g_tracks[i]]
    for x, i in enumerate(with_tracks):
        for j in with_tracks[x + 1:]:
            for a in g_tracks[i]:
                for b in g_tracks[j]:
                    if a != b and a in track_spans and b in track_spans:
                        (a0, a1), (b0, b1) = track_spans[a], track_spans[b]
                        if min(a1, b1) - max(a0, b0) > 0:
                            cannot[i, j] = cannot[j, i] = True
    return cannot


def cluster_video(segs: list[Segment], *, cluster_threshold: float = 0.80, face_voice_min: float = 0.65,
                  track_spans: dict[int, tuple[float, float]] | None = None) -> list[list[int]]:
    """Clusters of segment ids (segments with an embedding only), largest first.

    ``track_spans`` maps face track id -> (start_s, end_s) on screen, for the cannot-link rule.
    """
    voiced = [s for s in segs if s.embedding is not None]
    if not voiced:
        return []
    groups = _track_groups(voiced, face_voice_min)
    cannot = _tracks_cooccur(voiced, groups, track_spans or {})
    E = np.stack([s.embedding for s in voiced]).astype(np.float64)
    # Group-to-group mean pairwise similarity: sum_i sum_j e_i.e_j = (sum_i e_i).(sum_j e_j).
    sums = np.stack([E[g].sum(axis=0) for g in groups])
    sizes = np.array([len(g) for g in groups], dtype=np.float64)
    S = (sums @ sums.T) / np.outer(sizes, sizes)
    S[cannot] = NEG
    np.fill_diagonal(S, NEG)
    _average_linkage(S, sizes, groups, cluster_threshold)
    out = [sorted(voiced[m].id for m in g) for g in groups if g]
    return sorted(out, key=lambda c: (-len(c), min(c)))


def _average_linkage(S: np.ndarray, sizes: np.ndarray, groups: list[list[int]], threshold: float) -> None:
    """Merge groups (in place) while some pair's average-linkage similarity is >= threshold.

    The nearest-neighbour chain: O(n^2) instead of the naive O(n^3), with the same result as
    merging the most similar pair first, because average linkage is reducible (a merged
    group is never more similar to a third than the closer of its two parts). A group whose
    best partner is below the threshold can never reach it later, so it is set aside.
    """
    n = len(groups)
    active = np.ones(n, dtype=bool)
    chain: list[int] = []
    while active.sum() > 1:
        if not chain:
            chain.append(int(np.flatnonzero(active)[0]))
        a = chain[-1]
        row = np.where(active, S[a], NEG)
        row[a] = NEG
        b = int(np.argmax(row))
        if len(chain) > 1 and row[chain[-2]] >= row[b]:
            b = chain[-2]  # ties go back down the chain, so it always ends
        if not np.isfinite(row[b]) or row[b] < threshold:
            active[a] = False  # nothing will ever be close enough: a stays as it is
            chain.pop()
            continue
        if len(chain) > 1 and b == chain[-2]:
            chain.pop(), chain.pop()
            merged = (sizes[a] * S[a] + sizes[b] * S[b]) / (sizes[a] + sizes[b])
            S[a, :] = merged
            S[:, a] = merged
            S[a, a] = NEG
            S[b, :] = NEG
            S[:, b] = NEG
            sizes[a] += sizes[b]
            groups[a] = groups[a] + groups[b]
            groups[b] = []
            active[b] = False
        else:
            chain.append(b)


def link_clusters(centroids: list[np.ndarray], speakers: dict[int, np.ndarray], *,
                  link_threshold: float = 0.82) -> list[int | None]:
    """For each video cluster centroid, the project speaker id it joins, or None (a new speaker)."""
    out: list[int | None] = [None] * len(centroids)
    if not centroids or not speakers:
        return out
    ids = list(speakers)
    S = np.stack(centroids) @ np.stack([speakers[k] for k in ids]).T
    used_c, used_s = set(), set()
    for flat in np.argsort(-S, axis=None):
        c, s = divmod(int(flat), len(ids))
        if S[c, s] < link_threshold:
            break
        if c in used_c or s in used_s:
            continue
        out[c] = ids[s]
        used_c.add(c)
        used_s.add(s)
    return out


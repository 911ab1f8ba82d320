"""The emotion map (paper Fig. 3): t-SNE of the intensity vectors, one point per answer.

Each point's colour blends the label set's category colours weighted by the answer's
intensities, so mixed emotions sit between pure hues; its label is the strongest category.
``emotion_map_points`` gives the GUI the raw points for an interactive view;
``render_emotion_map`` draws the PNG for `mikupal map` and the report.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from . import store, taxonomy

GREY = (0.62, 0.62, 0.62)  # an answer with every intensity at 0


class MapPoint(NamedTuple):
    """One answer on the map; unpacks as (annotation_id, x, y, rgb, label, text)."""

    annotation_id: int
    x: float
    y: float
    rgb: tuple[float, float, float]  # 0..1
    label: str  # strongest category
    text: str  # the utterance's transcript


def _hex_rgb(h: str) -> np.ndarray:
    h = h.lstrip("#")
    return np.array([int(h[i:i + 2], 16) / 255.0 for i in (0, 2, 4)])


def blend_colors(vectors: np.ndarray, colors: list[str]) -> np.ndarray:
    """Rows of intensities -> rows of RGB: the intensity-weighted mean of the category colours."""
    palette = np.stack([_hex_rgb(c) for c in colors])  # categories x 3
    w = np.clip(np.asarray(vectors, dtype=float), 0, None)
    total = w.sum(axis=1, keepdims=True)
    out = np.where(total > 0, (w @ palette) / np.where(total > 0, total, 1), np.array(GREY))
    return np.clip(out, 0, 1)


def embed_2d(vectors: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """t-SNE to 2-D over the distinct vectors; repeats of one answer share its spot, spread
    by a small seeded jitter so they stay visible. Identical inputs make scikit-learn's
    Barnes-Hut t-SNE divide by zero and crash the process, hence the de-duplication.
    Perplexity shrinks for small sets (it must stay below the point count); with fewer than
    four distinct vectors t-SNE is meaningless and they sit on a unit circle."""
    x = np.asarray(vectors, dtype=float)
    if not len(x):
        return np.zeros((0, 2))
    uniq, inverse = np.unique(x, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    n = len(uniq)
    if n < 4:
        ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
        xy = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    else:
        from sklearn.manifold import TSNE

        perp = float(min(perplexity, max(1.0, (n - 1) / 3)))
        xy = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(uniq)
    out = xy[inverse].astype(float)
    if n < len(x):
        span = float(np.ptp(xy, axis=0).max()) or 1.0
        rng = np.random.default_rng(seed)
        dup = np.bincount(inverse)[inverse] > 1
        out[dup] += rng.normal(0, 0.015 * span, (int(dup.sum()), 2))
    return out


def _pick_label_set(db, label_set: str | None) -> str | None:
    if label_set:
        return label_set
    row = db.conn.execute("SELECT label_set FROM annotations GROUP BY label_set ORDER BY COUNT(*) DESC, label_set LIMIT 1").fetchone()
    return row[0] if row else None


def emotion_map_points(db, label_set: str | None = None, run_index: int = 0, perplexity: float = 30.0,
                       seed: int = 0, max_points: int = 5000) -> list[MapPoint]:
    """Points of the emotion map for the answers of one label set (default: the most used)
    and one run index. Above ``max_points`` a seeded random sample keeps t-SNE fast."""
    name = _pick_label_set(db, label_set)
    if name is None:
        return []
    ls = taxonomy.load_label_set(name)
    rows = store.rows(db, "SELECT a.id, a.intensities_json, a.primary_emotion, s.text FROM annotations a"
                          " JOIN segments s ON s.id = a.segment_id WHERE a.label_set=? AND a.run_index=? ORDER BY a.id",
                      (name, run_index))
    if len(rows) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), max_points, replace=False))
        rows = [rows[i] for i in keep]
    if not rows:
        return []
    index = {c: j for j, c in enumerate(ls.names)}
    vecs = np.zeros((len(rows), len(ls.names)))
    for i, r in enumerate(rows):
        try:
            d = json.loads(r["intensities_json"] or "{}")
        except json.JSONDecodeError:
            d = {}
        for cat, v in d.items():
            canon = ls.canonical(cat)
            if canon is not None and isinstance(v, (int, float)):
                vecs[i, index[canon]] = float(v)
    xy = embed_2d(vecs, perplexity, seed)
    rgb = blend_colors(vecs, [c.color for c in ls.categories])
    out = []
    for i, r in enumerate(rows):
        label = ls.names[int(vecs[i].argmax())] if vecs[i].max() > 0 else (ls.canonical(r["primary_emotion"]) or r["primary_emotion"])
        out.append(MapPoint(int(r["id"]), float(xy[i, 0]), float(xy[i, 1]), tuple(float(c) for c in rgb[i]), label, r["text"] or ""))
    return out


def render_emotion_map(points: list[MapPoint], path: str | Path, label_set: str | None = None, title: str = "") -> Path:
    """PNG: the blended-colour scatter, each category's name at the centre of its points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patheffects as pe
    import matplotlib.pyplot as plt

    colors = taxonomy.load_label_set(label_set).colors if label_set else {}
    fig, ax = plt.subplots(figsize=(8, 7), dpi=110)
    if points:
        xy = np.array([[p.x, p.y] for p in points])
        ax.scatter(xy[:, 0], xy[:, 1], c=np.array([p.rgb for p in points]), s=18, alpha=0.85, linewidths=0)
        by_label: dict[str, list[int]] = {}
        for i, p in enumerate(points):
            by_label.setdefault(p.label, []).append(i)
        for label, idx in sorted(by_label.items()):
            cx, cy = np.median(xy[idx], axis=0)
            ax.text(cx, cy, f"{label} ({len(idx)})", ha="center", va="center", fontsize=9, weight="bold",
                    color=tuple(0.7 * _hex_rgb(colors[label])) if label in colors else "#333333",  # darker: readable on white
                    path_effects=[pe.withStroke(linewidth=3, foreground="white")])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"Emotion map: {len(points)} answers (t-SNE of intensities)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

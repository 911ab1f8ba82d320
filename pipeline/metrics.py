"""Classification, agreement and review metrics: small pure functions over numpy.

Usable from a notebook::

    from mikupal import metrics
    metrics.accuracy(y_true, y_pred)
    metrics.fleiss_kappa_labels([run0_labels, run1_labels, run2_labels])
    metrics.krippendorff_alpha([[1, 2, None], [1, 3, 3]], level="interval")
    metrics.wilson_interval(87, 100)

Conventions: labels are any hashable values; rating data is raters x units (the layout of
the `krippendorff` package) with ``None`` or NaN for a missing rating. Undefined values
(no data, no variation) are NaN rather than an exception, so a report can show "—".
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Hashable, Iterable, Sequence

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


# ---- classification ---------------------------------------------------------------

def _labels_for(y_true: Sequence, y_pred: Sequence, labels: Sequence | None) -> list:
    if labels is not None:
        return list(labels)
    return sorted(set(y_true) | set(y_pred), key=lambda v: (str(type(v)), v))


def _check_pair(y_true: Sequence, y_pred: Sequence) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")


def confusion_matrix(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> np.ndarray:
    """Counts with rows = true label, columns = predicted label (scikit-learn's layout).

    Pairs whose true or predicted label is not in ``labels`` are left out, as in scikit-learn.
    """
    _check_pair(y_true, y_pred)
    labels = _labels_for(y_true, y_pred, labels)
    index = {lab: i for i, lab in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        if t in index and p in index:
            cm[index[t], index[p]] += 1
    return cm


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    _check_pair(y_true, y_pred)
    if not len(y_true):
        return float("nan")
    return sum(t == p for t, p in zip(y_true, y_pred)) / len(y_true)


def per_class_recall(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> dict:
    """Recall of each class that occurs in y_true (a predicted-only class has no recall)."""
    _check_pair(y_true, y_pred)
    labels = _labels_for(y_true, [], labels)
    support = Counter(y_true)
    hits = Counter(t for t, p in zip(y_true, y_pred) if t == p)
    return {lab: hits[lab] / support[lab] for lab in labels if support[lab]}


def balanced_accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """Unweighted accuracy (UA): the mean recall over the classes present in y_true."""
    rec = per_class_recall(y_true, y_pred)
    return float(np.mean(list(rec.values()))) if rec else float("nan")


def precision_recall_f1(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> dict:
    """Per class: precision, recall, f1, support. A 0/0 ratio is 0 (scikit-learn's zero_division=0)."""
    _check_pair(y_true, y_pred)
    labels = _labels_for(y_true, y_pred, labels)
    tp = Counter(t for t, p in zip(y_true, y_pred) if t == p)
    n_true = Counter(y_true)
    n_pred = Counter(y_pred)
    out = {}
    for lab in labels:
        prec = tp[lab] / n_pred[lab] if n_pred[lab] else 0.0
        rec = tp[lab] / n_true[lab] if n_true[lab] else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out[lab] = {"precision": prec, "recall": rec, "f1": f1, "support": n_true[lab]}
    return out


def f1_score(y_true: Sequence, y_pred: Sequence, average: str = "macro", labels: Sequence | None = None) -> float:
    """Macro (plain mean over ``labels``) or weighted (by true support) F1.

    ``labels`` defaults to every label seen in y_true or y_pred, as in scikit-learn.
    """
    per = precision_recall_f1(y_true, y_pred, labels)
    if not per:
        return float("nan")
    f1s = np.array([v["f1"] for v in per.values()])
    if average == "macro":
        return float(f1s.mean())
    if average == "weighted":
        w = np.array([v["support"] for v in per.values()], dtype=float)
        return float((f1s * w).sum() / w.sum()) if w.sum() else 0.0
    raise ValueError(f"average={average!r}: use 'macro' or 'weighted'")


def classification_report(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> dict:
    """Everything the eval table shows, as plain JSON-able values.

    ``labels`` are the classes the F1 averages and the confusion matrix rows run over;
    predictions outside them (e.g. an unmappable answer) still count as errors.
    """
    labels = _labels_for(y_true, y_pred, labels)
    cm_labels = labels + sorted({p for p in y_pred if p not in labels}, key=str)
    return {
        "n": len(y_true),
        "accuracy": accuracy(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
        "f1_weighted": f1_score(y_true, y_pred, "weighted", labels),
        "f1_macro": f1_score(y_true, y_pred, "macro", labels),
        "per_class_recall": per_class_recall(y_true, y_pred, labels),
        "support": {lab: int(c) for lab, c in Counter(y_true).items()},
        "confusion_labels": cm_labels,
        "confusion": confusion_matrix(y_true, y_pred, cm_labels).tolist(),
    }


# ---- agreement ----------------------------------------------------------------------

def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def ratings_table(ratings: Sequence[Sequence[Hashable]], categories: Sequence | None = None) -> tuple[np.ndarray, list]:
    """Raters x subjects labels -> (subjects x categories counts, categories).

    Missing ratings (None/NaN) are not counted; ragged rows are padded as missing.
    """
    n_sub = max((len(r) for r in ratings), default=0)
    seen = {v for r in ratings for v in r if not _is_missing(v)}
    cats = list(categories) if categories is not None else sorted(seen, key=lambda v: (str(type(v)), v))
    unknown = seen - set(cats)
    if unknown:
        raise ValueError(f"ratings use categories not listed: {sorted(map(str, unknown))}")
    index = {c: j for j, c in enumerate(cats)}
    table = np.zeros((n_sub, len(cats)), dtype=np.int64)
    for r in ratings:
        for i, v in enumerate(r):
            if not _is_missing(v):
                table[i, index[v]] += 1
    return table, cats


def fleiss_kappa(table: np.ndarray | Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa from a subjects x categories table of rating counts.

    With the same number of raters per subject this is Fleiss (1971) exactly (statsmodels'
    ``fleiss_kappa``). Subjects may have different numbers of raters (missing ratings): each
    subject's agreement uses its own n_i, subjects with fewer than two ratings are dropped,
    and category proportions are pooled over all ratings.
    """
    t = np.asarray(table, dtype=float)
    if t.ndim != 2:
        raise ValueError("fleiss_kappa needs a 2-D subjects x categories table")
    n_i = t.sum(axis=1)
    t = t[n_i >= 2]
    n_i = n_i[n_i >= 2]
    if not len(t):
        return float("nan")
    p_i = ((t * (t - 1)).sum(axis=1)) / (n_i * (n_i - 1))
    p_bar = p_i.mean()
    p_j = t.sum(axis=0) / n_i.sum()
    p_e = float((p_j ** 2).sum())
    if math.isclose(p_e, 1.0):
        return float("nan")  # every rating in one category: chance agreement is total
    return float((p_bar - p_e) / (1 - p_e))


def fleiss_kappa_labels(ratings: Sequence[Sequence[Hashable]], categories: Sequence | None = None) -> float:
    """Fleiss' kappa from per-rater (or per-run) label lists: ratings[r][i] is rater r on subject i."""
    table, _ = ratings_table(ratings, categories)
    return fleiss_kappa(table)


def _ordinal_distance(counts: np.ndarray) -> np.ndarray:
    # Krippendorff's ordinal metric: (sum of n_g from c to k minus half the ends) squared.
    cum = np.concatenate([[0.0], np.cumsum(counts)])
    k = len(counts)
    d = np.zeros((k, k))
    for c in range(k):
        for e in range(k):
            lo, hi = min(c, e), max(c, e)
            d[c, e] = (cum[hi + 1] - cum[lo] - (counts[c] + counts[e]) / 2) ** 2
    return d


def _alpha_interval(rows: list[list], n_units: int) -> float:
    """Interval alpha from sums of squares, without a values x values coincidence matrix:
    intensities are near-continuous, so the value domain can be as large as the data.
    Within a unit of m values, the sum over ordered pairs of (a - b)^2 is 2(m*S2 - S1^2)."""
    x = np.full((len(rows), n_units), np.nan)
    for i, r in enumerate(rows):
        x[i, :len(r)] = [np.nan if _is_missing(v) else float(v) for v in r]
    m = (~np.isnan(x)).sum(axis=0)
    x = x[:, m >= 2]
    m = m[m >= 2]
    if not m.size:
        return float("nan")
    x = x - np.nanmean(x)  # alpha is shift-invariant; centring keeps the sums of squares exact
    s1 = np.nansum(x, axis=0)
    s2 = np.nansum(x * x, axis=0)
    observed = (2 * (m * s2 - s1 * s1) / (m - 1)).sum()
    n = m.sum()
    expected = 2 * (n * s2.sum() - s1.sum() ** 2) / (n - 1)
    if expected <= 0:
        return float("nan")  # no variation at all: agreement is undefined
    return float(1.0 - observed / expected)


def krippendorff_alpha(reliability_data: Sequence[Sequence[Any]], level: str = "nominal") -> float:
    """Krippendorff's alpha for raters x units data with missing values (None/NaN).

    level: "nominal" (any hashable labels), "ordinal", "interval" or "ratio" (numbers).
    Units with fewer than two ratings are not pairable and drop out, as the method says.
    """
    if level not in ("nominal", "ordinal", "interval", "ratio"):
        raise ValueError(f"level={level!r}: use nominal, ordinal, interval or ratio")
    rows = [list(r) for r in reliability_data]
    n_units = max((len(r) for r in rows), default=0)
    if level == "interval":
        return _alpha_interval(rows, n_units)
    values = sorted({v for r in rows for v in r if not _is_missing(v)}, key=lambda v: (str(type(v)), v))
    if len(values) < 1:
        return float("nan")
    index = {v: j for j, v in enumerate(values)}
    counts = np.zeros((n_units, len(values)))  # units x values
    for r in rows:
        for u, v in enumerate(r):
            if not _is_missing(v):
                counts[u, index[v]] += 1
    m_u = counts.sum(axis=1)
    counts = counts[m_u >= 2]
    m_u = m_u[m_u >= 2]
    if not len(counts):
        return float("nan")
    # Coincidence matrix: o_ck = sum_u n_uc (n_uk - [c == k]) / (m_u - 1).
    o = np.einsum("uc,uk->ck", counts / (m_u - 1)[:, None], counts) - np.diag((counts / (m_u - 1)[:, None]).sum(axis=0))
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if level == "nominal":
        d = 1.0 - np.eye(len(values))
    elif level == "ordinal":
        d = _ordinal_distance(n_c)
    else:
        x = np.asarray(values, dtype=float)
        d = (x[:, None] - x[None, :]) ** 2
        if level == "ratio":
            s = x[:, None] + x[None, :]
            with np.errstate(invalid="ignore", divide="ignore"):
                d = np.where(s == 0, 0.0, d / s**2)
    d_o = (o * d).sum()
    d_e = (np.outer(n_c, n_c) * d).sum() / (n - 1)
    if d_e == 0:
        return float("nan")  # no variation at all: agreement is undefined
    return float(1.0 - d_o / d_e)


# ---- proportions and the review's rationality score -------------------------------------

def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); NaNs when n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Proportion:
    """accepted / reviewed with its Wilson 95% interval."""

    accepted: int
    reviewed: int
    skipped: int = 0
    score: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")

    @classmethod
    def of(cls, accepted: int, reviewed: int, skipped: int = 0) -> "Proportion":
        lo, hi = wilson_interval(accepted, reviewed)
        score = accepted / reviewed if reviewed else float("nan")
        return cls(accepted, reviewed, skipped, score, lo, hi)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Rationality:
    overall: Proportion
    per_emotion: dict[str, Proportion] = field(default_factory=dict)
    per_rater: dict[str, Proportion] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "overall": self.overall.as_dict(),
            "per_emotion": {k: v.as_dict() for k, v in self.per_emotion.items()},
            "per_rater": {k: v.as_dict() for k, v in self.per_rater.items()},
        }


def rationality(reviews: Iterable[dict]) -> Rationality:
    """The paper's rationality score: accepted / (accepted + rejected); skips are excluded.

    Each review is a dict with ``verdict`` (accept/reject/skip) and optionally ``emotion``
    (the reviewed label) and ``rater``; the score is given overall, per emotion, per rater.
    """
    def tally(items: list[dict]) -> Proportion:
        acc = sum(r["verdict"] == "accept" for r in items)
        rej = sum(r["verdict"] == "reject" for r in items)
        skip = sum(r["verdict"] == "skip" for r in items)
        return Proportion.of(acc, acc + rej, skip)

    items = list(reviews)
    bad = {r["verdict"] for r in items} - {"accept", "reject", "skip"}
    if bad:
        raise ValueError(f"unknown review verdicts {sorted(bad)}; expected accept, reject or skip")
    by_emotion: dict[str, list[dict]] = {}
    by_rater: dict[str, list[dict]] = {}
    for r in items:
        if r.get("emotion") is not None:
            by_emotion.setdefault(str(r["emotion"]), []).append(r)
        if r.get("rater") is not None:
            by_rater.setdefault(str(r["rater"]), []).append(r)
    return Rationality(
        overall=tally(items),
        per_emotion={k: tally(v) for k, v in sorted(by_emotion.items())},
        per_rater={k: tally(v) for k, v in sorted(by_rater.items())},
    )


def clean_json(obj: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, so json.dumps writes strict JSON."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean_json(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj

"""Agreement metrics and eval scoring, as ratios against reference libraries in the same process.

    .venv/bin/python bench/metrics.py [--units 20000] [--raters 3]

Baselines (same data, same process): statsmodels' fleiss_kappa on the aggregated table, the
`krippendorff` package's alpha, scikit-learn's f1_score. A ratio below 1 means
mikupal.metrics is faster; the values must agree (printed alongside).
Also: `evaluate.score_system` time per 1,000 items on a synthetic MELD-sized set.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, repeat: int = 3):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--units", type=int, default=20000)
    ap.add_argument("--raters", type=int, default=3)
    args = ap.parse_args()

    import krippendorff
    from sklearn.metrics import f1_score
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    from mikupal import metrics

    rng = np.random.default_rng(0)
    n, r = args.units, args.raters
    truth = rng.integers(0, 7, n)
    labels = np.where(rng.random((r, n)) < 0.6, truth, rng.integers(0, 7, (r, n)))
    rows = []

    t_ref, k_ref = timed(lambda: fleiss_kappa(aggregate_raters(labels.T)[0]))
    t_our, k_our = timed(lambda: metrics.fleiss_kappa_labels(labels.tolist()))
    rows.append(("Fleiss kappa (from label lists)", t_our, t_ref, k_our, k_ref))

    nominal = labels.astype(float)
    nominal[rng.random(nominal.shape) < 0.2] = np.nan
    t_ref, a_ref = timed(lambda: krippendorff.alpha(reliability_data=nominal, level_of_measurement="nominal"))
    t_our, a_our = timed(lambda: metrics.krippendorff_alpha(nominal.tolist(), "nominal"))
    rows.append(("Krippendorff alpha nominal, 20% missing", t_our, t_ref, a_our, float(a_ref)))

    # The package builds a units x values x values array, so its interval alpha runs out of
    # memory on intensity-sized data: the comparison uses 1,000 units at 2 decimals.
    m = min(n, 1000)
    inten = np.clip(rng.random(m) + rng.normal(0, 0.1, (r, m)), 0, 1).round(2)
    inten[rng.random(inten.shape) < 0.2] = np.nan
    t_ref, a_ref = timed(lambda: krippendorff.alpha(reliability_data=inten, level_of_measurement="interval"), 1)
    t_our, a_our = timed(lambda: metrics.krippendorff_alpha(inten.tolist(), "interval"))
    rows.append((f"Krippendorff alpha interval, {m} units", t_our, t_ref, a_our, float(a_ref)))
    big = np.clip(rng.random(n * 26) + rng.normal(0, 0.1, (r, n * 26)), 0, 1).round(3)
    t_big, _ = timed(lambda: metrics.krippendorff_alpha(big.tolist(), "interval"), 1)

    names = np.array(["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"])
    yt, yp = list(names[truth]), list(names[labels[0]])
    t_ref, f_ref = timed(lambda: f1_score(yt, yp, average="weighted"))
    t_our, f_our = timed(lambda: metrics.f1_score(yt, yp, "weighted"))
    rows.append(("weighted F1", t_our, t_ref, f_our, f_ref))

    print(f"{n} units x {r} raters")
    print(f"{'metric':45s} {'ours s':>9s} {'ref s':>9s} {'ratio':>7s}  values (ours / reference)")
    for name, to, tr, vo, vr in rows:
        print(f"{name:45s} {to:9.4f} {tr:9.4f} {to / tr:7.4f}  {vo:.6f} / {vr:.6f}")
    print(f"interval alpha on {n} segments x 26 categories x {r} runs (intensities): {t_big:.3f} s, "
          f"{t_big / t_our:.0f}x the {m}-unit time for {n * 26 // m}x the units (no reference can run this size)")


if __name__ == "__main__":
    main()

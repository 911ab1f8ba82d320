"""mikupal.metrics against scikit-learn, statsmodels, the krippendorff package and published values."""
import math

import numpy as np
import pytest

from mikupal import metrics

# independent references: scikit-learn (core), statsmodels and krippendorff (dev extra)
import krippendorff  # noqa: E402
import sklearn.metrics as sk  # noqa: E402
import statsmodels.stats.inter_rater as inter_rater  # noqa: E402
import statsmodels.stats.proportion as proportion  # noqa: E402

# Wikipedia "Fleiss' kappa" worked example: 10 subjects, 14 raters, 5 categories.
WIKI_TABLE = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]

# Fleiss (1971) psychiatric diagnoses: 30 subjects x 6 raters (subject rows, rater columns).
DIAGNOSES = [
    [4, 4, 4, 4, 4, 4], [2, 2, 2, 5, 5, 5], [2, 3, 3, 3, 3, 5], [5, 5, 5, 5, 5, 5], [2, 2, 2, 4, 4, 4],
    [1, 1, 3, 3, 3, 3], [3, 3, 3, 3, 5, 5], [1, 1, 3, 3, 3, 4], [1, 1, 4, 4, 4, 4], [5, 5, 5, 5, 5, 5],
    [1, 4, 4, 4, 4, 4], [1, 2, 4, 4, 4, 4], [2, 2, 2, 3, 3, 3], [1, 4, 4, 4, 4, 4], [2, 2, 4, 4, 4, 5],
    [3, 3, 3, 3, 3, 5], [1, 1, 1, 4, 5, 5], [1, 1, 1, 1, 1, 2], [2, 2, 4, 4, 4, 4], [1, 3, 3, 5, 5, 5],
    [5, 5, 5, 5, 5, 5], [2, 4, 4, 4, 4, 4], [2, 2, 4, 5, 5, 5], [1, 1, 4, 4, 4, 4], [1, 4, 4, 4, 4, 5],
    [2, 2, 2, 2, 2, 4], [1, 1, 1, 1, 5, 5], [2, 2, 4, 4, 4, 4], [1, 3, 3, 3, 3, 3], [5, 5, 5, 5, 5, 5],
]

nan = float("nan")
# The krippendorff package's documented example: 3 raters x 15 units with gaps.
KRIPP = [
    [nan, nan, nan, nan, nan, 3, 4, 1, 2, 1, 1, 3, 3, nan, 3],
    [1, nan, 2, 1, 3, 3, 4, 3, nan, nan, nan, nan, nan, nan, nan],
    [nan, nan, 2, 1, 3, 4, 4, nan, 2, 1, 1, 3, 3, nan, 4],
]


def _random_labels(rng, n, k=5):
    labels = np.array(["anger", "joy", "sadness", "neutral", "fear", "surprise"][:k])
    y_true = rng.choice(labels, n)
    # a predictor that is right ~half the time, so every metric sits away from 0 and 1
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.choice(labels, n))
    return list(y_true), list(y_pred)


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y_true, y_pred = _random_labels(rng, 60 + 20 * seed)
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(sk.accuracy_score(y_true, y_pred))
    assert metrics.balanced_accuracy(y_true, y_pred) == pytest.approx(sk.balanced_accuracy_score(y_true, y_pred))
    assert metrics.f1_score(y_true, y_pred, "macro") == pytest.approx(sk.f1_score(y_true, y_pred, average="macro"))
    assert metrics.f1_score(y_true, y_pred, "weighted") == pytest.approx(
        sk.f1_score(y_true, y_pred, average="weighted"))
    labels = sorted(set(y_true) | set(y_pred))
    np.testing.assert_array_equal(metrics.confusion_matrix(y_true, y_pred, labels),
                                  sk.confusion_matrix(y_true, y_pred, labels=labels))
    rec = metrics.per_class_recall(y_true, y_pred)
    sk_rec = sk.recall_score(y_true, y_pred, labels=labels, average=None)
    assert [rec[lab] for lab in labels] == pytest.approx(list(sk_rec))


def test_predictions_outside_the_label_set_count_as_errors():
    # An unmappable answer is wrong for its item but is not a class of its own in the F1 average.
    y_true = ["joy", "joy", "anger", "anger"]
    y_pred = ["joy", "(unmapped)", "anger", "joy"]
    labels = ["anger", "joy"]
    rep = metrics.classification_report(y_true, y_pred, labels)
    assert rep["accuracy"] == 0.5
    assert rep["f1_macro"] == pytest.approx(sk.f1_score(y_true, y_pred, labels=labels, average="macro",
                                                         zero_division=0))
    assert rep["confusion_labels"] == ["anger", "joy", "(unmapped)"]
    assert rep["confusion"] == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]
    assert rep["per_class_recall"] == {"anger": 0.5, "joy": 0.5}


def test_fleiss_kappa_published_values():
    assert metrics.fleiss_kappa(WIKI_TABLE) == pytest.approx(0.20993, abs=5e-6)
    ratings = np.array(DIAGNOSES).T.tolist()  # raters x subjects
    assert metrics.fleiss_kappa_labels(ratings) == pytest.approx(0.4302445, abs=5e-8)


@pytest.mark.parametrize("seed", range(5))
def test_fleiss_kappa_equals_statsmodels(seed):
    rng = np.random.default_rng(seed)
    n_raters, n_subjects = 3 + seed, 40
    truth = rng.integers(0, 4, n_subjects)
    ratings = np.where(rng.random((n_raters, n_subjects)) < 0.6, truth, rng.integers(0, 4, (n_raters, n_subjects)))
    table, _ = inter_rater.aggregate_raters(ratings.T)
    assert metrics.fleiss_kappa(table) == pytest.approx(inter_rater.fleiss_kappa(table, method="fleiss"))
    assert metrics.fleiss_kappa_labels(ratings.tolist()) == pytest.approx(inter_rater.fleiss_kappa(table))


def test_fleiss_kappa_with_missing_ratings_drops_unpairable_subjects():
    runs = [["a", "b", "a", None], ["a", "b", None, "b"], ["a", "a", None, None]]
    table, cats = metrics.ratings_table(runs)
    assert cats == ["a", "b"]
    assert table.tolist() == [[3, 0], [1, 2], [1, 0], [0, 1]]
    # subjects 3 and 4 have one rating each and carry no agreement information
    complete = [[3, 0], [1, 2]]
    assert metrics.fleiss_kappa(table) == pytest.approx(metrics.fleiss_kappa(complete))
    # by hand: agreement 1 and 1/3 -> 2/3; 4 of 6 ratings "a" -> chance 5/9; (2/3 - 5/9) / (4/9)
    assert metrics.fleiss_kappa(complete) == pytest.approx(1 / 4)
    assert math.isnan(metrics.fleiss_kappa([[1, 0], [0, 1]]))
    assert math.isnan(metrics.fleiss_kappa([[3, 0], [3, 0]]))  # one category only: undefined


def test_krippendorff_alpha_published_values():
    assert metrics.krippendorff_alpha(KRIPP, "nominal") == pytest.approx(0.691358, abs=5e-7)
    assert metrics.krippendorff_alpha(KRIPP, "interval") == pytest.approx(0.810845, abs=5e-7)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
@pytest.mark.parametrize("seed", range(4))
def test_krippendorff_alpha_equals_package_with_missing(level, seed):
    rng = np.random.default_rng(seed)
    n_raters, n_units = 2 + seed, 30
    truth = rng.integers(1, 6, n_units).astype(float)
    data = truth + rng.integers(-1, 2, (n_raters, n_units)) * (rng.random((n_raters, n_units)) < 0.4)
    data[rng.random((n_raters, n_units)) < 0.25] = np.nan
    ours = metrics.krippendorff_alpha(data.tolist(), level)
    ref = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
    assert ours == pytest.approx(float(ref), abs=1e-9)


def test_krippendorff_alpha_nominal_on_strings_with_none():
    data = [["accept", "reject", None, "accept"], ["accept", "accept", "reject", None], [None, "reject", "reject", "accept"]]
    codes = {"accept": 1.0, "reject": 2.0, None: nan}
    ref = krippendorff.alpha(reliability_data=[[codes[v] for v in r] for r in data], level_of_measurement="nominal")
    assert metrics.krippendorff_alpha(data, "nominal") == pytest.approx(float(ref))
    with pytest.raises(ValueError, match="level"):
        metrics.krippendorff_alpha(data, "cardinal")


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (87, 100), (1, 3), (500, 1000)])
def test_wilson_interval_equals_statsmodels(k, n):
    lo, hi = metrics.wilson_interval(k, n)
    ref_lo, ref_hi = proportion.proportion_confint(k, n, alpha=0.05, method="wilson")
    assert (lo, hi) == (pytest.approx(ref_lo, abs=1e-12), pytest.approx(ref_hi, abs=1e-12))
    assert all(math.isnan(v) for v in metrics.wilson_interval(0, 0))


def test_rationality_excludes_skips_and_splits_by_emotion_and_rater():
    reviews = (
        [{"verdict": "accept", "emotion": "Joy", "rater": "ana"}] * 7
        + [{"verdict": "reject", "emotion": "Joy", "rater": "ben"}] * 1
        + [{"verdict": "reject", "emotion": "Anger", "rater": "ana"}] * 2
        + [{"verdict": "skip", "emotion": "Anger", "rater": "ben"}] * 5
    )
    r = metrics.rationality(reviews)
    assert (r.overall.accepted, r.overall.reviewed, r.overall.skipped) == (7, 10, 5)
    assert r.overall.score == pytest.approx(0.7)
    assert (r.overall.ci_low, r.overall.ci_high) == pytest.approx(proportion.proportion_confint(7, 10, method="wilson"))
    assert r.per_emotion["Joy"].score == pytest.approx(7 / 8)
    assert r.per_emotion["Anger"].score == 0.0 and r.per_emotion["Anger"].skipped == 5
    assert r.per_rater["ana"].score == pytest.approx(7 / 9)
    assert r.per_rater["ben"].reviewed == 1
    d = metrics.clean_json(r.as_dict())
    assert d["overall"]["accepted"] == 7
    with pytest.raises(ValueError, match="verdict"):
        metrics.rationality([{"verdict": "maybe"}])


def test_clean_json_turns_nan_into_null():
    assert metrics.clean_json({"a": nan, "b": [np.float64(1.5), np.int64(2)]}) == {"a": None, "b": [1.5, 2]}

"""`mikupal review-stats` on a project with three raters, skips, gaps and a changed mind."""
import json

import krippendorff  # independent reference (dev extra)
import numpy as np
import pytest
import statsmodels.stats.inter_rater as inter_rater  # independent reference (dev extra)
from statsmodels.stats.proportion import proportion_confint
from eval_fixture import add_annotation, add_review, add_segment, add_video
from typer.testing import CliRunner

from mikupal import metrics, review_stats
from mikupal.cli import app


# annotation -> (primary emotion, {rater: verdict}); absent rater = never saw it
PLAN = [
    ("Joy", {"ana": "accept", "ben": "accept", "cy": "accept"}),
    ("Joy", {"ana": "accept", "ben": "reject", "cy": "accept"}),
    ("Anger", {"ana": "reject", "ben": "reject", "cy": "reject"}),
    ("Anger", {"ana": "accept", "ben": "accept", "cy": "reject"}),
    ("Sadness", {"ana": "accept", "ben": "skip", "cy": "accept"}),
    ("Sadness", {"ana": "reject"}),                          # one verdict: no agreement info
    ("Fear", {"ana": "skip", "ben": "accept"}),               # one real verdict
    ("Joy", {"ana": "accept", "ben": "accept", "cy": "accept"}),
]


@pytest.fixture()
def reviewed(project):
    db = project.db()
    vid = add_video(db, "/videos/talk.mp4", 60.0)
    anns = []
    for i, (prim, verdicts) in enumerate(PLAN):
        seg = add_segment(db, vid, 2.0 * i, 2.0 * i + 1.5)
        ann = add_annotation(db, seg, prim, 0.8)
        anns.append(ann)
        for rater, verdict in verdicts.items():
            add_review(db, ann, rater, verdict, corrected_label="Sadness" if verdict == "reject" else None)
    # ben first rejected annotation 0, then changed his mind: the latest review counts
    db.conn.execute("UPDATE reviews SET verdict='reject' WHERE id=(SELECT MIN(id) FROM reviews WHERE annotation_id=?"
                    " AND rater_id=(SELECT id FROM raters WHERE name='ben'))", (anns[0],))
    add_review(db, anns[0], "ben", "accept")
    return project, db, anns


def test_rationality_overall_per_emotion_per_rater(reviewed):
    project, db, anns = reviewed
    st = review_stats.review_stats(db)
    o = st["rationality"]["overall"]
    verdicts = [v for _, vs in PLAN for v in vs.values()]
    acc, rej = verdicts.count("accept"), verdicts.count("reject")
    assert (o["accepted"], o["reviewed"], o["skipped"]) == (acc, acc + rej, 2)
    assert o["score"] == pytest.approx(acc / (acc + rej))
    assert (o["ci_low"], o["ci_high"]) == pytest.approx(proportion_confint(acc, acc + rej, method="wilson"))
    joy = st["rationality"]["per_emotion"]["Joy"]
    assert (joy["accepted"], joy["reviewed"]) == (8, 9)
    ana = st["rationality"]["per_rater"]["ana"]
    assert (ana["accepted"], ana["reviewed"], ana["skipped"]) == (5, 7, 1)


def test_agreement_matches_reference_libraries_with_missing_ratings(reviewed):
    project, db, anns = reviewed
    a = review_stats.review_stats(db)["agreement"]
    code = {"accept": 1.0, "reject": 2.0}
    data = np.array([[code.get(vs.get(r), np.nan) for _, vs in PLAN] for r in ("ana", "ben", "cy")])
    assert a["raters"] == 3 and a["items_reviewed"] == 8
    assert a["items_with_two_or_more_verdicts"] == 5 + 1  # rows 0-4 and 7; row 4 has two (ben skipped)
    assert a["krippendorff_alpha_verdicts"] == pytest.approx(float(krippendorff.alpha(reliability_data=data,
                                                                                      level_of_measurement="nominal")))
    # kappa, by hand: single-verdict items (rows 5, 6) drop out; the others as [accepts, rejects]
    table = [[sum(vs.get(r) == v for r in vs) for v in ("accept", "reject")] for _, vs in PLAN]
    table = [row for row in table if sum(row) >= 2]
    assert table == [[3, 0], [2, 1], [0, 3], [2, 1], [2, 0], [3, 0]]
    # per-item agreement sum n(n-1) / (n_i(n_i-1)): 1, 1/3, 1, 1/3, 1, 1 -> mean 7/9;
    # pooled proportions 12/17 accept, 5/17 reject -> chance 169/289;
    # kappa = (7/9 - 169/289) / (1 - 169/289) = 502/1080
    assert a["fleiss_kappa_verdicts"] == pytest.approx(502 / 1080, abs=1e-12)
    # the five items all three raters judged are plain Fleiss (1971): statsmodels' value
    full = [row for row in table if sum(row) == 3]
    assert len(full) == 5
    assert metrics.fleiss_kappa(full) == pytest.approx(inter_rater.fleiss_kappa(np.array(full)))
    # final labels: accepted primary, or the correction ("Sadness") on reject
    final = [[(prim if vs.get(r) == "accept" else "Sadness" if vs.get(r) == "reject" else None) for prim, vs in PLAN]
             for r in ("ana", "ben", "cy")]
    names = {"Joy": 1.0, "Anger": 2.0, "Sadness": 3.0, "Fear": 4.0, None: np.nan}
    ref = krippendorff.alpha(reliability_data=[[names[v] for v in row] for row in final], level_of_measurement="nominal")
    assert a["krippendorff_alpha_labels"] == pytest.approx(float(ref))


def test_intensity_alpha_between_model_runs(project):
    db = project.db()
    vid = add_video(db, "/videos/x.mp4")
    rng = np.random.default_rng(3)
    truth = rng.random((6, 3))
    cats = ["Joy", "Anger", "Sadness"]
    runs = []
    for ri in range(3):
        vals = np.clip(truth + rng.normal(0, 0.1, truth.shape), 0, 1).round(3)
        runs.append(vals)
    for s in range(6):
        seg = add_segment(db, vid, s, s + 0.9)
        for ri in range(3):
            inten = dict(zip(cats, map(float, runs[ri][s])))
            add_annotation(db, seg, max(inten, key=inten.get), inten, run_index=ri)
    st = review_stats.review_stats(db)
    (sysd,) = st["intensity_agreement_runs"]["systems"]
    data = np.array([r.reshape(-1) for r in runs])  # raters x (segment, category)
    assert sysd["runs"] == 3 and sysd["units"] == 18
    assert sysd["krippendorff_alpha_interval"] == pytest.approx(
        float(krippendorff.alpha(reliability_data=data, level_of_measurement="interval")))
    assert st["rationality"]["overall"]["score"] is None  # no reviews: undefined, not 0


def test_cli_review_stats_table_and_json(reviewed):
    project, db, anns = reviewed
    r = CliRunner().invoke(app, ["review-stats", str(project.root)])
    assert r.exit_code == 0, r.output
    assert "Rationality" in r.output and "ana" in r.output and "Fleiss" in r.output
    r = CliRunner().invoke(app, ["review-stats", str(project.root), "--json"])
    assert json.loads(r.output)["reviews"] == sum(len(vs) for _, vs in PLAN)
    r = CliRunner().invoke(app, ["review-stats", str(project.root / "missing")])
    assert r.exit_code == 2 and "not a MIKU-PAL project" in r.output

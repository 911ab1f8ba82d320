"""`mikupal eval` end to end on a small project built with the real store."""
import json

import pytest
from eval_fixture import IEMOCAP_TXT, MELD_CSV, add_annotation, add_segment, add_video, meld_project
from typer.testing import CliRunner

from mikupal import evaluate
from mikupal.cli import app

import sklearn.metrics as sk  # noqa: E402  (independent references: a core dependency and the dev extra)
import statsmodels.stats.inter_rater as inter_rater  # noqa: E402


@pytest.fixture()
def meld(project, tmp_path):
    db = project.db()
    ids = meld_project(db)
    csv_path = tmp_path / "test_sent_emo.csv"
    csv_path.write_text(MELD_CSV, encoding="utf-8")
    return project, db, ids, csv_path


def _system(result, model):
    return next(s for s in result["systems"] if s["model"] == model)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # scikit-learn, on purpose
def test_meld_eval_numbers_and_files(meld, tmp_path):
    project, db, ids, csv_path = meld
    out = tmp_path / "out"
    res = evaluate.evaluate(db, "meld", csv_path, out_dir=out)

    assert res["matching"]["references"] == 6
    assert res["matching"]["matched"] == 5
    assert res["matching"]["no_video"] == 1 and res["matching"]["examples_no_video"] == ["dia2_utt0"]
    assert res["matching"]["videos_without_reference"] == 1  # unrelated_clip

    s = _system(res, "gemini-test")
    y_true = ["sadness", "surprise", "neutral", "joy", "sadness"]
    y_pred = ["sadness", "surprise", "neutral", "joy", "anger"]  # run 0, mapped to meld7
    m = s["metrics"]
    assert (s["items"], s["runs"]) == (5, 2)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y_true, y_pred))
    labels = ["anger", "joy", "neutral", "sadness", "surprise"]
    assert m["f1_macro"] == pytest.approx(sk.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
    assert m["f1_weighted"] == pytest.approx(sk.f1_score(y_true, y_pred, labels=labels, average="weighted",
                                                         zero_division=0))
    assert m["per_class_recall"] == {"joy": 1.0, "neutral": 1.0, "sadness": 0.5, "surprise": 1.0}
    assert s["excluding"]["labels"] == ["neutral"]
    assert s["excluding"]["metrics"]["accuracy"] == pytest.approx(3 / 4)
    assert s["per_run_accuracy"] == {"0": pytest.approx(0.8), "1": pytest.approx(1.0)}
    assert s["accuracy_mean_runs"] == pytest.approx(0.9) and s["accuracy_sd_runs"] == pytest.approx(0.1)
    assert s["all_runs_agree"] == pytest.approx(4 / 5)  # dia1_utt2: anger vs sadness
    assert s["majority_of_runs"]["accuracy"] == pytest.approx(0.8)  # the 1-1 tie goes to run 0 (anger)
    # Fleiss' kappa across the two runs, cross-checked with statsmodels
    runs = [y_pred, ["sadness", "surprise", "neutral", "joy", "sadness"]]
    table, _ = inter_rater.aggregate_raters(list(zip(*runs)))
    assert s["fleiss_kappa_runs"] == pytest.approx(inter_rater.fleiss_kappa(table))
    native = [["Sadness", "Surprise", "Calmness", "Joy", "Anger"], ["Sadness", "Confusion", "Joy", "Joy", "Sadness"]]
    table, _ = inter_rater.aggregate_raters(list(zip(*native)))
    assert s["fleiss_kappa_runs_native"] == pytest.approx(inter_rater.fleiss_kappa(table))

    joy = _system(res, "always-joy")
    assert joy["metrics"]["accuracy"] == pytest.approx(0.2) and joy["runs"] == 1
    assert joy["fleiss_kappa_runs"] is None and joy["majority_of_runs"] is None and joy["all_runs_agree"] is None

    # files: eval.json equals the return value; confusion CSV rows = true labels
    assert json.loads((out / "eval.json").read_text()) == res
    csv_text = (out / s["files"]["confusion_csv"]).read_text().splitlines()
    assert csv_text[0] == "true \\ predicted,anger,joy,neutral,sadness,surprise"
    assert csv_text[4] == "sadness,1,0,0,1,0"
    png = (out / s["files"]["confusion_png"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    preds = (out / s["files"]["predictions_csv"]).read_text().splitlines()
    assert "dia1_utt2," in preds[5] and preds[5].endswith("anger|sadness,Anger|Sadness")


def test_neutral_threshold_can_be_changed_or_turned_off(meld):
    project, db, ids, csv_path = meld
    # run 1 of dia1_utt0 is a weak Joy (0.2): neutral under the mapping's rule, joy without it
    off = _system(evaluate.evaluate(db, "meld", csv_path, neutral_below=0), "gemini-test")
    assert off["per_run_accuracy"]["1"] == pytest.approx(0.8)
    assert off["per_run_accuracy"]["0"] == pytest.approx(0.8)
    # a high threshold turns every answer below 0.75 into neutral: Calmness stays neutral,
    # Anger 0.7 becomes neutral (still wrong); run 0 is unchanged, run 1 loses Sadness 0.7,
    # Confusion 0.6 and Sadness 0.6 to neutral
    high = _system(evaluate.evaluate(db, "meld", csv_path, neutral_below=0.75), "gemini-test")
    assert high["per_run_accuracy"]["0"] == pytest.approx(0.8)
    assert high["per_run_accuracy"]["1"] == pytest.approx(0.4)


def test_meld_splits_reuse_clip_names(project, tmp_path):
    # train and test both have dia0_utt0.mp4; the labels file's split and --videos-under decide
    db = project.db()
    tests = tmp_path / "MELD.Raw" / "output_repeated_splits_test"
    train = tmp_path / "MELD.Raw" / "train_splits"
    v_train = add_video(db, str(train / "dia0_utt0.mp4"))
    v_test = add_video(db, str(tests / "dia0_utt0.mp4"))
    add_annotation(db, add_segment(db, v_train, 0, 2), "Joy", 0.9)
    add_annotation(db, add_segment(db, v_test, 0, 2), "Sadness", 0.9)
    for name in ("test_sent_emo.csv", "dev_sent_emo.csv"):
        (tmp_path / name).write_text(MELD_CSV, encoding="utf-8")
    res = evaluate.evaluate(db, "meld", tmp_path / "test_sent_emo.csv")
    assert res["matching"]["ambiguous_video_stems"] == 0
    assert res["systems"][0]["metrics"]["accuracy"] == 1.0  # the test clip (Sadness) was scored
    res = evaluate.evaluate(db, "meld", tmp_path / "dev_sent_emo.csv")  # no dev folder: ambiguous
    assert res["matching"]["ambiguous_video_stems"] == 1 and res["matching"]["examples_ambiguous"] == ["dia0_utt0"]
    res = evaluate.evaluate(db, "meld", tmp_path / "dev_sent_emo.csv", videos_under=train)
    assert res["matching"]["ambiguous_video_stems"] == 0
    assert res["systems"][0]["metrics"]["accuracy"] == 0.0  # the train clip (Joy) was scored


def test_majority_vote_ties_go_to_the_earliest_run():
    assert evaluate.majority_vote({0: "joy", 1: "anger", 2: "anger"}) == "anger"
    assert evaluate.majority_vote({0: "joy", 1: "anger"}) == "joy"
    assert evaluate.majority_vote({2: "sad", 0: "anger", 1: "sad", 3: "anger"}) == "anger"


def test_unmappable_answers_count_as_errors(meld):
    project, db, ids, csv_path = meld
    seg = ids["segments"]["dia1_utt1"]
    add_annotation(db, seg, "Schadenfreude", 0.9, model="odd-model")
    add_annotation(db, ids["segments"]["dia0_utt1"], "Surprise", 0.9, model="odd-model")
    res = evaluate.evaluate(db, "meld", csv_path)
    s = _system(res, "odd-model")
    assert s["items"] == 2 and s["unmapped_predictions"] == 1
    assert s["metrics"]["accuracy"] == 0.5
    assert "(unmapped)" in s["metrics"]["confusion_labels"]
    assert any("Schadenfreude" in e for e in s["mapping_errors"])


def test_iemocap_dialogue_video_matched_by_time(project, tmp_path):
    db = project.db()
    vid = add_video(db, "/data/IEMOCAP/Session1/dialog/avi/DivX/Ses01F_impro01.avi", 60.0)
    s_f000 = add_segment(db, vid, 6.0, 8.5)       # covers F000 [6.29, 8.24]
    s_m000 = add_segment(db, vid, 14.5, 18.3)     # covers M000 [14.89, 18.02]
    s_far = add_segment(db, vid, 30.0, 33.0)      # overlaps nothing
    add_annotation(db, s_f000, "Calmness", 0.7)   # -> neutral
    add_annotation(db, s_m000, "Excitement", 0.8)  # -> happy
    add_annotation(db, s_far, "Anger", 0.8)
    labels = tmp_path / "EmoEvaluation"
    labels.mkdir()
    (labels / "Ses01F_impro01.txt").write_text(IEMOCAP_TXT)
    res = evaluate.evaluate(db, "iemocap", labels, out_dir=tmp_path / "o")
    assert res["label_set"] == "iemocap4"
    assert res["references"]["no_consensus"] == 1
    assert res["matching"]["matched"] == 2  # F000 and M000; F001 and M001 have no segment there
    assert res["matching"]["no_annotated_segment"] == 2
    s = res["systems"][0]
    assert s["items"] == 2  # the tie has no gold label
    assert s["metrics"]["accuracy"] == 1.0
    assert res["human"]["evaluator_votes"] == 6


def test_cli_eval_prints_table_and_writes_json(meld, tmp_path):
    project, db, ids, csv_path = meld
    out = tmp_path / "cli-out"
    r = CliRunner().invoke(app, ["eval", str(project.root), "--dataset", "meld", "--labels", str(csv_path),
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "gemini-test" in r.output and "80.0" in r.output and "always-joy" in r.output
    assert json.loads((out / "eval.json").read_text())["dataset"] == "meld"
    r = CliRunner().invoke(app, ["eval", str(project.root), "--dataset", "meld", "--labels", str(csv_path),
                                 "--out", str(out), "--json"])
    assert json.loads(r.output)["systems"][0]["items"] == 5


@pytest.mark.parametrize("args,needle", [
    (["--dataset", "ravdess", "--labels", "x.csv"], "unknown dataset"),
    (["--dataset", "meld", "--labels", "missing.csv"], "does not exist"),
    (["--dataset", "meld", "--labels", "LABELS", "--label-set", "nope9"], "unknown label set"),
])
def test_cli_eval_bad_input_exits_2_with_one_line(meld, args, needle):
    project, db, ids, csv_path = meld
    args = [str(csv_path) if a == "LABELS" else a for a in args]
    r = CliRunner().invoke(app, ["eval", str(project.root)] + args)
    assert r.exit_code == 2
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.output

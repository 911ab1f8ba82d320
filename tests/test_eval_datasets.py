"""Reading MELD's CSV and IEMOCAP's EmoEvaluation files, and the label mappings eval relies on."""
import pytest
from eval_fixture import IEMOCAP_TXT, MELD_CSV

from mikupal import evaluate, taxonomy


def test_meld_csv_quoted_commas_curly_quotes_mojibake_and_missing_rows(tmp_path):
    f = tmp_path / "test_sent_emo.csv"
    f.write_text(MELD_CSV, encoding="utf-8")
    refs, problems = evaluate.read_meld_csv(f)
    by = {r.item_id: r for r in refs}
    assert list(by) == ["dia0_utt0", "dia0_utt1", "dia1_utt0", "dia1_utt1", "dia1_utt2", "dia2_utt0"]
    assert by["dia0_utt0"].text == "Oh my God, he\u2019s lost it. He\u2019s totally lost it."
    assert by["dia1_utt0"].text.startswith("Or! Or, we could go to the bank, close our accounts")
    assert by["dia1_utt1"].text == "You\u2019re a genius! \u201cBank buddies\u201d, he said."
    assert by["dia1_utt2"].text == 'Aww, man, now we won\u2019t be "bank buddies"!'
    assert [r.label for r in refs] == ["sadness", "surprise", "neutral", "joy", "sadness", "anger"]
    assert by["dia0_utt0"].stems == ("dia0_utt0",)
    # the row with no Emotion is reported by line, not silently dropped
    assert len(problems) == 1 and "line 7" in problems[0] and "skipped" in problems[0]


def test_meld_csv_saved_as_windows_1252_reads_the_same(tmp_path):
    f = tmp_path / "dev_sent_emo.csv"
    f.write_bytes(MELD_CSV.replace("\x92", "\u2019").encode("cp1252"))
    refs, _ = evaluate.read_meld_csv(f)
    assert refs[0].text == "Oh my God, he\u2019s lost it. He\u2019s totally lost it."
    assert refs[3].text == "You\u2019re a genius! \u201cBank buddies\u201d, he said."


def test_fix_text_undoes_both_kinds_of_mojibake():
    assert evaluate.fix_text("he\x92s") == "he\u2019s"
    assert evaluate.fix_text("he\u00e2\u20ac\u2122s") == "he\u2019s"  # UTF-8 read as cp1252
    assert evaluate.fix_text("plain text, fine") == "plain text, fine"


def test_meld_csv_bad_files_fail_with_one_line(tmp_path):
    with pytest.raises(evaluate.EvalError, match="does not exist"):
        evaluate.read_meld_csv(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(evaluate.EvalError, match="Dialogue_ID|dialogue_id"):
        evaluate.read_meld_csv(bad)


def test_iemocap_votes_ties_and_excited_merge(tmp_path):
    d = tmp_path / "Session1" / "dialog" / "EmoEvaluation"
    (d / "Categorical").mkdir(parents=True)
    (d / "Ses01F_impro01.txt").write_text(IEMOCAP_TXT)
    # per-evaluator files in sub-folders have another format and must be ignored
    (d / "Categorical" / "Ses01F_impro01_e2_cat.txt").write_text("Ses01F_impro01_F000 :Neutral state; ()\n")
    refs, problems = evaluate.read_iemocap(tmp_path)
    assert problems == []
    by = {r.item_id: r for r in refs}
    assert list(by) == ["Ses01F_impro01_F000", "Ses01F_impro01_F001", "Ses01F_impro01_M000", "Ses01F_impro01_M001"]
    f000 = by["Ses01F_impro01_F000"]
    assert (f000.start_s, f000.end_s, f000.container) == (6.2901, 8.2357, "Ses01F_impro01")
    assert f000.votes == {"C-E2": ["neu"], "C-E3": ["neu"], "C-E4": ["neu"], "C-F1": ["neu"]}
    tie = by["Ses01F_impro01_F001"]
    assert tie.label is None and tie.raw_label == "xxx"
    assert tie.votes["C-E1"] == ["fru", "ang"] and tie.votes["C-E4"] == ["neu"]
    assert by["Ses01F_impro01_M000"].label == "happy"  # 4-class: excited merges into happy
    assert by["Ses01F_impro01_M000"].votes["C-E4"] == ["oth"]
    assert by["Ses01F_impro01_M001"].label is None  # frustration is outside the 4 classes
    refs9, _ = evaluate.read_iemocap(d / "Ses01F_impro01.txt", "iemocap9")
    assert [r.label for r in refs9] == ["neutral", None, "excited", "frustrated"]


def test_iemocap_human_reference_by_hand(tmp_path):
    f = tmp_path / "Ses01F_impro01.txt"
    f.write_text(IEMOCAP_TXT)
    refs, _ = evaluate.read_iemocap(f, "iemocap4")
    h = evaluate.human_reference(refs, "iemocap4")
    # scored: F000 (3 neutral votes, all right) and M000 (happy: exc->happy, hap->happy, other->wrong)
    assert h["evaluator_votes"] == 6
    assert h["accuracy"] == pytest.approx(5 / 6)
    assert h["balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    # kappa over all four utterances (the tie and the frustrated one included), self-assessments left out
    cats = ["angry", "happy", "neutral", "sad", evaluate.OTHER]
    rows = [["neutral"] * 3, [evaluate.OTHER, "angry", "neutral", "neutral"], ["happy", "happy", evaluate.OTHER],
            [evaluate.OTHER, evaluate.OTHER, "angry"]]
    table = [[r.count(c) for c in cats] for r in rows]
    assert h["kappa_utterances"] == 4
    assert table == [[0, 0, 3, 0, 0], [1, 0, 2, 0, 1], [0, 2, 0, 0, 1], [1, 0, 0, 0, 2]]
    # by hand: per-utterance agreement 1, 2/12, 2/6, 2/6 -> 11/24; the 13 votes split
    # 2/2/5/0/4 -> chance 49/169; kappa = (11/24 - 49/169) / (120/169) = 683/2880
    assert h["fleiss_kappa"] == pytest.approx(683 / 2880, abs=1e-12)


def test_iemocap_path_without_utterances_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here\n")
    with pytest.raises(evaluate.EvalError, match="no utterance lines"):
        evaluate.read_iemocap(tmp_path)


@pytest.mark.parametrize("dataset_labels,label_set", [
    (["neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"], "meld7"),
    (["neu", "hap", "exc", "sad", "ang"], "iemocap4"),
    (["neu", "hap", "exc", "sad", "ang", "fru", "fea", "sur", "dis"], "iemocap9"),
])
def test_every_dataset_label_has_a_category_and_every_answer_maps(dataset_labels, label_set):
    ls = taxonomy.load_label_set(label_set)
    assert all(ls.canonical(x) in ls.names for x in dataset_labels)
    src = taxonomy.load_label_set("cowen26")
    for cat in src.names:  # any primary emotion the annotator can give lands on a gold class
        assert taxonomy.map_label(cat, {cat: 0.9}, "cowen26", label_set) in ls.names
    assert taxonomy.map_label("Joy", {"Joy": 0.1}, "cowen26", label_set) == ls.canonical("neutral")


def test_exclude_names_resolve_in_each_label_set():
    assert evaluate._canon_exclude(taxonomy.load_label_set("iemocap9"), evaluate.DEFAULT_EXCLUDE) == ["frustrated", "neutral"]
    assert evaluate._canon_exclude(taxonomy.load_label_set("meld7"), evaluate.DEFAULT_EXCLUDE) == ["neutral"]

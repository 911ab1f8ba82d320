"""`mikupal report`: one self-contained HTML file holding the project's numbers and figures."""
import base64
import re
from html.parser import HTMLParser

import pytest
from eval_fixture import MELD_CSV, add_review, add_run, meld_project
from typer.testing import CliRunner

from mikupal import evaluate, report, store
from mikupal.cli import app


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.refs, self.text, self.rows = [], [], [], []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = ""
        self.refs += [(tag, k, v or "") for k, v in attrs if k in ("src", "href", "srcset", "data", "action", "poster")]

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell += data


@pytest.fixture()
def full_project(project, tmp_path):
    db = project.db()
    ids = meld_project(db)
    run = add_run(db, "2026-01-01T10:00:00.000Z", "2026-01-01T10:10:00.000Z", stages="emotion")
    db.conn.execute("UPDATE annotations SET run_id=?", (run,))
    for vid in ids["videos"].values():
        store.set_stage_state(db, vid, "emotion", "done", run_id=run)
    add_run(db, "2026-01-01T11:00:00.000Z", None, status="running")
    db.conn.execute("UPDATE segments SET status='no_face' WHERE id=?", (ids["segments"]["unrelated_clip"],))
    a = ids["annotations"]
    add_review(db, a[("dia0_utt0", 0)], "ana", "accept")
    add_review(db, a[("dia0_utt0", 0)], "ben", "accept")
    add_review(db, a[("dia1_utt2", 0)], "ana", "reject", corrected_label="Sadness")
    add_review(db, a[("dia1_utt2", 0)], "ben", "accept")
    add_review(db, a[("dia1_utt1", 0)], "ana", "skip")
    labels = tmp_path / "test_sent_emo.csv"
    labels.write_text(MELD_CSV, encoding="utf-8")
    evaluate.evaluate(db, "meld", labels, out_dir=project.root / "eval" / "meld-meld7")
    return project, db


def test_report_is_self_contained_and_holds_the_numbers(full_project, tmp_path):
    project, db = full_project
    out = tmp_path / "r" / "report.html"
    r = CliRunner().invoke(app, ["report", str(project.root), "--out", str(out)])
    assert r.exit_code == 0, r.output
    text = out.read_text(encoding="utf-8")
    p = _Refs()
    p.feed(text)
    # nothing is fetched: no scripts, stylesheets or frames; every src/href is inline data
    assert not {"script", "link", "iframe", "object", "embed"} & set(p.tags)
    assert p.refs and all(v.startswith("data:image/png;base64,") for _, _, v in p.refs)
    assert "url(" not in text and "@import" not in text
    # every image decodes to a PNG: label distribution, rationality, two confusion matrices, emotion map
    pngs = [base64.b64decode(v.split(",", 1)[1]) for _, _, v in p.refs]
    assert len(pngs) == 5 and all(b[:8] == b"\x89PNG\r\n\x1a\n" for b in pngs)

    words = re.sub(r"\s+", " ", "".join(p.text))
    # evaluation (80% accuracy for gemini-test, 20% for always-joy), from eval.json
    assert "80.0%" in words and "20.0%" in words and "always-joy" in words
    # rationality: 3 accepted of 4 reviewed, 1 skipped
    assert "Rationality score 75.0%" in words and "3 accepted of 4 reviewed; 1 skipped" in words
    # cost: every answer in the fixture costs $0.001
    n = db.conn.execute("SELECT COUNT(*) FROM annotations").fetchone()[0]
    assert n == 19
    assert f"Total ${n * 0.001:.4f} for {n} answers" in words
    # retention: 6 videos x 4 s; the no_face segment (2.8 s) is not retained
    segs = db.conn.execute("SELECT SUM(end_s - start_s) FROM segments WHERE status='ok'").fetchone()[0]
    assert f"{segs:.1f} s" in words and f"{100 * segs / 24:.1f}%" in words
    # throughput: 19 answers in 10 minutes = 114 per hour; 24 s of media in 600 s = 0.04x
    run1 = next(r for r in p.rows if r[:2] == ["1", "done"])
    assert run1[4:] == ["10.0 min", "19", "114", "0.04×"]
    run2 = next(r for r in p.rows if r[:2] == ["2", "running"])
    assert run2[4:] == ["—", "0", "—", "—"]
    assert "Emotion map" in words and "Agreement" in words


def test_report_on_an_empty_project_says_what_is_missing(project, tmp_path):
    html = report.build_report(project)
    p = _Refs()
    p.feed(html)
    words = "".join(p.text)
    assert "No emotion answers yet" in words and "No reviews yet" in words and "No evaluation yet" in words
    assert p.refs == []


def test_report_survives_an_unreadable_eval_json(project):
    bad = project.root / "eval" / "old" / "eval.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"dataset": "meld", "systems": [{"model": "x"}]}')
    html = report.build_report(project, include_map=False)
    assert "re-run mikupal eval" in html


def test_report_bad_out_exits_2(full_project, tmp_path):
    project, db = full_project
    r = CliRunner().invoke(app, ["report", str(project.root), "--out", str(tmp_path), "--no-map"])
    assert r.exit_code == 2 and "is a folder" in r.output

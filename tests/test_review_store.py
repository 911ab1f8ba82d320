"""mikupal.review: verdict persistence, undo, queues, two raters on one project file."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import review_fixture as rf  # noqa: E402

from mikupal import queries, review, store  # noqa: E402


@pytest.fixture(scope="module")
def proj(tmp_path_factory):
    return rf.build_project(tmp_path_factory.mktemp("rv"), runs=2)


@pytest.fixture
def db(proj, tmp_path):
    # each test gets its own copy of the project database
    import shutil
    p = tmp_path / "project.db"
    shutil.copy(proj.db_path, p)
    d = store.connect(p)
    yield d
    d.conn.close()


def _reviews(db):
    return store.rows(db, "SELECT r.annotation_id, t.name, r.verdict, r.corrected_label FROM reviews r"
                          " JOIN raters t ON t.id = r.rater_id ORDER BY r.id")


def test_save_undo_and_history(db, proj):
    a1, a2 = proj.annotation_ids[:2]
    review.save_verdict(db, a1, "ann", "accept")
    review.save_verdict(db, a2, "ann", "reject", corrected_label="sadness")
    assert review.current_verdict(db, a2, "ann")["corrected_label"] == "Sadness"  # canonical name
    # reviewing again replaces the current verdict but keeps the older row as history
    review.save_verdict(db, a1, "ann", "reject")
    assert review.current_verdict(db, a1, "ann")["verdict"] == "reject"
    assert [r["verdict"] for r in _reviews(db) if r["annotation_id"] == a1] == ["accept", "reject"]
    # undo removes the newest row and the earlier verdict comes back
    assert review.undo_last(db, "ann") == a1
    assert review.current_verdict(db, a1, "ann")["verdict"] == "accept"
    assert review.undo_last(db, "ann") == a2
    assert review.current_verdict(db, a2, "ann") is None
    assert review.undo_last(db, "nobody") is None


def test_bad_input_names_item_and_fix(db, proj):
    with pytest.raises(review.ReviewError, match="verdict 'maybe' for annotation"):
        review.save_verdict(db, proj.annotation_ids[0], "ann", "maybe")
    with pytest.raises(review.ReviewError, match="not in label set cowen26"):
        review.save_verdict(db, proj.annotation_ids[0], "ann", "reject", corrected_label="hangry")
    with pytest.raises(review.ReviewError, match="annotation 999999 does not exist"):
        review.save_verdict(db, 999999, "ann", "accept")
    with pytest.raises(review.ReviewError, match="empty rater"):
        review.save_verdict(db, proj.annotation_ids[0], "  ", "accept")
    assert _reviews(db) == []  # nothing half-written


def test_queues(db, proj):
    ids = proj.annotation_ids
    # one reviewable annotation (run 0) per segment, in time order
    assert review.queue(db, "all", "ann") == ids
    review.save_verdict(db, ids[0], "ann", "accept")
    assert review.queue(db, "unreviewed", "ann") == ids[1:]
    assert review.queue(db, "unreviewed", "bob") == ids
    assert review.queue(db, "all", "ann") == ids[1:] + ids[:1]  # reviewed items go last
    assert review.queue(db, "emotion", "ann", emotion="joy") == [ids[3], ids[0]]
    # the last segment's runs disagree; nothing else does yet
    assert review.queue(db, "low_agreement", "ann") == [ids[3]]
    # two raters disagreeing on item 1 make it low-agreement too
    review.save_verdict(db, ids[1], "ann", "accept")
    review.save_verdict(db, ids[1], "bob", "reject")
    assert set(review.queue(db, "low_agreement", "ann")) == {ids[1], ids[3]}
    bal = review.queue(db, "balanced", "carol")
    assert sorted(bal) == sorted(ids)
    # round robin: the three emotions each appear once before Joy appears a second time
    emos = [review.load_item(db, i, "carol").annotation["primary_emotion"] for i in bal]
    assert sorted(emos[:3]) == ["Anger", "Joy", "Sadness"]
    with pytest.raises(review.ReviewError, match="unknown queue"):
        review.queue(db, "weird", "ann")


def test_load_item(db, proj):
    review.save_verdict(db, proj.annotation_ids[3], "bob", "reject", corrected_label="Anger")
    it = review.load_item(db, proj.annotation_ids[3], "ann")
    assert it.segment["id"] == proj.segment_ids[3]
    assert it.runs == proj.intensities[proj.segment_ids[3]]
    assert {t["id"] for t in it.tracks} == {proj.red_track_id, proj.blue_track_id}
    assert it.verdict is None and it.others == {"reject": 1}
    latest = queries.latest_verdicts(db)
    assert latest == [{"annotation_id": proj.annotation_ids[3], "rater": "bob", "verdict": "reject",
                       "corrected_label": "Anger", "emotion": "Joy"}]


def test_two_writers_never_lose_verdicts(db, proj):
    """Two connections (two app instances) writing at once: every verdict lands, per rater.
    The two start every write at the same moment (a barrier), so they contend for the file on
    each step, not only when the scheduler happens to interleave them."""
    path = db.conn.execute("PRAGMA database_list").fetchone()[2]
    errors = []
    together = threading.Barrier(2, timeout=60)

    def rate(name, verdict):
        d = store.connect(path)
        try:
            for _ in range(5):
                for a in proj.annotation_ids:
                    together.wait()
                    review.save_verdict(d, a, name, verdict)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
            together.abort()  # the other writer stops at the barrier instead of waiting it out
        finally:
            d.conn.close()

    ts = [threading.Thread(target=rate, args=("ann", "accept")), threading.Thread(target=rate, args=("bob", "reject"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    rows = _reviews(db)
    assert len(rows) == 2 * 5 * len(proj.annotation_ids)
    for a in proj.annotation_ids:
        assert review.current_verdict(db, a, "ann")["verdict"] == "accept"
        assert review.current_verdict(db, a, "bob")["verdict"] == "reject"


def test_primary_annotation_is_one_definition_everywhere(tmp_path):
    # The primary annotation of a segment is its lowest run index, newest answer: the review
    # queue, the Data table's join and the per-segment lookup all agree on a segment with an
    # old run-0 answer (a changed prompt), a new run-0 answer and a run-1 answer.
    from mikupal.project import Project

    p = Project.create(tmp_path / "p")
    db = p.db()
    with store.transaction(db) as c:
        c.execute("INSERT INTO videos (sha256, path, duration_s, added_at) VALUES ('x', '/v.mp4', 10, ?)", (store.now(),))
        c.execute("INSERT INTO segments (video_id, start_s, end_s, text, status) VALUES (1, 0, 3, 'hi', 'ok')")
        ids = []
        for prompt, run, emo in (("old", 0, "Joy"), ("new", 1, "Anger"), ("new", 0, "Sadness")):
            cur = c.execute("INSERT INTO annotations (segment_id, backend, model, prompt_sha, run_index, label_set,"
                            " primary_emotion, intensities_json, created_at) VALUES (1,'b','m',?,?,'cowen26',?,'{}',?)",
                            (prompt, run, emo, store.now()))
            ids.append(cur.lastrowid)
    want = ids[2]  # run 0 of the new prompt
    assert queries.primary_annotation_for_segment(db, 1) == want
    assert [r["id"] for r in queries.reviewable(db)] == [want]
    joined = db.conn.execute("SELECT pa.id FROM segments s" + queries.primary_annotation_join("pa", "s.id")).fetchone()[0]
    assert joined == want

"""The emotion map: blended colours, strongest-category labels, clusters that stay apart."""
import numpy as np
import pytest
from eval_fixture import add_annotation, add_segment, add_video
from typer.testing import CliRunner

from mikupal import emotion_map
from mikupal.cli import app

JOY, SAD, ANGER = "#FFD700", "#1F4E9E", "#D7191C"  # cowen26 colours


def _rgb(h):
    return np.array([int(h[i:i + 2], 16) / 255 for i in (1, 3, 5)])


def test_blend_colors_is_the_intensity_weighted_mean():
    colors = [JOY, SAD, ANGER]
    out = emotion_map.blend_colors(np.array([[1, 0, 0], [0.5, 0.5, 0], [0.2, 0, 0.6], [0, 0, 0]]), colors)
    assert out[0] == pytest.approx(_rgb(JOY))
    assert out[1] == pytest.approx((_rgb(JOY) + _rgb(SAD)) / 2)
    assert out[2] == pytest.approx((0.2 * _rgb(JOY) + 0.6 * _rgb(ANGER)) / 0.8)
    assert tuple(out[3]) == pytest.approx(emotion_map.GREY)


@pytest.fixture()
def clustered(project):
    """36 answers in three clear groups (Joy-, Sadness-, Anger-dominant), plus a second run."""
    db = project.db()
    vid = add_video(db, "/videos/talk.mp4", 200.0)
    rng = np.random.default_rng(0)
    expected = {}
    for i in range(36):
        main = ["Joy", "Sadness", "Anger"][i % 3]
        inten = {c: round(float(rng.uniform(0, 0.15)), 3) for c in ("Joy", "Sadness", "Anger", "Interest", "Calmness")}
        inten[main] = round(float(rng.uniform(0.7, 1.0)), 3)
        seg = add_segment(db, vid, 5.0 * i, 5.0 * i + 3, text=f"utterance {i}")
        aid = add_annotation(db, seg, main, inten)
        add_annotation(db, seg, "Calmness", {"Calmness": 0.9}, run_index=1)
        expected[aid] = (main, inten)
    return project, db, expected


def test_points_labels_colours_and_clusters(clustered):
    project, db, expected = clustered
    pts = emotion_map.emotion_map_points(db, seed=1)
    assert len(pts) == 36  # run 0 only
    assert {p.annotation_id for p in pts} == set(expected)
    by_id = {p.annotation_id: p for p in pts}
    aid, x, y, rgb, label, text = pts[0]  # the GUI unpacks points as plain tuples
    assert (aid, label, text) == (pts[0].annotation_id, pts[0].label, pts[0].text) and len(rgb) == 3
    for aid, (main, inten) in expected.items():
        p = by_id[aid]
        assert p.label == main
        assert p.text.startswith("utterance ")
        # the intensity-weighted mean of the category colours, worked out here from the hex codes
        hexes = {"Joy": JOY, "Sadness": SAD, "Anger": ANGER, "Interest": "#2BA8A0", "Calmness": "#7FC8A9"}
        w = np.array([inten[c] for c in inten])
        pal = np.array([[int(hexes[c][k:k + 2], 16) / 255 for k in (1, 3, 5)] for c in inten])
        assert p.rgb == pytest.approx(tuple(w @ pal / w.sum()), abs=1e-9)
    # every point is nearer to its own group's centre than to any other group's
    xy = {lab: np.array([[p.x, p.y] for p in pts if p.label == lab]) for lab in ("Joy", "Sadness", "Anger")}
    centre = {lab: v.mean(axis=0) for lab, v in xy.items()}
    for lab, v in xy.items():
        for other in centre:
            if other != lab:
                assert (np.linalg.norm(v - centre[lab], axis=1) < np.linalg.norm(v - centre[other], axis=1)).all()
    assert [p.label for p in emotion_map.emotion_map_points(db, run_index=1)] == ["Calmness"] * 36


def test_tiny_sets_do_not_crash():
    assert emotion_map.embed_2d(np.zeros((0, 3))).shape == (0, 2)
    assert emotion_map.embed_2d(np.eye(3)).shape == (3, 2)
    assert emotion_map.embed_2d(np.random.default_rng(0).random((5, 4))).shape == (5, 2)
    # identical answers (a model that always says the same) used to crash scikit-learn's t-SNE
    same = emotion_map.embed_2d(np.tile([0.0, 0.9, 0.1], (40, 1)))
    assert same.shape == (40, 2) and np.isfinite(same).all()
    mixed = np.vstack([np.tile([1.0, 0, 0], (10, 1)), np.random.default_rng(1).random((10, 3))])
    xy = emotion_map.embed_2d(mixed, seed=2)
    assert np.isfinite(xy).all() and np.ptp(xy[:10], axis=0).max() < np.ptp(xy, axis=0).max() / 5


def test_cli_map_writes_png_and_refuses_an_empty_project(clustered, tmp_path):
    project, db, expected = clustered
    out = tmp_path / "figs" / "map.png"
    r = CliRunner().invoke(app, ["map", str(project.root), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "36 points" in r.output
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000
    from mikupal.project import Project

    empty = Project.create(tmp_path / "empty")
    r = CliRunner().invoke(app, ["map", str(empty.root)])
    assert r.exit_code == 2 and "no emotion answers" in r.output

"""`--ray local`: the same stages on Ray actors give the same rows as the local runner."""
from __future__ import annotations

import pytest

from pipeline import store
from pipeline.project import Project
from pipeline.runner import Runner

import runner_stages
from runner_stages import BrokenLoadStage, LabelStage, SplitStage, add_fake_videos

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'mikupal[cluster]')")


def _rows(db):
    segs = db.conn.execute("SELECT video_id, start_s, end_s, text FROM segments ORDER BY id").fetchall()
    ann = db.conn.execute(
        "SELECT s.video_id, s.start_s, a.run_index, a.primary_emotion, a.intensities_json, a.rationale"
        " FROM annotations a JOIN segments s ON s.id = a.segment_id ORDER BY 1, 2, 3"
    ).fetchall()
    states = db.conn.execute("SELECT video_id, stage, status, cache_key FROM stage_state ORDER BY 1, 2").fetchall()
    return segs, ann, states


@pytest.fixture(scope="module")
def ray_local():
    # The test stages live in this test folder, which Ray's workers cannot import: ship them by value.
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(runner_stages)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(runner_stages)


def test_ray_local_gives_the_same_rows_as_the_local_runner(tmp_path, ray_local, monkeypatch):
    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(tmp_path / "models"))
    local = Project.create(tmp_path / "local")
    on_ray = Project.create(tmp_path / "ray")
    add_fake_videos(local.db(), 4)
    add_fake_videos(on_ray.db(), 4)

    a = Runner(local, [SplitStage, LabelStage], workers={"label": 2}).run()
    events = []
    b = Runner(on_ray, [SplitStage, LabelStage], workers={"label": 2}, ray_address="local", on_event=events.append).run()
    assert a.ok and b.ok, (a, b)
    assert b.stages["label"].ok == 4 * 4 * LabelStage.runs
    rows_a, rows_b = _rows(local.db()), _rows(on_ray.db())
    assert rows_a == rows_b and len(rows_a[1]) == 32
    assert events[-1].kind == "run_finished" and events[-1].status == "finished"
    # Rerun on Ray: nothing pending, nothing duplicated.
    c = Runner(on_ray, [SplitStage, LabelStage], ray_address="local").run()
    assert c.ok and c.stages["label"].total == 0
    assert _rows(on_ray.db()) == rows_b


def test_ray_actor_that_cannot_load_fails_the_stage_with_one_error(tmp_path, ray_local, monkeypatch):
    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(tmp_path / "models"))
    p = Project.create(tmp_path / "p")
    add_fake_videos(p.db(), 3)
    s = Runner(p, [BrokenLoadStage], ray_address="local").run()
    assert s.status == "finished" and s.stages["broken"].failed == 3
    errs = store.rows(p.db(), "SELECT message FROM errors WHERE run_id=?", (s.run_id,))
    assert len(errs) == 1 and "broken.onnx is missing" in errs[0]["message"]

"""`--ray local`: the same stages on Ray actors give the same rows as the local runner."""
from __future__ import annotations

import pytest
import ray  # the cluster extra: make test installs it (README: already in .venv)

from mikupal import store
from mikupal.project import Project
from mikupal.runner import Runner

import runner_stages
from runner_stages import AsyncLabelStage, BrokenLoadStage, LabelStage, SplitStage, add_fake_videos



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


def test_ray_runs_the_product_audio_stages_like_the_local_runner(tmp_path, ray_local, demo_clip, monkeypatch):
    from mikupal.demo_project import DEMO_SETTINGS, _apply_settings
    from mikupal.ingest import add_videos

    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(tmp_path / "models"))
    clip = tmp_path / "talk.mp4"
    clip.write_bytes(demo_clip.path.read_bytes())
    clip.with_suffix(".srt").write_bytes(demo_clip.srt_path.read_bytes())
    projects = []
    for name in ("local", "ray"):
        p = Project.create(tmp_path / name)
        _apply_settings(p.root / "mikupal.toml", DEMO_SETTINGS)
        p = Project.open(p.root)
        add_videos(p.db(), [clip])
        projects.append(p)
    stages = ["separate", "vad", "asr", "segments"]
    a = Runner(projects[0], stages).run()
    b = Runner(projects[1], stages, ray_address="local").run()
    assert a.ok and b.ok, (a.message, b.message)

    def rows(p):
        db = p.db()
        return (db.conn.execute("SELECT start_s, end_s, text, status FROM segments ORDER BY start_s").fetchall(),
                db.conn.execute("SELECT start_s, end_s, text, source FROM transcripts ORDER BY start_s").fetchall(),
                db.conn.execute("SELECT stage, status, cache_key FROM stage_state ORDER BY stage").fetchall())

    ra, rb = rows(projects[0]), rows(projects[1])
    assert len(ra[0]) >= 3 and len(ra[2]) == 4
    assert ra == rb


def test_ray_gpu_demand_the_cluster_cannot_meet_fails_with_the_fix(tmp_path, ray_local, monkeypatch):
    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(tmp_path / "models"))
    p = Project.create(tmp_path / "p")
    add_fake_videos(p.db(), 1)
    p.config["runner"]["num_gpus"] = {"split": 1}
    s = Runner(p, [SplitStage], ray_address="local").run()
    assert s.status == "failed" and "num_gpus" in s.message and "lower it" in s.message
    assert store.rows(p.db(), "SELECT status FROM runs WHERE id=?", (s.run_id,))[0]["status"] == "failed"


def test_an_async_stage_fans_out_inside_one_ray_actor(tmp_path, ray_local, monkeypatch):
    # The same async stage as locally: one async actor keeps concurrency() items in flight.
    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(tmp_path / "models"))
    p = Project.create(tmp_path / "p")
    add_fake_videos(p.db(), 2)
    summary = Runner(p, [SplitStage, AsyncLabelStage], ray_address="auto").run()
    assert summary.ok and summary.stages["label"].ok == 16
    assert p.db().conn.execute("SELECT COUNT(*) FROM annotations").fetchone()[0] == 16

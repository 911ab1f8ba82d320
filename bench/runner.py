"""Runner benchmark: every figure is a ratio against a baseline measured in this process.

1. Orchestration overhead: three no-op stages over many videos, the Runner vs. a plain
   single-thread loop doing the same pending/prepare/process/commit calls.
2. Scaling: a CPU-bound stage (SHA-256 over a buffer; hashlib releases the GIL) with 1 and
   N worker threads: speed-up and its ratio to the ideal N (capped by the cores available).
3. End to end: the demo configuration (`mikupal demo` settings) on the demo clip, as a
   multiple of real time (video seconds per wall-clock second).

    .venv/bin/python bench/runner.py [--videos 300] [--items 24] [--workers 2] [--no-e2e]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mikupal import store  # noqa: E402
from mikupal.project import Project  # noqa: E402
from mikupal.runner import Runner  # noqa: E402
from mikupal.stage import Stage  # noqa: E402


class _Noop(Stage):
    scope = "video"

    def prepare(self, db, item_id):
        return {"video_id": item_id}

    def process(self, task):
        return {}

    def commit(self, db, task, result):
        return None  # the runner stores the done state


class Noop1(_Noop):
    name = "noop1"


class Noop2(_Noop):
    name = "noop2"
    requires = ("noop1",)


class Noop3(_Noop):
    name = "noop3"
    requires = ("noop2",)


class Hash(_Noop):
    """CPU-bound work that runs outside the GIL, as decoding and model inference do."""

    name = "hash"
    MB = 24
    ROUNDS = 6
    _buf = os.urandom(MB << 20)

    def process(self, task):
        h = hashlib.sha256()
        for _ in range(self.ROUNDS):
            h.update(self._buf)
        return {"digest": h.hexdigest()}


def _project(root: Path, n_videos: int) -> Project:
    p = Project.create(root)
    db = p.db()
    with store.transaction(db):
        for i in range(n_videos):
            db.conn.execute("INSERT INTO videos (sha256, path, duration_s, added_at) VALUES (?,?,?,?)",
                            (hashlib.sha256(f"{root}{i}".encode()).hexdigest(), f"/x/{i}.mp4", 10.0, store.now()))
    return p


def plain_loop(project: Project, classes) -> float:
    db = project.db()
    stages = [c(project) for c in classes]
    t = time.perf_counter()
    for st in stages:
        for item in st.pending(db):
            task = st.prepare(db, item)
            result = st.process(task)
            with store.transaction(db):  # what the runner's ledger does per item
                info = st.commit(db, task, result)
                store.set_stage_state(db, item, st.name, "done", cache_key=st.cache_key(db, item), info=info or {})
    return time.perf_counter() - t


def runner_time(project: Project, classes, workers=None) -> float:
    t = time.perf_counter()
    s = Runner(project, classes, workers=workers or {}, devices=["cpu"]).run()
    elapsed = time.perf_counter() - t
    assert s.ok, s
    return elapsed


def overhead(tmp: Path, n: int) -> None:
    classes = [Noop1, Noop2, Noop3]
    base = plain_loop(_project(tmp / "plain", n), classes)
    run = runner_time(_project(tmp / "runner", n), classes)
    items = 3 * n
    print(f"overhead: {items} no-op items  plain loop {base:.2f}s ({items / base:.0f} items/s)  "
          f"runner {run:.2f}s ({items / run:.0f} items/s)  ratio runner/plain = {run / base:.2f}")


def scaling(tmp: Path, n_items: int, workers: int) -> None:
    t1 = runner_time(_project(tmp / "s1", n_items), [Hash], {"hash": 1})
    tn = runner_time(_project(tmp / f"s{workers}", n_items), [Hash], {"hash": workers})
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ideal = min(workers, cores)
    speedup = t1 / tn
    # What plain threads achieve on this machine right now (other processes share the cores).
    import threading

    stage = Hash.__new__(Hash)  # process() needs no project
    per = [n_items // workers + (i < n_items % workers) for i in range(workers)]

    def work(k):
        for _ in range(k):
            Hash.process(stage, {})

    t = time.perf_counter()
    work(n_items)
    r1 = time.perf_counter() - t
    threads = [threading.Thread(target=work, args=(k,)) for k in per]
    t = time.perf_counter()
    [th.start() for th in threads]
    [th.join() for th in threads]
    raw = r1 / (time.perf_counter() - t)
    print(f"scaling: {n_items} CPU-bound items  1 worker {t1:.2f}s  {workers} workers {tn:.2f}s  "
          f"speed-up {speedup:.2f}x  ratio to ideal ({ideal}x on {cores} cores) = {speedup / ideal:.2f}; "
          f"bare threads reach {raw:.2f}x now, runner/bare = {speedup / raw:.2f}")


def end_to_end(tmp: Path) -> None:
    from mikupal.demo_project import build_demo_project

    p = build_demo_project(tmp / "demo", on_line=lambda s: None)
    db = p.db()
    video_s = db.conn.execute("SELECT SUM(duration_s) FROM videos").fetchone()[0]
    t = time.perf_counter()
    s = Runner(p, devices=["cpu"]).run()
    elapsed = time.perf_counter() - t
    per_stage = ", ".join(f"{st.name} {st.elapsed():.1f}s" for st in s.stages.values())
    print(f"end to end (demo settings): {video_s:.1f}s of video in {elapsed:.1f}s = {video_s / elapsed:.2f}x real time "
          f"({s.status}, {s.failed_items} failed; {per_stage})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=300)
    ap.add_argument("--items", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-e2e", action="store_true")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mikupal-bench-"))
    os.environ.setdefault("MIKUPAL_MODELS_DIR", str(tmp / "models"))
    try:
        overhead(tmp, a.videos)
        scaling(tmp, a.items, a.workers)
        if not a.no_e2e:
            end_to_end(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The run's ledger: the only writer of ``runs``, ``errors`` and ``stage_state`` during a run.

Every item's result is committed here, in one transaction with its stage_state, so a killed
process loses at most the items in flight, never half an item, and stages never see a
transaction or a run id bookkeeping row of their own.
"""
from __future__ import annotations

import json
import logging
import os
import time

from .. import store
from ..emotion.redact import scrub
from ..events import RunSummary, ScrubFilter
from ..stage import Stage, has_video_state


def safe_config(cfg: dict) -> dict:
    """The config as stored in runs.config_json: anything that looks like a secret is dropped."""
    out = {}
    for section, values in cfg.items():
        if isinstance(values, dict):
            out[section] = {
                k: v for k, v in values.items()
                if not any(w in k.lower() for w in ("key", "token", "secret", "password"))
            }
    return json.loads(scrub(json.dumps(out, default=str)))


CHECKPOINT_S = 10.0  # answers already paid for reach project.db itself, not only its -wal


class Ledger:
    def __init__(self, project, db):
        self.project, self.db = project, db
        self._checkpointed = time.monotonic()
        self.run_id: int | None = None
        self.log_path = None
        self.logger: logging.Logger | None = None
        self._handler: logging.Handler | None = None

    # ---- the run row and its log ----------------------------------------------------
    def open_run(self, stage_names: list[str], cfg: dict) -> int:
        self.project.logs_dir.mkdir(parents=True, exist_ok=True)
        cfg_json = json.dumps(safe_config(cfg), sort_keys=True)
        with store.transaction(self.db) as conn:
            cur = conn.execute(
                "INSERT INTO runs (started_at, status, config_json, stages, pid) VALUES (?,?,?,?,?)",
                (store.now(), "running", cfg_json, ",".join(stage_names), os.getpid()),
            )
            self.run_id = int(cur.lastrowid)
            self.log_path = self.project.logs_dir / f"run-{self.run_id}.log"
            conn.execute("UPDATE runs SET log_path=? WHERE id=?", (str(self.log_path), self.run_id))
        self.logger = logging.getLogger(f"mikupal.run.{self.project.root}.{self.run_id}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        self._handler = logging.FileHandler(self.log_path, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self._handler.addFilter(ScrubFilter())
        self.logger.addHandler(self._handler)
        return self.run_id

    def close_run(self, summary: RunSummary) -> None:
        try:
            with store.transaction(self.db) as conn:
                conn.execute("UPDATE runs SET finished_at=?, status=? WHERE id=?", (store.now(), summary.status, self.run_id))
        except Exception:  # noqa: BLE001
            self.logger.exception("could not mark run %s %s", self.run_id, summary.status)
        for s in summary.stages.values():
            self.logger.info("stage %s: %d ok, %d failed, %d skipped in %.1fs", s.name, s.ok, s.failed, s.skipped, s.elapsed())
        self.logger.info("run %d %s in %.1fs%s", self.run_id, summary.status, summary.elapsed_s,
                         f": {summary.message}" if summary.message else "")

    def checkpoint(self, force: bool = False) -> None:
        """Move committed pages from the WAL into project.db (PASSIVE: never waits for a reader),
        every CHECKPOINT_S and at each stage's end, so a lost -wal after a crash loses nothing paid."""
        if not force and time.monotonic() - self._checkpointed < CHECKPOINT_S:
            return
        self._checkpointed = time.monotonic()
        try:
            self.db.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:  # noqa: BLE001 - an extra: the WAL still holds every commit
            self.logger.debug("checkpoint failed", exc_info=True)

    def close(self) -> None:
        try:
            self.db.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:  # noqa: BLE001
            pass
        if self._handler is not None:
            self.logger.removeHandler(self._handler)
            self._handler.close()
        self.db.conn.close()

    # ---- items ------------------------------------------------------------------------
    def commit(self, stage: Stage, task: dict, result: dict, video_id: int) -> None:
        """The stage's result rows and, for a video-scope stage, its done state: one transaction."""
        with store.transaction(self.db):
            info = stage.commit(self.db, task, result)
            if stage.scope == "video":
                key = task.get("cache_key") or stage.cache_key(self.db, video_id)
                store.set_stage_state(self.db, video_id, stage.name, "done", cache_key=key, info=info or {},
                                      run_id=self.run_id)

    def video_done(self, stage: Stage, video_id: int) -> None:
        """A ``video_state`` segment stage has nothing pending for this video: its done state."""
        with store.transaction(self.db):
            key = stage.cache_key(self.db, video_id)
            st = store.get_stage_state(self.db, video_id, stage.name)
            info = stage.video_info(self.db, video_id)
            if st is None or st["status"] != "done" or st["cache_key"] != key or st.get("info") != info:
                store.set_stage_state(self.db, video_id, stage.name, "done", cache_key=key, info=info, run_id=self.run_id)

    def failure(self, stage: Stage, line: str, *, video_id: int | None, segment_id: int | None = None,
                detail: str | None = None, path: str | None = None, mark_video: bool = True) -> None:
        """One errors row and, for a video-scope (or ``video_state``) stage, a failed state (never raises)."""
        try:
            with store.transaction(self.db):
                store.record_error(self.db, stage.name, line, run_id=self.run_id, video_id=video_id,
                                   segment_id=segment_id, detail=detail, path=path)
                if mark_video and has_video_state(stage) and video_id is not None:
                    store.set_stage_state(self.db, video_id, stage.name, "failed", run_id=self.run_id, info={"error": line})
        except Exception:  # noqa: BLE001 - never let bookkeeping stop the run
            self.logger.exception("could not record a failure of stage %s: %s", stage.name, line)

    def failed_state(self, stage: Stage, video_id: int, line: str) -> None:
        """A video-scope item that failed without an errors row of its own (its stage could not load)."""
        if not has_video_state(stage):
            return
        with store.transaction(self.db):
            store.set_stage_state(self.db, video_id, stage.name, "failed", run_id=self.run_id, info={"error": line})

"""Batch execution: stages that declare ``supports_batch`` and whose driver instance has
``batch`` set (the emotion stage with ``[emotion] batch = true``, ``mikupal run --batch``) run
through their batch driver (``mikupal.emotion.batch.BatchDriver``) instead of item by item.

``BatchExecutor`` wraps the local or Ray executor and speaks the same interface to the
scheduler. Work for a batch stage is collected while the scheduler dispatches, sent as one
job per poll, and its outcomes come back through ``poll`` like any other executor's. The
driver runs on the scheduler's thread (it records jobs in the store, which only that thread
touches) on an event loop owned here. Work still inside a job when the run ends (cancel,
Ctrl-C, a kill) stays recorded in project.db; the next run polls the job instead of sending
it again.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..events import describe_failure
from .worker import Outcome, Work

log = logging.getLogger(__name__)
BATCH_ROOM = 100_000  # a batch stage takes every pending item at once: one job, not a trickle


def wants_batch(cls, driver) -> bool:
    return bool(getattr(cls, "supports_batch", False) and getattr(driver, "batch", False))


def with_batch(inner, project, db, drivers: dict, classes: dict):
    """`inner` itself when no selected stage runs in batch mode, else a BatchExecutor around it."""
    names = [n for n in drivers if wants_batch(classes[n], drivers[n])]
    return BatchExecutor(inner, project, db, classes, names) if names else inner


class BatchExecutor:
    def __init__(self, inner, project, db, classes: dict, batch_stages: list[str]):
        self.inner, self.project, self.db, self.classes = inner, project, db, classes
        self.batch_stages = set(batch_stages)
        self.loop = asyncio.new_event_loop()
        self.drivers: dict[str, Any] = {}
        self.load_errors: dict[str, tuple[str, str | None]] = {}
        self.collected: dict[str, list[Work]] = {n: [] for n in batch_stages}
        self.sent: dict[tuple, Work] = {}  # (stage, segment_id, run_index) -> work inside a job

    # ---- the executor interface ---------------------------------------------------------
    def add_stage(self, plan) -> None:
        if plan.name not in self.batch_stages:
            self.inner.add_stage(plan)

    def n_workers(self, stage: str) -> int:
        return 1 if stage in self.batch_stages else self.inner.n_workers(stage)

    def room(self, stage: str) -> int:
        return BATCH_ROOM if stage in self.batch_stages else self.inner.room(stage)

    def submit(self, work: Work) -> None:
        if work.stage in self.batch_stages:
            self.collected[work.stage].append(work)
        else:
            self.inner.submit(work)

    def inflight(self) -> int:
        return self.inner.inflight() + len(self.sent) + sum(len(v) for v in self.collected.values())

    def take_queued(self, stage: str) -> list[Work]:
        if stage in self.batch_stages:  # work already inside a job cannot be taken back
            out, self.collected[stage] = self.collected[stage], []
            return out
        return self.inner.take_queued(stage)

    def drain_unstarted(self) -> int:
        n = sum(len(v) for v in self.collected.values())
        for k in self.collected:
            self.collected[k] = []
        # Work inside a job is recorded in project.db: the next run resumes it.
        self.sent.clear()
        return n + self.inner.drain_unstarted()

    def poll(self, timeout: float) -> list[Outcome]:
        out: list[Outcome] = []
        for name in sorted(self.batch_stages):
            out += self._flush(name)
            drv = self.drivers.get(name)
            if drv is not None and (self.sent or drv.outstanding()):
                try:
                    got = self.loop.run_until_complete(drv.poll())
                except Exception as e:  # noqa: BLE001 - a bug in the driver: report, keep the run going
                    log.exception("batch poll failed")
                    _, msg, _ = describe_failure(e)
                    got = []
                    log.error("batch %s: %s", name, msg)
                out += [self._outcome(name, task, res) for task, res in got]
        return out + self.inner.poll(0.0 if out else timeout)

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            for drv in self.drivers.values():
                try:
                    self.loop.run_until_complete(drv.aclose())
                except Exception:  # noqa: BLE001 - closing sessions is best effort
                    log.debug("closing a batch driver failed", exc_info=True)
            self.loop.close()

    # ---- helpers ----------------------------------------------------------------------
    def _driver(self, name: str):
        if name in self.drivers or name in self.load_errors:
            return self.drivers.get(name)
        try:
            from ..emotion.batch import BatchDriver

            stage = self.classes[name](self.project, device="cpu")
            self.drivers[name] = BatchDriver(stage, self.db)
        except Exception as e:  # noqa: BLE001 - e.g. no API key: the stage cannot start
            _, msg, detail = describe_failure(e)
            self.load_errors[name] = (msg, detail)
            return None
        return self.drivers[name]

    def _flush(self, name: str) -> list[Outcome]:
        works, self.collected[name] = self.collected[name], []
        if not works:
            return []
        drv = self._driver(name)
        if drv is None:
            msg, detail = self.load_errors[name]
            return [Outcome(w, "load_failed", expected=False, message=msg, detail=detail, worker=f"{name}-batch")
                    for w in works]
        for w in works:
            self.sent[(name, int(w.task["segment_id"]), int(w.task["run_index"]))] = w
        try:
            self.loop.run_until_complete(drv.submit([w.task for w in works]))
        except Exception as e:  # noqa: BLE001 - recorded per item; nothing was lost (jobs are in the store)
            expected, msg, detail = describe_failure(e)
            out = []
            for w in works:
                self.sent.pop((name, int(w.task["segment_id"]), int(w.task["run_index"])), None)
                out.append(Outcome(w, "error", expected=expected, message=msg, detail=detail, worker=f"{name}-batch"))
            return out
        return []

    def _outcome(self, name: str, task: dict, res: Any) -> Outcome:
        key = (name, int(task["segment_id"]), int(task["run_index"]))
        work = self.sent.pop(key, None) or Work(name, (key[1], key[2]), int(task["video_id"]), task)
        if isinstance(res, dict):
            return Outcome(work, "ok", result=res, worker=f"{name}-batch")
        expected, msg, detail = describe_failure(res)
        return Outcome(work, "error", expected=expected, message=msg, detail=detail, path=getattr(res, "path", None),
                       stops_stage=bool(getattr(res, "stops_stage", False)), worker=f"{name}-batch")

"""The scheduler: every selected stage as one streaming pipeline over the project's videos.

- The scheduler's thread (the one that calls `Runner.run`) is the only one that touches
  SQLite: it asks each stage what is `pending`, `prepare`s tasks, and hands results to the
  ledger, which commits each in one transaction.
- Executors (local threads and event loops, or Ray actors) only call `load()` once and
  `process`/`process_async` per item.
- Videos stream: when a video finishes stage i it is offered to stage i+1 at once, so model
  stages and LLM calls overlap. Between two segment-scope stages, segments stream: a segment
  that finishes stage i goes to stage i+1 while the rest of its video is still in stage i,
  so the first labels of a long video arrive early. Between two stages at most `[runner] queue_size` prepared
  tasks wait (back-pressure: memory stays bounded however many videos there are).
- A failing item becomes one `errors` row (and a `failed` stage_state for video stages);
  that video goes no further this run, every other item goes on.
- `cancel()` is cooperative: no new item starts; the run ends within about a second,
  committing what finishes in that time.
"""
from __future__ import annotations

import collections
import os
import shlex
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import backup, store
from ..events import ProgressEvent, RunSummary, describe_failure, one_line
from ..stage import STAGE_ORDER, Stage, has_video_state
from ..stages import parse_stages, stage_class
from ..project_lock import RunLock
from .batch import wants_batch, with_batch
from .ledger import Ledger
from .local import LocalExecutor
from .plan import assign_cpu_threads, is_auto, parse_workers, plan_stage, resolve_devices
from .progress import Progress
from .worker import Outcome, Work

CANCEL_GRACE_S = 0.8  # in-flight items finishing within this are still committed


class Runner:
    """Runs the selected stages of one project; `run()` blocks, `cancel()` may come from any thread.

    `stages`: names (or "a,b"), in any order — they run in STAGE_ORDER; Stage subclasses are
    accepted too (tests, plugins). `on_event` is called on the thread that runs `run()`,
    never concurrently; a listener that raises is logged and ignored.
    """

    def __init__(
        self,
        project,
        stages: Sequence[str | type[Stage]] | str | None = None,
        *,
        workers: dict[str, int] | None = None,
        devices: list[str] | str | None = None,
        on_event: Callable[[ProgressEvent], None] | None = None,
        ray_address: str | None = None,
        video_ids: list[int] | None = None,
        wait_for_lock: bool = False,
        on_notice: Callable[[str], None] | None = None,
    ):
        self.project = project
        self.cfg = project.config
        runner_cfg = self.cfg["runner"]
        # Stage classes are accepted as well as names: tests and plugins bring their own.
        if stages is None or isinstance(stages, str):
            self.stage_classes: dict[str, type[Stage] | None] = {n: None for n in parse_stages(stages)}
        else:
            names_only = [s for s in stages if isinstance(s, str)]
            self.stage_classes = {n: None for n in (parse_stages(names_only) if names_only else [])}
            self.stage_classes.update({s.name: s for s in stages if not isinstance(s, str)})
        self.workers = {**parse_workers(runner_cfg["workers"] or {}), **(workers or {})}
        spec = devices if devices is not None else runner_cfg["devices"]
        # "auto" imports torch to count GPUs (seconds): done in run(), off the caller's (GUI) thread.
        self._auto_devices = is_auto(spec)
        self.devices = ["cpu"] if self._auto_devices else resolve_devices(spec)
        self.queue_size = int(runner_cfg["queue_size"])
        self.on_event = on_event
        self.ray_address = ray_address
        self.video_ids = list(video_ids) if video_ids is not None else None
        self.wait_for_lock = wait_for_lock
        self.on_notice = on_notice or (lambda line: None)  # one-line notices (lock waits, take-overs)
        self._cancel = threading.Event()
        self.run_id: int | None = None

    # ---- public ---------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def run(self) -> RunSummary:
        """Own the project (its run lock: raises ProjectLocked when another run holds it and
        `wait_for_lock` is off), back project.db up, run, back it up again."""
        root = self.project.root
        lock = RunLock(root, "mikupal run")
        lock.acquire(wait=self.wait_for_lock, on_wait=lambda h: self.on_notice(
            f"waiting for the run that holds {root} ({h.describe() if h else 'another process'})"))
        if lock.took_over is not None:
            self.on_notice(f"took over the lock of a run that is gone ({lock.took_over.describe()})")
        try:
            backup.auto_backup(self.project.db_path, "run-start")
            try:
                return self._run()
            finally:
                backup.auto_backup(self.project.db_path, "run-end")
        finally:
            lock.release()

    def _run(self) -> RunSummary:
        t0 = time.monotonic()
        self.db = self.project.db()
        self.ledger = Ledger(self.project, self.db)
        self.run_id = self.ledger.open_run(list(self.stage_classes), self.cfg)
        self.log_path, self.logger = self.ledger.log_path, self.ledger.logger
        self.logger.info("run %d started stages=%s devices=%s workers=%s ray=%s", self.run_id,
                         ",".join(self.stage_classes), "auto" if self._auto_devices else ",".join(self.devices),
                         self.workers, self.ray_address or "no")
        summary = RunSummary(run_id=self.run_id, status="failed", log_path=str(self.log_path))
        status, message = "failed", ""
        executor = None
        self.progress = Progress([], self.on_event, self.logger)
        self.progress.run_id = self.run_id
        try:
            if self._auto_devices:
                self.devices = resolve_devices("auto")
            self._resolve_stages()
            summary.stages = self.progress.stats
            executor = self._make_executor()
            self.executor = executor
            self.progress.emit(ProgressEvent("run_started", self.run_id, message=f"stages {','.join(self.order)}"))
            self._loop()
            status = "cancelled" if self.cancelled else "finished"
        except Exception as e:  # noqa: BLE001 - the run row must say failed; the log has the traceback
            _, message, detail = describe_failure(e)
            self.logger.error("run failed: %s\n%s", message, detail or "")
            status = "failed"
        finally:
            if executor is not None:
                try:
                    executor.close()
                except Exception:  # noqa: BLE001
                    self.logger.exception("closing the executor failed")
            summary.status, summary.message = status, message
            summary.elapsed_s = time.monotonic() - t0
            self.ledger.close_run(summary)
            self.progress.emit(ProgressEvent(
                "run_finished", self.run_id, status=summary.status, errors=summary.failed_items,
                done=sum(s.done for s in summary.stages.values()), total=sum(s.total for s in summary.stages.values()),
                message=summary.message))
            self.ledger.close()
        return summary

    # ---- setup ----------------------------------------------------------------------
    def _resolve_stages(self) -> None:
        order = [n for n in STAGE_ORDER if n in self.stage_classes] + [n for n in self.stage_classes if n not in STAGE_ORDER]
        self.order: list[str] = order
        self.classes: dict[str, type[Stage]] = {n: self.stage_classes[n] or stage_class(n) for n in order}
        # Driver-side instances: pending/prepare/commit only, never load().
        self.drivers: dict[str, Stage] = {n: self.classes[n](self.project, device="cpu") for n in order}
        for d in self.drivers.values():
            d.run_id = self.run_id  # for rows that record which run made them (annotations.run_id)
        self.progress = Progress(order, self.on_event, self.logger)
        self.progress.run_id = self.run_id
        self.stats = self.progress.stats
        self.plans = {n: plan_stage(n, self.classes[n], self.drivers[n], self.workers, self.devices) for n in order}
        assign_cpu_threads(self.plans.values(), int(self.cfg["runner"]["cpu_threads"]), os.cpu_count() or 1)
        for n, p in self.plans.items():
            kind = "in flight" if p.is_async else "thread(s)"
            self.logger.info("stage %s: %s, CPU threads %s", n, ", ".join(f"{t} {kind} on {d}" for d, t in p.instances),
                             p.cpu_threads or "library default")

    def _make_executor(self):
        if self.ray_address:
            from .ray_executor import RayExecutor

            ex = RayExecutor(self.project, self.ray_address, self.queue_size, self.cfg["runner"], self.logger)
        else:
            ex = LocalExecutor(self.project, self.queue_size, self._cancel)
        # stages in Batch API mode ([emotion] batch) run through their batch driver
        ex = with_batch(ex, self.project, self.db, self.drivers, self.classes)
        for p in self.plans.values():
            ex.add_stage(p)
        return ex

    # ---- the loop -------------------------------------------------------------------
    def _loop(self) -> None:
        self.backlog: dict[str, collections.deque] = {n: collections.deque() for n in self.order}
        # (video_id, stage) -> [items outstanding, any failed, still fed by the stage before]
        self.open: dict[tuple[int, str], list] = {}
        self.offered: dict[tuple[int, str], set] = collections.defaultdict(set)  # items given out this run
        self.open_count: collections.Counter = collections.Counter()  # stage -> videos open in it
        self.dead: dict[str, str] = {}  # stage -> load failure message
        self.stopped: dict[str, str] = {}  # stage -> why it cannot go on this run (items stay pending)
        self.workers_dead: dict[str, set] = collections.defaultdict(set)
        self._paths: dict[int, str] = {}
        vids = self.video_ids
        if vids is None:
            vids = [r[0] for r in self.db.conn.execute("SELECT id FROM videos ORDER BY id")]
        for vid in vids:
            if self.cancelled:
                break
            self._advance(vid, 0)
        self.progress.tick(force=True)

        while not self.cancelled:
            self._dispatch()
            for oc in self.executor.poll(timeout=0.05):
                self._handle(oc)
            self._check_finished()
            self.progress.tick()
            self.ledger.checkpoint()
            if self.executor.inflight() == 0 and not any(self.backlog.values()):
                break

        if self.cancelled:
            self.logger.info("cancel requested: %d item(s) in flight", self.executor.inflight())
            self.executor.drain_unstarted()
            deadline = time.monotonic() + CANCEL_GRACE_S
            while self.executor.inflight() > 0 and time.monotonic() < deadline:
                for oc in self.executor.poll(timeout=0.05):
                    self._handle(oc, forward=False)
            for n in self.order:
                self.backlog[n].clear()
        self._check_finished()
        self.progress.tick(force=True)

    def _advance(self, vid: int, start: int) -> None:
        """Offer video `vid` to stages order[start:], stopping at the first with work."""
        for i in range(start, len(self.order)):
            name = self.order[i]
            stage = self.drivers[name]
            missing = [d for d in stage.requires if d not in self.classes and
                       (store.get_stage_state(self.db, vid, d) or {}).get("status") != "done"]
            if missing:
                self._skip(vid, name, missing)
                return
            try:
                pending = stage.pending(self.db, [vid])
                items = [it for it in pending if _key(it) not in self.offered[(vid, name)]]
            except Exception as e:  # noqa: BLE001 - a stage's driver code failing on one video
                self._fail_driver(vid, name, None, e, "pending")
                return
            entry = self.open.get((vid, name))
            if entry is not None:  # segments streamed in earlier are still out: add the rest, wait
                entry[2] = False
                self._offer(vid, name, items)
                self._maybe_close(vid, name)
                return
            if not items:
                if not pending:
                    self._video_state(vid, name, pending)
                continue
            if name in self.dead:
                self._fail_dead(vid, name, items)
                return
            self._open(vid, name, 0)
            self._offer(vid, name, items)
            return

    def _offer(self, vid: int, name: str, items: list) -> None:
        self.open[(vid, name)][0] += len(items)
        self.stats[name].total += len(items)
        self.offered[(vid, name)].update(_key(it) for it in items)
        self.backlog[name].extend((vid, it) for it in items)

    def _streams_into(self, name: str) -> str | None:
        """The next stage when both work per segment (a finished segment moves on alone).

        Not into a stage in Batch API mode: it sends what it has collected as one job, so its
        segments wait for the whole video (one job per video, not one per segment)."""
        i = self.order.index(name)
        if i + 1 >= len(self.order):
            return None
        nxt = self.order[i + 1]
        if (self.classes[name].scope == "segment" and self.classes[nxt].scope == "segment"
                and not wants_batch(self.classes[nxt], self.drivers[nxt])):
            return nxt
        return None

    def _stream(self, vid: int, name: str, item: Any) -> None:
        nxt = self._streams_into(name)
        seg = self._segment_id(name, item)
        if nxt is None or seg is None or nxt in self.dead or nxt in self.stopped or self.cancelled:
            return  # the video-level advance deals with it when the whole video is through
        stage = self.drivers[nxt]
        if any(d not in self.classes and (store.get_stage_state(self.db, vid, d) or {}).get("status") != "done"
               for d in stage.requires):
            return
        try:
            items = [it for it in stage.pending_segments(self.db, vid, [seg])
                     if _key(it) not in self.offered[(vid, nxt)]]
        except Exception:  # noqa: BLE001 - the video-level advance will report it
            self.logger.exception("[%s] pending for segment %s failed", nxt, seg)
            return
        if not items:
            return
        if (vid, nxt) not in self.open:
            self._open(vid, nxt, 0)
            self.open[(vid, nxt)][2] = True
        self._offer(vid, nxt, items)

    def _dispatch(self) -> None:
        # Downstream first: finishing videos frees memory and shows results sooner.
        for name in reversed(self.order):
            bl = self.backlog[name]
            if name in self.dead:  # its workers are gone: no room will ever open
                while bl:
                    vid, item = bl.popleft()
                    self._fail_dead(vid, name, [item])
                continue
            if name in self.stopped:
                while bl:
                    vid, _ = bl.popleft()
                    self._leave_pending(vid, name)
                continue
            room = self.executor.room(name)
            while room > 0 and bl and not self.cancelled:
                vid, item = bl.popleft()
                try:
                    task = self.drivers[name].prepare(self.db, item)
                except Exception as e:  # noqa: BLE001
                    self._fail_driver(vid, name, item, e, "prepare")
                    continue
                if self.stats[name].started_at is None:
                    self.stats[name].started_at = time.monotonic()
                self.executor.submit(Work(name, item, vid, task))
                room -= 1

    def _handle(self, oc: Outcome, forward: bool = True) -> None:
        w = oc.work
        if oc.kind == "dropped":
            return
        if oc.kind == "load_failed":
            self._load_failed(oc)
            return
        if oc.kind == "ok":
            try:
                self.ledger.commit(self.drivers[w.stage], w.task, oc.result, w.video_id)
            except Exception as e:  # noqa: BLE001 - the transaction rolled back; the item failed
                expected, msg, detail = describe_failure(e)
                self._record_failure(w.video_id, w.stage, w.item, msg if expected else f"saving the result failed: {msg}",
                                     detail, expected=expected)
                return
            self.stats[w.stage].ok += 1
            self._item_done(w.video_id, w.stage, ok=True, forward=forward, item=w.item)
            return
        if oc.stops_stage:
            self._stop_stage(oc)
            return
        self._record_failure(w.video_id, w.stage, w.item, oc.message, oc.detail, expected=oc.expected, path=oc.path)

    def _open(self, vid: int, name: str, n_items: int) -> None:
        self.open[(vid, name)] = [n_items, False, False]
        self.open_count[name] += 1

    def _item_done(self, vid: int, name: str, ok: bool, forward: bool = True, item: Any = None) -> None:
        entry = self.open.get((vid, name))
        if entry is None:
            return
        entry[0] -= 1
        entry[1] = entry[1] or not ok
        if ok and forward and item is not None:
            self._stream(vid, name, item)
        self._maybe_close(vid, name, forward)

    def _maybe_close(self, vid: int, name: str, forward: bool = True) -> None:
        """Close (video, stage) once nothing of it is out and nothing more can stream in."""
        entry = self.open.get((vid, name))
        if entry is None or entry[0] > 0 or entry[2]:
            return
        del self.open[(vid, name)]
        self.open_count[name] -= 1
        if not entry[1] and forward and not self.cancelled:
            self._video_state(vid, name)
        nxt = self._streams_into(name)
        if nxt is not None and (vid, nxt) in self.open:  # segments already moved on: no more will
            down = self.open[(vid, nxt)]
            down[1] = down[1] or entry[1]
            if entry[1] or not forward or self.cancelled:
                down[2] = False
                self._maybe_close(vid, nxt, forward)
                return
        # A video that failed a stage goes no further this run.
        if not entry[1] and forward and not self.cancelled:
            self._advance(vid, self.order.index(name) + 1)

    def _video_state(self, vid: int, name: str, pending: list | None = None) -> None:
        """A ``video_state`` segment stage with nothing left pending in a video: its done state.
        ``pending``: the video's pending items when the caller has just asked for them."""
        stage = self.drivers[name]
        if stage.scope != "segment" or not has_video_state(stage):
            return
        try:
            if not (stage.pending(self.db, [vid]) if pending is None else pending):
                self.ledger.video_done(stage, vid)
        except Exception:  # noqa: BLE001 - bookkeeping: the segments' own results are committed
            self.logger.exception("[%s] recording the done state of video %s failed", name, vid)

    # ---- failures -------------------------------------------------------------------
    def _label(self, vid: int | None, name: str, item: Any) -> str:
        if vid is not None and vid not in self._paths:
            row = self.db.conn.execute("SELECT path FROM videos WHERE id=?", (vid,)).fetchone()
            self._paths[vid] = Path(row[0]).name if row else ""
        base = f"video {vid}" + (f" ({self._paths[vid]})" if vid is not None and self._paths.get(vid) else "")
        if self.classes[name].scope == "segment" and isinstance(item, (list, tuple)) and item:
            base += f" segment {item[0]}" + (f" run {item[1]}" if len(item) > 1 else "")
        return base

    def _segment_id(self, name: str, item: Any) -> int | None:
        if self.classes[name].scope == "segment":
            if isinstance(item, (list, tuple)) and item:
                return int(item[0])
            if isinstance(item, int):
                return item
        return None

    def _record_failure(self, vid: int, name: str, item: Any, message: str, detail: str | None,
                        expected: bool = True, path: str | None = None) -> None:
        label = self._label(vid, name, item)
        if not expected:
            message = (f"{message}; this is a bug or an environment problem: the traceback is in "
                       f"{Path(self.log_path).name} and the errors table; rerun to retry the item")
        line = message if (label.split(" (")[0] in message or (self._paths.get(vid) or "\0") in message) else f"{label}: {message}"
        line = one_line(line, 600)
        seg = self._segment_id(name, item)
        self.ledger.failure(self.drivers[name], line, video_id=vid, segment_id=seg, detail=detail, path=path)
        self.logger.error("[%s] %s%s", name, line, f"\n{detail}" if detail else "")
        self.stats[name].failed += 1
        self.progress.item_error(name, line, vid, seg)
        self._item_done(vid, name, ok=False)

    def _fail_driver(self, vid: int, name: str, item: Any, exc: Exception, step: str) -> None:
        expected, msg, detail = describe_failure(exc)
        if item is None:  # pending() failed: the video never entered the stage
            self.stats[name].total += 1
            self._open(vid, name, 1)
        self._record_failure(vid, name, item, f"{step}: {msg}" if not expected else msg, detail, expected)

    def _load_failed(self, oc: Outcome) -> None:
        w = oc.work
        self.workers_dead[w.stage].add(oc.worker)
        if len(self.workers_dead[w.stage]) < self.executor.n_workers(w.stage):
            # Another worker of this stage may still load (another device): give it the item.
            self.backlog[w.stage].appendleft((w.video_id, w.item))
            self.logger.error("[%s] worker %s could not load: %s", w.stage, oc.worker, oc.message)
            return
        if w.stage not in self.dead:
            msg = one_line(f"stage {w.stage} could not start: {oc.message}", 600)
            self.dead[w.stage] = msg
            self.ledger.failure(self.drivers[w.stage], msg, video_id=None, detail=oc.detail, mark_video=False)
            self.logger.error("[%s] %s\n%s", w.stage, msg, oc.detail or "")
            self.progress.item_error(w.stage, msg)
        self._fail_dead(w.video_id, w.stage, [w.item])
        for q in self.executor.take_queued(w.stage):
            self._fail_dead(q.video_id, q.stage, [q.item])

    def _stop_stage(self, oc: Outcome) -> None:
        """The first stop of a stage is one error line; its other items stay pending."""
        w = oc.work
        if w.stage in self.stopped:
            self._leave_pending(w.video_id, w.stage)
            return
        self.stopped[w.stage] = oc.message
        self.logger.error("[%s] stage stopped for this run: %s", w.stage, oc.message)
        self._record_failure(w.video_id, w.stage, w.item, oc.message, oc.detail, path=oc.path)
        for q in self.executor.take_queued(w.stage):
            self._leave_pending(q.video_id, q.stage)

    def _leave_pending(self, vid: int, name: str) -> None:
        """An item not done this run and not failed: a later run picks it up."""
        self.stats[name].skipped += 1
        self._item_done(vid, name, ok=False)

    def _fail_dead(self, vid: int, name: str, items: list) -> None:
        """Items of a stage that cannot load: failed, without one error row each."""
        if (vid, name) not in self.open:
            self._open(vid, name, len(items))
            self.stats[name].total += len(items)
        for _ in items:
            self.stats[name].failed += 1
            self.ledger.failed_state(self.drivers[name], vid, self.dead[name])
            self._item_done(vid, name, ok=False)

    def _skip(self, vid: int, name: str, missing: list[str]) -> None:
        st = self.stats[name]
        st.skipped += 1
        line = one_line(
            f"{self._label(vid, name, None)}: stage {name} needs {', '.join(missing)} first; run: "
            f"mikupal run {shlex.quote(str(self.project.root))} --stages {','.join(missing + [name])}"
        )
        if st.skipped == 1:  # one row per stage, not one per video
            self.ledger.failure(self.drivers[name], line, video_id=vid, mark_video=False)
            self.progress.item_error(name, line, vid)
        self.logger.warning("[%s] skipped: %s", name, line)

    # ---- finishing ------------------------------------------------------------------
    def _check_finished(self) -> None:
        """A stage is finished when every stage before it is and nothing of it is left."""
        for name in self.order:
            s = self.stats[name]
            if s.finished:
                continue
            if self.backlog[name] or self.open_count[name] > 0:
                if not self.cancelled:
                    return
            self.progress.stage_finished(name)
            self.ledger.checkpoint(force=True)


def _key(item: Any) -> Any:
    """A pending item as a set member (JSON may have turned a tuple into a list)."""
    return tuple(item) if isinstance(item, list) else item

"""The runner: every selected stage as one streaming pipeline over the project's videos.

Shape of a run (the same for local threads and for Ray, see `distributed.py`):

- The driver (the thread that calls `Runner.run`) is the only one that touches SQLite. It
  asks each stage what is `pending`, `prepare`s tasks, and `commit`s results, each commit in
  one `store.transaction` — SQLite has one writer, and a killed process loses at most the
  items in flight, never half an item.
- Workers only call `load()` once and `process(task)` per item. Locally a stage has
  `workers` threads per device, each with its own stage instance (one model instance per
  device per worker); stages that declare `thread_safe = True` share one instance per device.
- Videos stream: when a video finishes stage i it is offered to stage i+1 at once, so the
  GPU stages and the LLM calls overlap. Between two stages at most `[runner] queue_size`
  prepared tasks wait (back-pressure: memory stays bounded however many videos there are).
- A failing item becomes one `errors` row and a `failed` stage_state; that video goes no
  further this run, every other item goes on.
- `cancel()` is cooperative: no new item starts; the run ends within about a second,
  committing what finishes in that time.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from . import store
from .events import ProgressEvent, RunSummary, ScrubFilter, StageStats, describe_failure, one_line
from .emotion.redact import scrub
from .stage import STAGE_ORDER, Stage
from .stages import DEVICE_STAGES, parse_stages, stage_class

__all__ = ["ProgressEvent", "RunSummary", "Runner", "resolve_devices", "parse_workers", "RunnerError"]

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 0.8  # in-flight items finishing within this are still committed
PROGRESS_EVERY_S = 0.1  # progress events per stage are throttled to this period


class RunnerError(ValueError):
    """Bad runner settings (workers, devices, stages): one line naming the fix."""


# ---------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------
def parse_workers(specs: Iterable[str] | dict | None) -> dict[str, int]:
    """`["faces=2", "emotion=8"]` (or a dict) -> {"faces": 2, "emotion": 8}."""
    if not specs:
        return {}
    items = specs.items() if isinstance(specs, dict) else (s.split("=", 1) if "=" in s else (s, None) for s in specs)
    out = {}
    for name, n in items:
        name = str(name).strip()
        if name not in STAGE_ORDER:
            raise RunnerError(f"--workers {name}={n}: unknown stage {name!r}; stages are {','.join(STAGE_ORDER)}")
        try:
            count = int(n)
        except (TypeError, ValueError):
            raise RunnerError(f"--workers {name}={n}: expected stage=N with N a whole number, e.g. --workers faces=2") from None
        if count < 1:
            raise RunnerError(f"--workers {name}={count}: needs at least 1 worker")
        out[name] = count
    return out


def resolve_devices(spec: str | Sequence[str] | None) -> list[str]:
    """`auto` -> every visible CUDA device, else ["cpu"]; `cpu`; `cuda:0,cuda:1`."""
    if spec is None or spec == "" or spec == "auto" or list(spec) == ["auto"]:
        try:
            import torch  # optional; only to count GPUs

            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        except Exception:  # noqa: BLE001 - no torch or a broken driver: CPU
            n = 0
        return [f"cuda:{i}" for i in range(n)] or ["cpu"]
    parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec) if p and p.strip()]
    for p in parts:
        if not (p == "cpu" or p == "cuda" or (p.startswith("cuda:") and p[5:].isdigit()) or p == "mps"):
            raise RunnerError(f"--devices {','.join(parts)}: {p!r} is not a device; use cpu, auto or cuda:0,cuda:1")
    return parts or ["cpu"]


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


# ---------------------------------------------------------------------------------------
# Work units, worker-side execution
# ---------------------------------------------------------------------------------------
@dataclass
class Work:
    stage: str
    item: Any  # video id, or (segment_id, run_index) for segment-scope stages
    video_id: int
    task: dict


@dataclass
class Outcome:
    work: Work
    kind: str  # "ok" | "error" | "load_failed"
    result: dict | None = None
    expected: bool = True  # StageError (a bad item) vs. an unexpected exception
    message: str = ""
    detail: str | None = None
    worker: str = ""


class StageWorker:
    """One stage instance on one device: loads lazily on its first item, then processes.

    Shared by the thread pool here and by the Ray actors in `distributed.py`; returns plain
    tuples so results cross process boundaries without pickling exceptions.
    """

    def __init__(self, factory: Callable[..., Stage], project, device: str):
        self.factory, self.project, self.device = factory, project, device
        self.stage: Stage | None = None
        self.load_error: tuple[str, str | None] | None = None

    def _ensure_loaded(self) -> bool:
        if self.stage is not None:
            return True
        if self.load_error is not None:
            return False
        try:
            stage = self.factory(self.project, device=self.device)
            stage.load()
        except Exception as e:  # noqa: BLE001 - reported once for the whole stage
            _, msg, detail = describe_failure(e)
            self.load_error = (msg, detail)
            return False
        self.stage = stage
        return True

    def close(self) -> None:
        """Release what load() opened (clients, loops) when the stage offers close()."""
        close = getattr(self.stage, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # noqa: BLE001 - shutting down; nothing left to report to
                log.debug("closing stage %s failed", self.stage.name, exc_info=True)

    def run(self, task: dict) -> tuple:
        """("ok", result) | ("error", expected, message, detail) | ("load_failed", message, detail)."""
        if not self._ensure_loaded():
            return ("load_failed", *self.load_error)
        try:
            return ("ok", self.stage.process(task))
        except Exception as e:  # noqa: BLE001 - per-item failure isolation
            expected, msg, detail = describe_failure(e)
            return ("error", expected, msg, detail)


def to_outcome(work: Work, reply: tuple, worker: str = "") -> Outcome:
    if reply[0] == "ok":
        return Outcome(work, "ok", result=reply[1], worker=worker)
    if reply[0] == "error":
        return Outcome(work, "error", expected=reply[1], message=reply[2], detail=reply[3], worker=worker)
    return Outcome(work, "load_failed", expected=False, message=reply[1], detail=reply[2], worker=worker)


@dataclass
class StagePlan:
    """How one stage runs: its class, and one (device, threads) entry per model instance."""

    name: str
    cls: type[Stage]
    instances: list[tuple[str, int]]  # (device, threads sharing that instance)

    @property
    def n_workers(self) -> int:
        return sum(t for _, t in self.instances)


class ThreadExecutor:
    """Local execution: per stage a bounded queue and worker threads, one result queue."""

    def __init__(self, project, queue_size: int, cancelled: threading.Event):
        self.project = project
        self.queue_size = max(1, int(queue_size))
        self.cancelled = cancelled
        self.results: queue.Queue[Outcome] = queue.Queue()
        self.queues: dict[str, queue.Queue] = {}
        self.threads: list[threading.Thread] = []
        self.plans: dict[str, StagePlan] = {}
        self.workers: list[StageWorker] = []
        self._inflight = 0  # submitted and not yet returned (queued + running)
        self._lock = threading.Lock()

    def add_stage(self, plan: StagePlan) -> None:
        self.plans[plan.name] = plan

    def _start(self, plan: StagePlan) -> None:
        q: queue.Queue = queue.Queue(maxsize=self.queue_size)
        self.queues[plan.name] = q
        for i, (device, n_threads) in enumerate(plan.instances):
            worker = StageWorker(plan.cls, self.project, device)
            self.workers.append(worker)
            for j in range(n_threads):
                label = f"{plan.name}-{device}-{i}.{j}"
                t = threading.Thread(target=self._loop, args=(q, worker, label), name=label, daemon=True)
                t.start()
                self.threads.append(t)

    def _loop(self, q: queue.Queue, worker: StageWorker, label: str) -> None:
        while not self.cancelled.is_set():
            try:
                work = q.get(timeout=0.1)
            except queue.Empty:
                continue
            if work is None:
                return
            if self.cancelled.is_set():
                self.results.put(Outcome(work, "dropped", worker=label))
                return
            oc = to_outcome(work, worker.run(work.task), label)
            self.results.put(oc)
            if oc.kind == "load_failed":
                return  # this thread's model cannot load; the driver re-routes or fails the stage

    def n_workers(self, stage: str) -> int:
        return self.plans[stage].n_workers

    def room(self, stage: str) -> int:
        if stage not in self.queues:
            return self.queue_size
        q = self.queues[stage]
        return max(0, self.queue_size - q.qsize())

    def submit(self, work: Work) -> None:
        if work.stage not in self.queues:
            self._start(self.plans[work.stage])
        with self._lock:
            self._inflight += 1
        self.queues[work.stage].put(work)

    def poll(self, timeout: float) -> list[Outcome]:
        out = []
        try:
            out.append(self.results.get(timeout=timeout))
            while True:
                out.append(self.results.get_nowait())
        except queue.Empty:
            pass
        with self._lock:
            self._inflight -= len(out)
        return out

    def inflight(self) -> int:
        return self._inflight

    def take_queued(self, stage: str) -> list[Work]:
        """Remove and return the tasks of `stage` not yet started (its workers are gone)."""
        out = []
        q = self.queues.get(stage)
        while q is not None:
            try:
                w = q.get_nowait()
            except queue.Empty:
                break
            if w is not None:
                out.append(w)
        with self._lock:
            self._inflight -= len(out)
        return out

    def drain_unstarted(self) -> int:
        """Forget tasks still queued (on cancel); returns how many."""
        n = 0
        for q in self.queues.values():
            while True:
                try:
                    if q.get_nowait() is not None:
                        n += 1
                except queue.Empty:
                    break
        with self._lock:
            self._inflight -= n
        return n

    def close(self) -> None:
        for name, q in self.queues.items():
            for _ in range(self.plans[name].n_workers):
                try:
                    q.put_nowait(None)
                except queue.Full:
                    break
        # Workers still inside process() after a cancel are daemons; their results are dropped.
        if not self.cancelled.is_set():
            for t in self.threads:
                t.join(timeout=5)
            for w in self.workers:
                w.close()


# ---------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------
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
    ):
        self.project = project
        self.cfg = project.config
        runner_cfg = self.cfg.get("runner", {})
        # Stage classes are accepted as well as names: tests and plugins bring their own.
        if stages is None or isinstance(stages, str):
            names = parse_stages(stages)
            self.stage_classes = {n: None for n in names}
        else:
            self.stage_classes = {}
            names_only = [s for s in stages if isinstance(s, str)]
            order = parse_stages(names_only) if names_only else []
            for s in stages:
                if isinstance(s, str):
                    continue
                self.stage_classes[s.name] = s
            ordered = {n: None for n in order}
            ordered.update(self.stage_classes)
            self.stage_classes = ordered
        self.workers = {**parse_workers(runner_cfg.get("workers") or {}), **(workers or {})}
        spec = devices if devices is not None else runner_cfg.get("devices", "auto")
        # "auto" imports torch to count GPUs (seconds): done in run(), off the caller's (GUI) thread.
        self._auto_devices = spec in (None, "", "auto") or list(spec) == ["auto"]
        self.devices = ["cpu"] if self._auto_devices else resolve_devices(spec)
        self.queue_size = int(runner_cfg.get("queue_size", 8))
        self.on_event = on_event
        self.ray_address = ray_address
        self.video_ids = list(video_ids) if video_ids is not None else None
        self._cancel = threading.Event()
        self.run_id: int | None = None

    # ---- public ---------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def run(self) -> RunSummary:
        t0 = time.monotonic()
        self.db = self.project.db()
        self._open_run()
        summary = RunSummary(run_id=self.run_id, status="failed", log_path=str(self.log_path))
        status, message = "failed", ""
        executor = None
        try:
            if self._auto_devices:
                self.devices = resolve_devices("auto")
            self._resolve_stages()
            summary.stages = self.stats
            executor = self._make_executor()
            self.executor = executor
            self._emit(ProgressEvent("run_started", self.run_id, message=f"stages {','.join(self.order)}"))
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
            self._close_run(summary)
        return summary

    # ---- setup ----------------------------------------------------------------------
    def _open_run(self) -> None:
        self.project.logs_dir.mkdir(parents=True, exist_ok=True)
        cfg_json = json.dumps(safe_config(self.cfg), sort_keys=True)
        with store.transaction(self.db) as conn:
            cur = conn.execute(
                "INSERT INTO runs (started_at, status, config_json, stages, pid) VALUES (?,?,?,?,?)",
                (store.now(), "running", cfg_json, ",".join(self.stage_classes), os.getpid()),
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
        self.logger.info("run %d started (pid %d) stages=%s devices=%s workers=%s ray=%s",
                         self.run_id, os.getpid(), ",".join(self.stage_classes),
                         "auto" if self._auto_devices else ",".join(self.devices),
                         self.workers, self.ray_address or "no")

    def _close_run(self, summary: RunSummary) -> None:
        try:
            with store.transaction(self.db) as conn:
                conn.execute("UPDATE runs SET finished_at=?, status=? WHERE id=?", (store.now(), summary.status, self.run_id))
        except Exception:  # noqa: BLE001
            self.logger.exception("could not mark run %s %s", self.run_id, summary.status)
        for s in summary.stages.values():
            self.logger.info("stage %s: %d ok, %d failed, %d skipped in %.1fs", s.name, s.ok, s.failed, s.skipped, s.elapsed())
        self.logger.info("run %d %s in %.1fs%s", self.run_id, summary.status, summary.elapsed_s,
                         f": {summary.message}" if summary.message else "")
        self._emit(ProgressEvent("run_finished", self.run_id, status=summary.status, errors=summary.failed_items,
                                 done=sum(s.done for s in summary.stages.values()),
                                 total=sum(s.total for s in summary.stages.values()), message=summary.message))
        self.logger.removeHandler(self._handler)
        self._handler.close()
        self.db.conn.close()

    def _resolve_stages(self) -> None:
        order = [n for n in STAGE_ORDER if n in self.stage_classes] + [n for n in self.stage_classes if n not in STAGE_ORDER]
        self.order: list[str] = order
        self.classes: dict[str, type[Stage]] = {}
        for n in order:
            self.classes[n] = self.stage_classes[n] or stage_class(n)
        # Driver-side instances: pending/prepare/commit only, never load().
        self.drivers: dict[str, Stage] = {n: self.classes[n](self.project, device="cpu") for n in order}
        for d in self.drivers.values():
            d.run_id = self.run_id  # stages that stamp their rows with the run (annotations.run_id)
        self.stats: dict[str, StageStats] = {n: StageStats(n) for n in order}
        self.plans = {n: self._plan(n) for n in order}
        for n, p in self.plans.items():
            self.logger.info("stage %s: %s", n, ", ".join(f"{t} thread(s) on {d}" for d, t in p.instances))

    def _plan(self, name: str) -> StagePlan:
        cls = self.classes[name]
        thread_safe = bool(getattr(cls, "thread_safe", False))
        default = int(self.cfg.get("emotion", {}).get("concurrency", 1)) if (thread_safe and cls.scope == "segment") else 1
        n = max(1, int(self.workers.get(name, default)))
        on_device = name in DEVICE_STAGES or float(getattr(cls, "num_gpus", 0) or 0) > 0
        devices = self.devices if on_device else ["cpu"]
        if thread_safe:
            return StagePlan(name, cls, [(d, n) for d in devices])
        return StagePlan(name, cls, [(d, 1) for d in devices for _ in range(n)])

    def _make_executor(self):
        if self.ray_address:
            from .distributed import RayExecutor

            ex = RayExecutor(self.project, self.ray_address, self.queue_size, self.cfg.get("runner", {}), self.logger)
        else:
            ex = ThreadExecutor(self.project, self.queue_size, self._cancel)
        for p in self.plans.values():
            ex.add_stage(p)
        return ex

    # ---- the loop -------------------------------------------------------------------
    def _loop(self) -> None:
        self.backlog: dict[str, collections.deque] = {n: collections.deque() for n in self.order}
        # (video_id, stage) -> [items outstanding, any failed]
        self.open: dict[tuple[int, str], list] = {}
        self.open_count: collections.Counter = collections.Counter()  # stage -> videos open in it
        self.dead: dict[str, str] = {}  # stage -> load failure message
        self.workers_dead: dict[str, set] = collections.defaultdict(set)
        self._paths: dict[int, str] = {}
        vids = self.video_ids
        if vids is None:
            vids = [r[0] for r in self.db.conn.execute("SELECT id FROM videos ORDER BY id")]
        for vid in vids:
            if self.cancelled:
                break
            self._advance(vid, 0)
        self._emit_all(force=True)

        while not self.cancelled:
            self._dispatch()
            for oc in self.executor.poll(timeout=0.05):
                self._handle(oc)
            self._check_finished()
            self._emit_all()
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
        self._emit_all(force=True)

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
                items = list(stage.pending(self.db, [vid]))
            except Exception as e:  # noqa: BLE001 - a stage's driver code failing on one video
                self._fail_driver(vid, name, None, e, "pending")
                return
            if not items:
                continue
            if name in self.dead:
                self._fail_dead(vid, name, items)
                return
            self._open(vid, name, len(items))
            self.stats[name].total += len(items)
            self.backlog[name].extend((vid, it) for it in items)
            return

    def _dispatch(self) -> None:
        # Downstream first: finishing videos frees memory and shows results sooner.
        for name in reversed(self.order):
            bl = self.backlog[name]
            if name in self.dead:  # its workers are gone: no room will ever open
                while bl:
                    vid, item = bl.popleft()
                    self._fail_dead(vid, name, [item])
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
                with store.transaction(self.db):
                    self.drivers[w.stage].commit(self.db, w.task, oc.result)
                    if self.classes[w.stage].scope == "video":  # which run did it, for status and the GUI
                        self.db.conn.execute("UPDATE stage_state SET run_id=? WHERE video_id=? AND stage=?",
                                             (self.run_id, w.video_id, w.stage))
            except Exception as e:  # noqa: BLE001 - the transaction rolled back; the item failed
                expected, msg, detail = describe_failure(e)
                self._record_failure(w.video_id, w.stage, w.item, f"saving the result failed: {msg}", detail)
                return
            err = oc.result.get("error") if isinstance(oc.result, dict) else None
            if isinstance(err, dict):
                # The stage stored its own error row (e.g. an invalid model answer): count and report it.
                line = one_line(err.get("message") or "failed")
                self.stats[w.stage].failed += 1
                self.logger.error("[%s] %s", w.stage, line)
                self._emit(ProgressEvent("item_error", self.run_id, stage=w.stage, message=line, video_id=w.video_id,
                                         segment_id=self._segment_id(w.stage, w.item), **self._numbers(w.stage)))
                self._item_done(w.video_id, w.stage, ok=False)
                return
            self.stats[w.stage].ok += 1
            self._item_done(w.video_id, w.stage, ok=True, forward=forward)
            return
        self._record_failure(w.video_id, w.stage, w.item, oc.message, oc.detail, expected=oc.expected)

    def _open(self, vid: int, name: str, n_items: int) -> None:
        self.open[(vid, name)] = [n_items, False]
        self.open_count[name] += 1

    def _item_done(self, vid: int, name: str, ok: bool, forward: bool = True) -> None:
        key = (vid, name)
        entry = self.open.get(key)
        if entry is None:
            return
        entry[0] -= 1
        entry[1] = entry[1] or not ok
        if entry[0] <= 0:
            del self.open[key]
            self.open_count[name] -= 1
            # A video that failed a stage goes no further this run.
            if not entry[1] and forward and not self.cancelled:
                self._advance(vid, self.order.index(name) + 1)

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
                        expected: bool = True, count_item: bool = True) -> None:
        label = self._label(vid, name, item)
        if not expected:
            message = (f"{message}; this is a bug or an environment problem: the traceback is in "
                       f"{self.log_path.name} and the errors table; rerun to retry the item")
        line = message if (label.split(" (")[0] in message or (self._paths.get(vid) or "\0") in message) else f"{label}: {message}"
        line = one_line(line, 600)
        seg = self._segment_id(name, item)
        try:
            with store.transaction(self.db):
                store.record_error(self.db, name, line, run_id=self.run_id, video_id=vid, segment_id=seg, detail=detail)
                if self.classes[name].scope == "video":
                    store.set_stage_state(self.db, vid, name, "failed", run_id=self.run_id, info={"error": line})
        except Exception:  # noqa: BLE001 - never let bookkeeping stop the run
            self.logger.exception("could not record the failure of %s in %s", label, name)
        self.logger.error("[%s] %s%s", name, line, f"\n{detail}" if detail else "")
        if count_item:
            self.stats[name].failed += 1
        self._emit(ProgressEvent("item_error", self.run_id, stage=name, message=line, video_id=vid, segment_id=seg,
                                 **self._numbers(name)))
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
            with store.transaction(self.db):
                store.record_error(self.db, w.stage, msg, run_id=self.run_id, detail=oc.detail)
            self.logger.error("[%s] %s\n%s", w.stage, msg, oc.detail or "")
            self._emit(ProgressEvent("item_error", self.run_id, stage=w.stage, message=msg, **self._numbers(w.stage)))
        self._fail_dead(w.video_id, w.stage, [w.item])
        for q in self.executor.take_queued(w.stage):
            self._fail_dead(q.video_id, q.stage, [q.item])

    def _fail_dead(self, vid: int, name: str, items: list) -> None:
        """Items of a stage that cannot load: failed, without one error row each."""
        if (vid, name) not in self.open:
            self._open(vid, name, len(items))
            self.stats[name].total += len(items)
        for _ in items:
            self.stats[name].failed += 1
            if self.classes[name].scope == "video":
                with store.transaction(self.db):
                    store.set_stage_state(self.db, vid, name, "failed", run_id=self.run_id, info={"error": self.dead[name]})
            self._item_done(vid, name, ok=False)

    def _skip(self, vid: int, name: str, missing: list[str]) -> None:
        st = self.stats[name]
        st.skipped += 1
        line = one_line(
            f"{self._label(vid, name, None)}: stage {name} needs {', '.join(missing)} first; run: "
            f"mikupal run {self.project.root} --stages {','.join(missing + [name])}"
        )
        if st.skipped == 1:  # one row per stage, not one per video
            with store.transaction(self.db):
                store.record_error(self.db, name, line, run_id=self.run_id, video_id=vid)
            self._emit(ProgressEvent("item_error", self.run_id, stage=name, message=line, video_id=vid, **self._numbers(name)))
        self.logger.warning("[%s] skipped: %s", name, line)

    # ---- events ---------------------------------------------------------------------
    def _numbers(self, name: str) -> dict:
        s = self.stats[name]
        now = time.monotonic()
        return {"done": s.done, "total": s.total, "errors": s.failed + s.skipped, "rate": s.rate(now), "eta_s": s.eta(now)}

    def _emit(self, ev: ProgressEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(ev)
        except Exception:  # noqa: BLE001 - a listener's bug must not stop the run
            self.logger.exception("progress listener failed")

    def _emit_all(self, force: bool = False) -> None:
        now = time.monotonic()
        for name in self.order:
            s = self.stats[name]
            if s.finished:
                continue
            if force or now - s.last_emit >= PROGRESS_EVERY_S:
                s.last_emit = now
                self._emit(ProgressEvent("stage_progress", self.run_id, stage=name, **self._numbers(name)))

    def _check_finished(self) -> None:
        """A stage is finished when every stage before it is and nothing of it is left."""
        for name in self.order:
            s = self.stats[name]
            if s.finished:
                continue
            if self.backlog[name] or self.open_count[name] > 0:
                if not self.cancelled:
                    return
            s.finished = True
            s.finished_at = time.monotonic()
            self.logger.info("stage %s finished: %d ok, %d failed, %d skipped", name, s.ok, s.failed, s.skipped)
            self._emit(ProgressEvent("stage_finished", self.run_id, stage=name, **self._numbers(name)))

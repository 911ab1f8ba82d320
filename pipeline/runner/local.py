"""Local execution: worker threads for synchronous stages, an event loop for async ones.

Per stage a bounded queue feeds its workers; every outcome lands in one result queue that
the scheduler polls. An async stage (``process_async``) gets one event loop thread per
instance, owned here, with up to ``slots`` items in flight: API fan-out is an executor
capability, never a stage's own thread.
"""
from __future__ import annotations

import asyncio
import queue
import threading

from .plan import StagePlan
from .worker import Outcome, StageWorker, Work, to_outcome


class _AsyncInstance:
    """One async stage instance: its loop thread, a semaphore of its slots, the items waiting."""

    def __init__(self, worker: StageWorker, slots: int, label: str, results: queue.Queue, cancelled: threading.Event):
        self.worker, self.slots, self.label = worker, slots, label
        self.results, self.cancelled = results, cancelled
        self.loop = asyncio.new_event_loop()
        self.sem: asyncio.Semaphore | None = None
        self.waiting: dict[int, Work] = {}  # id(work) -> work not yet started (may be dropped)
        self.running = 0
        self.dead = False
        self.thread = threading.Thread(target=self._serve, name=label, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.sem = asyncio.Semaphore(self.slots)
        self.loop.run_forever()

    def submit(self, work: Work) -> None:
        self.waiting[id(work)] = work
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self._one(work)))

    async def _one(self, work: Work) -> None:
        async with self.sem:
            if self.waiting.pop(id(work), None) is None:
                return  # taken back (cancel, or the stage could not load)
            if self.cancelled.is_set() or self.dead:
                self.results.put(Outcome(work, "dropped", worker=self.label))
                return
            self.running += 1
            try:
                oc = to_outcome(work, await self.worker.run_async(work.task), self.label)
            finally:
                self.running -= 1
            if oc.kind == "load_failed":
                self.dead = True
            self.results.put(oc)

    def take_waiting(self) -> list[Work]:
        out = list(self.waiting.values())
        self.waiting.clear()
        return out

    def close(self, wait: bool) -> None:
        if wait and self.worker.stage is not None:
            asyncio.run_coroutine_threadsafe(self.worker.aclose(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if wait:
            self.thread.join(timeout=10)


class LocalExecutor:
    """Runs stage plans in this process; the scheduler talks to it and to the Ray executor alike."""

    def __init__(self, project, queue_size: int, cancelled: threading.Event):
        self.project = project
        self.queue_size = max(1, int(queue_size))
        self.cancelled = cancelled
        self.results: queue.Queue[Outcome] = queue.Queue()
        self.queues: dict[str, queue.Queue] = {}
        self.asyncs: dict[str, list[_AsyncInstance]] = {}
        self.threads: list[threading.Thread] = []
        self.plans: dict[str, StagePlan] = {}
        self.sync_workers: list[StageWorker] = []  # async instances close on their own loop
        self._inflight = 0  # submitted and not yet returned (queued + running)
        self._per_stage: dict[str, int] = {}
        self._lock = threading.Lock()

    def add_stage(self, plan: StagePlan) -> None:
        self.plans[plan.name] = plan

    def _start(self, plan: StagePlan) -> None:
        if plan.is_async:
            self.asyncs[plan.name] = []
            for i, (device, slots) in enumerate(plan.instances):
                worker = StageWorker(plan.cls, self.project, device, plan.cpu_threads)
                self.asyncs[plan.name].append(
                    _AsyncInstance(worker, slots, f"{plan.name}-{device}-{i}", self.results, self.cancelled))
            return
        q: queue.Queue = queue.Queue(maxsize=self.queue_size)
        self.queues[plan.name] = q
        for i, (device, n_threads) in enumerate(plan.instances):
            worker = StageWorker(plan.cls, self.project, device, plan.cpu_threads)
            self.sync_workers.append(worker)
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
                return  # this thread's model cannot load; the scheduler re-routes or fails the stage

    def n_workers(self, stage: str) -> int:
        plan = self.plans[stage]
        return len(plan.instances) if plan.is_async else plan.n_workers

    def room(self, stage: str) -> int:
        plan = self.plans[stage]
        if plan.is_async:  # every slot busy plus a queue's worth waiting
            return max(0, plan.n_workers + self.queue_size - self._per_stage.get(stage, 0))
        if stage not in self.queues:
            return self.queue_size
        return max(0, self.queue_size - self.queues[stage].qsize())

    def submit(self, work: Work) -> None:
        plan = self.plans[work.stage]
        if work.stage not in self.queues and work.stage not in self.asyncs:
            self._start(plan)
        with self._lock:
            self._inflight += 1
            self._per_stage[work.stage] = self._per_stage.get(work.stage, 0) + 1
        if plan.is_async:
            live = [a for a in self.asyncs[work.stage] if not a.dead] or self.asyncs[work.stage]
            min(live, key=lambda a: len(a.waiting) + a.running).submit(work)
        else:
            self.queues[work.stage].put(work)

    def _returned(self, works: list[Work]) -> None:
        with self._lock:
            self._inflight -= len(works)
            for w in works:
                self._per_stage[w.stage] -= 1

    def poll(self, timeout: float) -> list[Outcome]:
        out = []
        try:
            out.append(self.results.get(timeout=timeout))
            while True:
                out.append(self.results.get_nowait())
        except queue.Empty:
            pass
        self._returned([o.work for o in out])
        return out

    def inflight(self) -> int:
        return self._inflight

    def take_queued(self, stage: str) -> list[Work]:
        """Remove and return the tasks of `stage` not yet started (its workers are gone)."""
        out = []
        for inst in self.asyncs.get(stage, []):
            out += inst.take_waiting()
        q = self.queues.get(stage)
        while q is not None:
            try:
                w = q.get_nowait()
            except queue.Empty:
                break
            if w is not None:
                out.append(w)
        self._returned(out)
        return out

    def drain_unstarted(self) -> int:
        """Forget tasks still queued (on cancel); returns how many."""
        return sum(len(self.take_queued(name)) for name in self.plans)

    def close(self) -> None:
        wait = not self.cancelled.is_set()  # after a cancel, workers inside process() are left to die with us
        for name, q in self.queues.items():
            for _ in range(self.plans[name].n_workers):
                try:
                    q.put_nowait(None)
                except queue.Full:
                    break
        for insts in self.asyncs.values():
            for inst in insts:
                inst.close(wait)
        if wait:
            for t in self.threads:
                t.join(timeout=5)
            for w in self.sync_workers:
                w.close()

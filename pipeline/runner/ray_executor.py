"""The Ray executor: the same stages on a Ray cluster: `mikupal run PROJECT --ray ADDRESS|auto|local`.

Only the execution moves: the driver still computes `pending`, `prepare`s tasks and
`commit`s results into SQLite (SQLite is not shared storage; one writer). Each stage gets
actors (`workers` per device stage, as locally) that hold one loaded stage instance and call
`process(task)`; results stream back through `ray.wait`. Resources per actor come from
`[runner] num_gpus` / `[runner] num_cpus`; an actor whose process or node dies is restarted
and its task retried (`[runner] max_task_retries`). An item that raises is not retried: it
is a bad item, recorded like any other.

On a multi-machine cluster every node needs this package installed and the project folder
at the same path (the stages write artifacts under `PROJECT/cache`), e.g. on NFS.
"""
from __future__ import annotations

import logging
from typing import Any

from .plan import StagePlan
from .worker import Outcome, StageWorker, Work, to_outcome

# Calls queued per actor beyond the one running: keeps actors busy without hoarding tasks.
PER_ACTOR_QUEUE = 1


class RayUnavailableError(RuntimeError):
    pass


class RayConfigError(RuntimeError):
    """Ray settings the cluster cannot satisfy (one line with the fix)."""


def _ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            "--ray needs Ray: pip install 'mikupal[cluster]' (or run without --ray)"
        ) from None
    return ray


def connect(address: str, logger: logging.Logger | None = None) -> bool:
    """Connect to (or start) Ray; returns True when this call started it (so we shut it down)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    if address == "local":
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    if logger:
        logger.info("ray: connected (%s), resources %s", address, ray.cluster_resources())
    return True


class _Actor:
    """Holds one stage instance (lazily loaded) inside a Ray worker process."""

    def __init__(self, factory, project, device: str, cpu_threads: int | None = None):
        self.worker = StageWorker(factory, project, device, cpu_threads)

    def run(self, task: dict) -> tuple:
        return self.worker.run(task)


class _AsyncActor:
    """The same for an async stage: Ray runs the actor's event loop, `max_concurrency` items at once."""

    def __init__(self, factory, project, device: str, cpu_threads: int | None = None):
        self.worker = StageWorker(factory, project, device, cpu_threads)

    async def run(self, task: dict) -> tuple:
        return await self.worker.run_async(task)


class RayExecutor:
    """Executor with the ThreadExecutor's interface, dispatching to Ray actors."""

    def __init__(self, project, address: str, queue_size: int, runner_cfg: dict, logger: logging.Logger):
        self.ray = _ray()
        self.project = project
        self.queue_size = max(1, int(queue_size))
        self.cfg = runner_cfg
        self.logger = logger
        self.started_ray = connect(address, logger)
        self.plans: dict[str, StagePlan] = {}
        self.actors: dict[str, list[tuple[Any, str]]] = {}  # stage -> [(handle, label)]
        self.load: dict[str, dict[str, int]] = {}  # stage -> label -> calls in flight
        self.refs: dict[Any, tuple[Work, str]] = {}  # ObjectRef -> (work, actor label)
        self.gone: set[str] = set()  # actors that failed to load: no more tasks for them
        self._remote = {False: self.ray.remote(_Actor), True: self.ray.remote(_AsyncActor)}

    def add_stage(self, plan: StagePlan) -> None:
        self.plans[plan.name] = plan

    def _start(self, plan: StagePlan) -> None:
        # A stage's own num_gpus is a default for GPU clusters; on a cluster without GPUs its
        # actors would wait forever, so they run on CPUs. A configured value is a demand.
        cluster_gpus = float(self.ray.cluster_resources().get("GPU", 0))
        configured = (self.cfg.get("num_gpus") or {}).get(plan.name)
        if configured is not None:
            num_gpus = float(configured)
            if num_gpus > cluster_gpus:
                raise RayConfigError(
                    f"[runner] num_gpus asks {num_gpus:g} GPU(s) per {plan.name} actor but the Ray cluster has "
                    f"{cluster_gpus:g}; lower it (--set runner.num_gpus='{{{plan.name} = 0}}') or add GPU nodes"
                )
        else:
            num_gpus = float(plan.cls.num_gpus or 0) if cluster_gpus > 0 else 0.0
        num_cpus = (self.cfg.get("num_cpus") or {}).get(plan.name)
        retries = int(self.cfg.get("max_task_retries", 2))
        # Unset num_cpus means 0: Ray's own actor default reserves 1 CPU to place an actor,
        # which leaves the 8th actor of a 7-stage run on a small machine pending forever.
        opts: dict[str, Any] = {"num_gpus": num_gpus, "num_cpus": float(num_cpus or 0),
                                "max_restarts": retries, "max_task_retries": retries}
        actors = []
        for i, (device, n_threads) in enumerate(plan.instances):
            # Ray pins a GPU actor to its GPU through CUDA_VISIBLE_DEVICES: inside, it is cuda:0.
            dev = "cuda:0" if num_gpus > 0 else ("cpu" if device.startswith("cuda") else device)
            o = dict(opts)
            if n_threads > 1 or plan.is_async:
                o["max_concurrency"] = n_threads  # thread-safe or async: n calls at once per actor
            threads = max(1, int(num_cpus)) if num_cpus else plan.cpu_threads  # an actor's reserved CPUs are its own
            handle = self._remote[plan.is_async].options(**o).remote(plan.cls, self.project, dev, threads)
            actors.append((handle, f"{plan.name}-ray-{i}"))
        self.actors[plan.name] = actors
        self.load[plan.name] = {label: 0 for _, label in actors}
        self.logger.info("ray: %d actor(s) for %s (%s)", len(actors), plan.name, opts)

    def _capacity(self, stage: str) -> int:
        plan = self.plans[stage]
        return sum(t for _, t in plan.instances) * (1 + PER_ACTOR_QUEUE)

    def n_workers(self, stage: str) -> int:
        return len(self.plans[stage].instances)

    def room(self, stage: str) -> int:
        if stage not in self.actors:
            return min(self.queue_size, self._capacity(stage))
        live = [lb for _, lb in self.actors[stage] if lb not in self.gone]
        if not live:
            return 0
        return max(0, self._capacity(stage) - sum(self.load[stage].values()))

    def submit(self, work: Work) -> None:
        if work.stage not in self.actors:
            self._start(self.plans[work.stage])
        live = [(h, lb) for h, lb in self.actors[work.stage] if lb not in self.gone]
        handle, label = min(live, key=lambda a: self.load[work.stage][a[1]])
        ref = handle.run.remote(work.task)
        self.load[work.stage][label] += 1
        self.refs[ref] = (work, label)

    def poll(self, timeout: float) -> list[Outcome]:
        if not self.refs:
            import time

            time.sleep(timeout)
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=0)
        out = []
        for ref in ready:
            work, label = self.refs.pop(ref)
            self.load[work.stage][label] -= 1
            try:
                reply = self.ray.get(ref)
            except Exception as e:  # noqa: BLE001 - the actor died past its retries, or Ray failed
                reply = ("error", False, f"the Ray worker failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})", None, None, False)
            oc = to_outcome(work, reply, label)
            if oc.kind == "load_failed":
                self.gone.add(label)
            out.append(oc)
        return out

    def inflight(self) -> int:
        return len(self.refs)

    def take_queued(self, stage: str) -> list[Work]:
        return []  # Ray queues calls inside actors; their outcomes still arrive through poll

    def drain_unstarted(self) -> int:
        # Queued actor calls cannot be taken back cheaply; forget them: their results are dropped.
        n = len(self.refs)
        for ref in list(self.refs):
            try:
                self.ray.cancel(ref)
            except Exception:  # noqa: BLE001
                pass
        self.refs.clear()
        return n

    def close(self) -> None:
        for actors in self.actors.values():
            for handle, _ in actors:
                try:
                    self.ray.kill(handle)
                except Exception:  # noqa: BLE001
                    pass
        self.actors.clear()
        if self.started_ray:
            self.ray.shutdown()

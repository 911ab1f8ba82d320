"""The runner: plans a run, executes its stages (local threads and event loops, or Ray), and
is the only owner of transactions, stage_state, errors, run ids and concurrency.

    plan.py          stages, workers, devices -> StagePlan
    worker.py        one stage instance on one device (shared by both executors)
    local.py         the local executor (threads for sync stages, an event loop for async)
    ray_executor.py  the same plans on a Ray cluster
    scheduler.py     Runner: the streaming loop over videos and stages
    ledger.py        runs, errors, stage_state: commits each item in one transaction
    progress.py      per-stage counters and throttled events
"""
from ..events import ProgressEvent, RunSummary
from .ledger import safe_config
from .plan import RunnerError, StagePlan, parse_workers, resolve_devices
from .scheduler import Runner

__all__ = ["ProgressEvent", "RunSummary", "Runner", "RunnerError", "StagePlan", "parse_workers", "resolve_devices",
           "safe_config"]

"""Planning a run: which stages, how many workers each, on which devices.

Pure functions of the settings; nothing here touches the store or starts a thread.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from ..stage import STAGE_ORDER, Stage, is_async
from ..stages import DEVICE_STAGES


class RunnerError(ValueError):
    """Bad runner settings (workers, devices, stages): one line naming the fix."""


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
    if is_auto(spec):
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


def is_auto(spec) -> bool:
    return spec is None or spec == "" or spec == "auto" or list(spec) == ["auto"]


@dataclass
class StagePlan:
    """How one stage runs: its class, and one (device, slots) entry per stage instance.

    slots: how many items that instance works on at once — threads sharing a thread-safe
    instance, or the in-flight items of an async stage's event loop.
    """

    name: str
    cls: type[Stage]
    instances: list[tuple[str, int]]
    cpu_threads: int | None = None  # math-library threads of each instance (see assign_cpu_threads)

    @property
    def n_workers(self) -> int:
        return sum(t for _, t in self.instances)

    @property
    def is_async(self) -> bool:
        return is_async(self.cls)


def plan_stage(name: str, cls: type[Stage], driver: Stage, workers: dict[str, int], devices: list[str]) -> StagePlan:
    """Instances per device: `workers` copies, or one shared instance for thread-safe/async stages.

    An async stage's slots are its own ``concurrency()`` unless ``--workers`` says otherwise.
    """
    on_device = name in DEVICE_STAGES or float(getattr(cls, "num_gpus", 0) or 0) > 0
    devs = devices if on_device else ["cpu"]
    if is_async(cls):
        n = max(1, int(workers.get(name, driver.concurrency())))
        return StagePlan(name, cls, [(d, n) for d in devs])
    n = max(1, int(workers.get(name, 1)))
    if cls.thread_safe:
        return StagePlan(name, cls, [(d, n) for d in devs])
    return StagePlan(name, cls, [(d, 1) for d in devs for _ in range(n)])


def assign_cpu_threads(plans: Iterable[StagePlan], setting: int, cores: int) -> None:
    """Set each plan's ``cpu_threads``: ``[runner] cpu_threads`` for every stage when set; else
    the synchronous segment-scope CPU instances (faces, asd: they stream side by side inside
    a video, so each library's default of one thread per core would put several threads on
    every core) share the cores equally, and the others keep their libraries' defaults."""
    plans = list(plans)
    if setting and setting > 0:
        for p in plans:
            p.cpu_threads = int(setting)
        return
    side_by_side = [p for p in plans if not p.is_async and p.cls.scope == "segment"]
    n = sum(1 for p in side_by_side for d, _ in p.instances if d == "cpu")
    for p in side_by_side:
        p.cpu_threads = max(1, cores // max(1, n))

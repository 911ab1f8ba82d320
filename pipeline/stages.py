"""The stage registry: stage names -> implementations, imported only when a run needs them.

Lazy imports keep one stage's missing optional dependency (torch, faster-whisper,
audio-separator, google-genai) from breaking the others: `mikupal run --stages segments`
works on a machine without Whisper.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Iterable

from .stage import STAGE_ORDER, Stage

__all__ = ["STAGE_ORDER", "STAGE_MODULES", "DEVICE_STAGES", "UnknownStageError", "StageUnavailableError",
           "stage_class", "make_stage", "parse_stages"]

# Where each stage lives; the class is the Stage subclass in that module whose `name` matches.
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "separate": ("mikupal.audio.separate", "mikupal.audio.stages"),
    "vad": ("mikupal.audio.vad", "mikupal.audio.stages"),
    "asr": ("mikupal.audio.asr", "mikupal.audio.stages"),
    "segments": ("mikupal.segments", "mikupal.audio.stages"),
    "faces": ("mikupal.vision.faces", "mikupal.vision.stages"),
    "asd": ("mikupal.vision.asd", "mikupal.vision.stages"),
    "emotion": ("mikupal.emotion.stage", "mikupal.emotion.annotate", "mikupal.emotion.stages", "mikupal.emotion"),
}

# Stages that run a model on an accelerator: with `--devices cuda:0,cuda:1` they get one
# instance per device per worker; the others (VAD, utterance building, the LLM client) run
# on the CPU with `workers` instances.
DEVICE_STAGES = frozenset({"separate", "asr", "faces", "asd"})


class UnknownStageError(ValueError):
    """A stage name that is not one of STAGE_ORDER."""


class StageUnavailableError(RuntimeError):
    """A known stage whose implementation cannot be imported (a missing optional package)."""


def _find_class(module, name: str) -> type[Stage] | None:
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if issubclass(obj, Stage) and obj is not Stage and getattr(obj, "name", "") == name:
            return obj
    return None


def stage_class(name: str) -> type[Stage]:
    """The Stage subclass for `name`, importing its module now."""
    if name not in STAGE_MODULES:
        raise UnknownStageError(f"unknown stage {name!r}; stages are: {', '.join(STAGE_ORDER)}")
    missing = []
    for mod_name in STAGE_MODULES[name]:
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            # The stage's own module not existing is different from a dependency missing.
            if e.name and (e.name == mod_name or mod_name.startswith(e.name + ".")):
                missing.append(mod_name)
                continue
            raise StageUnavailableError(
                f"stage {name}: cannot import {e.name!r} ({e}); install it (pip install 'mikupal[all]') "
                f"or leave the stage out with --stages"
            ) from None
        except ImportError as e:
            raise StageUnavailableError(
                f"stage {name}: import failed ({e}); reinstall its dependencies or leave the stage out with --stages"
            ) from None
        cls = _find_class(module, name)
        if cls is not None:
            return cls
    raise StageUnavailableError(
        f"stage {name}: no implementation found in {', '.join(STAGE_MODULES[name])}; this MIKU-PAL build lacks it"
    )


def make_stage(name: str, project, device: str = "cpu") -> Stage:
    """One stage instance (one model instance once load() runs) for `device`."""
    return stage_class(name)(project, device=device)


def parse_stages(text: str | Iterable[str] | None) -> list[str]:
    """`"asr,segments"` (or a list) -> names in pipeline order; empty/None = every stage."""
    if text is None:
        return list(STAGE_ORDER)
    parts = text.split(",") if isinstance(text, str) else list(text)
    names = [p.strip().lower() for p in parts if p and p.strip()]
    if not names:
        return list(STAGE_ORDER)
    unknown = [n for n in names if n not in STAGE_ORDER]
    if unknown:
        raise UnknownStageError(
            f"--stages: unknown stage {', '.join(repr(u) for u in unknown)}; choose from {','.join(STAGE_ORDER)}"
        )
    return [s for s in STAGE_ORDER if s in set(names)]

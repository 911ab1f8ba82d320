"""The stage registry: stage names -> implementations, imported only when a run needs them.

Lazy imports keep one stage's missing optional dependency (torch, faster-whisper,
audio-separator, google-genai) from breaking the others: `mikupal run --stages segments`
works on a machine without Whisper.
"""
from __future__ import annotations

import importlib
import os
from typing import Iterable

from .stage import STAGE_ORDER, Stage

__all__ = ["STAGE_ORDER", "STAGES", "DEVICE_STAGES", "UnknownStageError", "StageUnavailableError",
           "stage_class", "make_stage", "parse_stages"]

# The registry: stage name -> "module:Class". Modules are imported only when a run needs them.
STAGES: dict[str, str] = {
    "separate": "mikupal.audio.stages:SeparateStage",
    "vad": "mikupal.audio.stages:VadStage",
    "asr": "mikupal.audio.stages:AsrStage",
    "segments": "mikupal.audio.stages:SegmentsStage",
    "faces": "mikupal.vision.stages:FacesStage",
    "asd": "mikupal.vision.stages:AsdStage",
    "speakers": "mikupal.speakers.stage:SpeakersStage",
    "emotion": "mikupal.emotion.stage:EmotionStage",
}

# Stages that run a model on an accelerator: with `--devices cuda:0,cuda:1` they get one
# instance per device per worker; the others (VAD, utterance building, the LLM client) run
# on the CPU with `workers` instances.
DEVICE_STAGES = frozenset({"separate", "asr", "faces", "asd"})


class UnknownStageError(ValueError):
    """A stage name that is not one of STAGE_ORDER."""


class StageUnavailableError(RuntimeError):
    """A known stage whose implementation cannot be imported (a missing optional package)."""


def _test_build() -> dict[str, str]:
    """A test build of the stages: $MIKUPAL_TEST_STAGES="emotion=module:Class,..." swaps the
    implementation behind a registered name (a child `mikupal run` started by the app in a
    test runs a stage that crashes, without any test code in the product's paths)."""
    spec = os.environ.get("MIKUPAL_TEST_STAGES", "")
    pairs = (part.split("=", 1) for part in spec.split(",") if "=" in part)
    return {k.strip(): v.strip() for k, v in pairs if k.strip() in STAGES}


def stage_class(name: str) -> type[Stage]:
    """The Stage subclass for `name`, importing its module now."""
    if name not in STAGES:
        raise UnknownStageError(f"unknown stage {name!r}; stages are: {', '.join(STAGE_ORDER)}")
    mod_name, cls_name = _test_build().get(name, STAGES[name]).split(":")
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise StageUnavailableError(
            f"stage {name}: cannot import {e.name!r} ({e}); reinstall MIKU-PAL with its dependencies "
            f"(make setup, or pip install mikupal) or leave the stage out with --stages"
        ) from None
    except ImportError as e:
        raise StageUnavailableError(
            f"stage {name}: import failed ({e}); reinstall its dependencies or leave the stage out with --stages"
        ) from None
    return getattr(module, cls_name)


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

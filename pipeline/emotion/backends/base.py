"""What every annotator backend takes and gives back."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..clips import Clip
from ..prompt import Prompt
from ..schema import Answer


@dataclass
class Request:
    clip: Clip
    transcript: str
    prompt: Prompt
    run_index: int = 0
    seed: int = 0
    item: str = ""  # "segment 12" - names the item in messages


@dataclass
class Reply:
    """One answer, or a recorded failure to get a valid one.

    ``answer`` is None when the model's text stayed invalid after one retry (or it was
    blocked); then ``error`` says why and ``raw`` holds the text it sent (already scrubbed).
    """
    answer: Answer | None
    raw: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    error: str | None = None
    retries: int = 0
    meta: dict = field(default_factory=dict)


class Backend:
    """Async annotator. One instance serves the whole stage from one event loop."""

    name: str = ""
    model: str = ""

    async def annotate(self, req: Request) -> Reply:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release network sessions."""


def cost(cfg: dict, input_tokens: int, output_tokens: int) -> float:
    """USD from the config price table ([emotion] price_*_per_mtok)."""
    e = cfg.get("emotion", {})
    return round(input_tokens * float(e.get("price_input_per_mtok", 0)) / 1e6
                 + output_tokens * float(e.get("price_output_per_mtok", 0)) / 1e6, 8)


# Documented Gemini media token rates (FACTS.md): per sampled video frame (1 frame/s) by
# media resolution, plus 32 tokens per second of audio.
FRAME_TOKENS = {"low": 66, "medium": 258, "high": 258}
AUDIO_TOKENS_PER_S = 32


def estimate_input_tokens(duration_s: float, has_video: bool, media_resolution: str, prompt_chars: int) -> int:
    """Tokens a request will cost before sending it (for the tokens-per-minute limiter)."""
    import math

    secs = max(1, math.ceil(duration_s))
    per_s = AUDIO_TOKENS_PER_S + (FRAME_TOKENS.get(media_resolution, 258) if has_video else 0)
    return secs * per_s + prompt_chars // 4 + 16

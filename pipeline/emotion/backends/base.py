"""What every annotator backend takes and gives back."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..clips import Clip
from ..prices import Usage
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
    """One answer, or a paid failure to get a valid one.

    ``answer`` is None when the model's text stayed invalid after one retry, was blocked, or
    was cut off at max_output_tokens; then ``error`` says why (``kind``: invalid, blocked,
    max_tokens) and ``raw`` holds what it sent (already scrubbed). ``usage`` and ``cost_usd``
    cover every attempt (all were paid); ``cost_usd`` is None for a model with no price.
    """
    answer: Answer | None
    raw: str
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = 0.0
    latency_s: float = 0.0
    error: str | None = None
    kind: str = ""
    retries: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def input_tokens(self) -> int:
        return self.usage.input_tokens

    @property
    def output_tokens(self) -> int:
        return self.usage.output_tokens


class Backend:
    """Async annotator. One instance serves the whole stage from one event loop."""

    name: str = ""
    model: str = ""

    async def annotate(self, req: Request) -> Reply:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release network sessions."""


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

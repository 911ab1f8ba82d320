"""What an LLM answer costs, exactly, from the service's own token counts.

The price table is data: ``resources/prices/gemini.json`` (dated, with its source), and a
project may override or add models in ``PROJECT/prices.json`` (same shape; a model entry
there replaces the shipped one). Prices are USD per million tokens:

- ``input``: per modality (``promptTokensDetails``: TEXT, IMAGE, VIDEO, AUDIO). Gemini prices
  audio input higher than text/image/video, so one input rate would be wrong.
- ``cached_input``: ``cachedContentTokenCount`` (implicit cache hits on the shared system
  prompt prefix), per modality when ``cacheTokensDetails`` says which, else as text.
- ``output``: the answer plus ``thoughtsTokenCount`` (thinking is billed as output).
- ``batch_factor``: a Batch API request costs this fraction of an interactive one (0.5).

A model missing from the table costs ``None`` (unknown), never a guess.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..resources import path as resource_path

MODALITIES = ("text", "image", "video", "audio")
PROJECT_FILE = "prices.json"


class PriceError(ValueError):
    """A price file that cannot be read; the message names the file and the fix."""


@dataclass
class Usage:
    """Token counts of one answer (or the sum of several), as the service reported them."""

    prompt: dict[str, int] = field(default_factory=dict)  # modality -> prompt tokens (cached included)
    cached: dict[str, int] = field(default_factory=dict)  # modality -> cached prompt tokens
    candidates: int = 0
    thoughts: int = 0

    @property
    def input_tokens(self) -> int:
        return sum(self.prompt.values())

    @property
    def cached_tokens(self) -> int:
        return sum(self.cached.values())

    @property
    def output_tokens(self) -> int:
        """Billed output: the answer and the thinking."""
        return self.candidates + self.thoughts

    def __add__(self, other: "Usage") -> "Usage":
        add = lambda a, b: {k: a.get(k, 0) + b.get(k, 0) for k in set(a) | set(b)}  # noqa: E731
        return Usage(add(self.prompt, other.prompt), add(self.cached, other.cached),
                     self.candidates + other.candidates, self.thoughts + other.thoughts)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": dict(sorted(self.prompt.items())), "cached": dict(sorted(self.cached.items())),
                "candidates": self.candidates, "thoughts": self.thoughts}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Usage":
        d = d or {}
        return cls(dict(d.get("prompt") or {}), dict(d.get("cached") or {}), int(d.get("candidates") or 0),
                   int(d.get("thoughts") or 0))


def _g(obj: Any, name: str, camel: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(camel, obj.get(name))
    return getattr(obj, name, None)


def _modality(value: Any) -> str:
    s = str(getattr(value, "value", value) or "TEXT").lower()
    return s if s in MODALITIES else "text"


def _details(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for it in items or []:
        m = _modality(_g(it, "modality", "modality"))
        out[m] = out.get(m, 0) + int(_g(it, "token_count", "tokenCount") or 0)
    return out


def usage_from(um: Any) -> Usage:
    """A Usage from google-genai's ``usage_metadata`` (object) or the REST ``usageMetadata`` (dict)."""
    if um is None:
        return Usage()
    total = int(_g(um, "prompt_token_count", "promptTokenCount") or 0)
    prompt = _details(_g(um, "prompt_tokens_details", "promptTokensDetails"))
    if sum(prompt.values()) != total:  # no (or partial) per-modality details: the rest is text
        prompt["text"] = prompt.get("text", 0) + max(0, total - sum(prompt.values()))
    prompt = {k: v for k, v in prompt.items() if v}
    n_cached = int(_g(um, "cached_content_token_count", "cachedContentTokenCount") or 0)
    cached = _details(_g(um, "cache_tokens_details", "cacheTokensDetails"))
    if sum(cached.values()) < n_cached:  # the implicit cache hits the shared prefix: the system prompt text
        cached["text"] = cached.get("text", 0) + n_cached - sum(cached.values())
    cached = {k: v for k, v in cached.items() if v}
    return Usage(prompt, cached, int(_g(um, "candidates_token_count", "candidatesTokenCount") or 0),
                 int(_g(um, "thoughts_token_count", "thoughtsTokenCount") or 0))


@dataclass(frozen=True)
class ModelPrice:
    model: str
    input: dict[str, float]
    cached_input: dict[str, float]
    output: float
    batch_factor: float = 0.5

    def cost(self, u: Usage, *, batch: bool = False) -> float:
        usd = 0.0
        for m, n in u.prompt.items():
            cached = min(n, u.cached.get(m, 0))
            usd += (n - cached) * self.input.get(m, self.input["text"])
            usd += cached * self.cached_input.get(m, self.cached_input.get("text", self.input["text"]))
        usd += u.output_tokens * self.output
        usd /= 1e6
        return round(usd * (self.batch_factor if batch else 1.0), 10)


@dataclass(frozen=True)
class PriceTable:
    models: dict[str, ModelPrice]
    as_of: str
    sources: tuple[str, ...]

    def get(self, model: str) -> ModelPrice | None:
        """The price of ``model``; a versioned name (``gemini-2.5-flash-001``, ``models/...``) falls
        back to the longest listed prefix."""
        name = model.split("/")[-1]
        if name in self.models:
            return self.models[name]
        best = max((m for m in self.models if name.startswith(m + "-")), key=len, default=None)
        return self.models[best] if best else None

    def cost(self, model: str, u: Usage, *, batch: bool = False) -> float | None:
        p = self.get(model)
        return None if p is None else p.cost(u, batch=batch)


def _parse(data: dict, where: str) -> dict[str, ModelPrice]:
    out = {}
    for name, d in (data.get("models") or {}).items():
        try:
            inp = d["input"]
            inp = {m: float(inp) for m in MODALITIES} if isinstance(inp, (int, float)) else {k: float(v) for k, v in inp.items()}
            if "text" not in inp:
                raise KeyError("input.text")
            cin = d.get("cached_input", inp)
            cin = {m: float(cin) for m in MODALITIES} if isinstance(cin, (int, float)) else {k: float(v) for k, v in cin.items()}
            out[name] = ModelPrice(name, inp, cin, float(d["output"]), float(d.get("batch_factor", 0.5)))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise PriceError(f"{where}: model {name!r} needs input (per modality or one number) and output "
                             f"prices in USD per million tokens ({type(e).__name__}: {e})") from None
    return out


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PriceError(f"{path}: cannot read the price table ({e}); fix the JSON or delete the file") from None
    if not isinstance(data, dict):
        raise PriceError(f"{path}: expected a JSON object with \"models\"")
    return data


def load_prices(project_root: str | Path | None = None) -> PriceTable:
    """The shipped table, with the project's ``prices.json`` (if any) laid over it per model."""
    shipped_path = resource_path("prices", "gemini.json")
    shipped = _read(shipped_path)
    models = _parse(shipped, str(shipped_path))
    as_of, sources = str(shipped.get("as_of", "")), [str(shipped.get("source", ""))]
    if project_root is not None:
        own = Path(project_root) / PROJECT_FILE
        if own.exists():
            data = _read(own)
            models.update(_parse(data, str(own)))
            as_of = str(data.get("as_of") or as_of)
            sources.append(str(own))
    return PriceTable(models, as_of, tuple(s for s in sources if s))

"""Tokens and dollars of the emotion stage BEFORE a run (`mikupal estimate`, the run panel).

Input tokens follow Gemini's documented media rates (FACTS.md): one sampled frame per second
of video (66 tokens at low media resolution, 258 at medium/high), 32 tokens per second of
audio, plus the system prompt and the transcript as text (~4 characters per token). Output
is a typical answer (ANSWER_TOKENS: three short analyses, one number per category, a
rationale) plus thinking: none with ``thinking_budget = 0``, the cap N, or THINKING_DEFAULT
for the model's own budget (-1). Prices come from the same table as the real cost
(prices.py), at the batch rate when ``[emotion] batch`` is on. Implicit cache hits are not
assumed (they only lower the bill).

What is counted: the stage's pending items when segments exist (their real durations),
else every second of the added videos as speech in MEAN_UTTERANCE_S utterances (an upper
bound: retention filters drop part of it).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .backends.base import AUDIO_TOKENS_PER_S, FRAME_TOKENS
from .prices import PriceTable, Usage, load_prices

ANSWER_TOKENS = 450
THINKING_DEFAULT = 800  # thought tokens per answer Flash used on this task with its own budget (issue 18)
MEAN_UTTERANCE_S = 6.0
CHARS_PER_TOKEN = 4.0


@dataclass
class Estimate:
    model: str
    items: int
    speech_s: float
    source: str  # "pending segments" | "video duration (upper bound)"
    input_tokens: dict[str, int] = field(default_factory=dict)  # per modality
    output_tokens: int = 0
    thought_tokens: int = 0
    usd: float | None = None  # at the run's rate (batch when [emotion] batch)
    usd_interactive: float | None = None
    usd_batch: float | None = None
    batch: bool = False
    prices_as_of: str = ""
    assumptions: list[str] = field(default_factory=list)

    @property
    def usd_per_hour(self) -> float | None:
        return None if self.usd is None or not self.speech_s else self.usd * 3600 / self.speech_s

    def to_dict(self) -> dict:
        return asdict(self) | {"usd_per_hour": self.usd_per_hour}


def _thinking(e: dict) -> int:
    budget, model = int(e["thinking_budget"]), str(e["model"]).lower()
    if budget == 0 and "flash" in model:
        return 0
    if budget > 0:
        return min(budget, THINKING_DEFAULT)  # a cap: it thinks up to N, typically this much
    return THINKING_DEFAULT


def usage_for(duration_s: float, has_video: bool, text_tokens: int, e: dict) -> Usage:
    """Expected usage of one answer to a clip of `duration_s` seconds."""
    secs = max(1, math.ceil(duration_s))
    prompt = {"text": text_tokens, "audio": secs * AUDIO_TOKENS_PER_S}
    if has_video:
        prompt["video"] = secs * FRAME_TOKENS.get(str(e["media_resolution"]), 258)
    return Usage(prompt=prompt, candidates=ANSWER_TOKENS, thoughts=_thinking(e))


def estimate_clips(clips: list[tuple[float, bool, str]], cfg: dict, system_prompt: str, source: str,
                   prices: PriceTable | None = None) -> Estimate:
    """`clips`: (duration_s, has_video, transcript) per answer to ask for."""
    e = cfg["emotion"]
    prices = prices or load_prices()
    model = str(e["model"])
    batch = bool(e["batch"]) and str(e["backend"]) == "gemini"
    total = Usage()
    for dur, has_video, text in clips:
        text_tokens = int((len(system_prompt) + len(text) + 120) / CHARS_PER_TOKEN)
        total = total + usage_for(dur, has_video, text_tokens, e)
    est = Estimate(model=model, items=len(clips), speech_s=sum(c[0] for c in clips), source=source,
                   input_tokens=dict(sorted(total.prompt.items())), output_tokens=total.output_tokens,
                   thought_tokens=total.thoughts, batch=batch, prices_as_of=prices.as_of)
    price = prices.get(model) if str(e["backend"]) == "gemini" else None
    if price is not None:
        est.usd_interactive = round(price.cost(total), 4)
        est.usd_batch = round(price.cost(total, batch=True), 4)
        est.usd = est.usd_batch if batch else est.usd_interactive
    elif str(e["backend"]) == "baseline":
        est.usd = est.usd_interactive = est.usd_batch = 0.0
    est.assumptions = [
        f"{ANSWER_TOKENS} answer tokens and {_thinking(e)} thought tokens per answer "
        f"(thinking_budget={e['thinking_budget']})",
        f"video at 1 frame/s, {FRAME_TOKENS.get(str(e['media_resolution']), 258)} tokens per frame "
        f"(media_resolution={e['media_resolution']}); audio {AUDIO_TOKENS_PER_S} tokens/s",
        "no implicit cache hits (they only lower the bill)",
    ]
    if price is None and str(e["backend"]) != "baseline":
        est.assumptions.append(f"model {model!r} has no price in the table: add it to PROJECT/prices.json")
    return est


def estimate_project(project, db=None) -> Estimate:
    """The emotion stage's pending work in this project, priced at its settings."""
    from .stage import EmotionStage

    stage = EmotionStage(project)
    db = db if db is not None else project.db()
    n_segments = db.conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
    if n_segments:
        items = stage.pending(db)
        seg = {r[0]: (float(r[1]), bool(r[2]), r[3] or "") for r in db.conn.execute(
            "SELECT s.id, s.end_s - s.start_s + 2 * ?, v.has_video, s.text FROM segments s JOIN videos v"
            " ON v.id = s.video_id", (float(project.config["clips"]["context_s"]),))}
        clips = [seg[sid] for sid, _ in items if sid in seg]
        return estimate_clips(clips, project.config, stage.prompt.system, "pending segments")
    clips = []
    for dur, has_video in db.conn.execute("SELECT COALESCE(duration_s, 0), has_video FROM videos"):
        n = int(dur // MEAN_UTTERANCE_S)
        clips += [(MEAN_UTTERANCE_S, bool(has_video), "")] * n * stage.runs
    return estimate_clips(clips, project.config, stage.prompt.system, "video duration (upper bound)")


def estimate_hour(cfg: dict, system_prompt: str, runs: int = 1) -> Estimate:
    """One hour of speech in MEAN_UTTERANCE_S utterances with video (the README's figure)."""
    n = int(3600 / MEAN_UTTERANCE_S) * max(1, runs)
    words = "word " * int(MEAN_UTTERANCE_S * 2.5)  # ~2.5 words per second of speech
    return estimate_clips([(MEAN_UTTERANCE_S, True, words)] * n, cfg, system_prompt, "one hour of speech")

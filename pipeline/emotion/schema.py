"""The annotator's answer: the JSON shape requested from every backend and its validation.

One answer (ARCHITECTURE.md "Emotion output schema")::

    visual_analysis  str     audio_analysis  str     text_analysis  str
    emotions         {category: number in [0, 1]} for every category of the label set
    primary_emotion  str     one category name        rationale  str
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass

from ..taxonomy import LabelSet

TEXT_FIELDS = ("visual_analysis", "audio_analysis", "text_analysis")
FIELDS = TEXT_FIELDS + ("emotions", "primary_emotion", "rationale")


class InvalidAnswer(ValueError):
    """The model's text is not valid JSON or does not fit the schema (reason in the message)."""


@dataclass
class Answer:
    visual_analysis: str
    audio_analysis: str
    text_analysis: str
    emotions: dict[str, float]
    primary_emotion: str
    rationale: str

    def to_dict(self) -> dict:
        return asdict(self)


def json_schema(ls: LabelSet) -> dict:
    """JSON Schema of one answer (OpenAI-compatible `response_format`, documentation)."""
    return {
        "type": "object",
        "properties": {
            **{f: {"type": "string"} for f in TEXT_FIELDS},
            "emotions": {
                "type": "object",
                "properties": {n: {"type": "number", "minimum": 0, "maximum": 1} for n in ls.names},
                "required": list(ls.names),
                "additionalProperties": False,
            },
            "primary_emotion": {"type": "string", "enum": list(ls.names)},
            "rationale": {"type": "string"},
        },
        "required": list(FIELDS),
        "additionalProperties": False,
    }


def gemini_schema(ls: LabelSet) -> dict:
    """The same shape in Gemini's OpenAPI-subset Schema (`response_schema`)."""
    return {
        "type": "OBJECT",
        "properties": {
            **{f: {"type": "STRING"} for f in TEXT_FIELDS},
            "emotions": {
                "type": "OBJECT",
                "properties": {n: {"type": "NUMBER", "minimum": 0, "maximum": 1} for n in ls.names},
                "required": list(ls.names),
                "property_ordering": list(ls.names),
            },
            "primary_emotion": {"type": "STRING", "enum": list(ls.names)},
            "rationale": {"type": "STRING"},
        },
        "required": list(FIELDS),
        "property_ordering": list(FIELDS),
    }


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def parse_answer(text: str | None, ls: LabelSet) -> Answer:
    """Validate a model's text against the schema; raise InvalidAnswer saying what is wrong.

    Category keys and the primary are matched case-insensitively and returned in the label
    set's spelling. Every category must be present with a number in [0, 1]; unknown keys fail.
    """
    if text is None or not str(text).strip():
        raise InvalidAnswer("empty answer")
    m = _FENCE.match(text)  # local servers often wrap JSON in a markdown fence
    body = m.group(1) if m else text
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as e:
        raise InvalidAnswer(f"not JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(obj, dict):
        raise InvalidAnswer(f"expected a JSON object, got {type(obj).__name__}")
    missing = [f for f in FIELDS if f not in obj]
    if missing:
        raise InvalidAnswer(f"missing field(s) {', '.join(missing)}")
    for f in TEXT_FIELDS + ("rationale", "primary_emotion"):
        if not isinstance(obj[f], str):
            raise InvalidAnswer(f"{f} must be a string")
    emo = obj["emotions"]
    if not isinstance(emo, dict):
        raise InvalidAnswer("emotions must be an object of category -> number")
    out: dict[str, float] = {}
    for key, value in emo.items():
        canon = ls.canonical(key)
        if canon is None:
            raise InvalidAnswer(f"emotions has unknown category {key!r} (label set {ls.name})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
            raise InvalidAnswer(f"emotions[{key!r}] = {value!r} is not a number in [0, 1]")
        out[canon] = float(value)
    absent = [n for n in ls.names if n not in out]
    if absent:
        raise InvalidAnswer(f"emotions lacks {len(absent)} categor{'y' if len(absent) == 1 else 'ies'}: {', '.join(absent[:5])}")
    primary = ls.canonical(obj["primary_emotion"])
    if primary is None:
        raise InvalidAnswer(f"primary_emotion {obj['primary_emotion']!r} is not in label set {ls.name}")
    return Answer(
        visual_analysis=obj["visual_analysis"].strip(), audio_analysis=obj["audio_analysis"].strip(),
        text_analysis=obj["text_analysis"].strip(), emotions={n: out[n] for n in ls.names},
        primary_emotion=primary, rationale=obj["rationale"].strip(),
    )

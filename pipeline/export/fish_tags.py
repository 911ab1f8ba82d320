"""Emotion tags for Fish-Speech / OpenAudio S1 transcripts (`--lab-template "{fish_emotion} {text}"`).

Fish-Speech reads an emotion marker in parentheses before the text it colours, from a
fixed vocabulary ("(angry)", "(sad)", "(joyful)", ...). The label sets' names are mapped to
the nearest marker below; a name with no fitting marker (neutral, other) gets no tag, and a
name of a user label set that is not listed is used as is, lower-cased. The README's
"Export formats" section prints this table.
"""
from __future__ import annotations

FISH_TAGS: dict[str, str] = {
    # cowen26
    "admiration": "moved", "adoration": "delighted", "aesthetic": "relaxed", "amusement": "amused",
    "anger": "angry", "anxiety": "anxious", "awe": "astonished", "awkwardness": "awkward",
    "boredom": "indifferent", "calmness": "calm", "confusion": "confused", "craving": "keen",
    "disgust": "disgusted", "empathic pain": "empathetic", "entrancement": "interested",
    "excitement": "excited", "fear": "scared", "horror": "panicked", "interest": "interested",
    "joy": "joyful", "romance/love": "delighted", "nostalgia": "moved", "relief": "relaxed",
    "sadness": "sad", "satisfaction": "satisfied", "surprise": "surprised",
    # meld7, ekman6, iemocap4, iemocap9
    "happiness": "happy", "happy": "happy", "angry": "angry", "sad": "sad", "excited": "excited",
    "frustrated": "frustrated", "fearful": "scared", "surprised": "surprised", "disgusted": "disgusted",
    "neutral": "", "other": "",
}


def fish_tag(label: str) -> str:
    """"(joyful)" for Joy; "" for labels without a marker (the template then holds the bare text)."""
    key = label.strip().lower()
    tag = FISH_TAGS.get(key, key)
    return f"({tag})" if tag else ""

"""The annotator's prompt: a system prompt in three parts (task, category descriptions,
output structure) rendered from `resources/prompts/`, and a user turn that carries only the
clip and its transcript.

The prompt is versioned by content: ``Prompt.sha`` hashes the rendered system prompt and the
user template, so editing a template, the label set or the language gives a new
``annotations.prompt_sha`` and the segments are annotated again.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from string import Template

from ..resources import path as resource_path
from ..taxonomy import LabelSet, load_label_set

PROMPTS_DIR = resource_path("prompts")
SYSTEM_TEMPLATE = "emotion_system.txt"
USER_TEMPLATE = "emotion_user.txt"


@dataclass(frozen=True)
class Prompt:
    system: str
    user_template: str
    sha: str
    label_set: LabelSet
    language: str

    def user_text(self, transcript: str) -> str:
        """The text part of the user turn (the clip itself travels as media)."""
        clean = " ".join((transcript or "").split()) or "(no transcript: judge from the clip alone)"
        return Template(self.user_template).safe_substitute(transcript=clean.replace('"', "'"))


def _read(name: str, prompts_dir: Path) -> str:
    path = prompts_dir / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        raise FileNotFoundError(f"prompt template {path} is missing; restore it from the MIKU-PAL sources") from None


def build_prompt(label_set: str | LabelSet = "cowen26", language: str = "English",
                 prompts_dir: str | Path | None = None) -> Prompt:
    """Render the system prompt for a label set (name, path or LabelSet) and output language."""
    ls = load_label_set(label_set)
    pdir = Path(prompts_dir) if prompts_dir else PROMPTS_DIR
    categories = "\n".join(f"- {c.name}: {c.description}" for c in ls.categories)
    system = Template(_read(SYSTEM_TEMPLATE, pdir)).substitute(
        label_set=ls.title or ls.name,
        n_categories=len(ls.categories),
        categories=categories,
        category_names=", ".join(f'"{n}"' for n in ls.names),
        language=language or "English",
    ).strip() + "\n"
    user = _read(USER_TEMPLATE, pdir).strip()
    sha = hashlib.sha256((system + "\x1f" + user).encode("utf-8")).hexdigest()[:16]
    return Prompt(system=system, user_template=user, sha=sha, label_set=ls, language=language or "English")

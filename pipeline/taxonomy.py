"""Emotion label sets: the categories the annotator scores, their descriptions, colours and
the mappings used to evaluate against other datasets' labels.

Label sets are data, not code: ``resources/taxonomy/<name>.json`` (or ``.toml``). A user adds
one by passing a file path wherever a label set name is accepted (``[emotion] label_set``).
A file looks like::

    {"name": "mine", "title": "...", "source": "...",
     "categories": [{"name": "happy", "description": "...", "color": "#FFD700",
                     "codes": ["hap"], "va": [0.8, 0.6]}, ...],   # codes, va optional
     "mappings": {"meld7": {"map": {"happy": "joy", ...},
                            "neutral": {"label": "neutral", "below": 0.3} | null,
                            "notes": "why"}}}

Mapping rule (``map_label``): if the mapping has a ``neutral`` rule and the strongest
intensity of the answer is below ``below``, the answer maps to the neutral label (a model
that sees no clear emotion still has to name a primary category); otherwise the primary
category maps through ``map``. Maps are total: every source category has exactly one target.
"""
from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping

from .resources import path as resource_path

TAXONOMY_DIR = resource_path("taxonomy")
DEFAULT_LABEL_SET = "cowen26"
_HEX = re.compile(r"^#[0-9A-Fa-f]{6}$")


class TaxonomyError(ValueError):
    """A missing or malformed label set; the message names the file and the fix."""


@dataclass(frozen=True)
class Category:
    name: str
    description: str
    color: str
    codes: tuple[str, ...] = ()  # dataset codes that mean this category (e.g. IEMOCAP "exc")
    # (valence -1..1, arousal 0..1) in the circumplex; optional, used by the offline baseline.
    va: tuple[float, float] | None = None


@dataclass(frozen=True)
class LabelMapping:
    target: str
    map: dict[str, str]
    neutral_label: str | None = None
    neutral_below: float | None = None
    notes: str = ""


@dataclass(frozen=True)
class LabelSet:
    name: str
    categories: tuple[Category, ...]
    mappings: dict[str, LabelMapping] = field(default_factory=dict)
    title: str = ""
    source: str = ""
    path: str = ""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.categories]

    @property
    def colors(self) -> dict[str, str]:
        return {c.name: c.color for c in self.categories}

    def category(self, name: str) -> Category:
        canon = self.canonical(name)
        if canon is None:
            raise TaxonomyError(f"{name!r} is not a category of label set {self.name!r}; choose one of: {', '.join(self.names)}")
        return next(c for c in self.categories if c.name == canon)

    def canonical(self, name: str) -> str | None:
        """The category's exact name for a case/space-insensitive name or a dataset code, or None."""
        key = _norm(name)
        for c in self.categories:
            if _norm(c.name) == key or key in (_norm(x) for x in c.codes):
                return c.name
        return None


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", str(s)).strip().casefold()


def builtin_names() -> list[str]:
    return sorted(p.stem for p in TAXONOMY_DIR.glob("*.json"))


def list_label_sets() -> list[str]:
    """Names of the label sets shipped with MIKU-PAL (user files are passed by path)."""
    return builtin_names()


def _read(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TaxonomyError(f"label set file {path}: cannot be read ({e.strerror}); check the path") from None
    try:
        return tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise TaxonomyError(f"label set file {path}: not valid {path.suffix.lstrip('.').upper() or 'JSON'} ({e}); fix the syntax") from None


def _parse(data: object, where: str) -> LabelSet:
    if not isinstance(data, dict):
        raise TaxonomyError(f"{where}: top level must be an object with 'name' and 'categories'")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TaxonomyError(f"{where}: missing 'name' (a short id such as \"mylabels\")")
    cats_raw = data.get("categories")
    if not isinstance(cats_raw, list) or len(cats_raw) < 2:
        raise TaxonomyError(f"{where}: 'categories' must be a list of at least two {{name, description, color}} objects")
    cats: list[Category] = []
    seen: set[str] = set()
    for i, c in enumerate(cats_raw):
        if not isinstance(c, dict):
            raise TaxonomyError(f"{where}: categories[{i}] must be an object with name, description, color")
        cname, desc, color = c.get("name"), c.get("description"), c.get("color")
        if not isinstance(cname, str) or not cname.strip():
            raise TaxonomyError(f"{where}: categories[{i}] has no 'name'")
        if _norm(cname) in seen:
            raise TaxonomyError(f"{where}: category {cname!r} appears twice; names must be unique")
        seen.add(_norm(cname))
        if not isinstance(desc, str) or not desc.strip():
            raise TaxonomyError(f"{where}: category {cname!r} has no 'description' (one or two sentences for the prompt)")
        if not isinstance(color, str) or not _HEX.match(color):
            raise TaxonomyError(f"{where}: category {cname!r} needs 'color' as #RRGGBB, got {color!r}")
        codes = c.get("codes", [])
        if not isinstance(codes, list) or not all(isinstance(x, str) for x in codes):
            raise TaxonomyError(f"{where}: category {cname!r}: 'codes' must be a list of strings")
        va = c.get("va")
        if va is not None and not (isinstance(va, list) and len(va) == 2 and all(isinstance(x, (int, float)) for x in va)
                                   and -1 <= va[0] <= 1 and 0 <= va[1] <= 1):
            raise TaxonomyError(f"{where}: category {cname!r}: 'va' must be [valence -1..1, arousal 0..1], got {va!r}")
        cats.append(Category(cname, desc.strip(), color.upper(), tuple(codes), tuple(map(float, va)) if va else None))
    mappings: dict[str, LabelMapping] = {}
    for target, m in (data.get("mappings") or {}).items():
        if not isinstance(m, dict) or not isinstance(m.get("map"), dict):
            raise TaxonomyError(f"{where}: mappings.{target} must have a 'map' object")
        neutral = m.get("neutral")
        if neutral is not None and not (isinstance(neutral, dict) and isinstance(neutral.get("label"), str)
                                        and isinstance(neutral.get("below"), (int, float))):
            raise TaxonomyError(f"{where}: mappings.{target}.neutral must be null or {{\"label\": str, \"below\": number}}")
        mappings[target] = LabelMapping(
            target=target,
            map={str(k): str(v) for k, v in m["map"].items()},
            neutral_label=neutral["label"] if neutral else None,
            neutral_below=float(neutral["below"]) if neutral else None,
            notes=str(m.get("notes", "")),
        )
    ls = LabelSet(name=name.strip(), categories=tuple(cats), mappings=mappings,
                  title=str(data.get("title", "")), source=str(data.get("source", "")), path=where)
    for target, m in mappings.items():
        missing = [c for c in ls.names if c not in m.map]
        unknown = [k for k in m.map if k not in ls.names]
        if missing or unknown:
            raise TaxonomyError(f"{where}: mapping to {target!r} must list every category exactly once"
                                + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))
    return ls


@lru_cache(maxsize=64)
def _load_cached(key: str, mtime: float) -> LabelSet:
    path = Path(key)
    return _parse(_read(path), str(path))


def resolve_path(name_or_path: str | Path) -> Path:
    """A built-in name -> its file; anything that looks like a path -> that file."""
    s = str(name_or_path).strip()
    if not s:
        raise TaxonomyError("empty label set name; use one of " + ", ".join(builtin_names()) + " or a file path")
    builtin = TAXONOMY_DIR / f"{s}.json"
    if "/" not in s and "\\" not in s and builtin.exists():
        return builtin
    p = Path(s).expanduser()
    if p.suffix.lower() in (".json", ".toml") or p.exists():
        if not p.exists():
            raise TaxonomyError(f"label set file {p} does not exist; check the path")
        return p.resolve()
    raise TaxonomyError(f"unknown label set {s!r}; use one of {', '.join(builtin_names())} or a .json/.toml file path")


def load_label_set(name_or_path: str | Path | LabelSet = DEFAULT_LABEL_SET) -> LabelSet:
    """Load a built-in label set by name or a user file by path (JSON or TOML)."""
    if isinstance(name_or_path, LabelSet):
        return name_or_path
    p = resolve_path(name_or_path)
    return _load_cached(str(p), p.stat().st_mtime)


def map_label(
    primary: str,
    intensities: Mapping[str, float] | None,
    from_set: str | LabelSet = DEFAULT_LABEL_SET,
    to_set: str | LabelSet = "meld7",
    *,
    neutral_below: float | None = None,
) -> str:
    """Map an answer's primary category from one label set to another (for evaluation).

    ``neutral_below`` overrides the threshold stored with the mapping; pass 0 to disable the
    low-intensity rule. Raises TaxonomyError when no mapping exists or the primary is unknown.
    """
    src = load_label_set(from_set)
    dst = load_label_set(to_set)
    canon = src.canonical(primary)
    if canon is None:
        raise TaxonomyError(f"{primary!r} is not a category of label set {src.name!r}; choose one of: {', '.join(src.names)}")
    if src.name == dst.name:
        return canon
    m = src.mappings.get(dst.name)
    if m is None:
        raise TaxonomyError(f"label set {src.name!r} has no mapping to {dst.name!r}; add mappings.{dst.name} to {src.path}")
    below = m.neutral_below if neutral_below is None else neutral_below
    if m.neutral_label and below and intensities:
        values = [float(v) for v in intensities.values() if isinstance(v, (int, float))]
        if values and max(values) < below:
            return dst.category(m.neutral_label).name
    return dst.category(m.map[canon]).name

"""`mikupal eval`: score the project's emotion answers against MELD or IEMOCAP labels.

Flow: read the dataset's label file -> reference items (id, gold label in the chosen label
set, where the utterance lives) -> match each to one of the project's videos by file stem
and to the segment that covers it -> map every annotation's primary emotion into the
dataset's label set (mikupal.taxonomy mappings) -> metrics per system (backend, model,
label set, prompt), plus agreement across the N runs and, for IEMOCAP, the human
evaluators' own accuracy and agreement as the reference point.

Matching rule: a reference whose clip file is in the project (MELD ``dia{D}_utt{U}.mp4``,
IEMOCAP ``Ses01F_impro01_F000.wav``) takes that video's longest annotated segment; an
IEMOCAP utterance inside a whole dialogue video (``Ses01F_impro01.avi``) takes the
segment that overlaps its time range most (at least half of the shorter of the two).
MELD's train/dev/test splits reuse clip names: among videos sharing a name, the one in a
folder named after the labels file's split wins (``test_sent_emo.csv`` ->
``output_repeated_splits_test/``); ``--videos-under`` narrows the search explicitly.
The headline metrics use each item's first run; later runs feed consistency (kappa).
"""
from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional

import numpy as np

from . import metrics, store, taxonomy

DATASETS = ("meld", "iemocap")
DEFAULT_LABEL_SET = {"meld": "meld7", "iemocap": "iemocap4"}
DEFAULT_EXCLUDE = ("frustration", "neutral")  # the paper's Table 1 variant
UNMAPPED = "(unmapped)"  # a prediction with no category in the dataset's label set
OTHER = "(other)"  # a human vote outside the label set (e.g. IEMOCAP frustration in 4-class)


class EvalError(Exception):
    """Bad input for `mikupal eval` (missing file, unknown dataset): one line, exit code 2."""


@dataclass
class Reference:
    """One labelled utterance of the dataset."""

    item_id: str
    raw_label: str  # the dataset's own label or code
    label: str | None  # the gold label in the chosen label set; None = outside it (left out)
    stems: tuple[str, ...]  # file stems that hold exactly this utterance
    container: str | None = None  # stem of a longer file that holds it (IEMOCAP dialogue)
    start_s: float | None = None
    end_s: float | None = None
    text: str = ""
    votes: dict[str, list[str]] = field(default_factory=dict)  # IEMOCAP evaluator -> codes


# ---- MELD -----------------------------------------------------------------------------

_MELD_REQUIRED = ("utterance", "emotion", "dialogue_id", "utterance_id")


def _header_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lstrip("\ufeff").casefold()).strip("_")


def _decode(data: bytes) -> str:
    # MELD ships UTF-8 files, but re-saved copies are often Windows-1252.
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


_C1 = re.compile("[\u0080-\u009f]")


def fix_text(text: str) -> str:
    """Undo MELD's mojibake: Windows-1252 bytes read as Latin-1 (``he\\x92s`` -> ``he’s``)
    and UTF-8 read as Windows-1252 (``heâ€™s`` -> ``he’s``)."""
    if _C1.search(text):
        text = _C1.sub(lambda m: bytes([ord(m.group())]).decode("cp1252", errors="ignore"), text)
    if "â€" in text or "Ã" in text:
        try:
            text = text.encode("cp1252").decode("utf-8")
        except UnicodeError:
            pass
    return text


def _read_bytes(path: Path, what: str) -> bytes:
    if not path.exists():
        raise EvalError(f"{what} {path} does not exist; pass the dataset's label file with --labels")
    if path.is_dir():
        raise EvalError(f"{what} {path} is a folder; pass the CSV file itself")
    return path.read_bytes()


def read_meld_csv(path: str | Path, label_set: str | taxonomy.LabelSet = "meld7") -> tuple[list[Reference], list[str]]:
    """MELD ``*_sent_emo.csv`` -> references and one-line problems (rows skipped, with why)."""
    path = Path(path)
    text = _decode(_read_bytes(path, "MELD label file"))
    ls = taxonomy.load_label_set(label_set)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [_header_key(h) for h in next(reader)]
    except StopIteration:
        raise EvalError(f"MELD label file {path} is empty; pass train/dev/test_sent_emo.csv") from None
    missing = [k for k in _MELD_REQUIRED if k not in header]
    if missing:
        raise EvalError(f"MELD label file {path}: no column(s) {', '.join(missing)}; expected MELD's header "
                        "'Sr No., Utterance, Speaker, Emotion, Sentiment, Dialogue_ID, Utterance_ID, ...'")
    col = {k: i for i, k in enumerate(header)}
    refs: list[Reference] = []
    problems: list[str] = []
    seen: set[str] = set()
    for row in reader:
        line = reader.line_num
        if not any(c.strip() for c in row):
            continue
        get = lambda k: row[col[k]].strip() if col.get(k) is not None and col[k] < len(row) else ""  # noqa: E731
        dia, utt, emo = get("dialogue_id"), get("utterance_id"), get("emotion")
        if not (dia.isdigit() and utt.isdigit()) or not emo:
            problems.append(f"{path.name} line {line}: missing or bad Dialogue_ID/Utterance_ID/Emotion; row skipped")
            continue
        item_id = f"dia{int(dia)}_utt{int(utt)}"
        if item_id in seen:
            problems.append(f"{path.name} line {line}: {item_id} appears twice; the first row is used")
            continue
        seen.add(item_id)
        refs.append(Reference(item_id=item_id, raw_label=emo, label=ls.canonical(emo), stems=(item_id,),
                              text=fix_text(get("utterance"))))
    return refs, problems


# ---- IEMOCAP --------------------------------------------------------------------------

_IEMO_HEAD = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[")
_IEMO_CAT = re.compile(r"^(C-[A-Za-z]+\d*)\s*:\s*(.*)$")
# Evaluator words -> IEMOCAP codes (the consensus column uses the codes).
IEMOCAP_WORDS = {
    "neutral": "neu", "happiness": "hap", "happy": "hap", "sadness": "sad", "sad": "sad",
    "anger": "ang", "angry": "ang", "surprise": "sur", "fear": "fea", "disgust": "dis",
    "frustration": "fru", "frustrated": "fru", "excited": "exc", "excitement": "exc", "other": "oth",
}


def _word_code(word: str) -> str:
    w = word.strip().casefold()
    if w.startswith("other"):
        return "oth"  # "Other:annoyed" and the like
    w = w.replace(" state", "")
    return IEMOCAP_WORDS.get(w, "oth")


def parse_iemocap_votes(rest: str) -> list[str]:
    """``'Frustration; Anger;\\t(comment)'`` -> ``['fru', 'ang']`` (comment dropped)."""
    rest = rest.split("\t(")[0].split("(")[0]
    return [_word_code(w) for w in rest.split(";") if w.strip()]


def _is_external(evaluator: str) -> bool:
    # C-E1.. are the external evaluators; C-F1/C-M1 are the actors' self-assessments.
    return evaluator.startswith("C-E")


def read_iemocap(path: str | Path, label_set: str | taxonomy.LabelSet = "iemocap4") -> tuple[list[Reference], list[str]]:
    """IEMOCAP ``EmoEvaluation`` file(s) -> references. ``path`` is one file or a folder searched
    recursively (the per-evaluator Categorical/Attribute/Self-evaluation sub-folders are ignored)."""
    path = Path(path)
    if not path.exists():
        raise EvalError(f"IEMOCAP label path {path} does not exist; pass an EmoEvaluation .txt file or its folder")
    ls = taxonomy.load_label_set(label_set)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt")
                       if not {"Categorical", "Attribute", "Self-evaluation"} & set(p.parent.parts[len(path.parts):]))
    else:
        files = [path]
    refs: list[Reference] = []
    problems: list[str] = []
    seen: set[str] = set()
    for f in files:
        cur: Reference | None = None
        for line in _decode(f.read_bytes()).splitlines():
            line = line.rstrip()
            head = _IEMO_HEAD.match(line)
            if head:
                start, end, uid, code = float(head[1]), float(head[2]), head[3], head[4]
                if uid in seen:
                    problems.append(f"{f.name}: {uid} appears twice; the first entry is used")
                    cur = None
                    continue
                seen.add(uid)
                container = uid.rsplit("_", 1)[0] if "_" in uid else None
                cur = Reference(item_id=uid, raw_label=code, label=None if code == "xxx" else ls.canonical(code),
                                stems=(uid,), container=container, start_s=start, end_s=end)
                refs.append(cur)
                continue
            cat = _IEMO_CAT.match(line)
            if cat and cur is not None:
                cur.votes[cat[1]] = parse_iemocap_votes(cat[2])
    if not refs:
        raise EvalError(f"IEMOCAP label path {path}: no utterance lines like "
                        "'[6.2901 - 8.2357]\\tSes01F_impro01_F000\\tneu\\t[2.5, 2.5, 2.5]'; pass the EmoEvaluation folder")
    return refs, problems


def human_reference(refs: list[Reference], label_set: str | taxonomy.LabelSet) -> dict:
    """IEMOCAP's own evaluators as a reference: each external evaluator's first choice
    against the consensus label (optimistic: the evaluator helped form that consensus), and
    Fleiss' kappa among evaluators over every utterance with two or more of them."""
    ls = taxonomy.load_label_set(label_set)
    to_label = lambda code: ls.canonical(code) or OTHER  # noqa: E731
    y_true, y_vote = [], []
    table_rows = []
    for r in refs:
        votes = [to_label(v[0]) for k, v in sorted(r.votes.items()) if _is_external(k) and v]
        if len(votes) >= 2:
            table_rows.append(votes)
        if r.label is not None:
            y_true += [r.label] * len(votes)
            y_vote += votes
    cats = ls.names + [OTHER]
    table = [[row.count(c) for c in cats] for row in table_rows]
    present = [c for c in ls.names if c in y_true or c in y_vote]
    return {
        "evaluator_votes": len(y_vote),
        "accuracy": metrics.accuracy(y_true, y_vote),
        "balanced_accuracy": metrics.balanced_accuracy(y_true, y_vote),
        "f1_macro": metrics.f1_score(y_true, y_vote, "macro", present) if present else float("nan"),
        "fleiss_kappa": metrics.fleiss_kappa(table) if table else float("nan"),
        "kappa_utterances": len(table),
        "note": "each external evaluator's first choice vs the consensus label; kappa over utterances with >= 2 evaluators",
    }


# ---- matching references to the project ----------------------------------------------------

@dataclass
class Match:
    ref: Reference
    segment_id: int
    video_id: int


def _segments_by_video(db) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = defaultdict(list)
    for s in store.rows(db, "SELECT id, video_id, start_s, end_s, text FROM segments "
                            "WHERE id IN (SELECT DISTINCT segment_id FROM annotations) ORDER BY video_id, start_s"):
        out[s["video_id"]].append(s)
    return out


def split_hint(labels_path: str | Path) -> str | None:
    """MELD reuses dia/utt numbers across splits: ``dev_sent_emo.csv`` -> ``dev``."""
    m = re.match(r"(train|dev|test)", Path(labels_path).name.casefold())
    return m.group(1) if m else None


def _videos_by_stem(db, under: str | Path | None, prefer: str | None) -> tuple[dict[str, int], list[str]]:
    """File stem -> video id. ``under`` keeps only videos below that folder; among videos
    sharing a stem, one whose folder's name contains ``prefer`` (the split) wins; any tie left is
    reported as ambiguous and the first added is used."""
    root = Path(under).expanduser().resolve() if under else None
    cands: dict[str, list[dict]] = defaultdict(list)
    for v in store.rows(db, "SELECT id, path FROM videos ORDER BY id"):
        p = Path(v["path"])
        if root is not None:
            try:
                p.expanduser().resolve().relative_to(root)
            except ValueError:
                continue
        cands[p.stem].append(v)
    out, ambiguous = {}, []
    for stem, vs in cands.items():
        if len(vs) > 1 and prefer:
            hit = [v for v in vs if prefer in Path(v["path"]).parent.name.casefold()]  # "train_splits", ...
            vs = hit or vs
        if len(vs) > 1:
            ambiguous.append(stem)
        out[stem] = vs[0]["id"]
    return out, sorted(ambiguous)


def match_references(db, refs: list[Reference], under: str | Path | None = None,
                     prefer: str | None = None) -> tuple[list[Match], dict]:
    """Pair references with annotated segments (see the module doc for the rule)."""
    by_stem, dup_stems = _videos_by_stem(db, under, prefer)
    segs = _segments_by_video(db)
    matches: list[Match] = []
    no_video: list[str] = []
    no_segment: list[str] = []
    used_videos: set[int] = set()
    for r in refs:
        vid = next((by_stem[s] for s in r.stems if s in by_stem), None)
        window = None
        if vid is None and r.container in by_stem and r.start_s is not None:
            vid, window = by_stem[r.container], (r.start_s, r.end_s)
        if vid is None:
            no_video.append(r.item_id)
            continue
        used_videos.add(vid)
        cands = segs.get(vid, [])
        best = None
        if window is None:
            best = max(cands, key=lambda s: (s["end_s"] - s["start_s"], -s["id"]), default=None)
        else:
            def overlap(s):
                return max(0.0, min(s["end_s"], window[1]) - max(s["start_s"], window[0]))
            scored = [(overlap(s), s) for s in cands]
            scored = [(ov, s) for ov, s in scored
                      if ov > 0 and ov >= 0.5 * min(s["end_s"] - s["start_s"], window[1] - window[0])]
            if scored:
                best = max(scored, key=lambda t: (t[0], -t[1]["id"]))[1]
        if best is None:
            no_segment.append(r.item_id)
            continue
        matches.append(Match(ref=r, segment_id=best["id"], video_id=vid))
    n_videos = db.conn.execute("SELECT COUNT(*) FROM videos").fetchone()[0]
    info = {
        "references": len(refs),
        "matched": len(matches),
        "no_video": len(no_video),
        "no_annotated_segment": len(no_segment),
        "examples_no_video": no_video[:5],
        "examples_no_segment": no_segment[:5],
        "videos_without_reference": n_videos - len(used_videos),
        "ambiguous_video_stems": len(dup_stems),
        "examples_ambiguous": dup_stems[:5],
    }
    return matches, info


# ---- scoring ----------------------------------------------------------------------------

@dataclass
class System:
    backend: str
    model: str
    label_set: str
    prompt_sha: str

    @property
    def slug(self) -> str:
        s = f"{self.backend}-{self.model}-{Path(self.label_set).stem}-{self.prompt_sha[:8]}"
        return re.sub(r"[^A-Za-z0-9._-]+", "_", s)


def _annotations_for(db, segment_ids: list[int]) -> dict[tuple, dict[int, dict[int, dict]]]:
    """System key -> segment id -> run index -> {primary, intensities}."""
    out: dict[tuple, dict[int, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    ids = sorted(set(segment_ids))
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for a in store.rows(db, "SELECT segment_id, backend, model, label_set, prompt_sha, run_index, primary_emotion,"
                                f" intensities_json FROM annotations WHERE segment_id IN ({','.join('?' * len(chunk))})",
                            chunk):
            try:
                inten = json.loads(a["intensities_json"] or "{}")
            except json.JSONDecodeError:
                inten = {}
            key = (a["backend"], a["model"], a["label_set"], a["prompt_sha"])
            out[key][a["segment_id"]][a["run_index"]] = {"primary": a["primary_emotion"], "intensities": inten}
    return out


def _canon_exclude(ls: taxonomy.LabelSet, names: Iterable[str]) -> list[str]:
    out = []
    for n in names:
        c = ls.canonical(n) or ls.canonical(IEMOCAP_WORDS.get(n.strip().casefold(), n))
        if c and c not in out:
            out.append(c)
    return out


def majority_vote(runs: dict[int, str]) -> str:
    """The most frequent label across runs; a tie goes to the earliest run among the tied."""
    counts = Counter(runs.values())
    top = max(counts.values())
    return next(lab for _, lab in sorted(runs.items()) if counts[lab] == top)


def score_system(matches: list[Match], runs_by_segment: dict[int, dict[int, dict]], source_set: str,
                 target: taxonomy.LabelSet, exclude: list[str], neutral_below: float | None = None) -> dict:
    """Metrics for one system. The headline numbers use each item's first run (lowest
    run_index); per-run accuracies and Fleiss' kappa across runs describe consistency."""
    cache: dict[tuple, str] = {}
    map_errors: Counter = Counter()

    def mapped(ans: dict) -> str:
        key = (ans["primary"], json.dumps(ans["intensities"], sort_keys=True))
        if key not in cache:
            try:
                cache[key] = taxonomy.map_label(ans["primary"], ans["intensities"], source_set, target,
                                                 neutral_below=neutral_below)
            except taxonomy.TaxonomyError as e:
                map_errors[str(e)] += 1
                cache[key] = UNMAPPED
        return cache[key]

    items = []
    for m in matches:
        if m.ref.label is None or m.segment_id not in runs_by_segment:
            continue
        runs = runs_by_segment[m.segment_id]
        items.append((m, {ri: mapped(a) for ri, a in sorted(runs.items())},
                      {ri: a["primary"] for ri, a in sorted(runs.items())}))
    run_ids = sorted({ri for _, r, _ in items for ri in r})
    y_true = [m.ref.label for m, _, _ in items]
    y_pred = [r[min(r)] for _, r, _ in items]

    def report(yt, yp):
        present = [c for c in target.names if c in yt or c in yp]
        return metrics.classification_report(yt, yp, present)

    keep = [i for i, t in enumerate(y_true) if t not in exclude]
    per_run = {}
    for ri in run_ids:
        pairs = [(m.ref.label, r[ri]) for m, r, _ in items if ri in r]
        per_run[str(ri)] = metrics.accuracy([a for a, _ in pairs], [b for _, b in pairs])
    mapped_runs = [[r.get(ri) for _, r, _ in items] for ri in run_ids]
    native_runs = [[p.get(ri) for _, _, p in items] for ri in run_ids]
    multi = [r for _, r, _ in items if len(r) > 1]
    y_major = [majority_vote(r) for _, r, _ in items]
    accs = [v for v in per_run.values() if v == v]
    return {
        "items": len(items),
        "runs": len(run_ids),
        "unmapped_predictions": sum(p == UNMAPPED for p in y_pred),
        "mapping_errors": [f"{n} x {msg}" for msg, n in map_errors.most_common(5)],
        "metrics": report(y_true, y_pred),
        "excluding": {"labels": exclude, "metrics": report([y_true[i] for i in keep], [y_pred[i] for i in keep])},
        "per_run_accuracy": per_run,
        "accuracy_mean_runs": float(np.mean(accs)) if accs else None,
        "accuracy_sd_runs": float(np.std(accs)) if len(accs) > 1 else None,  # population sd over runs
        "majority_of_runs": report(y_true, y_major) if len(run_ids) > 1 else None,
        "all_runs_agree": (sum(len(set(r.values())) == 1 for r in multi) / len(multi)) if multi else None,
        "fleiss_kappa_runs": metrics.fleiss_kappa_labels(mapped_runs, target.names + [UNMAPPED]) if len(run_ids) > 1 else None,
        "fleiss_kappa_runs_native": metrics.fleiss_kappa_labels(native_runs) if len(run_ids) > 1 else None,
        "predictions": [
            {"item": m.ref.item_id, "segment_id": m.segment_id, "true": m.ref.label,
             "pred": r[min(r)], "runs": [r[ri] for ri in sorted(r)], "primary": [p[ri] for ri in sorted(p)]}
            for m, r, p in items
        ],
    }


# ---- files ---------------------------------------------------------------------------------

def plot_confusion(labels: list[str], cm: list[list[int]], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix with counts, as a PNG (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    a = np.asarray(cm, dtype=float)
    rows = [i for i, lab in enumerate(labels) if a[i].sum() > 0] or list(range(len(labels)))
    a = a[rows]
    norm = a / np.maximum(a.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(labels), 1.0 + 0.6 * len(rows)), dpi=110)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right")
    ax.set_yticks(range(len(rows)), [labels[i] for i in rows])
    for i in range(len(rows)):
        for j in range(len(labels)):
            if a[i, j]:
                ax.text(j, i, f"{int(a[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.55 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _write_confusion_csv(labels: list[str], cm: list[list[int]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted"] + labels)
        for lab, row in zip(labels, cm):
            w.writerow([lab] + row)


def _write_predictions_csv(preds: list[dict], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["item", "segment_id", "true", "pred", "runs", "primary"])
        for p in preds:
            w.writerow([p["item"], p["segment_id"], p["true"], p["pred"], "|".join(p["runs"]), "|".join(p["primary"])])


def evaluate(db, dataset: str, labels_path: str | Path, label_set: str | None = None,
             exclude: Iterable[str] = DEFAULT_EXCLUDE, out_dir: str | Path | None = None,
             neutral_below: float | None = None, videos_under: str | Path | None = None) -> dict:
    """Run the whole evaluation; writes eval.json, confusion CSV/PNG and predictions per system
    under ``out_dir`` (when given) and returns the same result dict. ``neutral_below``
    overrides the mapping's low-intensity-means-neutral threshold (0 turns the rule off);
    ``videos_under`` limits matching to the project's videos below that folder."""
    if dataset not in DATASETS:
        raise EvalError(f"unknown dataset {dataset!r}; use one of: {', '.join(DATASETS)}")
    set_name = label_set or DEFAULT_LABEL_SET[dataset]
    try:
        target = taxonomy.load_label_set(set_name)
    except taxonomy.TaxonomyError as e:
        raise EvalError(f"--label-set: {e}") from None
    refs, problems = (read_meld_csv if dataset == "meld" else read_iemocap)(labels_path, target)
    excl = _canon_exclude(target, exclude)
    matches, matching = match_references(db, refs, videos_under, split_hint(labels_path) if dataset == "meld" else None)
    by_system = _annotations_for(db, [m.segment_id for m in matches])
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    systems = []
    for key in sorted(by_system, key=lambda k: tuple(map(str, k))):
        sysd = System(*key)
        res = score_system(matches, by_system[key], sysd.label_set, target, excl, neutral_below)
        res.update({"backend": sysd.backend, "model": sysd.model, "label_set": sysd.label_set,
                    "prompt_sha": sysd.prompt_sha, "slug": sysd.slug})
        if out and res["items"]:
            m = res["metrics"]
            _write_confusion_csv(m["confusion_labels"], m["confusion"], out / f"confusion_{sysd.slug}.csv")
            plot_confusion(m["confusion_labels"], m["confusion"], out / f"confusion_{sysd.slug}.png",
                           f"{sysd.model} on {dataset} ({target.name}), n={m['n']}")
            _write_predictions_csv(res["predictions"], out / f"predictions_{sysd.slug}.csv")
            res["files"] = {"confusion_csv": f"confusion_{sysd.slug}.csv", "confusion_png": f"confusion_{sysd.slug}.png",
                            "predictions_csv": f"predictions_{sysd.slug}.csv"}
        res.pop("predictions")
        systems.append(res)
    gold = Counter(r.label for r in refs if r.label is not None)
    result = {
        "dataset": dataset,
        "labels_file": str(labels_path),
        "label_set": target.name,
        "neutral_below": neutral_below,
        "created_at": store.now(),
        "references": {
            "total": len(refs),
            "in_label_set": sum(gold.values()),
            "outside_label_set": Counter(r.raw_label for r in refs if r.label is None and r.raw_label != "xxx"),
            "no_consensus": sum(r.raw_label == "xxx" for r in refs),
            "gold_distribution": dict(sorted(gold.items())),
        },
        "matching": matching,
        "systems": systems,
        "human": human_reference(refs, target) if dataset == "iemocap" else None,
        "problems": problems[:50] + ([f"... and {len(problems) - 50} more"] if len(problems) > 50 else []),
    }
    result = metrics.clean_json(result)
    if out:
        (out / "eval.json").write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    return result


# ---- CLI -------------------------------------------------------------------------------------

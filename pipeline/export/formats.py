"""The six dataset layouts. Each writer receives records in id order and writes only under
its root (a temporary folder the driver renames into place), so the bytes depend on the
records alone: sorted keys, no timestamps, fixed tar and gzip headers. Every layout carries
the same records (export/fields.py); the ones without a native place for them (lab, elan)
add a manifest.jsonl.
"""
from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
import unicodedata
from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree as ET

import numpy as np

from . import audio as audio_mod
from .fields import FIELDS

FORMATS = ("jsonl", "hf", "webdataset", "lab", "elan", "lhotse")


def dumps(obj) -> str:
    """The one JSON encoding used in every export file (stable across runs)."""
    if isinstance(obj, dict):  # driver-private keys (leading "_") never reach a file
        obj = {k: v for k, v in obj.items() if not k.startswith("_")}
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def safe_name(name: str, fallback: str = "video", max_len: int = 48) -> str:
    """A file-name component that cannot climb out of its folder or hide itself."""
    name = unicodedata.normalize("NFKC", name)
    name = re.sub(r"[^\w.-]+", "_", name).strip("._-")
    name = name[:max_len].rstrip("._-")
    return name or fallback


def video_folder(video_name: str, sha: str) -> str:
    """Readable and unique: the sanitised file stem plus the content hash prefix."""
    return f"{safe_name(Path(video_name.replace(chr(92), '/')).stem)}-{sha[:8]}"


class Writer:
    """Base: clip-based formats get add(record, samples) in id order, then finish()."""

    clip_based = True

    def __init__(self, root: Path, opts):
        self.root = root
        self.opts = opts
        self.records: list[dict] = []

    def audio_path(self, rec: dict) -> str | None:
        """Relative path of the clip's audio inside the export (stored in the record)."""
        return None

    def add(self, rec: dict, samples: np.ndarray) -> None:
        raise NotImplementedError

    def add_video(self, folder: str, source_kind: str, recs: list[dict], source: Path) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        """Release open files after a failure (the driver then deletes the folder)."""

    def _wav(self, rel: str, samples) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        audio_mod.write_wav(path, samples, self.opts.sample_rate)


class JsonlWriter(Writer):
    """audio/<split>/<id>.wav + manifest.jsonl (one row per clip, with its split)."""

    def audio_path(self, rec):
        return f"audio/{rec['split']}/{rec['id']}.wav"

    def add(self, rec, samples):
        self._wav(rec["audio"], samples)
        self.records.append(rec)

    def finish(self):
        write_manifest(self.root, self.records)


def write_manifest(root: Path, records: list[dict]) -> None:
    """manifest.jsonl: one record per line, in id order."""
    with open(root / "manifest.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(dumps(rec) + "\n")


_ARROW_TYPES = {"string": "string", "int": "int64", "float": "float64"}


class HfWriter(Writer):
    """Hugging Face audiofolder: <split>/<id>.wav + <split>/metadata.parquet (file_name + the record).

    datasets infers each split's features from its own metadata file and refuses splits
    whose features differ; JSON null in every row of one split would make that column type
    null there. Parquet carries the types, so every split is written with one schema and a
    missing value stays null (the rule of every format).
    """

    def audio_path(self, rec):
        return f"{rec['split']}/{rec['id']}.wav"

    def add(self, rec, samples):
        self._wav(rec["audio"], samples)
        self.records.append(rec)

    def finish(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = []
        for rec in self.records:
            row = {k: v for k, v in rec.items() if k != "audio" and not k.startswith("_")}
            row["file_name"] = rec["audio"].split("/", 1)[1]
            rows.append(row)
        schema = pa.Table.from_pylist(rows).schema
        for i, f in enumerate(schema):  # a column null in every row still gets its declared type
            if pa.types.is_null(f.type) and FIELDS.get(f.name, ("",))[0] in _ARROW_TYPES:
                schema = schema.set(i, pa.field(f.name, _ARROW_TYPES[FIELDS[f.name][0]]))
        for split in sorted({r["split"] for r in rows}):
            table = pa.Table.from_pylist([r for r in rows if r["split"] == split], schema=schema)
            pq.write_table(table, self.root / split / "metadata.parquet", compression="zstd")


class WebDatasetWriter(Writer):
    """<split>-NNNNNN.tar shards of about shard_size_mb with KEY.wav + KEY.json members."""

    def __init__(self, root, opts):
        super().__init__(root, opts)
        self.limit = max(int(opts.shard_size_mb * 1024 * 1024), 1)
        self.open: dict[str, tuple[tarfile.TarFile, int, int]] = {}  # split -> (tar, shard no, bytes)
        self.shards: list[str] = []

    def audio_path(self, rec):
        return f"{rec['id']}.wav"

    def _member(self, tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(data))

    def add(self, rec, samples):
        wav = audio_mod.wav_bytes(samples, self.opts.sample_rate)
        meta = (dumps(rec) + "\n").encode("utf-8")
        size = len(wav) + len(meta) + 3 * 512  # two headers + padding, roughly
        split = rec["split"]
        tar, number, used = self.open.get(split, (None, -1, 0))
        if tar is None or (used > 0 and used + size > self.limit):
            if tar is not None:
                tar.close()
            number += 1
            name = f"{split}-{number:06d}.tar"
            self.shards.append(name)
            tar = tarfile.open(self.root / name, "w", format=tarfile.USTAR_FORMAT)
            used = 0
        # members of one sample sit together, in name order (wds groups by key)
        self._member(tar, f"{rec['id']}.json", meta)
        self._member(tar, f"{rec['id']}.wav", wav)
        self.open[split] = (tar, number, used + size)
        self.records.append(rec)

    def finish(self):
        for tar, _, _ in self.open.values():
            tar.close()
        self.open.clear()

    abort = finish


class LabWriter(Writer):
    """Fish-Speech fine-tuning layout: one folder per speaker holding <id>.wav + <id>.lab (the
    bare transcript by default; --lab-template adds emotion tags), plus manifest.jsonl with
    the full records. Clips without a known speaker go to unknown-<video> folders (one per
    video: nothing says two videos' unknown voices are the same person)."""

    def audio_path(self, rec):
        return f"{rec['_speaker_folder']}/{rec['id']}.wav"

    def add(self, rec, samples):
        self._wav(rec["audio"], samples)
        lab = render_lab(self.opts.lab_template, rec)
        (self.root / rec["audio"]).with_suffix(".lab").write_text(lab + "\n", encoding="utf-8", newline="\n")
        self.records.append(rec)

    def finish(self):
        write_manifest(self.root, self.records)


def render_lab(template: str, rec: dict) -> str:
    from .fish_tags import fish_tag

    text = " ".join((rec.get("text") or "").split())
    fields = {"emotion": rec["primary_emotion"].lower(), "label": rec["primary_emotion"], "text": text,
              "fish_emotion": fish_tag(rec["primary_emotion"]),
              "intensity": f"{rec['primary_intensity']:.2f}", "language": rec.get("language") or ""}
    return " ".join(template.format_map(fields).split())


LAB_FIELDS = "{text}, {fish_emotion}, {emotion}, {label}, {intensity}, {language}"


def check_lab_template(template: str) -> str | None:
    """None if usable, else the problem in words."""
    try:
        render_lab(template, {"primary_emotion": "Joy", "text": "x", "primary_intensity": 1.0})
    except (KeyError, IndexError, ValueError) as e:
        return f"--lab-template {template!r}: {type(e).__name__} {e}; use the fields {LAB_FIELDS}"
    if "{text}" not in template:
        return f"--lab-template {template!r}: must contain {{text}}"
    return None


class ElanWriter(Writer):
    """One <video folder>.eaf per video (tiers: transcript, speaker, primary emotion, verdict,
    rationale; the source in header properties) beside the video's full-length audio it
    points to by a relative URL, plus manifest.jsonl with the full records."""

    clip_based = False

    def audio_path(self, rec):
        return f"{rec['_folder']}.wav"

    def add_video(self, folder, source_kind, recs, source):
        audio_mod.render(source, self.root / f"{folder}.wav", self.opts.sample_rate)
        xml = eaf_document(f"{folder}.wav", recs)
        (self.root / f"{folder}.eaf").write_bytes(xml)
        self.records.extend(recs)

    def finish(self):
        write_manifest(self.root, sorted(self.records, key=lambda r: r["id"]))


def eaf_document(media_name: str, recs: list[dict]) -> bytes:
    """EAF 3.0 XML: one alignable transcript tier and symbolic-association child tiers."""
    doc = ET.Element("ANNOTATION_DOCUMENT", {
        "AUTHOR": "MIKU-PAL",
        "DATE": "1970-01-01T00:00:00Z",  # fixed: exports are byte-reproducible
        "FORMAT": "3.0",
        "VERSION": "3.0",
        "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
        "xsi:noNamespaceSchemaLocation": "http://www.mpi.nl/tools/elan/EAFv3.0.xsd",
    })
    header = ET.SubElement(doc, "HEADER", {"MEDIA_FILE": "", "TIME_UNITS": "milliseconds"})
    url = "./" + quote(media_name)  # an xsd:anyURI relative to the .eaf (names may be non-ASCII)
    ET.SubElement(header, "MEDIA_DESCRIPTOR", {"MEDIA_URL": url, "MIME_TYPE": "audio/x-wav", "RELATIVE_MEDIA_URL": url})
    order = ET.SubElement(doc, "TIME_ORDER")
    first = recs[0] if recs else {}
    if first.get("source_license"):  # EAF's own place for it: LICENSE comes before HEADER
        doc.insert(0, ET.Element("LICENSE", {"LICENSE_URL": ""}))  # optional in the XSD, pympi needs it
        doc[0].text = first["source_license"]
    for key in ("source_video", "source_url", "source_title", "source_uploader", "source_upload_date",
                "source_license"):
        if first.get(key) is not None:
            ET.SubElement(header, "PROPERTY", {"NAME": key}).text = str(first[key])
    tiers = {name: ET.SubElement(doc, "TIER", attrs) for name, attrs in (
        ("transcript", {"LINGUISTIC_TYPE_REF": "utterance", "TIER_ID": "transcript"}),
        ("speaker", {"LINGUISTIC_TYPE_REF": "label", "PARENT_REF": "transcript", "TIER_ID": "speaker"}),
        ("primary emotion", {"LINGUISTIC_TYPE_REF": "label", "PARENT_REF": "transcript", "TIER_ID": "primary emotion"}),
        ("verdict", {"LINGUISTIC_TYPE_REF": "label", "PARENT_REF": "transcript", "TIER_ID": "verdict"}),
        ("rationale", {"LINGUISTIC_TYPE_REF": "label", "PARENT_REF": "transcript", "TIER_ID": "rationale"}),
    )}
    next_id = 0

    def new_id() -> str:
        nonlocal next_id
        next_id += 1
        return f"a{next_id}"

    for n, rec in enumerate(sorted(recs, key=lambda r: (r["start_s"], r["end_s"], r["id"]))):
        t1, t2 = f"ts{2 * n + 1}", f"ts{2 * n + 2}"
        ET.SubElement(order, "TIME_SLOT", {"TIME_SLOT_ID": t1, "TIME_VALUE": str(round(rec["start_s"] * 1000))})
        ET.SubElement(order, "TIME_SLOT", {"TIME_SLOT_ID": t2, "TIME_VALUE": str(round(rec["end_s"] * 1000))})
        parent = new_id()
        ann = ET.SubElement(ET.SubElement(tiers["transcript"], "ANNOTATION"), "ALIGNABLE_ANNOTATION",
                            {"ANNOTATION_ID": parent, "TIME_SLOT_REF1": t1, "TIME_SLOT_REF2": t2})
        ET.SubElement(ann, "ANNOTATION_VALUE").text = rec.get("text") or ""
        review = rec["review"]
        values = {
            "speaker": rec.get("speaker") or "",
            "primary emotion": f"{rec['primary_emotion']} ({rec['primary_intensity']:.2f})",
            "verdict": f"{review['verdict']} ({review['accepts']} accept, {review['rejects']} reject)",
            "rationale": rec.get("rationale") or "",
        }
        for tier, value in values.items():
            ref = ET.SubElement(ET.SubElement(tiers[tier], "ANNOTATION"), "REF_ANNOTATION",
                                {"ANNOTATION_ID": new_id(), "ANNOTATION_REF": parent})
            ET.SubElement(ref, "ANNOTATION_VALUE").text = value
    prop = ET.SubElement(header, "PROPERTY", {"NAME": "lastUsedAnnotationId"})
    prop.text = str(next_id)
    ET.SubElement(doc, "LINGUISTIC_TYPE", {"GRAPHIC_REFERENCES": "false", "LINGUISTIC_TYPE_ID": "utterance",
                                           "TIME_ALIGNABLE": "true"})
    ET.SubElement(doc, "LINGUISTIC_TYPE", {"CONSTRAINTS": "Symbolic_Association", "GRAPHIC_REFERENCES": "false",
                                           "LINGUISTIC_TYPE_ID": "label", "TIME_ALIGNABLE": "false"})
    ET.SubElement(doc, "CONSTRAINT", {"DESCRIPTION": "1-1 association with a parent annotation",
                                      "STEREOTYPE": "Symbolic_Association"})
    ET.indent(doc, space="  ")
    return ET.tostring(doc, encoding="UTF-8", xml_declaration=True) + b"\n"


class LhotseWriter(Writer):
    """Lhotse manifests per split (recordings, supervisions, cuts as .jsonl.gz) over
    audio/<split>/<id>.wav; one recording, supervision and MonoCut per clip. The
    supervision has text, language and speaker; every other record field is in `custom`."""

    TOP = ("id", "text", "language", "speaker")  # record fields with a native supervision field

    def audio_path(self, rec):
        return f"audio/{rec['split']}/{rec['id']}.wav"

    def add(self, rec, samples):
        self._wav(rec["audio"], samples)
        n = len(samples)
        recording = {"id": rec["id"], "sources": [{"type": "file", "channels": [0], "source": rec["audio"]}],
                     "sampling_rate": self.opts.sample_rate, "num_samples": n,
                     "duration": n / self.opts.sample_rate, "channel_ids": [0]}
        sup = {"id": rec["id"], "recording_id": rec["id"], "start": 0.0, "duration": recording["duration"],
               "channel": 0, "text": rec["text"], "language": rec["language"], "speaker": rec["speaker"],
               "custom": {k: v for k, v in rec.items() if k not in self.TOP and k != "audio" and not k.startswith("_")}}
        cut = {"id": rec["id"], "start": 0.0, "duration": recording["duration"], "channel": 0,
               "supervisions": [sup], "recording": recording, "type": "MonoCut"}
        self.records.append((rec, recording, sup, cut))

    def finish(self):
        for split in sorted({r[0]["split"] for r in self.records}):
            mine = [r for r in self.records if r[0]["split"] == split]
            for kind, k in (("recordings", 1), ("supervisions", 2), ("cuts", 3)):
                _write_gz_jsonl(self.root / f"{kind}_{split}.jsonl.gz", [r[k] for r in mine])


def _write_gz_jsonl(path: Path, items: list[dict]) -> None:
    """gzip with mtime 0 and no file name in the header: same items, same bytes."""
    data = "".join(json.dumps(x, sort_keys=True, ensure_ascii=False) + "\n" for x in items).encode("utf-8")
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(data)


WRITERS = {"jsonl": JsonlWriter, "hf": HfWriter, "webdataset": WebDatasetWriter, "lab": LabWriter, "elan": ElanWriter,
           "lhotse": LhotseWriter}

"""mikupal export: every layout round-trips through the reader people use, the filters pick
exactly the expected clips, exports are reproducible to the byte and never half-written."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path
from urllib.parse import unquote
from xml.etree import ElementTree as ET

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import export_fixture as fx  # noqa: E402

from mikupal import store  # noqa: E402
from mikupal.export import ExportError, ExportFilters, assign_splits, export_dataset, select  # noqa: E402
from mikupal.export import audio as export_audio  # noqa: E402

SR = 24000


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    proj, clips = fx.build(base / "proj", base / "videos")
    return proj, clips, base


@pytest.fixture()
def proj(built):
    return built[0]


@pytest.fixture()
def clips(built):
    return built[1]


def by_id(rows):
    return {r["id"]: r for r in rows}


def clip_for(clips, rec) -> fx.Clip:
    return next(c for c in clips if c.sha == rec["source_video"] and abs(c.start_s - rec["start_s"]) < 1e-6)


def all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_clean_output(out: Path, built) -> None:
    """No absolute path of the machine in any byte; SHA256SUMS verifies every other file."""
    base = built[2]
    files = all_files(out)
    for name, data in files.items():
        for needle in (str(base), str(base.resolve()), str(built[0].root)):
            assert needle.encode() not in data, f"{name} contains the absolute path {needle}"
    sums = dict(line.split("  ", 1)[::-1] for line in files["SHA256SUMS"].decode().splitlines())
    assert set(sums) == set(files) - {"SHA256SUMS"}
    for name, digest in sums.items():
        assert hashlib.sha256(files[name]).hexdigest() == digest, name
    assert "README.md" in files


def check_audio(samples, rate, rec, clip: fx.Clip) -> None:
    """The clip holds the right second of the right source at the export rate."""
    assert rate == SR
    assert abs(len(samples) - round(rec["duration_s"] * SR)) <= 1
    want = fx.vocals_freq(clip.second) if rec["audio_source"] == "vocals" else fx.mix_freq(clip.second)
    assert abs(fx.dominant_freq(samples, rate) - want) < 8, (rec["id"], want)


# ---- formats ---------------------------------------------------------------------------------

def test_jsonl_manifest_and_clips_round_trip(proj, clips, built, tmp_path):
    out = tmp_path / "ds"
    result = export_dataset(proj, out, "jsonl", ExportFilters())
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == result.n_items == len(clips) == 16
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    for r in rows:
        c = clip_for(clips, r)
        samples, rate, width = fx.read_wav(out / r["audio"])
        assert width == 2
        check_audio(samples, rate, r, c)
        # the first two videos have cached vocals (the default source); the others fall back to the mix
        assert r["audio_source"] == ("vocals" if c.video < 2 else "mix")
        assert r["source_video"] == c.sha and len(r["source_video"]) == 64
        assert r["primary_emotion"] == c.emotion  # (0, 0)'s older prompt answer (Boredom) is superseded
        assert r["prompt_sha"] == "p2" and r["backend"] == "gemini" and r["run_index"] == 0
        assert r["primary_intensity"] == pytest.approx(c.intensity)
        assert len(r["emotions"]) == 26 and r["emotions"][c.emotion] == pytest.approx(c.intensity)
        assert r["snr_db"] == pytest.approx(c.snr) and r["asd_score"] == pytest.approx(c.asd)
        assert r["review"]["accepts"] == sum(v == "accept" for v in c.verdicts)
        assert r["review"]["rejects"] == sum(v == "reject" for v in c.verdicts)
        assert r["review"]["raters"] == len(c.verdicts)
        assert (r["review"]["verdict"] == "accept") == c.accepted
        assert r["text"].startswith(f"video {c.video} second {c.second}")
        assert r["rationale"] and r["visual_analysis"] == "smiles" and r["audio_analysis"] and r["text_analysis"]
        assert r["start_s"] == pytest.approx(c.start_s) and r["end_s"] == pytest.approx(c.end_s)
        assert (r["speaker"], r["speaker_id"]) == (c.speaker, c.speaker_id)
        side = fx.SIDECARS.get(c.video, {})
        assert r["source_url"] == side.get("webpage_url") and r["source_title"] == side.get("title")
        assert r["source_uploader"] == side.get("uploader") and r["source_license"] == side.get("license")
        if side:
            d = side["upload_date"]
            assert r["source_upload_date"] == f"{d[:4]}-{d[4:6]}-{d[6:]}"
            assert r["source_id"] == f"{side['extractor_key'].lower()}:{side['id']}"
    changed = next(r for r in rows if clip_for(clips, r).video == fx.CHANGED_MIND[0]
                   and clip_for(clips, r).second == fx.CHANGED_MIND[1])
    assert changed["review"]["verdict"] == "accept" and changed["review"]["rejects"] == 0
    assert_clean_output(out, built)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "Clips: 16 from 4 source videos" in card and "| Joy | 4 |" in card and "p2" in card


def test_mix_option_cuts_from_the_original_audio(proj, clips, tmp_path):
    out = tmp_path / "ds"
    export_dataset(proj, tmp_path / "vocals16k", "jsonl", ExportFilters(emotions=("Joy",)), sample_rate=16000)
    rows = [json.loads(x) for x in (tmp_path / "vocals16k" / "manifest.jsonl").read_text().splitlines()]
    # videos 0 and 1 have vocals; video 2's separation ran with model "none", which is the mix
    assert [r["audio_source"] for r in rows] == ["vocals" if clip_for(clips, r).video < 2 else "mix" for r in rows]
    export_dataset(proj, out, "jsonl", ExportFilters(emotions=("Joy",)), audio="mix", sample_rate=16000)
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    for r in rows:
        samples, rate, _ = fx.read_wav(out / r["audio"])
        assert rate == 16000 and r["audio_source"] == "mix"
        assert abs(fx.dominant_freq(samples, rate) - fx.mix_freq(clip_for(clips, r).second)) < 8


def test_hf_audiofolder_loads_with_datasets(proj, clips, built, tmp_path, monkeypatch):
    import datasets  # dev extra, like torchcodec, which datasets decodes Audio columns with
    import torchcodec  # noqa: F401
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    expected = assign_splits([{"video_sha": c.sha} for c in clips], [0.5, 0.25, 0.25], 0)
    # one split's clips lack SNR, ASD, language and corrections: every split must still load alike
    bare = next(sha for sha, s in expected.items() if s == "test")
    copy = tmp_path / "proj"
    shutil.copytree(proj.root, copy)
    from mikupal.project import Project

    proj = Project.open(copy)
    db = proj.db()
    vid = db.conn.execute("SELECT id FROM videos WHERE sha256=?", (bare,)).fetchone()[0]
    db.conn.execute("UPDATE segments SET snr_db=NULL, asd_score=NULL, language=NULL WHERE video_id=?", (vid,))
    db.conn.execute("UPDATE reviews SET corrected_label=NULL WHERE annotation_id IN (SELECT a.id FROM annotations a"
                    " JOIN segments s ON s.id=a.segment_id WHERE s.video_id=?)", (vid,))
    db.conn.close()
    out = tmp_path / "ds"
    export_dataset(proj, out, "hf", ExportFilters(), splits=[0.5, 0.25, 0.25])
    assert_clean_output(out, built)
    ds = datasets.load_dataset("audiofolder", data_dir=str(out))
    assert sorted(ds) == ["test", "train", "validation"]
    assert sum(ds[s].num_rows for s in ds) == 16
    assert ds["test"].features == ds["train"].features
    assert all(r["snr_db"] is None and r["language"] is None for r in ds["test"])  # null, as in every format
    assert all(r["review"]["corrected_label"] is None for r in ds["test"])
    assert all(r["snr_db"] is not None for r in ds["train"])
    assert sorted(p.name for p in out.glob("*/metadata.parquet")) == ["metadata.parquet"] * 3
    videos_in = {s: set(ds[s]["source_video"]) for s in ds}
    assert not (videos_in["train"] & videos_in["validation"]) and not (videos_in["train"] & videos_in["test"])
    for split in ("train", "validation", "test"):
        assert videos_in[split] == {sha for sha, s in expected.items() if s == split}
        assert set(ds[split]["split"]) == {split}
    row = ds["validation"][0]
    c = clip_for(clips, row)
    assert row["primary_emotion"] == c.emotion and row["review"]["raters"] == len(c.verdicts)
    decoded = row["audio"].get_all_samples()
    assert decoded.sample_rate == SR
    assert abs(decoded.data.shape[-1] - round(row["duration_s"] * SR)) <= 1


def test_webdataset_shards_are_tars_of_wav_and_json(proj, clips, built, tmp_path):
    out = tmp_path / "ds"
    result = export_dataset(proj, out, "webdataset", ExportFilters(), shard_size_mb=0.07)
    shards = sorted(out.glob("*.tar"))
    assert len(shards) > 2  # ~70 kB shards hold one or two clips each
    seen = {}
    for shard in shards:
        split = shard.name.split("-")[0]
        with tarfile.open(shard) as tar:
            members = tar.getmembers()
            names = [m.name for m in members]
            assert names == sorted(names, key=lambda n: (n.rsplit(".", 1)[0], n))
            for m in members:
                assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644)
            for m in members:
                key, ext = m.name.rsplit(".", 1)
                data = tar.extractfile(m).read()
                seen.setdefault(key, {})[ext] = data
            assert all(json.loads(seen[n.rsplit(".", 1)[0]]["json"])["split"] == split
                       for n in names if n.endswith(".json"))
    assert len(seen) == result.n_items == 16
    for key, parts in seen.items():
        rec = json.loads(parts["json"])
        assert rec["id"] == key
        samples, rate, _ = fx.read_wav(parts["wav"])
        check_audio(samples, rate, rec, clip_for(clips, rec))
    assert_clean_output(out, built)


def test_webdataset_streams_with_the_webdataset_reader(proj, clips, tmp_path):
    import webdataset as wds

    out = tmp_path / "ds"
    export_dataset(proj, out, "webdataset", ExportFilters(), shard_size_mb=0.07)
    got = {}
    for shard in sorted(out.glob("*.tar")):
        for sample in wds.WebDataset(str(shard), shardshuffle=False).decode():
            got[sample["__key__"]] = (shard.name.split("-")[0], sample)
    assert len(got) == 16
    for key, (split, sample) in got.items():
        rec = sample["json"]
        assert rec["id"] == key and rec["split"] == split
        c = clip_for(clips, rec)
        assert rec["speaker"] == c.speaker and rec["primary_emotion"] == c.emotion


def _lab_clip(clips, line_or_text: str) -> fx.Clip:
    k, s = int(line_or_text.split("video ")[1].split()[0]), int(line_or_text.split("second ")[1].split()[0])
    return next(c for c in clips if (c.video, c.second) == (k, s))


def test_lab_has_one_folder_per_speaker_with_bare_transcripts(proj, clips, built, tmp_path):
    out = tmp_path / "ds"
    export_dataset(proj, out, "lab", ExportFilters())
    labs = sorted(out.glob("*/*.lab"))
    assert len(labs) == 16
    manifest = {r["id"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines())}
    folders: dict[str, set] = {}
    for lab in labs:
        line = lab.read_text(encoding="utf-8")
        c = _lab_clip(clips, line)
        # Fish-Speech reads the bare transcript (one line, whitespace collapsed)
        assert line == f"video {c.video} second {c.second} ../../etc/passwd says hi\n"
        folders.setdefault(lab.parent.name, set()).add((c.speaker, c.video))
        rec = manifest[lab.stem]
        assert rec["audio"] == f"{lab.parent.name}/{lab.stem}.wav" and rec["speaker"] == c.speaker
        samples, rate, _ = fx.read_wav(lab.with_suffix(".wav"))
        check_audio(samples, rate, rec, c)
    if any(c.speaker for c in clips):  # the speakers schema exists: one folder per voice
        assert {n: {spk for spk, _ in v} for n, v in folders.items() if not n.startswith("unknown-")} == {
            "Anna": {"Anna"}, "Bob_B": {"Bob | B."},
            **{f"Speaker_{c.speaker_id}": {c.speaker} for c in clips if c.speaker and c.speaker.startswith("Speaker")}}
        assert {v for _, v in folders["Anna"]} == {0, 1}  # one voice, two videos, one folder
    unknown = {n: v for n, v in folders.items() if n.startswith("unknown-")}
    assert all(len({vid for _, vid in v}) == 1 and {spk for spk, _ in v} == {None} for v in unknown.values())
    assert_clean_output(out, built)


def test_lab_emotion_tags_follow_the_documented_fish_speech_mapping(proj, clips, tmp_path):
    out = tmp_path / "ds"
    export_dataset(proj, out, "lab", ExportFilters(), lab_template="{fish_emotion} {text}")
    # the README's table: Joy -> (joyful), Anger -> (angry), Sadness -> (sad), Fear -> (scared)
    tags = {"Joy": "(joyful)", "Anger": "(angry)", "Sadness": "(sad)", "Fear": "(scared)"}
    for lab in out.glob("*/*.lab"):
        line = lab.read_text(encoding="utf-8")
        c = _lab_clip(clips, line)
        assert line == f"{tags[c.emotion]} video {c.video} second {c.second} ../../etc/passwd says hi\n"
    export_dataset(proj, out, "lab", ExportFilters(), lab_template="<{emotion}|{intensity}> {text}", force=True)
    for lab in out.glob("*/*.lab"):
        line = lab.read_text(encoding="utf-8")
        c = _lab_clip(clips, line)
        assert line.startswith(f"<{c.emotion.lower()}|{c.intensity:.2f}> video {c.video}")


class _EafSchema:
    """The EAF 3.0 XSD (tests/data/EAFv3.0.xsd, as shipped in the pympi-ling 1.71 sdist's test
    folder), loaded once; xmlschema validates offline."""

    _schema = None

    def validate(self, path: str) -> None:
        import xmlschema

        if self._schema is None:
            type(self)._schema = xmlschema.XMLSchema(str(Path(__file__).parent / "data" / "EAFv3.0.xsd"))
        self._schema.validate(path)


EAF_SCHEMA = _EafSchema()


def test_elan_files_parse_and_point_at_their_audio(proj, clips, built, tmp_path):
    import pympi

    out = tmp_path / "ds"
    export_dataset(proj, out, "elan", ExportFilters())
    eafs = sorted(out.glob("*.eaf"))
    assert len(eafs) == 4
    for eaf in eafs:
        root = ET.parse(eaf).getroot()
        assert root.tag == "ANNOTATION_DOCUMENT" and root.get("FORMAT") == "3.0"
        media = root.find("HEADER/MEDIA_DESCRIPTOR")
        rel = unquote(media.get("RELATIVE_MEDIA_URL"))
        assert rel == f"./{eaf.stem}.wav" and media.get("MEDIA_URL") == media.get("RELATIVE_MEDIA_URL")
        assert media.get("MEDIA_URL").isascii()
        samples, rate, _ = fx.read_wav(out / rel)
        assert rate == SR and abs(len(samples) - fx.SECONDS * SR) <= SR // 100
        doc = pympi.Elan.Eaf(str(eaf))  # the reader ELAN users script with
        assert set(doc.get_tier_names()) == {"transcript", "speaker", "primary emotion", "verdict", "rationale"}
        sha8 = eaf.stem.rsplit("-", 1)[1]
        mine = sorted((c for c in clips if c.sha.startswith(sha8)), key=lambda c: c.start_s)
        spans = sorted(doc.get_annotation_data_for_tier("transcript"))
        assert [(a, b) for a, b, _ in spans] == [(round(c.start_s * 1000), round(c.end_s * 1000)) for c in mine]
        ref = {tier: {(a, b): v for a, b, v, _parent in doc.get_ref_annotation_data_for_tier(tier)}
               for tier in ("speaker", "primary emotion", "verdict")}
        for (a, b, text), c in zip(spans, mine):
            assert text.startswith(f"video {c.video} second {c.second}")
            assert ref["primary emotion"][(a, b)].startswith(c.emotion + " (")
            assert ref["verdict"][(a, b)].startswith("accept" if c.accepted else ("tie", "reject"))
            assert ref["speaker"][(a, b)] == (c.speaker or "")
        props = dict(doc.properties)
        side = fx.SIDECARS.get(mine[0].video) or {}
        assert props.get("source_url") == side.get("webpage_url")
        assert props.get("source_license") == side.get("license")
        assert [text for text, _url in doc.licenses] == ([side["license"]] if side.get("license") else [])
        EAF_SCHEMA.validate(str(eaf))  # the EAF 3.0 XSD ELAN itself validates against
    manifest = [json.loads(x) for x in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(manifest) == 16 and all((out / r["audio"]).is_file() and r["audio"].endswith(".wav") for r in manifest)
    assert_clean_output(out, built)


def test_lhotse_manifests_load_with_lhotse_and_match_the_segments(proj, clips, built, tmp_path):
    from lhotse import CutSet, RecordingSet, SupervisionSet
    from lhotse.qa import validate, validate_recordings_and_supervisions

    out = tmp_path / "ds"
    export_dataset(proj, out, "lhotse", ExportFilters(), splits=[0.5, 0.25, 0.25])
    expected = assign_splits([{"video_sha": c.sha} for c in clips], [0.5, 0.25, 0.25], 0)
    seen = 0
    for split in ("train", "validation", "test"):
        recs = RecordingSet.from_file(out / f"recordings_{split}.jsonl.gz")
        sups = SupervisionSet.from_file(out / f"supervisions_{split}.jsonl.gz")
        cuts = CutSet.from_file(out / f"cuts_{split}.jsonl.gz").with_recording_path_prefix(str(out))
        assert len(recs) == len(sups) == len(cuts)
        validate_recordings_and_supervisions(recs, sups)  # lhotse's own consistency checks
        validate(cuts)
        assert {s.custom["source_video"] for s in sups} == {sha for sha, sp in expected.items() if sp == split}
        for cut in cuts:
            [sup] = cut.supervisions
            c = next(c for c in clips if c.sha == sup.custom["source_video"]
                     and abs(c.start_s - sup.custom["start_s"]) < 1e-6)
            assert sup.text.startswith(f"video {c.video} second {c.second}") and sup.language == c.language
            assert sup.speaker == c.speaker and sup.recording_id == cut.recording.id == cut.id
            assert sup.duration == pytest.approx(c.end_s - c.start_s, abs=1e-3)
            assert sup.custom["primary_emotion"] == c.emotion
            assert sup.custom["emotions"][c.emotion] == pytest.approx(c.intensity)
            assert sup.custom["review"]["raters"] == len(c.verdicts) and sup.custom["split"] == split
            audio = cut.load_audio()  # the real loader, through the path prefix
            assert audio.shape[0] == 1 and cut.sampling_rate == SR
            samples = (audio[0] * 32768).astype(np.int16)
            want = fx.vocals_freq(c.second) if sup.custom["audio_source"] == "vocals" else fx.mix_freq(c.second)
            assert abs(fx.dominant_freq(samples, SR) - want) < 8
            seen += 1
    assert seen == 16
    assert_clean_output(out, built)


# ---- one schema across formats -----------------------------------------------------------------

def _card_fields(out: Path) -> list[str]:
    card = (out / "README.md").read_text(encoding="utf-8")
    section = card[card.index("## Record fields"):]
    section = section[:section.index("\n## ")] if "\n## " in section else section
    return [line.split("`")[1] for line in section.splitlines() if line.startswith("| `")]


def _read_records(fmt: str, out: Path) -> list[dict]:
    """Each format's records as its own reader returns them (field name -> value)."""
    if fmt in ("jsonl", "lab", "elan"):
        return [json.loads(x) for x in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    if fmt == "webdataset":
        import webdataset as wds

        return [s["json"] for shard in sorted(out.glob("*.tar"))
                for s in wds.WebDataset(str(shard), shardshuffle=False).decode()]
    if fmt == "hf":
        import datasets

        ds = datasets.load_dataset("audiofolder", data_dir=str(out)).cast_column("audio", datasets.Audio(decode=False))
        return [dict(r) for split in ds for r in ds[split]]
    if fmt == "lhotse":
        from lhotse import CutSet

        rows = []
        for p in sorted(out.glob("cuts_*.jsonl.gz")):
            for cut in CutSet.from_file(p):
                [s] = cut.supervisions
                rows.append({"id": s.id, "text": s.text, "language": s.language, "speaker": s.speaker,
                             "audio": cut.recording.sources[0].source, **s.custom})
        return rows
    raise AssertionError(fmt)


def _strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


@pytest.mark.parametrize("fmt", ["jsonl", "hf", "webdataset", "lab", "elan", "lhotse"])
def test_every_format_writes_exactly_the_fields_its_card_describes(proj, tmp_path, monkeypatch, fmt):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "ds"
    export_dataset(proj, out, fmt, ExportFilters(), splits=[0.5, 0.25, 0.25])
    rows = _read_records(fmt, out)
    assert len(rows) == 16
    card = _card_fields(out)
    assert len(card) == len(set(card)) > 30
    for r in rows:
        assert sorted(r) == sorted(card), fmt
        assert r["split"] in ("train", "validation", "test")
        assert "" not in list(_strings(r)), f"{fmt}: an empty value must be null"  # the one empty-value rule
        assert not any(isinstance(v, float) and v != v for v in r.values()), f"{fmt}: NaN instead of null"
    # the same schema in every format: the card of one equals the card of another
    ref = tmp_path / "ref"
    export_dataset(proj, ref, "jsonl", ExportFilters(), splits=[0.5, 0.25, 0.25])
    assert _card_fields(ref) == card


def test_the_card_lists_speakers_and_sources_and_warns_about_unknown_licences(proj, clips, tmp_path):
    out = tmp_path / "ds"
    export_dataset(proj, out, "jsonl", ExportFilters())
    card = (out / "README.md").read_text(encoding="utf-8")
    sources = card[card.index("## Sources"):card.index("## Models and prompts")]
    rows = [line for line in sources.splitlines() if line.startswith("| `")]
    assert len(rows) == 4
    talk = next(r for r in rows if "youtube.com" in r)
    assert "Talk \\| Show, episode 1" in talk and "Talk Channel" in talk and "2024-01-05" in talk
    assert "Creative Commons Attribution" in talk and talk.endswith("| 4 |")
    # videos 1, 2 and 3 have no licence: 12 clips from 3 videos
    assert "licence of 12 clips from 3 source videos is unknown" in sources
    if any(c.speaker for c in clips):
        speakers = card[card.index("## Speakers"):card.index("## Sources")]
        assert "| Anna | 4 |" in speakers and "| Bob \\| B. | 2 |" in speakers
        assert "4 clips without a known speaker" in speakers


def test_speaker_filter_keeps_one_voice_across_videos(proj, clips, tmp_path):
    db = proj.db()
    try:
        if not fx.has_speakers(db):
            with pytest.raises(ExportError, match="no speakers yet"):
                select(db, ExportFilters(speakers=("Anna",)), proj.config)
            return
        sel = select(db, ExportFilters(speakers=("anna",)), proj.config)
        assert {c["segment_id"] for c in sel.clips} == {c.segment_id for c in clips if c.speaker == "Anna"}
        bob = next(c.speaker_id for c in clips if c.speaker == "Bob | B.")
        sel = select(db, ExportFilters(speakers=(str(bob),)), proj.config)
        assert {c["segment_id"] for c in sel.clips} == {c.segment_id for c in clips if c.speaker_id == bob}
    finally:
        db.conn.close()


# ---- filters -----------------------------------------------------------------------------------

JOY_ANGER_SAD_FEAR_RATES = {"Joy": 7 / 10, "Anger": 5 / 11, "Sadness": 5 / 9, "Fear": 4 / 11}

FILTER_CASES = [
    ("none", ExportFilters(), lambda c: True),
    ("accepted", ExportFilters(accepted_only=True), lambda c: c.accepted),
    ("rationality", ExportFilters(min_rationality=0.5), lambda c: JOY_ANGER_SAD_FEAR_RATES[c.emotion] >= 0.5),
    ("emotions", ExportFilters(emotions=("joy", "ANGER")), lambda c: c.emotion in ("Joy", "Anger")),
    ("intensity", ExportFilters(min_intensity=0.6), lambda c: c.intensity >= 0.6),
    ("duration", ExportFilters(min_duration=0.65, max_duration=0.85), lambda c: 0.65 <= c.end_s - c.start_s <= 0.85),
    ("snr", ExportFilters(min_snr=10), lambda c: c.snr >= 10),
    ("language", ExportFilters(languages=("JA",)), lambda c: c.language == "ja"),
    ("asd", ExportFilters(min_asd=0.5), lambda c: c.asd >= 0.5),
    ("cap", ExportFilters(max_per_video=2), lambda c: c.second >= 2),  # the two most intense per video
    ("combined", ExportFilters(accepted_only=True, min_snr=5, emotions=("Joy", "Sadness")),
     lambda c: c.accepted and c.snr >= 5 and c.emotion in ("Joy", "Sadness")),
]


@pytest.mark.parametrize("name,filters,expect", FILTER_CASES, ids=[c[0] for c in FILTER_CASES])
def test_filters_select_exactly_the_expected_clips(proj, clips, name, filters, expect):
    db = proj.db()
    try:
        sel = select(db, filters, proj.config)
    finally:
        db.conn.close()
    got = {c["segment_id"] for c in sel.clips}
    want = {c.segment_id for c in clips if expect(c)}
    assert want and got == want
    if name == "rationality":
        for emotion, rate in JOY_ANGER_SAD_FEAR_RATES.items():
            assert sel.rationality[emotion] == pytest.approx(rate)


def test_annotation_set_choice(proj, clips):
    db = proj.db()
    try:
        base = select(db, ExportFilters(backend="baseline"), proj.config)
        assert {c["segment_id"] for c in base.clips} == {c.segment_id for c in clips if c.second == 0}
        assert {c["model"] for c in base.clips} == {"vader"}
        second = select(db, ExportFilters(run_index=1), proj.config)
        assert len(second.clips) == 16 and {c["primary_emotion"] for c in second.clips} == {"Calmness"}
        # without the project's configured backend/model as a tie-breaker, two sets are ambiguous
        cfg = {**proj.config, "emotion": {**proj.config["emotion"], "backend": "openai"}}
        with pytest.raises(ExportError, match="several annotation sets.*--backend"):
            select(db, ExportFilters(), cfg)
        with pytest.raises(ExportError, match="no annotations match.*label_set=meld7"):
            select(db, ExportFilters(label_set="meld7"), proj.config)
    finally:
        db.conn.close()


def test_an_emptied_selection_names_the_filter(proj, tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(ExportError, match=r"--min-snr 1000 removed the last 16 clips"):
        export_dataset(proj, out, "jsonl", ExportFilters(min_snr=1000))
    with pytest.raises(ExportError, match=r"--emotions horror"):
        export_dataset(proj, out, "jsonl", ExportFilters(accepted_only=True, emotions=("Horror",)))
    assert not out.exists()


# ---- splits ------------------------------------------------------------------------------------

def test_splits_keep_videos_whole_follow_fractions_and_repeat():
    items = [{"video_sha": hashlib.sha256(str(i).encode()).hexdigest()} for i in range(100) for _ in range(3)]
    a = assign_splits(items, [0.8, 0.1, 0.1], seed=7)
    assert a == assign_splits(list(reversed(items)), [0.8, 0.1, 0.1], seed=7)  # order-independent
    counts = {s: sum(1 for v in a.values() if v == s) for s in ("train", "validation", "test")}
    assert counts == {"train": 80, "validation": 10, "test": 10}
    b = assign_splits(items, [0.8, 0.1, 0.1], seed=8)
    assert a != b and sorted(a.values()) == sorted(b.values())
    only_train = assign_splits(items, [1, 0, 0], seed=7)
    assert set(only_train.values()) == {"train"}
    assert set(assign_splits(items, [0.5, 0, 0.5], seed=7).values()) == {"train", "test"}
    with pytest.raises(ExportError):
        assign_splits(items, [0.5, -0.1, 0.6], seed=7)


# ---- reproducibility and safety ----------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jsonl", "hf", "webdataset", "lab", "elan", "lhotse"])
def test_exporting_twice_gives_identical_bytes(proj, tmp_path, fmt):
    a, b = tmp_path / "a", tmp_path / "b"
    ra = export_dataset(proj, a, fmt, ExportFilters(min_snr=3), shard_size_mb=0.1)
    rb = export_dataset(proj, b, fmt, ExportFilters(min_snr=3), shard_size_mb=0.1)
    fa, fb = all_files(a), all_files(b)
    assert fa.keys() == fb.keys() and fa == fb
    assert ra.manifest_sha256 == rb.manifest_sha256 == hashlib.sha256(fa["SHA256SUMS"]).hexdigest()


def test_export_is_recorded_in_the_store(proj, tmp_path):
    out = tmp_path / "ds"
    result = export_dataset(proj, out, "jsonl", ExportFilters(emotions=("Fear",)))
    db = proj.db()
    try:
        row = store.rows(db, "SELECT * FROM exports WHERE id=?", (result.export_id,))[0]
    finally:
        db.conn.close()
    assert row["format"] == "jsonl" and row["n_items"] == 4
    assert row["manifest_sha256"] == hashlib.sha256((out / "SHA256SUMS").read_bytes()).hexdigest()
    assert json.loads(row["filters_json"])["filters"]["emotions"] == ["Fear"]


def test_interrupted_export_leaves_out_untouched(proj, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("previous dataset")
    real = export_audio.write_wav
    calls = []

    def failing(path, samples, rate):
        calls.append(path)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        real(path, samples, rate)

    monkeypatch.setattr(export_audio, "write_wav", failing)
    with pytest.raises(OSError, match="No space"):
        export_dataset(proj, out, "hf", ExportFilters(), force=True)
    assert len(calls) == 5
    assert all_files(out) == {"keep.txt": b"previous dataset"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temporary folder left behind
    fresh = tmp_path / "fresh"
    calls.clear()
    with pytest.raises(OSError):
        export_dataset(proj, fresh, "jsonl", ExportFilters())
    assert not fresh.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_cancel_from_progress_callback_leaves_nothing(proj, tmp_path):
    seen = []

    def progress(done, total, msg):
        seen.append((done, total))
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_dataset(proj, tmp_path / "ds", "lab", ExportFilters(), progress=progress)
    assert seen == [(1, 16), (2, 16), (3, 16)] and list(tmp_path.iterdir()) == []


def test_non_empty_out_needs_force(proj, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "old.wav").write_bytes(b"x")
    with pytest.raises(ExportError, match="not empty.*--force"):
        export_dataset(proj, out, "jsonl", ExportFilters())
    assert all_files(out) == {"old.wav": b"x"}
    export_dataset(proj, out, "jsonl", ExportFilters(), force=True)
    assert "old.wav" not in all_files(out) and (out / "manifest.jsonl").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    with pytest.raises(ExportError, match="would replace the project"):
        export_dataset(proj, proj.root, "jsonl", ExportFilters(), force=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "mikupal.toml").write_text("")
    with pytest.raises(ExportError, match="holds a MIKU-PAL project"):
        export_dataset(proj, other, "jsonl", ExportFilters(), force=True)
    assert (other / "mikupal.toml").exists()
    other.joinpath("mikupal.toml").unlink()
    other.rmdir()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        export_dataset(proj, tmp_path / "afile", "jsonl", ExportFilters())


def test_names_from_video_files_are_sanitised(proj, clips, tmp_path):
    from mikupal.export.formats import safe_name, video_folder

    assert safe_name("../../etc/passwd") == "etc_passwd"
    assert safe_name("..") == "video" and safe_name("") == "video"
    assert video_folder("C:\\clips\\..\\..\\x y.mkv", "ab" * 32) == "x_y-abababab"
    out = tmp_path / "ds"
    export_dataset(proj, out, "elan", ExportFilters())
    evil = clips[8].sha  # video 2: "..  ..;evil$name.mkv"
    eaf = next(p for p in out.iterdir() if p.suffix == ".eaf" and p.stem.endswith(evil[:8]))
    assert eaf.name == f"evil_name-{evil[:8]}.eaf"
    for p in out.rglob("*"):
        assert out.resolve() in p.resolve().parents and not p.name.startswith(".")


def test_a_video_without_readable_audio_is_left_out_and_recorded(built, tmp_path):
    proj0, clips, _ = built
    copy = tmp_path / "proj"
    shutil.copytree(proj0.root, copy)
    from mikupal.project import Project

    proj = Project.open(copy)
    gone = clips[12].sha  # video 3 has no vocals; point it at a missing file
    moved = clips[8].sha  # video 2 also moved, but its extracted mix is still in the cache
    from mikupal.audio.stages import audio_paths

    cached = audio_paths(proj, moved)["mix44k"]
    cached.parent.mkdir(parents=True)
    export_audio.write_wav(cached, fx.tone(fx.mix_freq, 44100, fx.SECONDS), 44100)
    db = proj.db()
    db.conn.execute("UPDATE videos SET path=? WHERE sha256=?", (str(tmp_path / "moved.mkv"), gone))
    db.conn.execute("UPDATE videos SET path=? WHERE sha256=?", (str(tmp_path / "moved2.mkv"), moved))
    db.conn.close()
    out = tmp_path / "ds"
    result = export_dataset(proj, out, "jsonl", ExportFilters())
    assert result.n_items == 12 and result.n_videos == 3
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    from_cache = [r for r in rows if r["source_video"] == moved]
    assert len(from_cache) == 4 and {r["audio_source"] for r in from_cache} == {"mix"}
    for r in from_cache:
        samples, rate, _ = fx.read_wav(out / r["audio"])
        check_audio(samples, rate, r, clip_for(clips, r))
    assert len(result.skipped) == 1 and gone[:12] in result.skipped[0] and "missing" in result.skipped[0]
    assert "Left out while exporting" in (out / "README.md").read_text()
    db = proj.db()
    errs = store.rows(db, "SELECT stage, message FROM errors")
    db.conn.close()
    assert [e["stage"] for e in errs] == ["export"] and "moved.mkv" in errs[0]["message"]


def test_bad_options_are_one_line_errors(proj, tmp_path):
    for kwargs, pattern in (
        ({"fmt": "parquet"}, "--format 'parquet': choose one of jsonl, hf, webdataset, lab, elan, lhotse"),
        ({"fmt": "lab", "lab_template": "({mood}) {text}"}, "--lab-template"),
        ({"fmt": "lab", "lab_template": "({emotion})"}, "must contain {text}"),
        ({"fmt": "jsonl", "audio": "stems"}, "--audio 'stems'"),
        ({"fmt": "jsonl", "sample_rate": 100}, "--sample-rate 100"),
        ({"fmt": "jsonl", "splits": [0, 0, 0]}, "splits"),
    ):
        fmt = kwargs.pop("fmt")
        with pytest.raises(ExportError, match=pattern.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{").replace("}", r"\}")) as e:
            export_dataset(proj, tmp_path / "ds", fmt, ExportFilters(), **kwargs)
        assert "\n" not in str(e.value)
    assert not (tmp_path / "ds").exists()


# ---- CLI ---------------------------------------------------------------------------------------

def test_cli_export_and_usage_errors(proj, tmp_path):
    from typer.testing import CliRunner

    from mikupal.cli import app

    runner = CliRunner()
    out = tmp_path / "ds"
    r = runner.invoke(app, ["export", str(proj.root), str(out), "--format", "webdataset", "--emotions", "Joy,Fear",
                            "--splits", "0.5,0.5,0", "--sample-rate", "16000"])
    assert r.exit_code == 0, r.output
    assert "exported 8 clips" in r.output
    assert "licence unknown for 6 clips" in r.output  # Joy and Fear of videos 1-3 (only video 0 states one)
    recs = []
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            recs += [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    assert len(recs) == 8 and {r_["sample_rate"] for r_ in recs} == {16000}
    assert {r_["split"] for r_ in recs} <= {"train", "validation"}
    r = runner.invoke(app, ["export", str(proj.root), str(tmp_path / "dry"), "--dry-run", "--accepted-only"])
    assert r.exit_code == 0, r.output
    assert "16 clips after annotation set gemini/gemini-2.5-flash/cowen26 run 0" in r.output
    assert "clips after --accepted-only" in r.output and "would export" in r.output
    assert not (tmp_path / "dry").exists()
    for target, args, needle in (
        (out, [], "not empty"),
        (tmp_path / "new", ["--format", "csv"], "--format 'csv'"),
        (tmp_path / "new", ["--min-snr", "99"], "--min-snr 99 removed"),
        (tmp_path / "new", ["--splits", "a,b"], "--splits"),
        (tmp_path / "nowhere", ["--force"], "not a MIKU-PAL project"),
    ):
        r = runner.invoke(app, ["export", str(proj.root if target != tmp_path / "nowhere" else target), str(target), *args])
        assert r.exit_code == 2, (args, r.output)
        lines = [x for x in r.output.splitlines() if x.strip()]
        assert len(lines) == 1 and needle in lines[0], r.output
    assert not (tmp_path / "new").exists()


def test_clips_are_sample_exact_slices_of_the_source(built, tmp_path):
    """Vocals already at the export rate pass through unchanged, so every clip must be the
    exact slice [round(start * rate), round(end * rate)) of that file."""
    proj0, clips, _ = built
    copy = tmp_path / "proj"
    shutil.copytree(proj0.root, copy)
    from mikupal.project import Project

    proj = Project.open(copy)
    ramp = (np.arange(fx.SECONDS * SR) % 20011 - 10000).astype(np.int16)  # every sample tells its index
    db = proj.db()
    for sha in {c.sha for c in clips if c.video < 2}:
        vid = db.conn.execute("SELECT id FROM videos WHERE sha256=?", (sha,)).fetchone()[0]
        info = store.get_stage_state(db, vid, "separate")["info"]
        assert str(proj0.root) in info["vocals44k"]  # the stage stores absolute cache paths
        export_audio.write_wav(Path(info["vocals44k"].replace(str(proj0.root), str(copy))), ramp, SR)
        store.set_stage_state(db, vid, "separate", "done",
                              info={k: v.replace(str(proj0.root), str(copy)) for k, v in info.items()})
    db.conn.close()
    out = tmp_path / "ds"
    export_dataset(proj, out, "jsonl", ExportFilters(), sample_rate=SR)
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    vocal_rows = [r for r in rows if r["audio_source"] == "vocals"]
    assert len(vocal_rows) == 8
    for r in vocal_rows:
        samples, _, _ = fx.read_wav(out / r["audio"])
        a, b = round(r["start_s"] * SR), round(r["end_s"] * SR)
        assert np.array_equal(samples, ramp[a:b]), r["id"]


def test_a_damaged_source_is_named_without_its_folder(built, tmp_path):
    proj0, clips, _ = built
    copy = tmp_path / "proj"
    shutil.copytree(proj0.root, copy)
    from mikupal.project import Project

    proj = Project.open(copy)
    bad = tmp_path / "secret folder" / "broken.mkv"
    bad.parent.mkdir()
    bad.write_bytes(b"\x1aE\xdf\xa3 definitely not matroska" * 50)
    db = proj.db()
    db.conn.execute("UPDATE videos SET path=? WHERE sha256=?", (str(bad), clips[12].sha))
    db.conn.close()
    out = tmp_path / "ds"
    result = export_dataset(proj, out, "elan", ExportFilters())
    assert result.n_videos == 3 and len(result.skipped) == 1 and "broken.mkv" in result.skipped[0]
    assert not list(out.glob(f"*{clips[12].sha[:8]}*"))  # no .eaf or .wav for the broken video
    for data in all_files(out).values():
        assert b"secret folder" not in data


def test_preview_and_choices_for_the_export_dialog(proj, clips):
    from mikupal.export import export_choices, preview_export

    ch = export_choices(proj)
    sets = {(s["backend"], s["model"], s["run_index"]): s["segments"] for s in ch["annotation_sets"]}
    assert sets == {("gemini", "gemini-2.5-flash", 0): 16, ("gemini", "gemini-2.5-flash", 1): 16, ("baseline", "vader", 0): 4}
    assert set(ch["emotions"]) == {"Joy", "Anger", "Sadness", "Fear", "Boredom", "Calmness"}
    assert ch["languages"] == ["en", "ja"]
    pv = preview_export(proj, ExportFilters(accepted_only=True, min_snr=5))
    want = [c for c in clips if c.accepted and c.snr >= 5]
    assert pv["clips"] == len(want) and pv["videos"] == len({c.sha for c in want})
    assert pv["hours"] == pytest.approx(sum(c.end_s - c.start_s for c in want) / 3600)
    assert [name for name, _ in pv["steps"]][-2:] == ["--min-snr 5", "--accepted-only"]


def test_a_misspelt_emotion_is_a_usage_error(proj, tmp_path):
    with pytest.raises(ExportError, match=r"--emotions: Joyy not in label set cowen26; choose from Admiration"):
        export_dataset(proj, tmp_path / "ds", "jsonl", ExportFilters(emotions=("Joyy", "anger")))


@pytest.mark.skipif(sys.platform == "win32", reason="stale-folder cleanup needs a POSIX process probe")
def test_a_killed_exports_temporary_folder_is_cleaned_up_next_time(proj, tmp_path):
    import subprocess

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".ds.partial-{dead.pid}-deadbeef"
    alive = tmp_path / f".ds.partial-{os.getpid()}-cafebabe"  # e.g. another export still running
    for d in (stale, alive):
        (d / "audio").mkdir(parents=True)
    export_dataset(proj, tmp_path / "ds", "jsonl", ExportFilters(emotions=("Joy",)))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, "ds"])


def test_the_readme_documents_the_fish_speech_emotion_markers():
    """README "Export formats" prints export/fish_tags.py's mapping; every label of the
    shipped label sets has a row (or is listed as having no marker)."""
    from mikupal.export.fish_tags import FISH_TAGS, fish_tag
    from mikupal.taxonomy import load_label_set

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Export formats"):readme.index("## Evaluation and metrics")]
    documented = {}
    for line in section.splitlines():
        if line.startswith("| `(") or line.startswith("| none |"):
            marker, labels = [c.strip() for c in line.strip("|").split("|")]
            for label in labels.split(", "):
                documented[label] = "" if marker == "none" else marker.strip("`")
    assert documented == {k.replace("|", "/"): (f"({v})" if v else "") for k, v in FISH_TAGS.items()}
    for name in ("cowen26", "meld7", "ekman6", "iemocap4", "iemocap9"):
        for label in load_label_set(name).names:
            assert label.lower() in documented and fish_tag(label) == documented[label.lower()], (name, label)

"""Speakers: real GE2E embeddings of synthesised voices through the real Runner and SQLite.

Ground truth comes from the generator (which espeak-ng voice said each segment), never from
the code under test.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from mikupal import store
from mikupal.project import Project
from mikupal.speakers import table
from mikupal.speakers.cluster import Segment, cluster_video, link_clusters
from mikupal.stage import ModelMissingError

import speakers_fixture as F


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    """The three-voice project after one speakers run (built once: embedding takes a while)."""
    base = tmp_path_factory.mktemp("speakers")
    proj, truth, by_video = F.build(base / "proj", base)
    F.run(proj)
    return proj, truth, by_video


def _copy_project(src: Project, dst):
    """A private copy of the module's project for tests that change it (SQLite backup API)."""
    import shutil

    shutil.copytree(src.root, dst, ignore=shutil.ignore_patterns("project.db*"))
    a, b = src.db(), store.connect(dst / "project.db", migrate=False)
    a.conn.backup(b.conn)
    a.conn.close(), b.conn.close()
    return Project.open(dst)


def _voice_of_speaker(assigned, truth):
    out: dict[int, set] = {}
    for seg, spk in assigned.items():
        out.setdefault(spk, set()).add(truth[seg])
    return out


def test_one_id_per_voice_across_videos(voices):
    proj, truth, by_video = voices
    assigned = F.assignments(proj)
    assert all(spk is not None for spk in assigned.values()), assigned
    p = F.purity(assigned, truth)
    print(f"speaker purity {p:.3f} over {len(truth)} segments, 3 voices, 2 videos")
    assert p == 1.0
    per_speaker = _voice_of_speaker(assigned, truth)
    assert sorted(sorted(v) for v in per_speaker.values()) == [["A"], ["B"], ["C"]]
    # voice A spoke in both files: one id there, not one per file
    v1, v2 = sorted(by_video)
    a_ids = {assigned[s] for s in by_video[v1] + by_video[v2] if truth[s] == "A"}
    assert len(a_ids) == 1
    db = proj.db()
    try:
        infos = {r[0]: json.loads(r[1]) for r in db.conn.execute(
            "SELECT video_id, info_json FROM stage_state WHERE stage='speakers' AND status='done'")}
        names = store.rows(db, "SELECT id, name, name_source, length(embedding) AS n FROM speakers ORDER BY id")
        spk = store.rows(db, table.SEGMENT_SPEAKER_SQL, (by_video[v1][0],))[0]
    finally:
        db.conn.close()
    assert infos[v2]["linked"] == 1 and infos[v2]["new_speakers"] == 1 and infos[v1]["new_speakers"] == 2
    assert [n["name"] for n in names] == [f"Speaker {n['id']}" for n in names]
    assert all(n["n"] == 512 for n in names)  # float16 x 256
    assert spk == {"speaker_id": assigned[by_video[v1][0]], "speaker_name": f"Speaker {assigned[by_video[v1][0]]}"}


def test_rerun_reuses_embeddings_and_keeps_ids(voices, tmp_path):
    proj, truth, _ = voices
    before = F.assignments(proj)
    proj2 = _copy_project(proj, tmp_path / "p")
    proj2 = Project.open(proj2.root, ["speakers.link_threshold=0.83"])  # a config change: stale key
    summary = F.run(proj2)
    assert summary.stages["speakers"].ok == 2
    assert F.assignments(proj2) == before
    db = proj2.db()
    try:
        infos = [json.loads(r[0]) for r in db.conn.execute("SELECT info_json FROM stage_state WHERE stage='speakers'")]
    finally:
        db.conn.close()
    assert sum(i["reused"] for i in infos) == len(truth) and sum(i["embedded"] for i in infos) == 0
    # nothing stale: a second run has no work
    assert F.run(proj2).stages["speakers"].total == 0


def test_corrections_are_kept_by_a_rerun(voices, tmp_path):
    proj, truth, by_video = voices
    proj2 = _copy_project(proj, tmp_path / "p")
    db = proj2.db()
    try:
        seg_b = next(s for s in sorted(truth) if truth[s] == "B")
        old = table.segment_speaker(db, seg_b)["speaker_id"]
        new = table.split_segments(db, [seg_b], name="Mallory")
        table.rename_speaker(db, old, "  Bob   the  builder ")
    finally:
        db.conn.close()
    proj2 = Project.open(proj2.root, ["speakers.cluster_threshold=0.79"])
    F.run(proj2)
    db = proj2.db()
    try:
        assert table.segment_speaker(db, seg_b) == {"speaker_id": new, "speaker_name": "Mallory"}
        other_b = [s for s in truth if truth[s] == "B" and s != seg_b]
        assert {table.segment_speaker(db, s)["speaker_name"] for s in other_b} == {"Bob the builder"}
        src = db.conn.execute("SELECT speaker_source FROM segments WHERE id=?", (seg_b,)).fetchone()[0]
    finally:
        db.conn.close()
    assert src == "user"


def test_merge_split_move_in_the_store(voices, tmp_path):
    proj, truth, _ = voices
    proj2 = _copy_project(proj, tmp_path / "p")
    db = proj2.db()
    try:
        ids = {truth[s]: table.segment_speaker(db, s)["speaker_id"] for s in truth}
        a, b, c = ids["A"], ids["B"], ids["C"]
        before = F.assignments(proj2)
        with pytest.raises(table.SpeakerEditError, match="speaker 999"):
            table.merge_speakers(db, a, 999)
        with pytest.raises(table.SpeakerEditError, match="itself"):
            table.merge_speakers(db, a, a)
        with pytest.raises(table.SpeakerEditError, match="empty"):
            table.rename_speaker(db, a, "   ")
        with pytest.raises(table.SpeakerEditError, match="segment 99999"):
            table.split_segments(db, [min(truth), 99999])
        assert F.assignments(proj2) == before  # failed edits changed nothing
        assert db.conn.execute("SELECT COUNT(*) FROM speakers").fetchone()[0] == 3

        n = table.merge_speakers(db, c, a)
        assert n == sum(1 for v in truth.values() if v == "C")
        assert db.conn.execute("SELECT COUNT(*) FROM speakers WHERE id=?", (c,)).fetchone()[0] == 0
        members = [s for s in truth if truth[s] in "AC"]
        assert {table.segment_speaker(db, s)["speaker_id"] for s in members} == {a}
        # the merged speaker's centroid is the normalised mean of its segments' voices
        vecs = np.stack([np.frombuffer(db.conn.execute("SELECT embedding FROM segment_voices WHERE segment_id=?",
                                                       (s,)).fetchone()[0], "<f2").astype(np.float64) for s in members])
        want = vecs.mean(0) / np.linalg.norm(vecs.mean(0))
        got = np.frombuffer(db.conn.execute("SELECT embedding FROM speakers WHERE id=?", (a,)).fetchone()[0], "<f2")
        assert np.allclose(got, want, atol=2e-3)

        seg_c = [s for s in truth if truth[s] == "C"]
        new = table.split_segments(db, seg_c)
        assert {table.segment_speaker(db, s)["speaker_name"] for s in seg_c} == {f"Speaker {new}"}
        moved = table.move_segments(db, seg_c[:1], b)
        assert moved == 1 and table.segment_speaker(db, seg_c[0])["speaker_id"] == b
        listed = {r["id"]: r for r in table.list_speakers(db)}
        assert listed[new]["n_segments"] == len(seg_c) - 1 and listed[b]["n_videos"] == 2
    finally:
        db.conn.close()


# ---- clustering rules on hand-built vectors --------------------------------------------------

def _vec(cos_to_e0: float, axis: int) -> np.ndarray:
    """A unit vector at a given cosine from e0, leaning toward another axis."""
    v = np.zeros(16)
    v[0], v[axis] = cos_to_e0, np.sqrt(1 - cos_to_e0 ** 2)
    return v


def test_faces_on_screen_together_are_two_people():
    # Two voices similar enough to merge (cosine 0.9) but their face tracks co-occur.
    x, y = _vec(1.0, 1), _vec(0.9, 1)
    segs = [Segment(1, 0, 2, x, track_id=10), Segment(2, 3, 5, y, track_id=20)]
    assert cluster_video(segs, cluster_threshold=0.8) == [[1, 2]]  # voice alone merges them
    spans = {10: (0.0, 6.0), 20: (1.0, 6.0)}
    assert cluster_video(segs, cluster_threshold=0.8, track_spans=spans) == [[1], [2]]
    spans_apart = {10: (0.0, 2.5), 20: (2.6, 6.0)}  # one after the other: may be one person
    assert cluster_video(segs, cluster_threshold=0.8, track_spans=spans_apart) == [[1, 2]]


def test_a_face_track_groups_its_segments_unless_the_voice_disagrees():
    # Three segments on one track at cosine 0.72 to each other: below the voice threshold,
    # above face_voice_min; a fourth on the track is another voice (ASD picked the wrong face).
    e = np.eye(16)
    base = e[0]
    near = [0.85 * base + np.sqrt(1 - 0.85 ** 2) * e[k] for k in (1, 2, 3)]  # pairwise 0.7225
    far = e[5]
    segs = [Segment(i + 1, i, i + 1, v, track_id=7) for i, v in enumerate(near)] + [Segment(4, 5, 6, far, track_id=7)]
    assert cluster_video(segs, cluster_threshold=0.8, face_voice_min=0.65) == [[1, 2, 3], [4]]
    no_face = [Segment(s.id, s.start_s, s.end_s, s.embedding) for s in segs]
    assert cluster_video(no_face, cluster_threshold=0.8) == [[1], [2], [3], [4]]


def _greedy_reference(segs, threshold, spans):
    """Textbook agglomerative clustering: merge the pair with the highest mean pairwise
    similarity (never two clusters holding faces on screen together) until below threshold."""
    clusters = {}
    for s in segs:
        clusters.setdefault(("t", s.track_id) if s.track_id is not None else ("s", s.id), []).append(s)
    clusters = list(clusters.values())

    def cannot(c1, c2):
        t1 = {s.track_id for s in c1 if s.track_id is not None}
        t2 = {s.track_id for s in c2 if s.track_id is not None}
        return any(a != b and min(spans[a][1], spans[b][1]) > max(spans[a][0], spans[b][0]) for a in t1 for b in t2)

    while True:
        best = None
        for i in range(len(clusters)):
            for j in range(i + 1, len(clusters)):
                if cannot(clusters[i], clusters[j]):
                    continue
                sim = np.mean([float(a.embedding @ b.embedding) for a in clusters[i] for b in clusters[j]])
                if best is None or sim > best[0]:
                    best = (sim, i, j)
        if best is None or best[0] < threshold:
            break
        _, i, j = best
        clusters[i] = clusters[i] + clusters.pop(j)
    return sorted(sorted(s.id for s in c) for c in clusters)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clustering_matches_the_textbook_greedy_algorithm(seed):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4, 32))
    segs, spans = [], {}
    for i in range(48):
        v = centres[i % 4] + rng.uniform(0.2, 0.9) * rng.standard_normal(32)
        track = None
        if i % 4 < 2 and i % 3 == 0:  # voices 0 and 1 sometimes on their own face track
            track = 100 + i % 4
        segs.append(Segment(i, i, i + 1, v / np.linalg.norm(v), track_id=track))
    spans = {100: (0.0, 30.0), 101: (10.0, 48.0)}  # on screen together from 10 s to 30 s
    got = sorted(sorted(c) for c in cluster_video(segs, cluster_threshold=0.5, face_voice_min=-1.0, track_spans=spans))
    assert got == _greedy_reference(segs, 0.5, spans)
    assert 1 < len(got) < len(segs)  # the case exercises merging and stopping


def test_linking_is_one_to_one_and_thresholded():
    e = np.eye(4)
    speakers = {1: e[0], 2: e[1]}
    # both clusters are closest to speaker 1; the better one gets it, the other is new
    c1, c2 = _unit(e[0] + 0.1 * e[2]), _unit(e[0] + 0.4 * e[2])
    assert link_clusters([c2, c1], speakers, link_threshold=0.82) == [None, 1]
    assert link_clusters([e[3]], speakers, link_threshold=0.82) == [None]


def _unit(v):
    return v / np.linalg.norm(v)


# ---- the encoder's weights -------------------------------------------------------------------

def test_weights_from_the_models_dir_win_and_missing_ones_say_what_to_do(tmp_path, monkeypatch):
    from mikupal.speakers import encoder

    shipped = encoder.find_weights(tmp_path)
    assert shipped.name == "pretrained.pt" and shipped.parent.name == "resemblyzer" and shipped.stat().st_size > 10e6
    own = tmp_path / "resemblyzer" / "pretrained.pt"
    own.parent.mkdir()
    own.write_bytes(shipped.read_bytes())
    assert encoder.find_weights(tmp_path) == own
    own.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelMissingError) as e:
        encoder.SpeakerEncoder(tmp_path)
    assert str(own) in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setattr(encoder.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelMissingError, match=r"pip install --no-deps 'resemblyzer==0\.1\.4'") as e:
        encoder.find_weights(tmp_path / "empty")
    assert "\n" not in str(e.value)


def test_silence_has_no_voice():
    from mikupal.speakers.encoder import SpeakerEncoder

    enc = SpeakerEncoder(None)
    assert enc.embed(np.zeros(16000, np.float32)) == (None, 0.0)
    vec, voiced = enc.embed(0.5 * F.espeak("Good morning to everyone here today.", F.RATE, voice="en-us"))
    assert vec.shape == (256,) and abs(float(np.linalg.norm(vec)) - 1) < 1e-4 and voiced > 1.0


def test_asd_face_tracks_join_the_evidence(tmp_path):
    """With the voice threshold out of reach, the ASD tracks alone group each video's segments;
    a silent segment on a face track follows that face's speaker."""
    proj, truth, by_video = F.build(tmp_path / "proj", tmp_path, {"speakers.cluster_threshold": 0.999,
                                                                   "speakers.link_threshold": 0.999})
    db = proj.db()
    silent = {}
    try:
        with store.transaction(db):
            for vid, segs in by_video.items():
                dur = db.conn.execute("SELECT duration_s FROM videos WHERE id=?", (vid,)).fetchone()[0]
                track = {}
                for voice in sorted({truth[s] for s in segs}):  # one face per voice, both on screen throughout
                    track[voice] = int(db.conn.execute(
                        "INSERT INTO tracks (video_id, start_s, end_s, boxes_json) VALUES (?,?,?,?)",
                        (vid, 0.0, dur, "[]")).lastrowid)
                for s in segs:
                    db.conn.execute("UPDATE segments SET speaker_track_id=?, status='ok' WHERE id=?", (track[truth[s]], s))
                a_end = db.conn.execute("SELECT end_s FROM segments WHERE id=?", (segs[0],)).fetchone()[0]
                sid = int(db.conn.execute(  # the pause after the first line, on the first voice's face
                    "INSERT INTO segments (video_id, start_s, end_s, text, speaker_track_id, status) VALUES (?,?,?,?,?,?)",
                    (vid, a_end + 0.15, a_end + 0.65, "", track[truth[segs[0]]], "ok")).lastrowid)
                silent[vid] = (sid, segs[0])
                store.set_stage_state(db, vid, "asd", "done", cache_key="test-asd")
    finally:
        db.conn.close()
    F.run(proj)
    assigned = F.assignments(proj)
    voiced = {s: assigned[s] for s in truth}
    assert F.purity(voiced, truth) == 1.0
    for vid, segs in by_video.items():
        assert len({assigned[s] for s in segs}) == 2  # two faces, two speakers per video
        sid, first = silent[vid]
        assert assigned[sid] == assigned[first]
    db = proj.db()
    try:
        infos = [json.loads(r[0]) for r in db.conn.execute("SELECT info_json FROM stage_state WHERE stage='speakers'")]
    finally:
        db.conn.close()
    assert sum(i["by_face"] for i in infos) == 2
    # linking across videos is by voice only: at 0.999 nothing links, so 4 speakers
    assert len(set(assigned.values())) == 4


def test_missing_vocals_fail_that_video_only_with_a_one_line_fix(tmp_path):
    proj, truth, by_video = F.build(tmp_path / "proj", tmp_path)
    v1, v2 = sorted(by_video)
    gone = tmp_path / "cache-gone" / "vocals16k.wav"
    db = proj.db()
    try:
        with store.transaction(db):
            store.set_stage_state(db, v1, "separate", "done", cache_key="k",
                                  info={"vocals16k": str(gone), "mix16k": str(tmp_path / "mix16k.wav")})
    finally:
        db.conn.close()
    from mikupal.runner import Runner

    summary = Runner(proj, ["speakers"], devices="cpu").run()
    assert summary.stages["speakers"].ok == 1 and summary.stages["speakers"].failed == 1
    db = proj.db()
    try:
        errors = store.rows(db, "SELECT video_id, message FROM errors WHERE stage='speakers'")
        states = {r[0]: r[1] for r in db.conn.execute("SELECT video_id, status FROM stage_state WHERE stage='speakers'")}
        lost = db.conn.execute("SELECT COUNT(*) FROM segments WHERE video_id=? AND speaker_id IS NOT NULL", (v1,)).fetchone()[0]
        kept = db.conn.execute("SELECT COUNT(*) FROM segments WHERE video_id=? AND speaker_id IS NOT NULL", (v2,)).fetchone()[0]
    finally:
        db.conn.close()
    assert len(errors) == 1 and errors[0]["video_id"] == v1
    msg = errors[0]["message"]
    assert str(gone) in msg and "re-run stage separate" in msg and "\n" not in msg
    assert states == {v1: "failed", v2: "done"} and lost == 0 and kept == len(by_video[v2])


def test_a_correction_made_while_the_stage_works_wins(voices, tmp_path):
    """The app splits a segment off between the stage's prepare and its commit."""
    from mikupal.speakers.stage import SpeakersStage

    proj, truth, by_video = voices
    proj2 = _copy_project(proj, tmp_path / "p")
    v1 = sorted(by_video)[0]
    stage = SpeakersStage(proj2)
    db = proj2.db()
    try:
        task = stage.prepare(db, v1)
        stage.load()
        result = stage.process(task)
        seg = by_video[v1][0]
        mine = table.split_segments(db, [seg], name="Set by hand")
        with store.transaction(db):
            stage.commit(db, task, result)
        assert table.segment_speaker(db, seg) == {"speaker_id": mine, "speaker_name": "Set by hand"}
        others = {table.segment_speaker(db, s)["speaker_id"] for s in by_video[v1][1:] if truth[s] == truth[seg]}
        assert len(others) == 1 and mine not in others
    finally:
        db.conn.close()

"""A small real project for the export tests: four short videos made with PyAV, segments,
annotations with intensities and reviews by three raters, all written through mikupal.store.

Each second s of every video carries its own tone (mix: 300 + 150 s Hz; separated vocals:
2000 + 150 s Hz), so a test can tell from an exported clip's pitch which second it was cut
from and whether it came from the vocals or the original mix.
"""
from __future__ import annotations

import json
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from mikupal import store
from mikupal.ingest import add_videos
from mikupal.project import Project
from mikupal.taxonomy import load_label_set

N_VIDEOS = 4
SECONDS = 4
EMOTIONS = ["Joy", "Anger", "Sadness", "Fear"]  # primary emotion of second s
# Video 2's file name tries to climb out of its folder and hide itself.
VIDEO_NAMES = ["talk show.mkv", "interview_b.mkv", "..  ..;evil$name.mkv", "日本語クリップ.mkv"]
# Rater verdicts (r1, r2, r3); None = no review. PATTERN_OF[s][k] picks one per clip, so the
# emotions' accept rates differ: Joy 7/10, Anger 5/11, Sadness 5/9, Fear 4/11.
PATTERNS = [("accept", "accept", "reject"), ("accept", "reject", "reject"),
            ("accept", "skip", "reject"), ("accept", "skip", None)]
PATTERN_OF = [[0, 0, 0, 3], [1, 1, 2, 0], [0, 1, 2, 3], [1, 1, 1, 2]]
CHANGED_MIND = (3, 0)  # r1 first rejected this clip, then accepted it: only the latest counts
# Who speaks in (video k, second s): one named voice across videos 0 and 1, a second named
# one, an auto-named one, and video 3 unknown. None = no speaker assigned.
def speaker_of(k: int, s: int) -> str | None:
    if k == 3:
        return None
    if s < 2 and k in (0, 1):
        return "Anna"
    if k == 1:
        return "Bob | B."  # a pipe: the card's Markdown table must escape it
    return "auto"
# Provenance from yt-dlp sidecars beside videos 0 and 1 (video 1's licence is unknown).
SIDECARS = {
    0: {"id": "ts1", "extractor_key": "Youtube", "webpage_url": "https://www.youtube.com/watch?v=ts1",
        "title": "Talk | Show, episode 1", "uploader": "Talk Channel", "upload_date": "20240105",
        "license": "Creative Commons Attribution license (reuse allowed)"},
    1: {"id": "ib2", "extractor_key": "Vimeo", "webpage_url": "https://vimeo.com/ib2",
        "title": "Interview B", "uploader": "B Studio", "upload_date": "20230714"},
}


def mix_freq(s: int) -> float:
    return 300.0 + 150.0 * s


def vocals_freq(s: int) -> float:
    return 2000.0 + 150.0 * s


def tone(freqs_per_second, rate: int, seconds: int) -> np.ndarray:
    t = np.arange(seconds * rate) / rate
    f = np.array([freqs_per_second(int(x)) for x in np.floor(t)])
    phase = 2 * np.pi * np.cumsum(f) / rate
    return (np.sin(phase) * 0.5 * 32767).astype(np.int16)


def make_video(path: Path, k: int) -> None:
    """H.264 video + 48 kHz stereo FLAC (lossless, no encoder delay) in Matroska."""
    rate = 48000
    out = av.open(str(path), mode="w", format="matroska")
    vs = out.add_stream("libx264", rate=5)
    vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
    vs.options = {"preset": "ultrafast"}
    a_s = out.add_stream("flac", rate=rate)
    a_s.layout = "stereo"
    for i in range(SECONDS * 5):
        img = np.full((48, 64, 3), 40 + 40 * k + i, np.uint8)
        for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            out.mux(p)
    pcm = tone(mix_freq, rate, SECONDS)
    step = 1024
    for i in range(0, len(pcm), step):
        chunk = np.repeat(pcm[i:i + step][None, :], 2, axis=0).T.reshape(1, -1)
        fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="s16", layout="stereo")
        fr.sample_rate = rate
        fr.pts = i
        for p in a_s.encode(fr):
            out.mux(p)
    for s_ in (vs, a_s):
        for p in s_.encode(None):
            out.mux(p)
    out.close()


def write_vocals(path: Path, rate: int) -> None:
    """Mono 16-bit WAV like the separate stage's vocals44k/vocals16k."""
    pcm = tone(vocals_freq, rate, SECONDS)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


@dataclass
class Clip:
    video: int      # k
    second: int     # s
    segment_id: int
    sha: str
    start_s: float
    end_s: float
    emotion: str
    intensity: float
    snr: float
    asd: float
    language: str
    verdicts: tuple
    speaker: str | None = None      # the name exported ("Speaker N" for the auto-named voice)
    speaker_id: int | None = None

    @property
    def accepted(self) -> bool:
        acc = sum(v == "accept" for v in self.verdicts)
        rej = sum(v == "reject" for v in self.verdicts)
        return acc > rej


def build(root: Path, videos_dir: Path) -> tuple[Project, list[Clip]]:
    videos_dir.mkdir(parents=True, exist_ok=True)
    proj = Project.create(root)
    db = proj.db()
    paths = []
    for k, name in enumerate(VIDEO_NAMES):
        p = videos_dir / name
        make_video(p, k)
        if k in SIDECARS:
            p.with_name(p.stem + ".info.json").write_text(json.dumps(SIDECARS[k]), encoding="utf-8")
        paths.append(p)
    report = add_videos(db, paths)
    assert len(report.added) == N_VIDEOS, report.failed
    vids = {Path(p).name: vid for vid, p in report.added}
    names = load_label_set("cowen26").names
    with store.transaction(db) as conn:
        raters = [conn.execute("INSERT INTO raters (name) VALUES (?)", (n,)).lastrowid for n in ("r1", "r2", "r3")]
    clips: list[Clip] = []
    speakers = _make_speakers(db)
    with store.transaction(db) as conn:
        for k, name in enumerate(VIDEO_NAMES):
            vid = vids[name]
            sha = conn.execute("SELECT sha256 FROM videos WHERE id=?", (vid,)).fetchone()[0]
            if k < 2:  # the first two videos have separated vocals, laid out as the separate stage does
                d = proj.stage_cache("separate") / f"{sha[:16]}-testkey0"
                d.mkdir()
                write_vocals(d / "vocals44k.wav", 44100)
                write_vocals(d / "vocals16k.wav", 16000)
                store.set_stage_state(db, vid, "separate", "done", cache_key="testkey0",
                                      info={"model": "tiny-mdx.onnx", "vocals44k": str(d / "vocals44k.wav"),
                                            "vocals16k": str(d / "vocals16k.wav")})
            elif k == 2:  # separation ran with model "none": its "vocals" are the mix
                store.set_stage_state(db, vid, "separate", "done", cache_key="none",
                                      info={"model": "none", "vocals44k": None, "vocals16k": str(videos_dir / name)})
            for s in range(SECONDS):
                start, end = s + 0.05, s + 0.65 + 0.1 * s
                emotion = EMOTIONS[s]
                intensity = round(0.2 + 0.2 * s + 0.05 * k, 3)
                snr, asd = 5.0 * k + s, k - 1.0 + 0.1 * s
                lang = "ja" if k == 3 else "en"
                seg = conn.execute(
                    "INSERT INTO segments (video_id, start_s, end_s, text, language, snr_db, asd_score, status)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    (vid, start, end, f"video {k} second {s} ../../etc/passwd\nsays hi", lang, snr, asd, "ok"),
                ).lastrowid
                inten = {n: 0.05 for n in names}
                inten[emotion] = intensity
                pattern = PATTERNS[PATTERN_OF[s][k]]

                def annotate(backend="gemini", model="gemini-2.5-flash", prompt="p2", run_index=0, primary=emotion):
                    return conn.execute(
                        "INSERT INTO annotations (segment_id, backend, model, prompt_sha, run_index, label_set,"
                        " primary_emotion, intensities_json, rationale, visual_analysis, audio_analysis,"
                        " text_analysis, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (seg, backend, model, prompt, run_index, "cowen26", primary, json.dumps(inten),
                         f"{primary} because of tone {s}", "smiles", "high pitch", "greets", store.now()),
                    ).lastrowid

                if (k, s) == (0, 0):
                    annotate(prompt="p1", primary="Boredom")  # an older prompt's answer: superseded
                ann = annotate()
                annotate(run_index=1, primary="Calmness")
                if s == 0:
                    annotate(backend="baseline", model="vader")
                if (k, s) == CHANGED_MIND:
                    conn.execute("INSERT INTO reviews (annotation_id, rater_id, verdict, corrected_label, created_at)"
                                 " VALUES (?,?,?,?,?)", (ann, raters[0], "reject", "Joy", store.now()))
                for rid, verdict in zip(raters, pattern):
                    if verdict is None:
                        continue
                    conn.execute("INSERT INTO reviews (annotation_id, rater_id, verdict, corrected_label, created_at)"
                                 " VALUES (?,?,?,?,?)",
                                 (ann, rid, verdict, "Calmness" if verdict == "reject" else None, store.now()))
                spk = speakers.get(speaker_of(k, s)) if speakers else None
                if spk is not None:
                    conn.execute("UPDATE segments SET speaker_id=? WHERE id=?", (spk[0], seg))
                clips.append(Clip(k, s, seg, sha, start, end, emotion, intensity, snr, asd, lang,
                                  tuple(v for v in pattern if v is not None),
                                  speaker=spk[1] if spk else None, speaker_id=spk[0] if spk else None))
    db.conn.close()
    return proj, clips


def has_speakers(db) -> bool:
    return "speaker_id" in {r[1] for r in db.conn.execute("PRAGMA table_info(segments)")}


def _make_speakers(db) -> dict[str, tuple[int, str]]:
    """speaker_of's names -> (speakers.id, exported name), written as the speakers stage and
    the app do (an auto-named speaker is called "Speaker <id>"). Empty before the speakers
    schema exists: the export then writes null speakers."""
    if not has_speakers(db):
        return {}
    out = {}
    with store.transaction(db) as conn:
        for name in ("Anna", "Bob | B.", "auto"):
            t = store.now()
            sid = conn.execute("INSERT INTO speakers (name, name_source, created_at, updated_at) VALUES (?,?,?,?)",
                               (name, "user" if name != "auto" else "auto", t, t)).lastrowid
            if name == "auto":
                conn.execute("UPDATE speakers SET name=? WHERE id=?", (f"Speaker {sid}", sid))
            out[name] = (sid, name if name != "auto" else f"Speaker {sid}")
    return out


def dominant_freq(samples: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spec))])


def read_wav(path_or_bytes) -> tuple[np.ndarray, int, int]:
    import io

    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    with wave.open(src, "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2"), w.getframerate(), w.getsampwidth()

"""The media torture set: every container quirk a user brings, checked for what a user
relies on (see tests/media_fixtures.py for the ground truth each file is built from)."""
from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from media_fixtures import FPS, RATE, displayed_frames, ffmpeg, lag_of, noise, read_code, write_source

# the ffmpeg CLI builds the torture set: make setup installs it (a missing one fails, it does not skip)

DUR = 3.0
SEG = (1.0, 2.2)  # the segment every check cuts (seconds on the project clock)
FRAME = 1.0 / FPS


class Case:
    def __init__(self, path, *, size=(320, 240), rotation=0, video_delay=0.0, kept=None, audio=None, video=True,
                 face=True, trimmed=0.0):
        self.path, self.size, self.rotation, self.video_delay = Path(path), size, rotation, video_delay
        self.trimmed = trimmed  # seconds an edit list cuts from the start (frame code and audio start there)
        self.kept = kept  # frame numbers present (VFR); None = all
        self.audio = audio  # which noise the default track carries
        self.video, self.face = video, face

    def expected_codes(self, t: float) -> set[int]:
        """Frame numbers on screen at t: the ground truth from ffprobe's first-frame time (or
        the frame before, for timestamp rounding at a frame boundary)."""
        out = set()
        for tt in (t, t - FRAME + 1e-3):
            n = int(np.floor((tt - self.first_frame) * FPS + 1e-3)) + round(self.trimmed * FPS)
            if self.kept is not None:
                below = [k for k in self.kept if k <= n]
                n = below[-1] if below else -1
            out.add(n)
        return out


@pytest.fixture(scope="module")
def torture(tmp_path_factory):
    d = tmp_path_factory.mktemp("torture")
    g, g2 = noise(DUR, 1), noise(DUR, 2)
    shown, box = displayed_frames(320, 240, int(DUR * FPS))
    src = d / "src.mkv"
    write_source(src, shown, g)
    cases = {}

    def case(name, *args, **kw):
        cases[name] = Case(d / name, *args, **kw)
        return d / name

    aac = ["-c:a", "aac", "-b:a", "128k"]
    ffmpeg("-i", src, "-c:v", "copy", *aac, "-output_ts_offset", "3", "-f", "mpegts", case("offset.ts", audio=g))
    ffmpeg("-i", src, "-itsoffset", "0.5", "-i", src, "-map", "1:v", "-map", "0:a", "-c:v", "copy", *aac,
           case("editlist.mp4", video_delay=0.5, audio=g))
    ffmpeg("-i", src, "-c:v", "copy", *aac, d / "full.mp4")  # then cut without re-encoding: an edit list
    ffmpeg("-ss", "0.52", "-i", d / "full.mp4", "-c", "copy", case("trimmed.mp4", trimmed=0.52, audio=g))
    for r in (90, 180, 270):
        stored = d / f"stored{r}.mkv"
        write_source(stored, [np.ascontiguousarray(np.rot90(f, -(r // 90))) for f in shown], g)
        ffmpeg("-i", stored, "-c:v", "copy", *aac, "-metadata:s:v:0", f"rotate={r}",
               case(f"rot{r}.mp4", rotation=r, audio=g))
    import cv2

    squeezed = d / "squeezed.mkv"  # 320x240 shown, stored 240x240 with 4:3 pixels
    write_source(squeezed, [cv2.resize(f, (240, 240), interpolation=cv2.INTER_AREA) for f in shown], g)
    ffmpeg("-i", squeezed, "-c", "copy", "-bsf:v", "h264_metadata=sample_aspect_ratio=4/3", case("anamorphic.mkv", audio=g))
    kept = [n for n in range(int(DUR * FPS)) if n % 5 < 3 or n < 3]
    ffmpeg("-i", src, "-vf", r"select='lt(mod(n\,5)\,3)+lt(n\,3)'", "-fps_mode", "vfr", "-c:v", "libx264",
           "-preset", "ultrafast", "-crf", "14", *aac, case("vfr.mp4", kept=kept, audio=g))
    ffmpeg("-i", src, "-c:v", "copy", *aac, "-ar", "22050", case("odd_rate.mkv", audio=g))
    ffmpeg("-i", src, "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-crf", "30", "-b:v", "0",
           "-c:a", "libopus", case("vp9_opus.webm", audio=g))
    two = d / "two_src.mkv"
    write_source(two, shown, g, extra_audio=[(g2, "jpn")])
    ffmpeg("-i", two, "-map", "0", "-c:v", "copy", *aac, "-metadata:s:a:0", "language=eng",
           "-disposition:a:0", "0", "-disposition:a:1", "default", case("two_tracks.mp4", audio=g2))
    ffmpeg("-i", src, "-c:v", "copy", "-af", "pan=5.1|FL=0*c0|FR=0*c0|FC=c0|LFE=0*c0|BL=0*c0|BR=0*c0",
           "-c:a", "aac", "-b:a", "256k", case("surround51.mp4", audio=g))
    ffmpeg("-i", src, "-vn", *aac, case("audio_only.m4a", audio=g, video=False, face=False))
    hd_shown, hd_box = displayed_frames(1920, 1080, int(2.4 * FPS), face_scale=3.0)
    hd_src = d / "hd_src.mkv"
    write_source(hd_src, hd_shown, g)
    ffmpeg("-i", hd_src, "-c:v", "libx264", "-preset", "ultrafast", "-crf", "20", *aac, case("hd1080.mp4", size=(1920, 1080), audio=g))
    for name in ("hd1080.mp4",):
        cases[name].face_box = hd_box
    for name, c in cases.items():
        c.face_box = getattr(c, "face_box", box)
        c.first_frame = ffprobe_first_frame(c.path)
        # what muxing did to A/V (AAC priming kept in MKV/TS moves both by < 2 frames): the
        # picture's shift beyond the intended delay, by ffprobe (not by the code under test)
        c.shift = (c.first_frame - c.video_delay) if c.video else 0.0
    return {"cases": cases, "g": g, "g2": g2, "dir": d}


def ffprobe_first_frame(path: Path) -> float:
    """Clock time of the first video frame: its start minus the earliest stream start."""
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,start_time", "-of", "csv=p=0",
                          str(path)], capture_output=True, text=True, check=True).stdout.split()
    starts = [(kind, float(t)) for kind, t in (line.split(",")[:2] for line in out) if t not in ("", "N/A")]
    v = [t for kind, t in starts if kind == "video"]
    return (v[0] - min(t for _, t in starts)) if v else 0.0


VIDEO_CASES = ["offset.ts", "editlist.mp4", "trimmed.mp4", "rot90.mp4", "rot180.mp4", "rot270.mp4", "anamorphic.mkv", "vfr.mp4",
               "odd_rate.mkv", "vp9_opus.webm", "two_tracks.mp4", "surround51.mp4", "hd1080.mp4"]
AUDIO_CASES = VIDEO_CASES + ["audio_only.m4a"]


def _g16(x):
    from scipy.signal import resample_poly

    return resample_poly(x, 1, 3).astype(np.float32)


def test_probe_reports_the_picture_as_shown_and_the_clock(torture):
    from mikupal.media import probe

    cs = torture["cases"]
    for name in VIDEO_CASES:
        info = probe(cs[name].path)
        assert (info.width, info.height) == cs[name].size, name
        assert info.rotation == cs[name].rotation, name
        assert abs(info.video_start_s - cs[name].video_delay) < 0.05, (name, info.video_start_s)
        want = DUR + cs[name].video_delay - cs[name].trimmed  # the longest stream
        assert abs(info.duration_s - want) < 0.2, (name, info.duration_s)
    assert probe(cs["offset.ts"].path).start_s > 3.0  # the broadcast clock; our 0 is its first frame/sample
    assert probe(cs["vfr.mp4"].path).vfr and not probe(cs["rot90.mp4"].path).vfr
    assert probe(cs["anamorphic.mkv"].path).coded_width == 240
    only = probe(cs["audio_only.m4a"].path)
    assert only.has_audio and not only.has_video


@pytest.mark.parametrize("name", VIDEO_CASES)
def test_stages_and_player_see_the_same_frame_at_t(torture, name):
    """The vision stages' grid frame at t is the frame a viewer sees at t (frame code =
    ground truth), in the displayed orientation, and the review player shows that frame."""
    from mikupal.vision.frames import DecodeStats, iter_frames
    from mikupal_gui.player import AvFrames

    c = torture["cases"][name]
    st = DecodeStats()
    frames = list(iter_frames(c.path, [SEG], FPS, width=160, stats=st))
    assert (st.width, st.height) == c.size
    want_h = round(c.size[1] * 160 / c.size[0])
    assert len(frames) == round((SEG[1] - SEG[0]) * FPS) + 1 and st.corrupt == 0
    player = AvFrames(c.path, size=(160, want_h))
    try:
        for fr in frames:
            assert fr.image.shape[:2] == (want_h, 160)
            assert read_code(fr.image) in c.expected_codes(fr.t), (name, fr.t, read_code(fr.image))
            shown, t_shown = player.frame_at(fr.t)
            assert np.array_equal(shown, fr.image), (name, fr.t)
            assert abs(t_shown - fr.pts_s) < 1e-6
    finally:
        player.close()


@pytest.mark.parametrize("name", AUDIO_CASES)
def test_clip_and_export_carry_the_segments_audio(torture, name, tmp_path):
    """The LLM clip of a segment and the exported WAV hold the source audio of exactly that
    segment (cross-correlation against the generator's noise, within one video frame), and
    the clip's first picture is the segment's first frame, upright."""
    from mikupal.emotion.clips import AUDIO_RATE, ClipSpec, cut_clip, read_audio, sample_frames
    from mikupal.export.audio import render
    from mikupal.media import read_audio as read_wav

    c = torture["cases"][name]
    ref = _g16(c.audio)
    clip = cut_clip(ClipSpec(str(c.path), "x", *SEG, crop="full", height=120, fps=5), tmp_path / "clips")
    x = read_audio(clip.path)
    assert abs(len(x) / AUDIO_RATE - (SEG[1] - SEG[0])) < 0.1
    lag, corr = lag_of(x[: int(1.0 * AUDIO_RATE)], ref, AUDIO_RATE)
    assert corr > 0.6 and abs(lag - (SEG[0] + c.trimmed - c.shift)) <= FRAME, (name, lag, corr, c.shift)
    if c.video:
        assert clip.has_video
        first = sample_frames(clip.path, 1.0, 1)[0]
        h, w = first.shape[:2]
        assert abs(w / h - c.size[0] / c.size[1]) < 0.05, "the clip shows the picture as displayed"
        assert read_code(first) in c.expected_codes(SEG[0])
    else:
        assert clip.mime_type == "audio/wav"
    wav = tmp_path / "export.wav"
    render(c.path, wav, 16000)
    span = read_wav(wav, *SEG)
    lag, corr = lag_of(span, ref, 16000)
    assert corr > 0.6 and abs(lag - (SEG[0] + c.trimmed - c.shift)) <= FRAME, (name, lag, corr, c.shift)


@pytest.mark.parametrize("name", ["rot90.mp4", "rot180.mp4", "rot270.mp4", "anamorphic.mkv", "hd1080.mp4",
                                  "offset.ts"])
def test_face_box_lies_on_the_face_as_shown(torture, name):
    from mikupal.vision.faces import HaarDetector
    from mikupal.vision.frames import iter_frames

    c = torture["cases"][name]
    det = HaarDetector()
    gx1, gy1, gx2, gy2 = c.face_box
    hits = 0
    for fr in iter_frames(c.path, [(1.0, 1.2)], FPS, width=640):
        for d in det.detect([fr.image])[0]:
            x1, y1, x2, y2 = (d[:4] * fr.scale).tolist()
            ix = max(0, min(x2, gx2) - max(x1, gx1)) * max(0, min(y2, gy2) - max(y1, gy1))
            iou = ix / ((x2 - x1) * (y2 - y1) + (gx2 - gx1) * (gy2 - gy1) - ix)
            if iou > 0.5:
                hits += 1
    assert hits >= 4, (name, hits)


@pytest.mark.parametrize("name", ["rot90.mp4", "rot180.mp4", "rot270.mp4"])
def test_rotation_matches_ffmpegs_own_display(torture, name):
    """The independent reference for 'as shown': ffmpeg's CLI applies the display matrix."""
    from mikupal.media import VideoReader

    c = torture["cases"][name]
    w, h = c.size
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(c.path), "-frames:v", "40", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    ref = {read_code(f): f for f in np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)}
    with VideoReader(c.path) as r:
        img, _ = r.frame_at(1.0)
    assert img.shape == (h, w, 3)
    assert np.abs(img.astype(int) - ref[read_code(img)].astype(int)).mean() < 3.0


def test_audio_track_choice_default_index_and_language(torture):
    from mikupal.media import MediaError, decode_span

    c = torture["cases"]["two_tracks.mp4"]
    g, g2 = _g16(torture["g"]), _g16(torture["g2"])

    def source(choice):
        x = decode_span(c.path, 1.0, 2.0, 16000, audio_track=choice)
        return lag_of(x, g, 16000)[1], lag_of(x, g2, 16000)[1]

    for choice, want in (("default", 1), ("1", 1), ("0", 0), ("eng", 0), ("en", 0), ("ja", 1), ("jpn", 1)):
        corr = source(choice)
        assert corr[want] > 0.6 and corr[1 - want] < 0.2, (choice, corr)
    with pytest.raises(MediaError, match=r"two_tracks.mp4.*audio_track"):
        decode_span(c.path, 1.0, 2.0, 16000, audio_track="fr")
    with pytest.raises(MediaError, match=r"audio_track = 5"):
        decode_span(c.path, 1.0, 2.0, 16000, audio_track=5)


def test_surround_downmix_keeps_the_dialogue_channel(torture, tmp_path):
    from mikupal.media import extract_audio, read_audio

    c = torture["cases"]["surround51.mp4"]
    out = extract_audio(c.path, {"m": (tmp_path / "m.wav", 16000, 1), "s": (tmp_path / "s.wav", 44100, 2)})
    x = read_audio(out["m"].path, *SEG)
    ref = _g16(torture["g"])
    lag, corr = lag_of(x, ref, 16000)
    assert corr > 0.6 and abs(lag - SEG[0]) <= FRAME
    seg_ref = ref[int(SEG[0] * 16000): int(SEG[1] * 16000)]
    # libswresample's matrix (centre at -3 dB, then normalised over the 5 channels): ~-10 dB
    assert np.sqrt(np.mean(x ** 2)) > 0.2 * np.sqrt(np.mean(seg_ref ** 2))
    assert out["s"].channels == 2


def test_audio_only_file_vision_says_so_in_one_line(torture):
    from mikupal.stage import StageError
    from mikupal.vision.frames import iter_frames

    c = torture["cases"]["audio_only.m4a"]
    with pytest.raises(StageError) as e:
        list(iter_frames(c.path, [SEG], FPS))
    msg = str(e.value)
    assert "audio_only.m4a" in msg and "no video stream" in msg and "\n" not in msg


def test_added_videos_store_the_displayed_size(torture, tmp_path):
    from mikupal import store
    from mikupal.ingest import add_videos

    db = store.connect(tmp_path / "p.db")
    cs = torture["cases"]
    rep = add_videos(db, [cs["rot90.mp4"].path, cs["anamorphic.mkv"].path, cs["audio_only.m4a"].path])
    assert not rep.failed, rep.failed
    rows = {Path(r["path"]).name: r for r in store.rows(db, "SELECT * FROM videos")}
    assert (rows["rot90.mp4"]["width"], rows["rot90.mp4"]["height"]) == (320, 240)  # stored 240x320
    assert (rows["anamorphic.mkv"]["width"], rows["anamorphic.mkv"]["height"]) == (320, 240)
    assert rows["audio_only.m4a"]["has_video"] == 0


def test_parallel_cuts_of_one_segment_share_one_clip(torture, tmp_path):
    """Issue 18: two runs of one segment cut at once must not trip over each other's index."""
    from mikupal.emotion.clips import ClipSpec, cut_clip

    c = torture["cases"]["rot90.mp4"]
    spec = ClipSpec(str(c.path), "x", 1.0, 1.6, crop="full", height=64, fps=5)
    got, errs = [], []

    def cut():
        try:
            got.append(cut_clip(spec, tmp_path / "clips"))
        except Exception as e:  # noqa: BLE001 - the assertion below reports it
            errs.append(e)

    threads = [threading.Thread(target=cut) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errs, errs
    assert len({g.sha for g in got}) == 1 and Path(got[0].path).is_file()
    assert not list((tmp_path / "clips").rglob("*.part*"))


@pytest.mark.gui
def test_player_plays_mpeg_ts_on_the_analysis_clock(torture, qtbot, monkeypatch):
    """VLC times MPEG-TS from its PCR (not the clock the stages use): the player shows the
    exact frames for such a file and says why; other files keep VLC when it is there."""
    monkeypatch.setenv("MIKUPAL_AUDIO", "none")
    monkeypatch.delenv("MIKUPAL_PLAYER", raising=False)
    from mikupal_gui.player import Player

    cs = torture["cases"]
    p = Player()
    qtbot.addWidget(p)
    try:
        p.load(str(cs["offset.ts"].path), (320, 240), 25.0, SEG, [], None)
        assert p.backend == "av" and p.vlc is None
        p.seek(1.5)
        img = p.view.image.convertToFormat(p.view.image.Format.Format_RGB888)
        w, h = img.width(), img.height()
        arr = np.frombuffer(img.constBits(), np.uint8, count=img.bytesPerLine() * h).reshape(h, -1)[:, : w * 3]
        assert read_code(arr.reshape(h, w, 3)) in cs["offset.ts"].expected_codes(1.5)
        if p._vlc_all is not None:  # libVLC installed
            assert "MPEG-TS" in p.view.message and "ffmpeg" in p.view.message
            p.load(str(cs["rot90.mp4"].path), (320, 240), 25.0, SEG, [], None)
            assert p.backend == "vlc" and "MPEG-TS" not in p.view.message
    finally:
        p.shutdown()


def test_a_tilted_display_matrix_is_refused_in_one_line(tmp_path):
    """A picture turned by 45 degrees has no upright version to analyse: `add` says so."""
    import av

    from mikupal import store
    from mikupal.ingest import add_videos

    path = tmp_path / "tilted.mp4"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        vs.set_display_rotation(45)
        a = out.add_stream("aac", rate=RATE)
        for i in range(10):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8), format="rgb24")
            f.pts = i
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        af = av.AudioFrame.from_ndarray(np.zeros((1, RATE // 2), np.float32), format="fltp", layout="mono")
        af.sample_rate, af.pts = RATE, 0
        for p in [*a.encode(af), *a.encode(None)]:
            out.mux(p)
    db = store.connect(tmp_path / "p.db")
    rep = add_videos(db, [path])
    assert not rep.added and len(rep.failed) == 1
    msg = rep.failed[0][1]
    assert "tilted.mp4" in msg and "45 degrees" in msg and "ffmpeg" in msg and "\n" not in msg


def _shown_code(view) -> int:
    img = view.image.convertToFormat(view.image.Format.Format_RGB888)
    w, h = img.width(), img.height()
    arr = np.frombuffer(img.constBits(), np.uint8, count=img.bytesPerLine() * h).reshape(h, -1)[:, : w * 3]
    return read_code(arr.reshape(h, w, 3))


@pytest.mark.gui
@pytest.mark.parametrize("name", ["rot90.mp4", "anamorphic.mkv", "editlist.mp4", "vp9_opus.webm"])
def test_vlc_playback_shows_the_frame_of_its_time(torture, qtbot, monkeypatch, name):
    """While the player plays, every picture shown carries the time its boxes are drawn for:
    the frame code on screen is the ground-truth frame of that time.
    VLC plays these, except the edit-list file (VLC ignores the video's delay after a
    seek), which plays exact PyAV frames."""
    monkeypatch.setenv("MIKUPAL_AUDIO", "none")
    monkeypatch.delenv("MIKUPAL_PLAYER", raising=False)
    from mikupal_gui.player import Player

    c = torture["cases"][name]
    p = Player(context_s=0.0)
    qtbot.addWidget(p)
    try:
        if p.vlc is None:
            pytest.skip("libVLC is not installed (apt install vlc)")
        p.load(str(c.path), c.size, 25.0, SEG, [], None)
        assert p.backend == ("av" if name == "editlist.mp4" else "vlc")
        samples = []
        p.positionChanged.connect(lambda t: samples.append((t, _shown_code(p.view))) if p.playing else None)
        p.play()
        qtbot.waitUntil(lambda: not p.playing, timeout=60000)
        assert len(samples) > 10
        for t, code in samples:
            want = c.expected_codes(t)
            # VLC's pictures are timed by their display instants: under load one may be
            # labelled a frame late; a clock error (TS PCR, edit list) is 12+ frames
            assert min(abs(code - n) for n in want) <= 2, (t, code, want, samples)
    finally:
        p.shutdown()


def test_project_audio_track_reaches_analysis_clip_and_export(torture, tmp_path):
    """[media] audio_track = "ja" is the track the audio stages analyse (its own cached
    rendering), the one the LLM clip carries and the one a mix export renders."""
    from mikupal.audio.stages import audio_paths, ensure_audio
    from mikupal.emotion.clips import AUDIO_RATE, ClipSpec, cut_clip, read_audio
    from mikupal.export.audio import resolve_source
    from mikupal.media import read_audio as read_wav
    from mikupal.project import Project

    c = torture["cases"]["two_tracks.mp4"]
    g, g2 = _g16(torture["g"]), _g16(torture["g2"])
    Project.create(tmp_path / "p")
    default, ja = Project.open(tmp_path / "p"), Project.open(tmp_path / "p", ['media.audio_track="ja"'])
    en = Project.open(tmp_path / "p", ["media.audio_track=0"])
    assert audio_paths(ja, "ab" * 32)["mix16k"] != audio_paths(default, "ab" * 32)["mix16k"]
    for proj, want in ((ja, g2), (en, g)):
        mix = ensure_audio(proj, str(c.path), "ab" * 32 if proj is ja else "cd" * 32, stereo44=False)["mix16k"]
        assert lag_of(read_wav(mix, *SEG), want, 16000)[1] > 0.6
    clip = cut_clip(ClipSpec(str(c.path), "x", *SEG, crop="full", height=64, fps=5, audio_track="0"), tmp_path / "clips")
    lag, corr = lag_of(read_audio(clip.path), g, AUDIO_RATE)
    assert corr > 0.6 and abs(lag - SEG[0]) <= FRAME
    video = {"id": 1, "path": str(c.path), "sha256": "ab" * 32}
    src = resolve_source(ja, None, video, "mix", 24000)  # a non-default track: the stages' rendering
    assert src.path.name == "mix44k.wav"
    from scipy.signal import resample_poly

    x = read_wav(src.path, *SEG)
    x = x.mean(axis=1) if x.ndim > 1 else x
    lag, corr = lag_of(resample_poly(x, 160, 441).astype(np.float32), g2, 16000)
    assert corr > 0.6 and abs(lag - SEG[0]) <= FRAME


@pytest.mark.gui
def test_vlc_plays_the_chosen_audio_track(torture, qtbot, monkeypatch):
    """The reviewer hears the track the stages analysed ([media] audio_track), not VLC's pick."""
    monkeypatch.setenv("MIKUPAL_AUDIO", "none")
    monkeypatch.delenv("MIKUPAL_PLAYER", raising=False)
    from mikupal_gui.player import Player

    c = torture["cases"]["two_tracks.mp4"]
    p = Player(context_s=0.0)
    qtbot.addWidget(p)
    try:
        if p.vlc is None:
            pytest.skip("libVLC is not installed (apt install vlc)")
        p.audio_track = "eng"  # track 0; the file flags track 1 (jpn) as default
        p.load(str(c.path), c.size, 25.0, SEG, [], None)
        assert p._audio_index == 0
        p.play()
        qtbot.waitUntil(lambda: p._track_set, timeout=20000)
        ids = [i for i, _ in p.vlc.mp.audio_get_track_description() if i >= 0]
        qtbot.waitUntil(lambda: p.vlc.mp.audio_get_track() == ids[0], timeout=5000)
    finally:
        p.shutdown()


def test_review_waveform_shows_the_projects_audio_track(torture, tmp_path):
    from mikupal.project import Project
    from mikupal_gui.review import _audio_track
    from mikupal_gui.waveform import load_envelope

    Project.create(tmp_path / "p")
    toml = tmp_path / "p" / "mikupal.toml"
    assert 'audio_track = "default"' in toml.read_text()
    toml.write_text(toml.read_text().replace('audio_track = "default"', 'audio_track = "eng"'))
    track = _audio_track(tmp_path / "p")
    assert track == "eng"
    c = torture["cases"]["two_tracks.mp4"]
    t, lo, hi = load_envelope(c.path, *SEG, bins=400, audio_track=track)
    t2, lo2, hi2 = load_envelope(c.path, *SEG, bins=400)  # the file's default: jpn
    assert abs(t[0] - SEG[0]) < 1e-6 and abs(t[-1] - SEG[1]) < 0.05
    # the envelope is the chosen track's, at its place: the generator's eng noise binned alike
    from scipy.signal import resample_poly

    ref = resample_poly(torture["g"], 1, 6)[int(SEG[0] * 8000): int(SEG[1] * 8000)]
    ref_hi = np.maximum.reduceat(ref, np.linspace(0, len(ref), 401).astype(int)[:-1])
    assert np.corrcoef(hi, ref_hi)[0, 1] > 0.8 and np.corrcoef(hi2, ref_hi)[0, 1] < 0.3


def test_4k_is_read_at_the_analysis_size_with_boxes_in_4k_pixels(tmp_path):
    """A 4K frame comes out at the analysis width (libswscale scales it as it converts) and
    a box found there maps back onto the face in the 4K picture."""
    from mikupal.vision.faces import HaarDetector
    from mikupal.vision.frames import iter_frames

    shown, box = displayed_frames(3840, 2160, 8, face_scale=6.0)
    path = tmp_path / "uhd.mkv"
    write_source(path, shown, noise(8 / FPS, 3))
    del shown
    frames = list(iter_frames(path, [(0.0, 0.2)], FPS, width=640))
    assert len(frames) == 6 and frames[0].image.shape == (360, 640, 3) and frames[0].scale == 6.0
    dets = HaarDetector().detect([frames[2].image])[0]
    gx1, gy1, gx2, gy2 = box
    cx, cy = [(d[0] + d[2]) / 2 * frames[2].scale for d in dets], [(d[1] + d[3]) / 2 * frames[2].scale for d in dets]
    assert any(gx1 <= x <= gx2 and gy1 <= y <= gy2 for x, y in zip(cx, cy)), (dets, box)

"""Sidecar subtitles: SRT (BOM, overlapping cues, markup), WebVTT, MELD CSV, and the asr stage importing them."""
from __future__ import annotations

import pytest

from audio_fixtures import run_stages, add_video, audio_models_dir, audio_project, speech_scene, write_video  # noqa: F401
from mikupal import store

from mikupal.audio.subtitles import (SubtitleError, find_sidecar, parse_meld_csv, parse_srt, parse_time, parse_vtt,
                                      read_sidecar)

SRT = ("\ufeff1\r\n00:00:01,000 --> 00:00:04,500\r\n<i>Hello</i> there,\r\nhow are you?\r\n\r\n"
       "2\r\n00:00:03,800 --> 00:00:06,000\r\n{\\an8}- I'm fine.\r\n\r\n"
       "3\r\n00:00:07,250 --> 00:00:07,250\r\nzero length\r\n\r\n"
       "4\r\n00:01:02,5 --> 01:00:00,000\r\nLate.\r\n")

VTT = """WEBVTT - made by hand

NOTE this block is a comment
--> not a cue

intro
00:01.000 --> 00:02.500 align:start position:10%
<v Roger Bingham>We are in New York City

00:00:03.000 --> 00:00:05.000
<c.yellow>Second</c> cue
"""


def test_srt_with_bom_overlap_and_markup(tmp_path):
    p = tmp_path / "a.srt"
    p.write_bytes(SRT.encode("utf-8"))
    cues = parse_srt(p)
    assert [(c.start_s, c.end_s, c.text) for c in cues] == [
        (1.0, 4.5, "Hello there, how are you?"),
        (3.8, 6.0, "- I'm fine."),  # overlapping cue kept as its own row
        (62.5, 3600.0, "Late."),
    ]


def test_vtt(tmp_path):
    p = tmp_path / "a.vtt"
    p.write_text("\ufeff" + VTT, encoding="utf-8")
    cues = parse_vtt(p)
    assert [(c.start_s, c.end_s, c.text, c.speaker) for c in cues] == [
        (1.0, 2.5, "We are in New York City", "Roger Bingham"), (3.0, 5.0, "Second cue", None)]
    bad = tmp_path / "b.vtt"
    bad.write_text("00:01.000 --> 00:02.000\nx\n")
    with pytest.raises(SubtitleError, match="WEBVTT"):
        parse_vtt(bad)


def test_bad_time_names_file_and_line(tmp_path):
    p = tmp_path / "bad.srt"
    p.write_text("1\n00:00:01,000 --> 00:0x:02,000\nhi\n")
    with pytest.raises(SubtitleError) as e:
        parse_srt(p)
    assert f"{p}:2:" in str(e.value)


def test_meld_csv(tmp_path):
    csv_text = ("Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
                "1,\"Oh my God, he\u0092s lost it.\",Phoebe,surprise,negative,0,0,4,7,\"00:20:57,256\",\"00:21:00,049\"\n"
                "2,Okay.,Monica,neutral,neutral,0,1,4,7,\"00:21:00,100\",\"00:21:01,000\"\n")
    p = tmp_path / "dev_sent_emo.csv"
    p.write_text(csv_text, encoding="utf-8")
    all_rows = parse_meld_csv(p)
    assert [c.text for c in all_rows] == ["Oh my God, he's lost it.", "Okay."]
    assert all_rows[0].start_s == pytest.approx(1257.256) and all_rows[0].speaker == "Phoebe"
    one = parse_meld_csv(p, "dia0_utt0")  # a MELD clip: times relative to the clip
    assert [(c.start_s, c.end_s) for c in one] == [(0.0, 2.793)]
    video = tmp_path / "dia0_utt1.mp4"
    video.write_bytes(b"")
    assert find_sidecar(video) == p
    assert [c.text for c in read_sidecar(p, video)] == ["Okay."]
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SubtitleError, match="StartTime"):
        parse_meld_csv(tmp_path / "x.csv")


def test_parse_time_forms():
    assert parse_time("00:01:02,500") == 62.5
    assert parse_time("01:02.5") == 62.5
    assert parse_time("1:02:03.250") == 3723.25


def test_find_sidecar_prefers_same_stem(tmp_path):
    v = tmp_path / "clip.mkv"
    v.write_bytes(b"")
    assert find_sidecar(v) is None
    (tmp_path / "clip.en.vtt").write_text("WEBVTT\n")
    assert find_sidecar(v) == tmp_path / "clip.en.vtt"
    (tmp_path / "clip.srt").write_text("")
    assert find_sidecar(v) == tmp_path / "clip.srt"


def test_asr_stage_imports_subtitles(tmp_path, audio_project):
    mix, _, truth = speech_scene(["hello there how are you doing today", "please pass me the salt"], 48000)
    video = write_video(tmp_path / "talk.mp4", mix, 48000)
    lines = []
    for i, (s, e, text) in enumerate(truth, 1):
        ts = lambda t: f"{int(t // 3600):02d}:{int(t % 3600 // 60):02d}:{int(t % 60):02d},{int(round(t % 1 * 1000)) % 1000:03d}"
        lines.append(f"{i}\n{ts(s)} --> {ts(e)}\n{text}\n")
    (tmp_path / "talk.srt").write_text("\ufeff" + "\n".join(lines), encoding="utf-8")
    vid = add_video(audio_project, video)
    audio_project.config["separate"]["model"] = "none"
    audio_project.config["asr"].update(source="subtitles", model="no-such-model", language="en")
    summary = run_stages(audio_project, ["separate", "vad", "asr"])
    assert summary["asr"] == {"done": 1, "failed": 0}  # no Whisper needed, none loaded
    db = audio_project.db()
    rows = store.rows(db, "SELECT start_s, end_s, text, source, language FROM transcripts WHERE video_id=? ORDER BY start_s",
                      (vid,))
    assert [r["text"] for r in rows] == [t for _, _, t in truth]
    assert all(r["source"] == "subtitles" and r["language"] == "en" for r in rows)
    assert rows[0]["start_s"] == pytest.approx(truth[0][0], abs=0.002)
    assert store.get_stage_state(db, vid, "asr")["info"]["sidecar"] == str(tmp_path / "talk.srt")


def test_subtitles_source_without_sidecar_fails_that_video(tmp_path, audio_project):
    mix, _, _ = speech_scene(["hello there"], 48000)
    video = write_video(tmp_path / "nosub.mp4", mix, 48000)
    add_video(audio_project, video)
    audio_project.config["separate"]["model"] = "none"
    audio_project.config["asr"]["source"] = "subtitles"
    assert run_stages(audio_project, ["separate", "vad", "asr"])["asr"] == {"done": 0, "failed": 1}
    msg = store.rows(audio_project.db(), "SELECT message FROM errors WHERE stage='asr'")[0]["message"]
    assert str(video) in msg and ".srt" in msg

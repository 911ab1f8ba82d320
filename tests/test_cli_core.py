"""`mikupal init/add/status/--help` as a user runs them (subprocess, real files)."""
import json
import random
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

MIKUPAL = [sys.executable, "-m", "mikupal.cli"]


def run(*args, check=True):
    r = subprocess.run([*MIKUPAL, *map(str, args)], capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def _video_without_audio(path: Path):
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(25):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 10, np.uint8), format="rgb24")
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)


def test_help_reads_well():
    r = run("--help")
    for cmd in ("init", "add", "status", "demo", "gui"):
        assert cmd in r.stdout
    for cmd in ("init", "add", "status", "demo"):
        sub = run(cmd, "--help")
        assert "Usage" in sub.stdout and "Traceback" not in sub.stderr
    assert run("--version").stdout.startswith("mikupal ")


def test_add_is_idempotent_and_bad_files_are_recorded(tmp_path, demo_clip):
    proj = tmp_path / "p"
    run("init", proj)
    media = tmp_path / "media"
    (media / "sub").mkdir(parents=True)
    good = media / "sub" / "good.mp4"
    good.write_bytes(demo_clip.path.read_bytes())
    (media / "empty.mp4").write_bytes(b"")
    (media / "corrupt.mp4").write_bytes(random.Random(0).randbytes(4096))  # fixed bytes: urandom now and then looks like a stream
    _video_without_audio(media / "silent_film.mp4")

    r = run("add", proj, media, check=False)
    assert r.returncode == 2
    err_lines = [l for l in r.stderr.splitlines() if l.strip()]
    # One line per bad file, naming it; no traceback.
    assert len(err_lines) == 3 and "Traceback" not in r.stderr
    assert any("empty.mp4" in l and "empty file" in l for l in err_lines)
    assert any("corrupt.mp4" in l and "not a readable video" in l for l in err_lines)
    assert any("silent_film.mp4" in l and "no audio track" in l for l in err_lines)
    assert "1 added" in r.stdout

    # Same content again (a copy under another name): nothing new.
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(good.read_bytes())
    r2 = run("add", proj, good, copy)
    assert "0 added, 2 already present" in r2.stdout

    st = json.loads(run("status", proj, "--json").stdout)
    assert st["counts"]["videos"] == 1
    assert st["counts"]["errors"] == 3
    assert abs(st["total_duration_s"] - demo_clip.duration_s) < 0.2
    assert {e["stage"] for e in st["recent_errors"]} == {"add"}
    human = run("status", proj).stdout
    assert "videos 1" in human and "corrupt.mp4" in human


def test_user_mistakes_are_one_line_exit_2(tmp_path):
    r = run("status", tmp_path / "nowhere", check=False)
    assert r.returncode == 2 and "mikupal init" in r.stderr and "Traceback" not in r.stderr
    run("init", tmp_path / "p")
    r = run("init", tmp_path / "p", check=False)
    assert r.returncode == 2 and "already a MIKU-PAL project" in r.stderr


def test_demo_headless_builds_project(tmp_path):
    r = run("demo", tmp_path / "demo", "--no-gui")
    assert (tmp_path / "demo" / "project.db").exists()
    st = json.loads(run("status", tmp_path / "demo", "--json").stdout)
    assert st["counts"]["videos"] == 1
    # The demo runs the whole pipeline: the subtitle lines become segments, each labeled.
    assert st["counts"]["segments"] >= 2
    assert st["counts"]["annotations"] >= st["segments_ok"] >= 2
    assert st["counts"]["errors"] == 0
    assert all(s["pending"] == 0 and s["failed"] == 0 for s in st["stages"].values())
    assert "run 1 finished" in r.stdout or "run 1 done" in r.stdout, r.stdout
    # A second demo reuses the project and has nothing left to do.
    r2 = run("demo", tmp_path / "demo", "--no-gui")
    assert "using existing demo project" in r2.stdout

"""`mikupal eval`, `status` and `review-stats` stay readable in an 80-column terminal (a real
pseudo-terminal) and in a CI log (a pipe): no line wider than 80 columns, no value cut off
with an ellipsis, long model and rater names whole."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

import pytest
from eval_fixture import MELD_CSV, add_annotation, add_review, meld_project

LONG_MODEL = "a-very-long-model-name-from-some-provider-2026-preview-experimental"
LONG_RATER = "rater-with-an-unusually-long-name-for-a-table-column@example.org"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture()
def proj(project, tmp_path):
    db = project.db()
    ids = meld_project(db)
    for stem, seg in ids["segments"].items():
        add_annotation(db, seg, "Joy", 0.9, model=LONG_MODEL)
    for (stem, run), ann in ids["annotations"].items():
        if run == 0:
            add_review(db, ann, LONG_RATER, "accept" if stem != "dia1_utt2" else "reject")
            add_review(db, ann, "r2", "accept")
    db.conn.close()
    labels = tmp_path / "test_sent_emo.csv"
    labels.write_text(MELD_CSV, encoding="utf-8")
    return project, labels


def _commands(project, labels, out):
    return {
        "eval": ["eval", str(project.root), "--dataset", "meld", "--labels", str(labels), "--out", str(out)],
        "status": ["status", str(project.root)],
        "review-stats": ["review-stats", str(project.root)],
    }


def _in_log(args) -> str:
    """As CI sees it: stdout is a pipe, COLUMNS unset."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    r = subprocess.run([sys.executable, "-m", "mikupal.cli", *args], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _in_terminal(args, columns: int = 80) -> str:
    """In a pseudo-terminal `columns` wide (what a person in an 80-column window sees)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm"
    p = subprocess.Popen([sys.executable, "-m", "mikupal.cli", *args], stdin=slave, stdout=slave, stderr=slave,
                         env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 300)
        if not ready:
            p.kill()
            raise AssertionError("no output for 300 s")
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert p.wait(timeout=60) == 0
    return ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r", "")


@pytest.mark.parametrize("where", ["log", "terminal"])
def test_tables_fit_80_columns_and_lose_nothing(proj, tmp_path, where):
    project, labels = proj
    out = tmp_path / "eval"
    for name, args in _commands(project, labels, out).items():
        text = _in_log(args) if where == "log" else _in_terminal(args)
        lines = text.splitlines()
        assert lines, name
        too_wide = [line for line in lines if len(line) > 80]
        assert not too_wide, (name, too_wide)
        assert "…" not in text, (name, text)
        if name == "eval":
            assert LONG_MODEL in text and "gemini-test" in text and "always-joy" in text
            result = json.loads((out / "eval.json").read_text())
            for i, s in enumerate(result["systems"], 1):
                row = next(line for line in lines if line.split()[:1] == [str(i)])
                assert f"{100 * s['metrics']['accuracy']:.1f}" in row.split(), (row, s["model"])
                assert f"{100 * s['metrics']['balanced_accuracy']:.1f}" in row.split()
        if name == "review-stats":
            start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["rater", "accepted"])
            end = next(i for i in range(start + 1, len(lines)) if not lines[i].strip())
            first_column = "".join(line.split()[0] for line in lines[start + 2:end])
            assert LONG_RATER in first_column  # folded over several lines, never cut
        if name == "status":
            assert any(line.startswith("cost $") for line in lines)

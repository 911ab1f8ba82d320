"""Project safety through the real `mikupal` commands in child processes: one run owns a
project (two at once never pay twice; a kill -9'd holder's lock is taken over), a damaged
project.db is refused in one line and left byte-for-byte unchanged, `repair` recovers it,
backups are made and restored, and config ranges are checked.

The emotion stage is the real one with the real google-genai client against the local
Gemini test server; the video stages run offline on the synthetic demo clip.
"""
from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mikupal import backup, store
from mikupal.project import Project
from mikupal.project_lock import RunLock, holder

from gemini_server import GeminiServer
from waiting import wait_until

KEY = "AIzaSy-test-key-for-the-local-server"
VIDEO_STAGES = ["separate", "vad", "asr", "segments", "faces", "asd"]
RUNS = 2
EMOTION = ["--stages", "emotion", "--backend", "gemini", "--model", "gemini-test-flash", "--runs", str(RUNS),
           "--set", "emotion.concurrency=2", "-q"]


def mikupal(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "mikupal.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def start(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "mikupal.cli", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class GatedGemini(GeminiServer):
    """Answers only once `gate` is set: a run stays in the middle of its requests for as long
    as the test needs (no sleeps, no timing)."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.held = 0  # requests waiting at the gate

    def next_reply(self):
        with self.lock:
            self.held += 1
        self.gate.wait(300)
        return super().next_reply()

    def paid(self) -> int:
        return self.count("POST", ":generateContent")


@pytest.fixture(scope="module")
def segmented(tmp_path_factory, demo_clip):
    """A project whose video stages are done (the demo clip, offline settings)."""
    from mikupal.demo_project import DEMO_SETTINGS, _apply_settings
    from mikupal.ingest import add_videos
    from mikupal.runner import Runner

    root = tmp_path_factory.mktemp("seg") / "seg project"
    os.environ.setdefault("MIKUPAL_MODELS_DIR", str(root.parent / "models"))
    p = Project.create(root)
    _apply_settings(p.root / "mikupal.toml", DEMO_SETTINGS)
    p = Project.open(p.root)
    clip = root.parent / "talk.mp4"
    clip.write_bytes(demo_clip.path.read_bytes())
    clip.with_suffix(".srt").write_bytes(demo_clip.srt_path.read_bytes())
    db = p.db()
    add_videos(db, [clip])
    assert Runner(p, VIDEO_STAGES).run().ok
    db.conn.close()
    return p.root


@pytest.fixture()
def proj(segmented, tmp_path):
    root = tmp_path / "my project"
    shutil.copytree(segmented, root)
    for stale in root.glob("project.db-*"):
        stale.unlink()
    shutil.rmtree(root / "backups", ignore_errors=True)
    return root


def kept_segments(root: Path) -> list[int]:
    c = sqlite3.connect(root / "project.db")
    try:
        return [r[0] for r in c.execute("SELECT id FROM segments WHERE status='ok' ORDER BY id")]
    finally:
        c.close()


def answers(root: Path):
    c = sqlite3.connect(root / "project.db")
    try:
        return c.execute("SELECT segment_id, run_index, COUNT(*) FROM annotations GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
    finally:
        c.close()


def gemini_env(server) -> dict:
    return {**os.environ, "GEMINI_API_KEY": KEY, "MIKUPAL_GEMINI_BASE_URL": server.url}


# ---- one run owns the project ------------------------------------------------------------------

def test_two_runs_at_once_pay_once_per_segment_and_run(proj):
    kept = kept_segments(proj)
    assert len(kept) >= 3
    n_runs = len(sqlite3.connect(proj / "project.db").execute("SELECT id FROM runs").fetchall())
    server = GatedGemini()
    env = gemini_env(server)
    first = waiting = None
    try:
        first = start("run", proj, *EMOTION, env=env)
        wait_until(lambda: (h := holder(proj)) is not None and h.pid == first.pid, what="the first run to hold the lock")
        wait_until(lambda: server.held > 0, what="the first run's requests")
        # A second run (as from a second terminal, or Start in the app) is refused at once.
        second = mikupal("run", proj, *EMOTION, env=env)
        assert second.returncode == 2
        line = second.stderr.strip()
        assert "\n" not in line and "already holds this project" in line
        assert f"pid {first.pid} on " in line and " since " in line and "--wait" in line
        # A third one waits for the first, then finds nothing left to do.
        waiting = start("run", proj, *EMOTION, "--wait", env=env)
        told = waiting.stderr.readline()
        assert "waiting for the run that holds" in told and f"pid {first.pid}" in told
        assert first.poll() is None and waiting.poll() is None
        server.gate.set()
        assert first.wait(300) == 0, first.stderr.read()
        assert waiting.wait(300) == 0, waiting.stderr.read()
    finally:
        server.gate.set()
        for p in (first, waiting):
            if p is not None and p.poll() is None:
                p.kill()
        server.close()
    assert answers(proj) == [(sid, i, 1) for sid in kept for i in range(RUNS)]
    assert server.paid() == len(kept) * RUNS           # exactly one request paid per (segment, run)
    st = mikupal("status", proj, "--json")
    assert st.returncode == 0
    c = sqlite3.connect(proj / "project.db")
    runs = c.execute("SELECT status FROM runs ORDER BY id").fetchall()[n_runs:]
    assert runs == [("finished",), ("finished",)]      # the refused run never opened a run row
    c.close()
    assert holder(proj) is None


def test_kill_9_of_the_lock_holder_then_a_new_run_proceeds(proj):
    kept = kept_segments(proj)
    server = GatedGemini()
    env = gemini_env(server)
    victim = None
    try:
        victim = start("run", proj, *EMOTION, env=env)
        wait_until(lambda: (h := holder(proj)) is not None and h.pid == victim.pid, what="the run to hold the lock")
        wait_until(lambda: server.held > 0, what="requests in flight")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(60)
        assert RunLock(proj).holder().pid == victim.pid          # its record is still in run.lock ...
        server.gate.set()
        after = mikupal("run", proj, *EMOTION, env=env)           # ... but the lock is free: taken over
        assert after.returncode == 0, after.stderr
        assert f"took over the lock of a run that is gone (pid {victim.pid} on " in after.stderr
    finally:
        server.gate.set()
        if victim is not None and victim.poll() is None:
            victim.kill()
        server.close()
    assert answers(proj) == [(sid, i, 1) for sid in kept for i in range(RUNS)]
    # Only what was in flight at the kill (at most the concurrency) was asked twice.
    assert len(kept) * RUNS <= server.paid() <= len(kept) * RUNS + 2
    st = mikupal("status", proj)
    assert "interrupted" in st.stdout
    assert holder(proj) is None


def test_the_lock_is_one_per_project_and_names_its_holder(tmp_path):
    from mikupal.project_lock import ProjectLocked

    Project.create(tmp_path / "p")
    a = RunLock(tmp_path / "p").acquire()
    try:
        with pytest.raises(ProjectLocked) as e:
            RunLock(tmp_path / "p").acquire()        # a second thread of this process is refused too
        assert e.value.holder.pid == os.getpid() and e.value.holder.host
        assert holder(tmp_path / "p").pid == os.getpid()
        # Readers and review writes go on: the lock is not an SQLite lock.
        db = store.connect(tmp_path / "p" / "project.db")
        db.conn.execute("INSERT INTO raters (name) VALUES ('alice')")
        assert db.conn.execute("SELECT COUNT(*) FROM raters").fetchone()[0] == 1
        db.conn.close()
    finally:
        a.release()
    assert holder(tmp_path / "p") is None
    RunLock(tmp_path / "p").acquire().release()


# ---- damaged files -------------------------------------------------------------------------------

def _page_of(db: Path, name: str) -> int:
    c = sqlite3.connect(db)
    try:
        return c.execute("SELECT pageno FROM dbstat WHERE name=? ORDER BY pageno DESC LIMIT 1", (name,)).fetchone()[0]
    finally:
        c.close()


def damage(db: Path, kind: str) -> None:
    """Damage project.db (checkpointed, no -wal) as a crash or a bad disk would."""
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    if kind == "truncated":
        data = data[: len(data) // 2]
    elif kind == "header":
        data[:100] = bytes(range(100))
    else:  # a page of garbage inside an index or a table
        n = _page_of(db, "annotations_segment" if kind == "index-page" else "annotations")
        data[(n - 1) * page: n * page] = (b"garbage!" * (page // 8))
    db.write_bytes(bytes(data))


@pytest.fixture()
def labelled(proj, tmp_path):
    """proj with answers (baseline annotator) and a review; a backup made before the review."""
    r = mikupal("run", proj, "--stages", "emotion", "-q")
    assert r.returncode == 0, r.stderr
    b = mikupal("backup", proj)
    assert b.returncode == 0, b.stderr
    db = store.connect(proj / "project.db")
    rid = db.conn.execute("INSERT INTO raters (name) VALUES ('alice')").lastrowid
    aid = db.conn.execute("SELECT MIN(id) FROM annotations").fetchone()[0]
    db.conn.execute("INSERT INTO reviews (annotation_id, rater_id, verdict, created_at) VALUES (?,?,'accept','t')",
                    (aid, rid))
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.conn.close()
    return proj


def _counts(db: Path) -> dict:
    return backup.counts(db)


@pytest.mark.parametrize("kind", ["truncated", "header", "index-page", "table-page"])
def test_a_damaged_project_db_is_refused_in_one_line_and_repaired(labelled, kind, tmp_path):
    root = labelled
    db = root / "project.db"
    before = _counts(db)
    backup_counts = _counts(next((root / "backups").glob("manual-*.db")))
    assert before["reviews"] == backup_counts["reviews"] + 1
    damage(db, kind)
    digest = sha(db)
    out = tmp_path / "export"
    for args in (["status", root], ["run", root, "--stages", "emotion"], ["export", root, out, "--format", "jsonl"],
                 ["backup", root]):
        r = mikupal(*args)
        assert r.returncode != 0, (args, r.stdout)
        line = r.stderr.strip()
        assert "\n" not in line, (args, r.stderr)
        assert f"{db} is damaged" in line and f"mikupal repair {shlex.quote(str(root))}" in line, line
        assert sha(db) == digest, f"{args[0]} changed the damaged file"
    assert not out.exists()
    gui = subprocess.run([sys.executable, "-c", "import sys; from mikupal_gui.launcher import main; "
                          "sys.argv = ['mikupal', 'gui', sys.argv[1]]; main()", str(root)],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert gui.returncode != 0 and "\n" not in gui.stderr.strip() and "is damaged" in gui.stderr
    assert sha(db) == digest

    r = mikupal("repair", root)
    assert r.returncode == 0, r.stderr
    kept = next((root / "backups").glob("damaged-*/project.db"))
    assert sha(kept) == digest                      # the damaged file is kept aside, as it was
    after = _counts(db)
    if kind == "index-page":                        # every row is in the tables: all recovered
        assert after == before and "recovered with" in r.stdout
    elif kind == "table-page":                      # the rows on the garbage page are lost, no more
        assert "recovered with" in r.stdout
        assert 0 < after["annotations"] < before["annotations"]
        assert {k: v for k, v in after.items() if k != "annotations"} == \
            {k: v for k, v in before.items() if k != "annotations"}
    elif kind == "header":                          # nothing readable: the newest good backup
        assert "restored from backup manual-" in r.stdout
        assert after == backup_counts
    else:  # truncated: what survived, or the backup, whichever keeps more rows; never invented rows
        assert sum(after.values()) >= sum(backup_counts.values())
        assert all(after[t] <= before[t] for t in before)
    assert backup.is_good(db)
    assert mikupal("status", root).returncode == 0
    assert mikupal("repair", root).stdout.startswith(f"{db} is healthy")


def test_repair_without_anything_to_recover_says_so_and_changes_nothing(tmp_path):
    from mikupal.project_lock import OpenHold

    root = tmp_path / "p"
    Project.create(root)
    damage(root / "project.db", "header")
    digest = sha(root / "project.db")
    hold = OpenHold(root).acquire()                  # the app has the project open
    r = mikupal("repair", root)
    hold.release()
    assert r.returncode == 2 and "is open in the app; close it there first" in r.stderr
    assert sha(root / "project.db") == digest
    r = mikupal("repair", root)
    assert r.returncode == 1 and "nothing could be recovered" in r.stderr and "\n" not in r.stderr.strip()
    assert sha(root / "project.db") == digest


# ---- backups ---------------------------------------------------------------------------------------

def test_backup_and_restore_while_a_reader_keeps_its_connection(tmp_path):
    root = tmp_path / "p"
    Project.create(root)
    db = store.connect(root / "project.db")
    db.conn.execute("INSERT INTO raters (name) VALUES ('alice')")
    r = mikupal("backup", root)
    assert r.returncode == 0, r.stderr
    made = Path(r.stdout.strip().split(" to ", 1)[1])
    assert made.parent == root / "backups" and backup.is_good(made)
    db.conn.execute("INSERT INTO raters (name) VALUES ('bob')")
    listing = mikupal("restore", root, "--list")
    assert made.name in listing.stdout and " ok" in listing.stdout
    r = mikupal("restore", root)
    assert r.returncode == 0, r.stderr
    # The open connection (a review session) sees the restored data; the file is sound.
    assert [n for (n,) in db.conn.execute("SELECT name FROM raters")] == ["alice"]
    assert db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    replaced = next((root / "backups").glob("before-restore-*.db"))
    c = sqlite3.connect(replaced)
    assert [n for (n,) in c.execute("SELECT name FROM raters ORDER BY id")] == ["alice", "bob"]
    c.close()
    db.conn.close()


def test_automatic_backups_rotate_and_spare_the_users_own(tmp_path):
    root = tmp_path / "p"
    Project.create(root)
    mine = backup.manual_backup(root)
    db = store.connect(root / "project.db")
    made = []
    for i in range(backup.KEEP_AUTO + 3):
        db.conn.execute("INSERT INTO raters (name) VALUES (?)", (f"r{i}",))
        made.append(backup.auto_backup(root / "project.db", "run-start"))
    left = sorted(p.name for p in (root / "backups").glob("auto-*.db"))
    assert left == sorted(p.name for p in made[-backup.KEEP_AUTO:])
    assert mine.exists()
    # Nothing written since the newest one (a run with nothing to do): no new copy pushes out an older one.
    assert backup.auto_backup(root / "project.db", "run-end") is None
    c = sqlite3.connect(made[-1])
    assert c.execute("SELECT COUNT(*) FROM raters").fetchone()[0] == backup.KEEP_AUTO + 3
    c.close()
    db.conn.close()


def test_a_migration_backs_up_the_old_file_first(tmp_path):
    path = tmp_path / "project.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    for v in (1, 2):                                    # an older project: schema version 2
        for stmt in store.MIGRATIONS[v - 1]:
            conn.execute(stmt)
        conn.execute("INSERT INTO schema_version VALUES (?, 't')", (v,))
    conn.execute("INSERT INTO raters (name) VALUES ('alice')")
    conn.close()
    store.connect(path).conn.close()
    (made,) = (tmp_path / "backups").glob(f"auto-*-before-v{store.CURRENT_VERSION}.db")
    c = sqlite3.connect(made)
    assert c.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 2
    assert c.execute("SELECT name FROM raters").fetchall() == [("alice",)]
    c.close()


# ---- small things -----------------------------------------------------------------------------------

def test_out_of_range_settings_are_refused_with_the_fix(proj):
    r = mikupal("run", proj, "--set", "clips.height=0")
    assert r.returncode == 2
    assert r.stderr.strip() == ("mikupal: --set clips.height=0: clips.height = 0 is out of range; use a value from "
                                "32 to 4320, e.g. --set clips.height=360 (the default)")


def test_failed_items_name_their_reason_on_the_last_stderr_line(proj):
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    r = mikupal("run", proj, "--stages", "emotion", "--backend", "gemini", "-q", env=env)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert "item(s) failed" in last and "GEMINI_API_KEY" in last, r.stderr
    assert f"mikupal status {shlex.quote(str(proj))}" in last


def test_init_prints_a_next_command_that_survives_spaces(tmp_path):
    where = tmp_path / "a folder with spaces"
    r = mikupal("init", where)
    assert r.returncode == 0
    nxt = [ln for ln in r.stdout.splitlines() if ln.startswith("next: ")][0]
    assert shlex.split(nxt[len("next: "):])[:3] == ["mikupal", "add", str(where)]


def test_status_probing_the_lock_never_makes_a_run_fail(tmp_path):
    # `holder()` (status, the app) tests the OS lock; a run starting at that moment must still
    # get the project, and the probe must not leave its own record behind. The prober says when
    # it is probing and goes on until it is killed, so every acquire below overlaps its probes
    # however the two processes are scheduled.
    Project.create(tmp_path / "p")
    RunLock(tmp_path / "p").acquire().release()  # run.lock exists, free
    code = ("import sys; from mikupal.project_lock import holder\n"
            "holder(sys.argv[1]); print('probing', flush=True)\n"
            "while True:\n"
            "    holder(sys.argv[1])\n")
    prober = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "p")], stdout=subprocess.PIPE, text=True)
    try:
        assert prober.stdout.readline() == "probing\n", "the prober did not start"
        for _ in range(1000):
            lock = RunLock(tmp_path / "p").acquire()      # no ProjectLocked from a probe
            assert holder(tmp_path / "p").pid == os.getpid()
            lock.release()
        assert prober.poll() is None, "the prober died"
    finally:
        prober.kill()
        prober.wait(30)
    assert holder(tmp_path / "p") is None

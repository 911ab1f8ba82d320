"""The project database: schema, forward migrations and small shared queries.

The schema is public (README "project.db schema"): add columns freely, never rename the
documented ones. Every connection runs in WAL mode with foreign keys on, so the GUI, the
CLI and a running pipeline can share one file; writers keep transactions short.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

import sqlite_utils

SCHEMA_VERSION_TABLE = "schema_version"

# Each migration is a list of SQL statements applied in one transaction. Append only.
MIGRATIONS: list[list[str]] = [
    # 1: the public schema
    [
        """CREATE TABLE videos (
            id INTEGER PRIMARY KEY,
            sha256 TEXT NOT NULL UNIQUE,
            path TEXT NOT NULL,
            duration_s REAL,
            fps REAL,
            width INTEGER,
            height INTEGER,
            has_audio INTEGER NOT NULL DEFAULT 0,
            has_video INTEGER NOT NULL DEFAULT 0,
            audio_rate INTEGER,
            audio_channels INTEGER,
            size_bytes INTEGER,
            added_at TEXT NOT NULL
        )""",
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL DEFAULT 'running',
            config_json TEXT NOT NULL DEFAULT '{}',
            stages TEXT,
            log_path TEXT
        )""",
        # Which stage finished for which video, under which cache key (resume + invalidation).
        """CREATE TABLE stage_state (
            video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
            stage TEXT NOT NULL,
            status TEXT NOT NULL,
            cache_key TEXT,
            info_json TEXT NOT NULL DEFAULT '{}',
            run_id INTEGER REFERENCES runs(id),
            updated_at TEXT NOT NULL,
            PRIMARY KEY (video_id, stage)
        )""",
        # Raw transcription units (Whisper segments or subtitle cues) before utterance building.
        """CREATE TABLE transcripts (
            id INTEGER PRIMARY KEY,
            video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
            start_s REAL NOT NULL,
            end_s REAL NOT NULL,
            text TEXT NOT NULL,
            words_json TEXT,
            language TEXT,
            source TEXT NOT NULL,
            avg_logprob REAL,
            no_speech_prob REAL,
            compression_ratio REAL,
            dropped TEXT
        )""",
        """CREATE TABLE segments (
            id INTEGER PRIMARY KEY,
            video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
            start_s REAL NOT NULL,
            end_s REAL NOT NULL,
            text TEXT,
            words_json TEXT,
            language TEXT,
            snr_db REAL,
            speaker_track_id INTEGER REFERENCES tracks(id) ON DELETE SET NULL,
            speaker_bbox_json TEXT,
            asd_score REAL,
            status TEXT NOT NULL DEFAULT 'ok',
            clip_path TEXT,
            clip_sha TEXT
        )""",
        """CREATE TABLE tracks (
            id INTEGER PRIMARY KEY,
            video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
            start_s REAL NOT NULL,
            end_s REAL NOT NULL,
            boxes_json TEXT NOT NULL
        )""",
        """CREATE TABLE annotations (
            id INTEGER PRIMARY KEY,
            segment_id INTEGER NOT NULL REFERENCES segments(id) ON DELETE CASCADE,
            run_id INTEGER REFERENCES runs(id),
            backend TEXT NOT NULL,
            model TEXT NOT NULL,
            prompt_sha TEXT NOT NULL,
            run_index INTEGER NOT NULL DEFAULT 0,
            label_set TEXT NOT NULL,
            primary_emotion TEXT NOT NULL,
            intensities_json TEXT NOT NULL,
            rationale TEXT,
            visual_analysis TEXT,
            audio_analysis TEXT,
            text_analysis TEXT,
            raw_response TEXT,
            input_tokens INTEGER,
            output_tokens INTEGER,
            cost_usd REAL,
            latency_s REAL,
            clip_sha TEXT,
            created_at TEXT NOT NULL
        )""",
        # One answer per (segment, backend, model, prompt, label set, run index): a resumed
        # run can never store a duplicate.
        """CREATE UNIQUE INDEX annotations_unique ON annotations
            (segment_id, backend, model, prompt_sha, label_set, run_index)""",
        "CREATE TABLE raters (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
        """CREATE TABLE reviews (
            id INTEGER PRIMARY KEY,
            annotation_id INTEGER NOT NULL REFERENCES annotations(id) ON DELETE CASCADE,
            rater_id INTEGER NOT NULL REFERENCES raters(id),
            verdict TEXT NOT NULL CHECK (verdict IN ('accept','reject','skip')),
            corrected_label TEXT,
            comment TEXT,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE errors (
            id INTEGER PRIMARY KEY,
            run_id INTEGER REFERENCES runs(id),
            video_id INTEGER REFERENCES videos(id) ON DELETE CASCADE,
            segment_id INTEGER REFERENCES segments(id) ON DELETE CASCADE,
            stage TEXT NOT NULL,
            message TEXT NOT NULL,
            detail TEXT,
            path TEXT,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE exports (
            id INTEGER PRIMARY KEY,
            created_at TEXT NOT NULL,
            out_name TEXT NOT NULL,
            format TEXT NOT NULL,
            filters_json TEXT NOT NULL,
            n_items INTEGER NOT NULL,
            manifest_sha256 TEXT
        )""",
        "CREATE INDEX segments_video ON segments(video_id, start_s)",
        "CREATE INDEX segments_status ON segments(status)",
        "CREATE INDEX tracks_video ON tracks(video_id, start_s)",
        "CREATE INDEX transcripts_video ON transcripts(video_id, start_s)",
        "CREATE INDEX annotations_segment ON annotations(segment_id)",
        "CREATE INDEX annotations_primary ON annotations(primary_emotion)",
        "CREATE INDEX reviews_annotation ON reviews(annotation_id, rater_id)",
        "CREATE INDEX errors_run ON errors(run_id)",
    ],
    # 2: the runner's process id, so `mikupal status` can tell a live run from a killed one
    ["ALTER TABLE runs ADD COLUMN pid INTEGER"],
    # 3: the LLM stage: exact cost columns, Batch API jobs (recorded before they are submitted,
    # so a killed run resumes polling instead of paying again), clips uploaded once
    [
        "ALTER TABLE annotations ADD COLUMN cached_tokens INTEGER",
        "ALTER TABLE annotations ADD COLUMN thought_tokens INTEGER",
        "ALTER TABLE annotations ADD COLUMN usage_json TEXT",
        "ALTER TABLE annotations ADD COLUMN batch_job TEXT",
        """CREATE TABLE batch_jobs (
            id INTEGER PRIMARY KEY,
            stage TEXT NOT NULL,
            model TEXT NOT NULL,
            display_name TEXT NOT NULL UNIQUE,
            name TEXT,
            state TEXT NOT NULL,
            mode TEXT NOT NULL,
            input_file TEXT,
            output_file TEXT,
            n_requests INTEGER NOT NULL,
            run_id INTEGER REFERENCES runs(id),
            error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        """CREATE TABLE batch_requests (
            job_id INTEGER NOT NULL REFERENCES batch_jobs(id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            segment_id INTEGER REFERENCES segments(id) ON DELETE CASCADE,
            run_index INTEGER NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            task_json TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            PRIMARY KEY (job_id, key)
        )""",
        "CREATE INDEX batch_requests_item ON batch_requests(segment_id, run_index)",
        """CREATE TABLE uploaded_files (
            sha TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            uri TEXT NOT NULL,
            mime_type TEXT,
            size_bytes INTEGER,
            uploaded_at TEXT NOT NULL,
            expires_at TEXT NOT NULL
        )""",
    ],
    # 4: speakers (the `speakers` stage; corrections in the app). Embeddings are float16
    # little-endian unit vectors (resemblyzer GE2E: 256 dims, 512 bytes), kept out of
    # `segments` so SELECT * there stays small and JSON-able.
    [
        """CREATE TABLE speakers (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            name_source TEXT NOT NULL DEFAULT 'auto' CHECK (name_source IN ('auto','user')),
            embedding BLOB,
            embedding_model TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        """CREATE TABLE segment_voices (
            segment_id INTEGER PRIMARY KEY REFERENCES segments(id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            embedding BLOB NOT NULL,
            voiced_s REAL NOT NULL
        )""",
        "ALTER TABLE segments ADD COLUMN speaker_id INTEGER REFERENCES speakers(id) ON DELETE SET NULL",
        "ALTER TABLE segments ADD COLUMN speaker_source TEXT",
        "ALTER TABLE segments ADD COLUMN speaker_score REAL",
        "CREATE INDEX segments_speaker ON segments(speaker_id)",
    ],
    # 5: where each video came from (mikupal.sources: yt-dlp download or .info.json sidecar)
    [f"ALTER TABLE videos ADD COLUMN {col} TEXT" for col in (
        "source_url", "source_id", "source_title", "source_uploader", "source_upload_date",
        "source_license", "source_info_json")],
    # 6: the vision stages per segment (a long video streams): each segment's face track
    # pieces, the keys its faces and asd results were computed under, and what each saw
    [
        "ALTER TABLE tracks ADD COLUMN segment_id INTEGER REFERENCES segments(id) ON DELETE CASCADE",
        "ALTER TABLE segments ADD COLUMN faces_key TEXT",
        "ALTER TABLE segments ADD COLUMN asd_key TEXT",
        "ALTER TABLE segments ADD COLUMN faces_json TEXT",
        "ALTER TABLE segments ADD COLUMN asd_json TEXT",
        "CREATE INDEX tracks_segment ON tracks(segment_id)",
    ],
]

CURRENT_VERSION = len(MIGRATIONS)


def now() -> str:
    """UTC timestamp with milliseconds, sortable as text."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def connect(path: str | Path, *, migrate: bool = True) -> sqlite_utils.Database:
    """Open (creating if needed) a project database with the house settings."""
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    db = sqlite_utils.Database(conn)
    if migrate:
        apply_migrations(db)
    return db


def schema_version(db: sqlite_utils.Database) -> int:
    if SCHEMA_VERSION_TABLE not in db.table_names():
        return 0
    row = db.execute(f"SELECT MAX(version) FROM {SCHEMA_VERSION_TABLE}").fetchone()
    return int(row[0] or 0)


class NewerSchemaError(RuntimeError):
    """The file was written by a newer MIKU-PAL; nothing is changed (one line with the fix)."""


def path_of(db: sqlite_utils.Database) -> str:
    row = db.conn.execute("PRAGMA database_list").fetchone()
    return row[2] if row and row[2] else "project.db"


def apply_migrations(db: sqlite_utils.Database) -> int:
    """Bring the file forward to CURRENT_VERSION; returns the number applied.

    BEGIN IMMEDIATE serialises two processes opening a fresh project at once.
    """
    conn = db.conn
    _backup_before_migrating(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA_VERSION_TABLE} "
            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        have = conn.execute(f"SELECT COALESCE(MAX(version), 0) FROM {SCHEMA_VERSION_TABLE}").fetchone()[0]
        if have > CURRENT_VERSION:
            raise NewerSchemaError(
                f"{path_of(db)} has schema version {have}, newer than this MIKU-PAL ({CURRENT_VERSION}); "
                f"upgrade MIKU-PAL (pip install -U mikupal) or open the project with the version that wrote it"
            )
        applied = 0
        for version in range(have + 1, CURRENT_VERSION + 1):
            for stmt in MIGRATIONS[version - 1]:
                conn.execute(stmt)
            conn.execute(f"INSERT INTO {SCHEMA_VERSION_TABLE} VALUES (?, ?)", (version, now()))
            applied += 1
        conn.execute("COMMIT")
        return applied
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _backup_before_migrating(conn: sqlite3.Connection) -> None:
    """An existing project about to change schema gets a backup first (backups/ in the project)."""
    if not conn.execute(f"SELECT 1 FROM sqlite_master WHERE name='{SCHEMA_VERSION_TABLE}'").fetchone():
        return
    have = conn.execute(f"SELECT COALESCE(MAX(version), 0) FROM {SCHEMA_VERSION_TABLE}").fetchone()[0]
    path = conn.execute("PRAGMA database_list").fetchone()[2]
    if 0 < have < CURRENT_VERSION and path:
        from .backup import auto_backup

        auto_backup(Path(path), f"before-v{CURRENT_VERSION}", conn=conn)


class DatabaseDamaged(Exception):
    """project.db failed the open-time check; nothing has been written to it."""


def check_file(path: str | Path) -> None:
    """Cheap damage check before anything opens `path` for writing: the header, the size it
    promises, and SQLite's quick_check (b-tree structure of every page; ~0.3 s for 90 MB),
    all through a read-only SQLite connection, which never checkpoints into the file.
    Raises DatabaseDamaged with the reason.

    The file is never opened directly: closing any descriptor of it drops every POSIX lock
    this process holds on it, and a run in another process could then take our open
    connections' WAL for its own (the app keeps connections open while it checks)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return  # a new project: SQLite creates it
    size = path.stat().st_size
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            n_pages = conn.execute("PRAGMA page_count").fetchone()[0]
            wal = path.with_name(path.name + "-wal")
            if size % page or (size < n_pages * page and not (wal.exists() and wal.stat().st_size)):
                raise DatabaseDamaged(f"it is truncated ({size} bytes, the header promises {n_pages * page})")
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(3)").fetchall()]
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        if getattr(e, "sqlite_errorname", "") == "SQLITE_NOTADB":
            raise DatabaseDamaged("it is not an SQLite database (its header is damaged)") from None
        if getattr(e, "sqlite_errorname", "") == "SQLITE_CORRUPT" or "malformed" in str(e):
            raise DatabaseDamaged(str(e)) from None
        raise
    if problems != ["ok"]:
        raise DatabaseDamaged(" ".join(" ".join(problems).replace("*** in database main ***", "").split()))


class transaction:
    """`with transaction(db):` — one IMMEDIATE transaction (all or nothing)."""

    def __init__(self, db: sqlite_utils.Database):
        self.conn = db.conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False


def record_error(
    db: sqlite_utils.Database,
    stage: str,
    message: str,
    *,
    run_id: int | None = None,
    video_id: int | None = None,
    segment_id: int | None = None,
    detail: str | None = None,
    path: str | None = None,
) -> int:
    """Store one per-item error row (the run goes on). Messages must be secret-free."""
    cur = db.conn.execute(
        "INSERT INTO errors (run_id, video_id, segment_id, stage, message, detail, path, created_at)"
        " VALUES (?,?,?,?,?,?,?,?)",
        (run_id, video_id, segment_id, stage, message, detail, path, now()),
    )
    return int(cur.lastrowid)


def set_stage_state(
    db: sqlite_utils.Database,
    video_id: int,
    stage: str,
    status: str,
    *,
    cache_key: str | None = None,
    info: dict[str, Any] | None = None,
    run_id: int | None = None,
) -> None:
    db.conn.execute(
        "INSERT INTO stage_state (video_id, stage, status, cache_key, info_json, run_id, updated_at)"
        " VALUES (?,?,?,?,?,?,?) ON CONFLICT(video_id, stage) DO UPDATE SET status=excluded.status,"
        " cache_key=excluded.cache_key, info_json=excluded.info_json, run_id=excluded.run_id,"
        " updated_at=excluded.updated_at",
        (video_id, stage, status, cache_key, json.dumps(info or {}), run_id, now()),
    )


def get_stage_state(db: sqlite_utils.Database, video_id: int, stage: str) -> dict | None:
    row = db.conn.execute(
        "SELECT status, cache_key, info_json FROM stage_state WHERE video_id=? AND stage=?",
        (video_id, stage),
    ).fetchone()
    if row is None:
        return None
    return {"status": row[0], "cache_key": row[1], "info": json.loads(row[2] or "{}")}


def rows(db: sqlite_utils.Database, sql: str, params: Iterable[Any] = ()) -> list[dict]:
    """Query helper returning dicts."""
    cur = db.conn.execute(sql, tuple(params))
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def integrity_ok(db: sqlite_utils.Database) -> bool:
    return db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

"""Backups of project.db inside the project, restore, and repair of a damaged file.

- Backups are online copies through SQLite's backup API (a consistent snapshot, WAL
  included, while the app and a run keep working): automatic ones at the start and end of
  every run and before every migration (`backups/auto-*.db`, the newest KEEP_AUTO kept),
  and the user's own (`mikupal backup`, File > Back up project; never rotated).
- `restore` copies a backup back into the live file through the same API, so open
  connections (a review session) see a normal change instead of a file swapped under them.
- `repair` builds a fresh file from what can be recovered (the sqlite3 CLI's `.recover`
  when installed, else a table-by-table salvage here) or from the newest good backup,
  whichever holds more rows, and moves the damaged file (with its -wal/-shm) aside.

The caller holds the project's run lock for restore and repair (they replace the data).
"""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

BACKUP_DIR = "backups"
KEEP_AUTO = 6
DB_NAME = "project.db"
# Tables worth counting when choosing between a recovered file and a backup.
COUNTED = ("videos", "segments", "annotations", "reviews", "raters", "runs", "errors", "tracks", "transcripts")


class BackupError(Exception):
    """A backup, restore or repair that cannot be done; the message says why and what to do."""


@dataclass
class BackupInfo:
    path: Path
    kind: str  # auto | manual | before-restore
    created: str
    size: int


@dataclass
class RepairReport:
    source: str  # "recovered" | "backup"
    method: str  # ".recover (sqlite3 CLI)" | "table-by-table salvage" | the backup's file name
    counts: dict[str, int]
    damaged_kept: Path
    candidates: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _stamp() -> str:
    t = time.time()
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + f"{int(t % 1 * 1000):03d}Z"


def _siblings(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def backups_dir(root: str | Path) -> Path:
    return Path(root) / BACKUP_DIR


def copy_database(src: str | Path | sqlite3.Connection, dst: str | Path) -> Path:
    """A consistent copy of `src` (a path or an open connection) at `dst`, written to a
    temporary name first so a half-written copy never looks like a backup."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    for p in _siblings(tmp):
        p.unlink(missing_ok=True)
    own = not isinstance(src, sqlite3.Connection)
    s = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30.0) if own else src
    try:
        d = sqlite3.connect(str(tmp))
        try:
            s.backup(d)
            d.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            d.close()
    finally:
        if own:
            s.close()
    tmp.replace(dst)
    return dst


def auto_backup(db_path: str | Path, reason: str, conn: sqlite3.Connection | None = None,
                keep: int = KEEP_AUTO) -> Path | None:
    """An automatic backup (run start/end, before a migration), then rotation. None when the
    project has no database yet."""
    db_path = Path(db_path)
    if not db_path.exists() or keep <= 0:
        return None
    autos = [b.path for b in list_backups(db_path.parent) if b.kind == "auto"]
    changed = max(p.stat().st_mtime for p in _siblings(db_path)[:2] if p.exists())
    if reason.startswith("run-") and autos and autos[0].stat().st_mtime > changed:
        return None  # a run with nothing written since the newest backup: keep the older ones
    out = backups_dir(db_path.parent) / f"auto-{_stamp()}-{reason}.db"
    copy_database(conn if conn is not None else db_path, out)
    rotate(db_path.parent, keep)
    return out


def manual_backup(root: str | Path, out: str | Path | None = None) -> Path:
    db = Path(root) / DB_NAME
    if not db.exists():
        raise BackupError(f"{db}: no database to back up")
    target = Path(out) if out else backups_dir(root) / f"manual-{_stamp()}.db"
    if target.exists():
        raise BackupError(f"{target}: already exists; choose another name")
    return copy_database(db, target)


def list_backups(root: str | Path) -> list[BackupInfo]:
    """Backups in the project, newest first."""
    out = []
    d = backups_dir(root)
    for p in d.glob("*.db") if d.is_dir() else []:
        kind = p.name.split("-", 1)[0]
        if kind == "before":
            kind = "before-restore"
        out.append(BackupInfo(p, kind, p.name.split("-")[1] if "-" in p.name else "", p.stat().st_size))
    out.sort(key=lambda b: (b.path.stat().st_mtime, b.path.name), reverse=True)
    return out


def rotate(root: str | Path, keep: int = KEEP_AUTO) -> list[Path]:
    autos = [b.path for b in list_backups(root) if b.kind == "auto"]
    gone = autos[keep:]
    for p in gone:
        for s in _siblings(p):
            s.unlink(missing_ok=True)
    return gone


def is_good(path: str | Path) -> bool:
    """A complete, undamaged MIKU-PAL database (integrity_check, and it has its schema table)."""
    try:
        c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            ok = c.execute("PRAGMA integrity_check(1)").fetchone()[0] == "ok"
            return ok and c.execute("SELECT 1 FROM sqlite_master WHERE name='schema_version'").fetchone() is not None
        finally:
            c.close()
    except sqlite3.DatabaseError:
        return False


def newest_good_backup(root: str | Path) -> Path | None:
    for b in list_backups(root):
        if is_good(b.path):
            return b.path
    return None


def counts(path: str | Path) -> dict[str, int]:
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        have = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return {t: c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in COUNTED if t in have}
    finally:
        c.close()


# ---- restore ------------------------------------------------------------------------------

def restore(root: str | Path, backup: str | Path | None = None) -> tuple[Path, Path | None]:
    """Copy `backup` (default: the newest good one) into project.db; returns (backup used,
    the backup of the replaced state). The live file is written through the backup API."""
    root = Path(root)
    src = Path(backup) if backup else newest_good_backup(root)
    if src is None:
        raise BackupError(f"{root}: no good backup in {backups_dir(root)}; make one with: mikupal backup PROJECT")
    if not src.exists():
        raise BackupError(f"{src}: no such backup; list them with: mikupal restore PROJECT --list")
    if not is_good(src):
        raise BackupError(f"{src}: this backup is damaged or not a MIKU-PAL database; choose another (--list)")
    db = root / DB_NAME
    from .store import DatabaseDamaged, check_file

    try:
        check_file(db)
    except DatabaseDamaged:
        raise BackupError(f"{db} is damaged; use: mikupal repair {root} --from-backup") from None
    kept = copy_database(db, backups_dir(root) / f"before-restore-{_stamp()}.db") if db.exists() else None
    s = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    d = sqlite3.connect(str(db), timeout=30.0)
    try:
        d.execute("PRAGMA busy_timeout=30000")
        s.backup(d)
    finally:
        s.close()
        d.close()
    return src, kept


# ---- repair -------------------------------------------------------------------------------

def _recover_with_cli(damaged: Path, out: Path) -> bool:
    exe = shutil.which("sqlite3")
    if not exe:
        return False
    dump = subprocess.run([exe, str(damaged), ".recover --ignore-freelist"], capture_output=True, timeout=3600)
    # Some builds lack the sqlite_dbpage table .recover needs and print a half script.
    if dump.returncode != 0 or b"error" in dump.stderr or not dump.stdout.rstrip().endswith(b"COMMIT;"):
        return False
    load = subprocess.run([exe, str(out)], input=dump.stdout, capture_output=True, timeout=3600)
    return load.returncode == 0 and out.exists()


def _pad_truncated(copy: Path) -> None:
    """A truncated copy is padded with zero pages to the size its header promises: SQLite then
    reads the pages that survived (the schema is near the start) instead of refusing the file."""
    size = copy.stat().st_size
    with open(copy, "r+b") as f:  # a private copy: no SQLite connection has it open
        head = f.read(100)
        if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
            return
        page = int.from_bytes(head[16:18], "big")
        page = 65536 if page == 1 else page
        want = max(int.from_bytes(head[28:32], "big") * page, -(-size // page) * page)
        if want > size:
            f.truncate(want)


def _salvage_rows(src: sqlite3.Connection, table: str):
    """Rows of `table` in rowid order, stepping over pages that cannot be read."""
    last = None
    misses = 0
    while misses < 64:
        sql = f"SELECT rowid, * FROM {table}" + (" WHERE rowid > ?" if last is not None else "") + " ORDER BY rowid"
        try:
            for row in src.execute(sql, () if last is None else (last,)):
                last = row[0]
                misses = 0
                yield row[1:]
            return
        except sqlite3.DatabaseError:
            last = (last or 0) + 64 * (misses + 1)  # jump past the unreadable page's rows
            misses += 1


def _salvage_in_python(damaged: Path, out: Path) -> bool:
    try:
        src = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
        tables = src.execute("SELECT name, sql FROM sqlite_master WHERE type='table' AND sql IS NOT NULL"
                             " AND name NOT LIKE 'sqlite_%'").fetchall()
    except sqlite3.DatabaseError:
        return False
    dst = sqlite3.connect(str(out))
    try:
        for name, sql in tables:
            dst.execute(sql)
            cols = len(src.execute(f"PRAGMA table_info({name})").fetchall())
            ins = f"INSERT OR IGNORE INTO {name} VALUES ({','.join('?' * cols)})"
            dst.executemany(ins, _salvage_rows(src, name))
        dst.commit()
    except sqlite3.DatabaseError:
        return False
    finally:
        src.close()
        dst.close()
    return True


def _lost_and_found(raw: Path) -> int:
    c = sqlite3.connect(f"file:{raw}?mode=ro", uri=True)
    try:
        if c.execute("SELECT 1 FROM sqlite_master WHERE name='lost_and_found'").fetchone():
            return int(c.execute("SELECT COUNT(*) FROM lost_and_found").fetchone()[0])
        return 0
    finally:
        c.close()


def _rebuild(recovered: Path, out: Path) -> None:
    """A fresh file with the full current schema (tables, indexes) and every row of
    `recovered` copied into the columns both have."""
    from . import store

    db = store.connect(out)
    conn = db.conn
    conn.execute("PRAGMA foreign_keys=OFF")  # rows whose parent was lost are kept (paid answers)
    conn.execute("ATTACH DATABASE ? AS r", (f"file:{recovered}?mode=ro",))
    try:
        conn.execute("BEGIN")
        theirs = {r[0] for r in conn.execute("SELECT name FROM r.sqlite_master WHERE type='table'")}
        for (table,) in conn.execute("SELECT name FROM main.sqlite_master WHERE type='table'"
                                     " AND name NOT LIKE 'sqlite_%'").fetchall():
            if table not in theirs:
                continue
            mine = [c[1] for c in conn.execute(f"PRAGMA main.table_info({table})")]
            have = {c[1] for c in conn.execute(f"PRAGMA r.table_info({table})")}
            cols = ",".join(c for c in mine if c in have)
            if table == store.SCHEMA_VERSION_TABLE:
                continue  # the fresh file's own versions describe its schema
            conn.execute(f"INSERT OR IGNORE INTO main.{table} ({cols}) SELECT {cols} FROM r.{table}")
        conn.execute("COMMIT")
    finally:
        conn.execute("DETACH DATABASE r")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()


def repair(root: str | Path, from_backup: bool = False) -> RepairReport:
    """Replace a damaged project.db by what can be recovered; the damaged files move to
    backups/damaged-STAMP/. Raises BackupError when nothing can be recovered."""
    root = Path(root)
    db = root / DB_NAME
    stamp = _stamp()
    work = backups_dir(root) / f"repair-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    candidates: dict[str, tuple[Path, str]] = {}
    try:
        if db.exists() and not from_backup:
            # Recover from copies: the damaged originals are never opened for writing.
            copy = work / "damaged.db"
            for a, b in zip(_siblings(db), _siblings(copy)):
                if a.exists():
                    shutil.copy2(a, b)
            _pad_truncated(copy)
            raw = work / "recovered-raw.db"
            method = ".recover (sqlite3 CLI)"
            if not _recover_with_cli(copy, raw):
                raw.unlink(missing_ok=True)
                method = "table-by-table salvage"
                if not _salvage_in_python(copy, raw):
                    raw.unlink(missing_ok=True)
                    notes.append("nothing could be read from the damaged file")
            if raw.exists():
                lost = _lost_and_found(raw)
                if lost:
                    notes.append(f"{lost} row(s) without a table were left in {raw}")
                fresh = work / "recovered.db"
                try:
                    _rebuild(raw, fresh)
                    candidates["recovered"] = (fresh, method)
                except sqlite3.DatabaseError as e:
                    notes.append(f"the recovered rows did not fit the schema ({e})")
        good = newest_good_backup(root)
        if good is not None:
            fresh = work / "from-backup.db"
            _rebuild(good, fresh)
            candidates["backup"] = (fresh, good.name)
        if not candidates:
            raise BackupError(f"{db}: nothing could be recovered and there is no good backup in "
                              f"{backups_dir(root)}; the damaged file is unchanged")
        scored = {k: counts(p) for k, (p, _) in candidates.items()}
        if "recovered" in scored and not sum(scored["recovered"].values()):
            del candidates["recovered"], scored["recovered"]  # an empty shell is no recovery
            notes.append("no rows could be read from the damaged file")
        if not candidates:
            raise BackupError(f"{db}: no rows could be recovered and there is no good backup in "
                              f"{backups_dir(root)}; the damaged file is unchanged")
        # Prefer the file with more rows (a backup is older; a recovery may have lost pages).
        pick = max(candidates, key=lambda k: (sum(scored[k].values()), k == "recovered"))
        chosen, method = candidates[pick]
        kept = backups_dir(root) / f"damaged-{stamp}"
        kept.mkdir(parents=True, exist_ok=True)
        for p in _siblings(db):
            if p.exists():
                p.replace(kept / p.name)
        chosen.replace(db)
        for p in work.iterdir():
            if p.name.startswith(("from-backup", "damaged.db")) or (p.name.startswith("recovered") and not
                                                                     any("row(s) without" in n for n in notes)):
                p.unlink(missing_ok=True)
        work.rmdir() if not any(work.iterdir()) else None
        return RepairReport(pick, method, scored[pick], kept, candidates=scored, notes=notes)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise

"""`mikupal add`: probe videos, store them by content hash, record bad files per item."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from . import store
from .fileutil import sha256_file
from .media import VIDEO_SUFFIXES, MediaError, probe


@dataclass
class AddReport:
    added: list[tuple[int, Path]] = field(default_factory=list)
    already: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def iter_media(paths: Iterable[str | Path]) -> Iterable[Path]:
    """Files as given, folders walked recursively (media suffixes only, sorted, no hidden)."""
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and Path(name).suffix.lower() in VIDEO_SUFFIXES:
                        yield Path(root) / name
        else:
            yield p


def add_videos(db, paths: Iterable[str | Path], on_line: Callable[[str], None] | None = None) -> AddReport:
    """Add each video once (by sha256). A bad file gets an errors row; the others still go in."""
    report = AddReport()
    say = on_line or (lambda s: None)
    for path in iter_media(paths):
        path = path.resolve() if path.exists() else path
        try:
            if not path.exists():
                raise MediaError(f"{path}: no such file; check the path")
            info = probe(path)
            if not info.has_audio:
                raise MediaError(f"{path}: has no audio track; MIKU-PAL labels speech, add the version with sound")
            if info.duration_s <= 0:
                raise MediaError(f"{path}: duration is zero; the file is truncated, re-encode or re-copy it")
            sha = sha256_file(path)
        except MediaError as e:
            msg = str(e)
            store.record_error(db, "add", msg, path=str(path))
            report.failed.append((path, msg))
            say(f"error: {msg}")
            continue
        existing = db.conn.execute("SELECT id, path FROM videos WHERE sha256=?", (sha,)).fetchone()
        if existing:
            report.already.append(path)
            say(f"already added: {path} (video {existing[0]})")
            continue
        row = {"sha256": sha, "path": str(path), "added_at": store.now(), **info.as_row()}
        cur = db.conn.execute(
            f"INSERT OR IGNORE INTO videos ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
        if cur.rowcount == 0:  # another process added the same content meanwhile
            report.already.append(path)
            continue
        report.added.append((int(cur.lastrowid), path))
        say(f"added: {path} (video {cur.lastrowid}, {info.duration_s:.1f} s)")
    return report

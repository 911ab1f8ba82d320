"""The speakers table: queries, and the corrections a person makes in the app.

Every correction is one transaction (all or nothing) and marks the segments it moves
``speaker_source = 'user'``: a later ``speakers`` run keeps them where the person put them.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .. import store
from .cluster import centroid

# What an export (or anyone) reads for a segment's speaker: id and display name.
SEGMENT_SPEAKER_SQL = (
    "SELECT s.speaker_id AS speaker_id, sp.name AS speaker_name FROM segments s"
    " LEFT JOIN speakers sp ON sp.id = s.speaker_id WHERE s.id = ?"
)
NAME_MAX = 80


class SpeakerEditError(ValueError):
    """A correction that cannot be made; the message names the speaker or segment and the fix."""


def pack(vec: np.ndarray) -> bytes:
    """An embedding as stored: float16 little-endian (512 bytes for 256 dims)."""
    return np.asarray(vec, dtype="<f2").tobytes()


def unpack(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype="<f2").astype(np.float32)


def default_name(speaker_id: int) -> str:
    return f"Speaker {speaker_id}"


def new_speaker(db, name: str | None = None, embedding: np.ndarray | None = None, model: str | None = None) -> int:
    """Insert one speaker (no transaction of its own); auto-named 'Speaker <id>' unless named."""
    t = store.now()
    cur = db.conn.execute(
        "INSERT INTO speakers (name, name_source, embedding, embedding_model, created_at, updated_at)"
        " VALUES (?,?,?,?,?,?)",
        (name or "", "user" if name else "auto", pack(embedding) if embedding is not None else None, model, t, t))
    sid = int(cur.lastrowid)
    if not name:
        db.conn.execute("UPDATE speakers SET name=? WHERE id=?", (default_name(sid), sid))
    return sid


def refresh(db, speaker_ids: Iterable[int]) -> None:
    """Recompute the centroids of these speakers from their segments' voices; drop empty auto speakers."""
    for sid in set(i for i in speaker_ids if i is not None):
        blobs = db.conn.execute(
            "SELECT v.embedding, v.model FROM segments s JOIN segment_voices v ON v.segment_id = s.id"
            " WHERE s.speaker_id=?", (sid,)).fetchall()
        vecs = [unpack(b) for b, _ in blobs]
        emb = pack(centroid(np.stack(vecs))) if vecs else None
        db.conn.execute("UPDATE speakers SET embedding=?, embedding_model=COALESCE(?, embedding_model), updated_at=?"
                        " WHERE id=?", (emb, blobs[0][1] if blobs else None, store.now(), sid))
    drop_empty(db)


def drop_empty(db) -> int:
    """Delete auto-named speakers no segment points at (a name someone typed is kept)."""
    cur = db.conn.execute("DELETE FROM speakers WHERE name_source='auto' AND NOT EXISTS"
                          " (SELECT 1 FROM segments s WHERE s.speaker_id = speakers.id)")
    return cur.rowcount


def list_speakers(db) -> list[dict]:
    """Every speaker with its segment count, videos and speech time, most segments first."""
    return store.rows(db, """
        SELECT sp.id, sp.name, sp.name_source, COUNT(s.id) AS n_segments,
               COUNT(DISTINCT s.video_id) AS n_videos, COALESCE(SUM(s.end_s - s.start_s), 0) AS speech_s
        FROM speakers sp LEFT JOIN segments s ON s.speaker_id = sp.id
        GROUP BY sp.id ORDER BY n_segments DESC, sp.id""")


def segment_speaker(db, segment_id: int) -> dict | None:
    """{"speaker_id", "speaker_name"} of one segment (both None when it has none)."""
    r = store.rows(db, SEGMENT_SPEAKER_SQL, (segment_id,))
    return r[0] if r else None


def _speaker(db, speaker_id: int) -> dict:
    r = store.rows(db, "SELECT id, name, name_source FROM speakers WHERE id=?", (speaker_id,))
    if not r:
        raise SpeakerEditError(f"speaker {speaker_id}: not in the project (it may have been merged); reload the list")
    return r[0]


def _clean_name(name: str) -> str:
    n = " ".join(str(name or "").split())
    if not n:
        raise SpeakerEditError("speaker name is empty; type a name")
    if len(n) > NAME_MAX:
        raise SpeakerEditError(f"speaker name is {len(n)} characters long; use at most {NAME_MAX}")
    return n


def rename_speaker(db, speaker_id: int, name: str) -> None:
    n = _clean_name(name)
    with store.transaction(db):
        _speaker(db, speaker_id)
        db.conn.execute("UPDATE speakers SET name=?, name_source='user', updated_at=? WHERE id=?",
                        (n, store.now(), speaker_id))


def merge_speakers(db, source_id: int, into_id: int) -> int:
    """Move every segment of ``source_id`` to ``into_id`` (which keeps its name); returns how many."""
    if source_id == into_id:
        raise SpeakerEditError(f"speaker {source_id}: cannot merge a speaker into itself; pick another speaker")
    with store.transaction(db):
        _speaker(db, source_id)
        _speaker(db, into_id)
        n = db.conn.execute("UPDATE segments SET speaker_id=?, speaker_source='user', speaker_score=NULL"
                            " WHERE speaker_id=?", (into_id, source_id)).rowcount
        db.conn.execute("DELETE FROM speakers WHERE id=?", (source_id,))
        refresh(db, [into_id])
    return n


def split_segments(db, segment_ids: Iterable[int], name: str | None = None) -> int:
    """Move these segments to a new speaker; returns its id."""
    ids = sorted(set(int(i) for i in segment_ids))
    if not ids:
        raise SpeakerEditError("no segment selected; select the segments to split off")
    n = _clean_name(name) if name else None
    with store.transaction(db):
        q = ",".join("?" * len(ids))
        found = db.conn.execute(f"SELECT id, speaker_id FROM segments WHERE id IN ({q})", ids).fetchall()
        if len(found) != len(ids):
            missing = sorted(set(ids) - {r[0] for r in found})
            raise SpeakerEditError(f"segment {missing[0]}: not in the project; reload the list")
        sid = new_speaker(db, n)
        db.conn.execute(f"UPDATE segments SET speaker_id=?, speaker_source='user', speaker_score=NULL WHERE id IN ({q})",
                        [sid, *ids])
        refresh(db, [sid, *(r[1] for r in found)])
    return sid


def move_segments(db, segment_ids: Iterable[int], speaker_id: int) -> int:
    """Assign these segments to an existing speaker; returns how many moved."""
    ids = sorted(set(int(i) for i in segment_ids))
    if not ids:
        raise SpeakerEditError("no segment selected; select the segments to move")
    with store.transaction(db):
        _speaker(db, speaker_id)
        q = ",".join("?" * len(ids))
        old = [r[0] for r in db.conn.execute(f"SELECT DISTINCT speaker_id FROM segments WHERE id IN ({q})", ids)]
        n = db.conn.execute(f"UPDATE segments SET speaker_id=?, speaker_source='user', speaker_score=NULL"
                            f" WHERE id IN ({q})", [speaker_id, *ids]).rowcount
        refresh(db, [speaker_id, *old])
    return n

"""Qt table models over the project store (videos, segments, errors).

The segments model stays instant with 100k+ rows: filtering and sorting happen in SQL and
return only the ordered segment ids (one query per filter change); the displayed columns
are fetched a page at a time as the view scrolls (canFetchMore/fetchMore), so Qt never
holds more rows than the user has looked at.
"""
from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal
from PySide6.QtGui import QBrush, QColor

from mikupal import queries, store
from mikupal.stage import STAGE_ORDER

VERDICT_CHOICES = ("accept", "reject", "skip", "unreviewed")
VERDICT_COLOURS = {"accept": QColor("#1b7f3b"), "reject": QColor("#b3261e"), "skip": QColor("#7a6a00")}

# Each segment row joins its primary annotation (defined once, in mikupal.queries).
_PRIMARY_JOIN = queries.primary_annotation_join("pa", "s.id")
_SCORE = "json_extract(pa.intensities_json, '$.\"' || pa.primary_emotion || '\"')"


def _latest_verdict(rater_param: bool) -> str:
    """SQL for the latest verdict on the primary annotation (of one rater when asked)."""
    return queries.latest_verdict_sql("pa.id", rater_param)


@dataclass(frozen=True)
class SegmentColumn:
    key: str
    title: str
    sort_sql: str            # the ORDER BY expression
    needs_primary: bool = False
    numeric: bool = False
    help: str = ""


SEGMENT_COLUMNS: tuple[SegmentColumn, ...] = (
    SegmentColumn("id", "ID", "s.id", numeric=True),
    SegmentColumn("video", "Video", "s.video_id", numeric=True),
    SegmentColumn("start", "Start", "s.start_s", numeric=True),
    SegmentColumn("duration", "Length", "(s.end_s - s.start_s)", numeric=True),
    SegmentColumn("text", "Text", "s.text COLLATE NOCASE"),
    SegmentColumn("status", "Status", "s.status"),
    SegmentColumn("emotion", "Emotion", "pa.primary_emotion", needs_primary=True,
                  help="Primary emotion of the newest run-0 answer"),
    SegmentColumn("score", "Intensity", _SCORE, needs_primary=True, numeric=True,
                  help="Intensity (0-1) of the primary emotion"),
    SegmentColumn("speaker", "Speaker", "(SELECT name FROM speakers WHERE id = s.speaker_id) COLLATE NOCASE",
                  help="Who speaks (speakers stage); right-click a row to rename, merge, split off or move"),
    SegmentColumn("asd", "ASD", "s.asd_score", numeric=True,
                  help="Active-speaker score of the chosen face track"),
    SegmentColumn("verdict", "Verdicts", _latest_verdict(False), needs_primary=True,
                  help="Each rater's latest verdict on the primary answer"),
)
COLUMN_INDEX = {c.key: i for i, c in enumerate(SEGMENT_COLUMNS)}


@dataclass(frozen=True)
class SegmentFilter:
    """What the segments table shows. Empty fields do not filter."""

    text: str = ""                    # substring of the transcript (case-insensitive)
    emotion: str = ""                 # primary emotion of the primary annotation
    status: str = ""                  # segment status (ok, no_face, ...)
    min_score: float | None = None    # intensity of the primary emotion
    max_score: float | None = None
    verdict: str = ""                 # accept / reject / skip / unreviewed
    rater: str = ""                   # whose verdict `verdict` means ("" = any rater's latest)
    video_id: int | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def with_(self, **kw) -> "SegmentFilter":
        return replace(self, **kw)


def build_where(f: SegmentFilter) -> tuple[str, list[Any], bool]:
    """(WHERE clause, parameters, needs the primary-annotation join) for a filter."""
    clauses: list[str] = []
    params: list[Any] = []
    needs_primary = False
    if f.text.strip():
        clauses.append("s.text LIKE ? ESCAPE '\\'")
        esc = f.text.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params.append(f"%{esc}%")
    if f.status:
        clauses.append("s.status = ?")
        params.append(f.status)
    if f.video_id is not None:
        clauses.append("s.video_id = ?")
        params.append(int(f.video_id))
    if f.emotion:
        needs_primary = True
        clauses.append("pa.primary_emotion = ?")
        params.append(f.emotion)
    if f.min_score is not None:
        needs_primary = True
        clauses.append(f"{_SCORE} >= ?")
        params.append(float(f.min_score))
    if f.max_score is not None:
        needs_primary = True
        clauses.append(f"{_SCORE} <= ?")
        params.append(float(f.max_score))
    if f.verdict:
        needs_primary = True
        latest = _latest_verdict(bool(f.rater))
        if f.verdict == "unreviewed":
            clauses.append(f"{latest} IS NULL")
        else:
            clauses.append(f"{latest} = ?")
        if f.rater:
            params.append(f.rater)
        if f.verdict != "unreviewed":
            params.append(f.verdict)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    return where, params, needs_primary


def ordered_segment_ids(conn: sqlite3.Connection, f: SegmentFilter, sort_key: str = "id",
                        descending: bool = False) -> list[int]:
    """Every segment id that passes `f`, in display order (ties broken by id)."""
    col = SEGMENT_COLUMNS[COLUMN_INDEX[sort_key]]
    where, params, needs_primary = build_where(f)
    join = _PRIMARY_JOIN if (needs_primary or col.needs_primary) else ""
    direction = "DESC" if descending else "ASC"
    order = f"{col.sort_sql} {direction}, s.id {direction}" if col.key != "id" else f"s.id {direction}"
    sql = f"SELECT s.id FROM segments s{join}{where} ORDER BY {order}"
    return [r[0] for r in conn.execute(sql, params)]


_PAGE_SQL = f"""
SELECT s.id, s.video_id, v.path, s.start_s, s.end_s, s.text, s.status, pa.primary_emotion,
       {_SCORE} AS score, s.asd_score,
       (SELECT group_concat(name || ': ' || verdict, ', ') FROM (
            SELECT ra.name AS name, rv.verdict AS verdict FROM reviews rv JOIN raters ra ON ra.id = rv.rater_id
            WHERE rv.annotation_id = pa.id
              AND rv.id = (SELECT MAX(id) FROM reviews r2 WHERE r2.annotation_id = rv.annotation_id
                           AND r2.rater_id = rv.rater_id)
            ORDER BY ra.name)) AS verdicts,
       pa.id AS annotation_id, sp.name AS speaker_name, s.speaker_id
FROM segments s JOIN videos v ON v.id = s.video_id LEFT JOIN speakers sp ON sp.id = s.speaker_id{_PRIMARY_JOIN}
WHERE s.id IN (SELECT value FROM json_each(?))
"""


def segment_rows(conn: sqlite3.Connection, ids: list[int]) -> dict[int, tuple]:
    """Display rows for the given segment ids (any order), keyed by id."""
    import json

    return {r[0]: r for r in conn.execute(_PAGE_SQL, (json.dumps(ids),))}


def open_readonly(db_path: str | Path) -> sqlite3.Connection:
    """A connection for the GUI thread's tables (reads only; the store owns the schema)."""
    return store.connect(db_path, migrate=False).conn


VERDICT_MARKS = (("accept", "✓"), ("reject", "✗"), ("skip", "skip"))


def verdict_summary(per_rater: str | None) -> str:
    """'alice: accept, bob: reject' -> '✓1 ✗1' (names are in the tooltip)."""
    if not per_rater:
        return ""
    verdicts = [part.rsplit(": ", 1)[-1] for part in per_rater.split(", ")]
    return " ".join(f"{mark}{verdicts.count(v)}" if mark != "skip" else f"skip {verdicts.count(v)}"
                    for v, mark in VERDICT_MARKS if v in verdicts)


def _fmt_time(s: float | None) -> str:
    if s is None:
        return ""
    m, sec = divmod(float(s), 60.0)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{sec:04.1f}" if h else f"{m}:{sec:04.1f}"


class SegmentTableModel(QAbstractTableModel):
    """Segments of one project, filtered and sorted in SQL, loaded a page at a time.

    The id query (filter + sort over every segment) runs on a background thread with its
    own connection: sorting 100k rows by a joined column takes SQLite a few hundred ms,
    and the view must keep painting meanwhile. A newer request supersedes an older one.
    """

    totalChanged = Signal(int)   # rows that pass the filter (not just the loaded ones)
    busyChanged = Signal(bool)   # a filter/sort query is running
    _idsReady = Signal(int, object)

    SegmentIdRole = Qt.ItemDataRole.UserRole + 1
    VideoIdRole = Qt.ItemDataRole.UserRole + 2

    def __init__(self, db_path: str | Path, parent=None, page_size: int = 256):
        super().__init__(parent)
        self.db_path = Path(db_path)
        self._conn = open_readonly(db_path)
        self.page_size = page_size
        self._filter = SegmentFilter()
        self._sort_key = "id"
        self._descending = False
        self._ids: list[int] = []
        self._rows: list[tuple] = []
        self._pos: dict[int, int] | None = None
        self._seq = 0
        self._pending = 0
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segment-query")
        self._local = threading.local()
        self._idsReady.connect(self._apply_ids)
        self.requery()

    # ---- querying -----------------------------------------------------------------
    @property
    def filter(self) -> SegmentFilter:
        return self._filter

    @property
    def sort_key(self) -> tuple[str, bool]:
        return self._sort_key, self._descending

    def set_filter(self, f: SegmentFilter) -> None:
        if f != self._filter:
            self._filter = f
            self.requery()

    def busy(self) -> bool:
        return self._pending > 0

    def requery(self) -> None:
        """Run the filter/sort query again (new data from a run, a new filter or sort).

        The result arrives on the GUI thread through totalChanged."""
        if self._closed:
            return
        self._seq += 1
        self._pending += 1
        if self._pending == 1:
            self.busyChanged.emit(True)
        self._pool.submit(self._query, self._seq, self._filter, self._sort_key, self._descending)

    def _query(self, seq: int, f: SegmentFilter, key: str, desc: bool) -> None:
        # Worker thread: its own connection (sqlite3 objects stay in their thread).
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = open_readonly(self.db_path)
        try:
            ids = ordered_segment_ids(conn, f, key, desc)
        except sqlite3.Error as e:
            ids = e
        if not self._closed:
            self._idsReady.emit(seq, ids)

    def _close_worker_conn(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()

    def _apply_ids(self, seq: int, ids) -> None:
        self._pending -= 1
        if self._pending == 0:
            self.busyChanged.emit(False)
        if seq != self._seq or self._closed:
            return  # a newer query is on its way
        if isinstance(ids, Exception):
            ids = []
        self.beginResetModel()
        self._ids = ids
        self._rows = []
        self._pos = None
        self._load_page()
        self.endResetModel()
        self.totalChanged.emit(len(self._ids))

    def total(self) -> int:
        return len(self._ids)

    def _load_page(self) -> int:
        start = len(self._rows)
        ids = self._ids[start:start + self.page_size]
        if not ids:
            return 0
        got = segment_rows(self._conn, ids)
        # A row deleted since the id query shows as empty rather than shifting the others.
        self._rows.extend(got.get(i) or (i,) + (None,) * 13 for i in ids)
        return len(ids)

    def canFetchMore(self, parent=QModelIndex()) -> bool:
        return not parent.isValid() and len(self._rows) < len(self._ids)

    def fetchMore(self, parent=QModelIndex()) -> None:
        if parent.isValid():
            return
        start = len(self._rows)
        n = min(self.page_size, len(self._ids) - start)
        if n <= 0:
            return
        self.beginInsertRows(QModelIndex(), start, start + n - 1)
        self._load_page()
        self.endInsertRows()

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:
        self._sort_key = SEGMENT_COLUMNS[column].key
        self._descending = order == Qt.SortOrder.DescendingOrder
        self.requery()

    # ---- lookups --------------------------------------------------------------------
    def segment_id(self, row: int) -> int | None:
        return self._ids[row] if 0 <= row < len(self._ids) else None

    def row_of(self, segment_id: int) -> int | None:
        """The row of a segment (loading pages up to it), or None when filtered out."""
        if self._pos is None:
            self._pos = {sid: i for i, sid in enumerate(self._ids)}
        row = self._pos.get(segment_id)
        if row is None:
            return None
        while len(self._rows) <= row:
            self.fetchMore()
        return row

    def refresh_segment(self, segment_id: int) -> None:
        """Reload one row in place (a verdict was saved) without re-running the query."""
        row = self._pos.get(segment_id) if self._pos is not None else None
        if row is None:
            try:
                row = self._ids.index(segment_id)
            except ValueError:
                return
        if row >= len(self._rows):
            return
        got = segment_rows(self._conn, [segment_id]).get(segment_id)
        if got:
            self._rows[row] = got
            self.dataChanged.emit(self.index(row, 0), self.index(row, self.columnCount() - 1))

    # ---- Qt model interface ---------------------------------------------------------
    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(SEGMENT_COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return SEGMENT_COLUMNS[section].title
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return SEGMENT_COLUMNS[section].help or None
        return None

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        r = self._rows[index.row()]
        key = SEGMENT_COLUMNS[index.column()].key
        if role == self.SegmentIdRole:
            return r[0]
        if role == self.VideoIdRole:
            return r[1]
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(r, key)
        if role == Qt.ItemDataRole.ToolTipRole:
            if key == "text":
                return r[5]
            if key == "video":
                return r[2]
            if key == "verdict":
                return r[10] or "not reviewed yet"
        if role == Qt.ItemDataRole.TextAlignmentRole and SEGMENT_COLUMNS[index.column()].numeric:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole:
            if key == "verdict" and r[10]:
                verdicts = {part.split(": ", 1)[-1] for part in r[10].split(", ")}
                if len(verdicts) == 1:
                    return QBrush(VERDICT_COLOURS.get(verdicts.pop(), QColor("black")))
            if key == "status" and r[6] not in (None, "ok"):
                return QBrush(QColor("#8a5a00"))
        return None

    @staticmethod
    def _display(r: tuple, key: str) -> Any:
        if key == "id":
            return r[0]
        if key == "video":
            return f"{r[1]} · {Path(r[2]).name}" if r[2] else r[1]
        if key == "start":
            return _fmt_time(r[3])
        if key == "duration":
            return "" if r[3] is None else f"{r[4] - r[3]:.1f} s"
        if key == "text":
            return r[5] or ""
        if key == "status":
            return r[6] or ""
        if key == "emotion":
            return r[7] or "—"
        if key == "score":
            return "" if r[8] is None else f"{float(r[8]):.2f}"
        if key == "speaker":
            return r[12] or ""
        if key == "asd":
            return "" if r[9] is None else f"{float(r[9]):.2f}"
        if key == "verdict":
            return verdict_summary(r[10])
        return None

    def close(self) -> None:
        self._closed = True
        self._pool.submit(self._close_worker_conn)
        self._pool.shutdown(wait=True)
        self._conn.close()


class VideoTableModel(QAbstractTableModel):
    """Videos with their segment, annotation, review and error counts (all rows in memory:
    a project holds thousands of videos at most)."""

    COLUMNS = ("ID", "File", "Duration", "Size", "Stages done", "Segments", "Labelled", "Reviewed", "Errors")
    VideoIdRole = Qt.ItemDataRole.UserRole + 2

    def __init__(self, db_path: str | Path, parent=None):
        super().__init__(parent)
        self._conn = open_readonly(db_path)
        self._rows: list[tuple] = []
        self.refresh()

    def refresh(self) -> None:
        self.beginResetModel()
        self._rows = self._conn.execute("""
            SELECT v.id, v.path, v.duration_s, v.width, v.height,
                   (SELECT COUNT(*) FROM stage_state st WHERE st.video_id = v.id AND st.status = 'done'),
                   (SELECT COUNT(*) FROM segments s WHERE s.video_id = v.id),
                   (SELECT COUNT(DISTINCT a.segment_id) FROM annotations a JOIN segments s ON s.id = a.segment_id
                     WHERE s.video_id = v.id),
                   (SELECT COUNT(DISTINCT a.segment_id) FROM reviews r JOIN annotations a ON a.id = r.annotation_id
                     JOIN segments s ON s.id = a.segment_id WHERE s.video_id = v.id),
                   (SELECT COUNT(*) FROM errors e WHERE e.video_id = v.id)
            FROM videos v ORDER BY v.id""").fetchall()
        self.endResetModel()

    def video_id(self, row: int) -> int | None:
        return self._rows[row][0] if 0 <= row < len(self._rows) else None

    def row_of(self, video_id: int) -> int | None:
        for i, r in enumerate(self._rows):
            if r[0] == video_id:
                return i
        return None

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        return None

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        r = self._rows[index.row()]
        c = index.column()
        if role == self.VideoIdRole:
            return r[0]
        if role == Qt.ItemDataRole.ToolTipRole and c == 1:
            return r[1]
        if role == Qt.ItemDataRole.TextAlignmentRole and c != 1:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole and c == 8 and r[9]:
            return QBrush(QColor("#b3261e"))
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if c == 0:
            return r[0]
        if c == 1:
            return Path(r[1]).name
        if c == 2:
            return _fmt_time(r[2])
        if c == 3:
            return f"{r[3]}×{r[4]}" if r[3] else ""
        if c == 4:
            return f"{r[5]} / {len(STAGE_ORDER) - 1}"
        return r[c + 1]

    def close(self) -> None:
        self._conn.close()


def distinct_values(conn: sqlite3.Connection, what: str) -> list[str]:
    """Choices for the filter bar: 'emotion', 'status' or 'rater'."""
    sql = {
        "emotion": "SELECT DISTINCT primary_emotion FROM annotations ORDER BY 1",
        "status": "SELECT DISTINCT status FROM segments ORDER BY 1",
        "rater": "SELECT name FROM raters ORDER BY name",
    }[what]
    return [r[0] for r in conn.execute(sql) if r[0] is not None]

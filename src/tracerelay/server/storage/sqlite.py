"""The SQLite store: one file, WAL, one writer, readers alongside.

Writes arrive from the single writer thread (``storage/writer.py``), several
requests' batches per transaction, committed with ``synchronous=FULL``: a
commit is on disk before any of those requests is answered, so a 200 survives
``kill -9`` and a power cut, and the fsync is shared by the whole group.
Readers use their own connection per thread; WAL lets them read while the
writer writes. Copying the WAL back into the database file (the checkpoint)
runs on a thread of its own (``_Checkpointer``), not inside the writer's
commits as SQLite would by default: the writer's turn is the ingest's
bottleneck, and a checkpoint's page copies and fsyncs took a fifth of it.

Per transaction: spans already stored for the keys of the group are read back
(one query per few hundred keys), merged with the new events in Python
(``storage/merge.py``), then new rows are inserted and changed rows updated
with ``executemany``; the traces touched get their derived columns (root
name, service, start, end, span and error counts) recomputed from their spans
in one ``INSERT … SELECT … ON CONFLICT DO UPDATE``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson

from tracerelay.server.storage.base import StorageError, start_order
from tracerelay.server.storage.merge import Registers, SpanState
from tracerelay.server.storage.migrate import upgrade
from tracerelay.server.storage.queries import SQLITE, SqlReads
from tracerelay.server.storage.rows import (
    SPAN_COLUMNS,
    SpanWrite,
    Work,
    WriteBatch,
    WriteResult,
    by_project,
    fold,
    pending_row,
    pending_state,
    span_row,
    span_state_of_row,
    trace_body,
    trace_state_of_body,
)

__all__ = ["SqliteStore"]


_CHUNK = 400  # keys per lookup query (2 variables each, well under SQLite's limit)
_INSERT_SPANS_HEAD = f"INSERT INTO spans ({', '.join(SPAN_COLUMNS)}) VALUES "
_ROW_MARKS = f"({', '.join('?' * len(SPAN_COLUMNS))})"
_log = logging.getLogger(__name__)
_WAL_KEEP_BYTES = 64 << 20
_MAX_VARIABLES = 32_766  # SQLite ≥ 3.32; older builds allow 999 (see _rows_per_insert)
_UPDATE_SPAN = (
    "UPDATE spans SET "
    + ", ".join(f"{c} = ?" for c in SPAN_COLUMNS[3:])
    + " WHERE project_id = ? AND trace_id = ? AND span_id = ?"
)
TRACE_SPANS = (
    "SELECT span_id, parent_span_id, name, body, start_ns, sequence FROM spans "
    "WHERE project_id = ? AND trace_id = ?"
)
_DERIVE_TRACES = """
INSERT INTO traces (project_id, trace_id, root_name, service, start_ns, end_ns,
                    span_count, error_count)
SELECT project_id, trace_id,
       max(CASE WHEN parent_span_id IS NULL THEN name END),
       coalesce(max(CASE WHEN parent_span_id IS NULL THEN service END), min(service)),
       min(start_ns), max(end_ns), count(*), sum(status_code = 'error')
FROM spans WHERE project_id = ? AND trace_id IN ({marks})
GROUP BY project_id, trace_id
ON CONFLICT (project_id, trace_id) DO UPDATE SET
    root_name = excluded.root_name, service = excluded.service,
    start_ns = excluded.start_ns, end_ns = excluded.end_ns,
    span_count = excluded.span_count, error_count = excluded.error_count
"""


class SqliteStore(SqlReads):
    """``Store`` on one SQLite file; see the module docstring."""

    dialect = SQLITE

    def __init__(self, path: str, *, migrate: bool = True) -> None:
        self.path = os.path.abspath(path)
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        try:
            if migrate:
                upgrade(f"sqlite:///{self.path}")
            self._writer = self._connect()
            # The checkpointer copies the WAL; after it has, the file is cut back to
            # this size when the log restarts, so a burst does not leave it large.
            self._writer.execute("PRAGMA wal_autocheckpoint=0")
            self._writer.execute(f"PRAGMA journal_size_limit={_WAL_KEEP_BYTES}")
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open the SQLite database {self.path}: {exc}") from exc
        self._local = threading.local()
        self._admin_lock = threading.Lock()
        self._checkpointer = _Checkpointer(self._connect())

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA busy_timeout=10000")
        connection.row_factory = sqlite3.Row
        return connection

    def _reader(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
        return connection

    # -- writes (the writer thread only) ---------------------------------------------

    def write(self, batches: Sequence[WriteBatch]) -> list[WriteResult]:
        """Store ``batches`` in one transaction (see the module docstring)."""
        results = [WriteResult() for _ in batches]
        db = self._writer
        try:
            with _immediate(db):
                for project_id, work in by_project(batches, results).items():
                    self._write_project(db, project_id, work)
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite write failed: {exc}") from exc
        self._checkpointer.nudge()
        return results

    def _write_project(self, db: sqlite3.Connection, project_id: str, work: Work) -> None:
        spans, traces = fold(work)
        if spans:
            self._store_spans(db, project_id, spans, work)
        if traces:
            self._store_traces(db, project_id, traces, work)
        ids = sorted({trace_id for trace_id, _ in spans} | set(traces))
        if ids:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                db.execute(
                    _DERIVE_TRACES.format(marks=", ".join("?" * len(chunk))), [project_id, *chunk]
                )
        for batch, result in work:
            if batch.records:
                self._store_records(db, project_id, batch, result)

    def _store_spans(
        self,
        db: sqlite3.Connection,
        project_id: str,
        spans: dict[tuple[str, str], SpanWrite | SpanState],
        work: list[tuple[WriteBatch, WriteResult]],
    ) -> None:
        stored = self._stored_spans(db, project_id, list(spans))
        inserts, updates = [], []
        repeats: set[str] = set()
        for (trace_id, span_id), pending in spans.items():
            old = stored.get((trace_id, span_id))
            if old is None:
                inserts.append(pending_row(project_id, trace_id, span_id, pending))
                continue
            state = pending_state(pending)
            for version in (state.base, *state.overrides.values()):
                if old.knows(version):
                    repeats.add(version.partition(":")[2])
            if old.merge(state):
                row = span_row(project_id, trace_id, span_id, old)
                updates.append((*row[3:], project_id, trace_id, span_id))
        # Many rows per statement, not executemany: sqlite3 lets go of the GIL around
        # every statement it steps, and under load each take-back waits for another
        # thread's switch interval: one statement per row made inserts ~3× slower.
        per_statement = _rows_per_insert(db)
        for start in range(0, len(inserts), per_statement):
            chunk = inserts[start : start + per_statement]
            db.execute(
                _INSERT_SPANS_HEAD + ", ".join([_ROW_MARKS] * len(chunk)),
                [value for row in chunk for value in row],
            )
        if updates:
            db.executemany(_UPDATE_SPAN, updates)
        if repeats:
            for batch, result in work:
                result.duplicates.update(w.event_id for w in batch.spans if w.event_id in repeats)

    @staticmethod
    def _stored_spans(
        db: sqlite3.Connection, project_id: str, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], SpanState]:
        """The stored states of those of ``keys`` already in the table.

        First the keys alone, by trace id (the primary key's prefix: an index-only
        scan, cheap even for a trace of many spans), then whole rows for the few
        that exist — a span usually arrives once, so this is mostly one query."""
        wanted = set(keys)
        trace_ids = sorted({trace_id for trace_id, _ in keys})
        present: list[tuple[str, str]] = []
        for start in range(0, len(trace_ids), _CHUNK):
            chunk = trace_ids[start : start + _CHUNK]
            rows = db.execute(
                f"SELECT trace_id, span_id FROM spans WHERE project_id = ? "
                f"AND trace_id IN ({', '.join('?' * len(chunk))})",
                [project_id, *chunk],
            )
            present += [key for key in map(tuple, rows) if key in wanted]
        found: dict[tuple[str, str], SpanState] = {}
        for trace_id, span_id in present:
            row = db.execute(
                "SELECT * FROM spans WHERE project_id = ? AND trace_id = ? AND span_id = ?",
                (project_id, trace_id, span_id),
            ).fetchone()
            found[(trace_id, span_id)] = span_state_of_row(dict(row))
        return found

    def _store_traces(
        self,
        db: sqlite3.Connection,
        project_id: str,
        traces: dict[str, Registers],
        work: list[tuple[WriteBatch, WriteResult]],
    ) -> None:
        ids = list(traces)
        stored: dict[str, Registers] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            rows = db.execute(
                f"SELECT trace_id, body FROM traces WHERE project_id = ? AND body IS NOT NULL "
                f"AND trace_id IN ({', '.join('?' * len(chunk))})",
                [project_id, *chunk],
            )
            for row in rows:
                stored[row["trace_id"]] = trace_state_of_body(row["body"])
        repeats: set[str] = set()
        rows_out = []
        for trace_id, state in traces.items():
            old = stored.get(trace_id)
            if old is not None:
                for version in (state.base, *state.overrides.values()):
                    if old.knows(version):
                        repeats.add(version.partition(":")[2])
                old.merge(state)
                state = old
            v = state.values
            rows_out.append(
                (project_id, trace_id, v.get("name"), v.get("user_id"), v.get("session_id"),
                 trace_body(state))
            )  # fmt: skip
        db.executemany(
            "INSERT INTO traces (project_id, trace_id, name, user_id, session_id, body) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (project_id, trace_id) DO UPDATE SET "
            "name = excluded.name, user_id = excluded.user_id, "
            "session_id = excluded.session_id, body = excluded.body",
            rows_out,
        )
        if repeats:
            for batch, result in work:
                result.duplicates.update(w.event_id for w in batch.traces if w.event_id in repeats)

    @staticmethod
    def _store_records(
        db: sqlite3.Connection, project_id: str, batch: WriteBatch, result: WriteResult
    ) -> None:
        ids = [r.event_id for r in batch.records]
        existing: set[str] = set()
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            existing.update(
                row[0]
                for row in db.execute(
                    f"SELECT event_id FROM records WHERE project_id = ? "
                    f"AND event_id IN ({', '.join('?' * len(chunk))})",
                    [project_id, *chunk],
                )
            )
        result.duplicates.update(existing)
        db.executemany(
            "INSERT INTO records (project_id, event_id, event_type, trace_id, span_id, name, "
            "time_ns, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                (project_id, r.event_id, r.event_type, r.trace_id, r.span_id, r.name, r.time_ns,
                 orjson.dumps(r.body).decode())
                for r in batch.records
            ],
        )  # fmt: skip

    def delete_before(self, cutoff_ns: int, *, limit: int = 5000) -> int:
        """Retention: whole traces that started before ``cutoff_ns``, a bounded number per
        call so the write lock is held briefly; then records older than it."""
        db = self._writer
        try:
            with _immediate(db):
                old = db.execute(
                    "SELECT project_id, trace_id FROM traces WHERE start_ns < ? LIMIT ?",
                    (cutoff_ns, limit),
                ).fetchall()
                keys = [(row[0], row[1]) for row in old]
                for table in ("spans", "records", "traces"):
                    db.executemany(
                        f"DELETE FROM {table} WHERE project_id = ? AND trace_id = ?", keys
                    )
                if len(keys) < limit:
                    db.execute("DELETE FROM records WHERE time_ns < ?", (cutoff_ns,))
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite retention failed: {exc}") from exc
        return len(keys)

    # -- async jobs -------------------------------------------------------------------

    def add_job(self, job_id: str, project_id: str, events: int, body: bytes) -> None:
        """Keep an async batch on disk (committed) before it is acknowledged."""
        try:
            self._writer.execute(
                "INSERT INTO jobs (job_id, project_id, status, created_at, events, body) "
                "VALUES (?, ?, 'queued', ?, ?, ?)",
                (job_id, project_id, time.time(), events, body),
            )
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite could not keep the job: {exc}") from exc

    def finish_job(self, job_id: str, result: str) -> None:
        """Record a job's result and drop its body."""
        try:
            self._writer.execute(
                "UPDATE jobs SET status = 'done', finished_at = ?, result = ?, body = NULL "
                "WHERE job_id = ?",
                (time.time(), result, job_id),
            )
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite could not finish the job: {exc}") from exc

    # -- reads ----------------------------------------------------------------------

    def get_trace(self, project_id: str, trace_id: str) -> dict[str, Any] | None:
        """The trace row and its spans, ordered by start; None if there is none."""
        db = self._reader()
        try:
            trace = db.execute(
                "SELECT * FROM traces WHERE project_id = ? AND trace_id = ?",
                (project_id, trace_id),
            ).fetchone()
            if trace is None:
                return None
            # No ORDER BY: the planner would then walk the (project, start) index across
            # the whole project to avoid a sort; by primary key it reads just this trace.
            cursor = db.execute(TRACE_SPANS, (project_id, trace_id))
            cursor.row_factory = None  # TraceSpan tuples: a third of the cost of sqlite3.Row
            spans = cursor.fetchall()
            spans.sort(key=start_order)
            records = db.execute(
                "SELECT * FROM records WHERE project_id = ? AND trace_id = ? ORDER BY time_ns",
                (project_id, trace_id),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite read failed: {exc}") from exc
        return {
            "trace": dict(trace),
            "spans": spans,
            "records": [dict(row) for row in records],
        }

    def _rows(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        try:
            return [dict(row) for row in self._reader().execute(sql, params).fetchall()]
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite read failed: {exc}") from exc

    # -- projects and keys -------------------------------------------------------------

    def _admin(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._admin_lock:
            db = self._reader()
            try:
                return db.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"SQLite failed: {exc}") from exc

    def ping(self) -> bool:
        """Whether the database answers."""
        try:
            self._reader().execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    def close(self) -> None:
        """Stop the checkpointer and close the writer's connection (readers' close with
        their threads); closing the last connection checkpoints what is left."""
        self._checkpointer.close()
        self._writer.close()


class _Checkpointer:
    """Copies committed WAL frames into the database file on its own thread and
    connection, after the writer's commits, at most every ``interval`` seconds.

    A passive checkpoint waits for no one: it copies what no reader still needs
    and leaves the rest for the next pass, while the writer goes on appending.
    Durability does not depend on it (each commit fsyncs the WAL); it keeps the
    WAL short, so reads stay fast and the log can restart from its beginning. A
    failed pass is retried on the next nudge, and SQLite checkpoints whatever is
    left when the last connection closes."""

    def __init__(self, connection: sqlite3.Connection, interval: float = 0.25) -> None:
        self._connection = connection
        self._interval = interval
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="tracerelay-checkpoint", daemon=True)
        self._thread.start()

    def nudge(self) -> None:
        """New frames were committed (called by the writer after each commit)."""
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._closing:
                return
            self._wake.clear()
            try:
                self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # the frames stay in the WAL for the next pass
                _log.warning("tracerelay: copying the SQLite WAL failed, will retry: %s", exc)
            time.sleep(self._interval)  # let frames gather: each pass copies a page once

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join(30)
        self._connection.close()


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    """A write transaction, the write lock taken at its start (``BEGIN IMMEDIATE``):
    committed when the block ends, rolled back when the block or the commit raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _rows_per_insert(db: sqlite3.Connection) -> int:
    """How many span rows fit in one statement's variables on this SQLite build."""
    getlimit = getattr(db, "getlimit", None)  # Python ≥ 3.11
    code = getattr(sqlite3, "SQLITE_LIMIT_VARIABLE_NUMBER", None)
    if getlimit is not None and code is not None:
        limit = int(getlimit(code))
    else:
        limit = _MAX_VARIABLES if sqlite3.sqlite_version_info >= (3, 32) else 999
    return max(1, min(limit, _MAX_VARIABLES) // len(SPAN_COLUMNS))

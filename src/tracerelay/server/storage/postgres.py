"""The PostgreSQL store: the same tables and the same merge as SQLite, for several replicas.

Each replica has one writer (``storage/writer.py``) on its own connection and
a small pool for reads. Replicas write at once, so new spans are copied
(``COPY``) into a temporary table and moved with ``INSERT … SELECT … ON
CONFLICT DO NOTHING RETURNING`` (the rows it returns were new);
for the others the stored row is read ``FOR UPDATE`` — locked until this
transaction commits, so two replicas merging events of one span take turns —
merged in Python (``storage/merge.py``) and updated. A batch sent to two
replicas is therefore stored once, whichever commits first.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from tracerelay.server.storage.base import (
    StorageError,
    TraceSpan,
    start_order,
)
from tracerelay.server.storage.merge import Registers, SpanState
from tracerelay.server.storage.migrate import upgrade
from tracerelay.server.storage.queries import POSTGRES, SqlReads
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

__all__ = ["PostgresStore"]


_COLUMNS = ", ".join(SPAN_COLUMNS)
# New spans are copied into a temporary table (COPY: one stream, no statement per row),
# then moved over in one INSERT … SELECT that skips the keys already stored.
_INCOMING = (
    "CREATE TEMPORARY TABLE incoming_spans (LIKE spans INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_COPY_INCOMING = f"COPY incoming_spans ({_COLUMNS}) FROM STDIN"
_INSERT_INCOMING = (
    f"INSERT INTO spans ({_COLUMNS}) SELECT {_COLUMNS} FROM incoming_spans "
    "ON CONFLICT (project_id, trace_id, span_id) DO NOTHING RETURNING trace_id, span_id"
)
_UPDATE_SPAN = (
    "UPDATE spans SET "
    + ", ".join(f"{c} = %s" for c in SPAN_COLUMNS[3:])
    + " WHERE project_id = %s AND trace_id = %s AND span_id = %s"
)
_DERIVE_TRACES = """
INSERT INTO traces (project_id, trace_id, root_name, service, start_ns, end_ns,
                    span_count, error_count)
SELECT project_id, trace_id,
       max(name) FILTER (WHERE parent_span_id IS NULL),
       coalesce(max(service) FILTER (WHERE parent_span_id IS NULL), min(service)),
       min(start_ns), max(end_ns), count(*), count(*) FILTER (WHERE status_code = 'error')
FROM spans WHERE project_id = %s AND trace_id = ANY(%s)
GROUP BY project_id, trace_id
ON CONFLICT (project_id, trace_id) DO UPDATE SET
    root_name = excluded.root_name, service = excluded.service,
    start_ns = excluded.start_ns, end_ns = excluded.end_ns,
    span_count = excluded.span_count, error_count = excluded.error_count
"""


class PostgresStore(SqlReads):
    """``Store`` on PostgreSQL; see the module docstring."""

    dialect = POSTGRES

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url.replace("postgresql+psycopg://", "postgresql://").replace(
            "postgres://", "postgresql://"
        )
        try:
            if migrate:
                upgrade(self.url.replace("postgresql://", "postgresql+psycopg://", 1))
            self._writer = psycopg.connect(self.url, row_factory=dict_row, autocommit=True)
            self._writer.execute(_INCOMING)
            self._pool = ConnectionPool(self.url, min_size=1, max_size=8, open=True)
        except (psycopg.Error, OSError) as exc:
            raise StorageError(f"cannot open the PostgreSQL database: {exc}") from exc

    # -- writes ---------------------------------------------------------------------

    def write(self, batches: Sequence[WriteBatch]) -> list[WriteResult]:
        """Store ``batches`` in one transaction (see the module docstring)."""
        results = [WriteResult() for _ in batches]
        db = self._writer
        try:
            with db.transaction():
                for project_id, work in by_project(batches, results).items():
                    self._write_project(db, project_id, work)
        except psycopg.Error as exc:
            raise StorageError(f"PostgreSQL write failed: {exc}") from exc
        return results

    def _write_project(self, db: psycopg.Connection[Any], project_id: str, work: Work) -> None:
        spans, traces = fold(work)
        repeats: set[str] = set()
        with db.cursor() as cur:
            if spans:
                repeats |= self._store_spans(cur, project_id, spans)
            if traces:
                repeats |= self._store_traces(cur, project_id, traces)
            touched = sorted({t for t, _ in spans} | set(traces))
            if touched:
                cur.execute(_DERIVE_TRACES, (project_id, touched))
            for batch, result in work:
                ids = {w.event_id for w in batch.spans} | {w.event_id for w in batch.traces}
                result.duplicates.update(ids & repeats)
                if batch.records:
                    self._store_records(cur, project_id, batch, result)

    @staticmethod
    def _store_spans(
        cur: psycopg.Cursor[Any],
        project_id: str,
        spans: dict[tuple[str, str], SpanWrite | SpanState],
    ) -> set[str]:
        keys = list(spans)
        with cur.copy(_COPY_INCOMING) as copy:
            for (trace_id, span_id), pending in spans.items():
                copy.write_row(pending_row(project_id, trace_id, span_id, pending))
        cur.execute(_INSERT_INCOMING)
        inserted = {(row["trace_id"], row["span_id"]) for row in cur.fetchall()}
        existing = [key for key in keys if key not in inserted]
        repeats: set[str] = set()
        for trace_id, span_id in existing:
            cur.execute(
                "SELECT * FROM spans WHERE project_id = %s AND trace_id = %s AND span_id = %s "
                "FOR UPDATE",
                (project_id, trace_id, span_id),
            )
            found = cur.fetchone()
            assert found is not None  # it conflicted, and rows are never deleted meanwhile
            old = span_state_of_row(found)
            state = pending_state(spans[(trace_id, span_id)])
            for version in (state.base, *state.overrides.values()):
                if old.knows(version):
                    repeats.add(version.partition(":")[2])
            if old.merge(state):
                row = span_row(project_id, trace_id, span_id, old)
                cur.execute(_UPDATE_SPAN, (*row[3:], project_id, trace_id, span_id))
        return repeats

    @staticmethod
    def _store_traces(
        cur: psycopg.Cursor[Any], project_id: str, traces: dict[str, Registers]
    ) -> set[str]:
        repeats: set[str] = set()
        for trace_id, state in traces.items():
            # Lock the row (made empty if missing) so replicas merge one trace in turn.
            cur.execute(
                "INSERT INTO traces (project_id, trace_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (project_id, trace_id),
            )
            cur.execute(
                "SELECT body FROM traces WHERE project_id = %s AND trace_id = %s FOR UPDATE",
                (project_id, trace_id),
            )
            locked = cur.fetchone()
            assert locked is not None
            body = locked["body"]
            if body is not None:
                old = trace_state_of_body(body)
                for version in (state.base, *state.overrides.values()):
                    if old.knows(version):
                        repeats.add(version.partition(":")[2])
                old.merge(state)
                state = old
            v = state.values
            cur.execute(
                "UPDATE traces SET name = %s, user_id = %s, session_id = %s, body = %s "
                "WHERE project_id = %s AND trace_id = %s",
                (v.get("name"), v.get("user_id"), v.get("session_id"), trace_body(state),
                 project_id, trace_id),
            )  # fmt: skip
        return repeats

    @staticmethod
    def _store_records(
        cur: psycopg.Cursor[Any], project_id: str, batch: WriteBatch, result: WriteResult
    ) -> None:
        rows = [
            (project_id, r.event_id, r.event_type, r.trace_id, r.span_id, r.name, r.time_ns,
             orjson.dumps(r.body).decode())
            for r in batch.records
        ]  # fmt: skip
        cur.executemany(
            "INSERT INTO records (project_id, event_id, event_type, trace_id, span_id, name, "
            "time_ns, body) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING "
            "RETURNING event_id",
            rows,
            returning=True,
        )
        inserted: set[str] = set()
        while True:
            inserted.update(row["event_id"] for row in cur.fetchall())
            if not cur.nextset():
                break
        result.duplicates.update(r.event_id for r in batch.records if r.event_id not in inserted)

    def add_job(self, job_id: str, project_id: str, events: int, body: bytes) -> None:
        """Keep an async batch (committed) before it is acknowledged."""
        self._execute_write(
            "INSERT INTO jobs (job_id, project_id, status, created_at, events, body) "
            "VALUES (%s, %s, 'queued', %s, %s, %s)",
            (job_id, project_id, time.time(), events, body),
        )

    def finish_job(self, job_id: str, result: str) -> None:
        """Record a job's result and drop its body."""
        self._execute_write(
            "UPDATE jobs SET status = 'done', finished_at = %s, result = %s, body = NULL "
            "WHERE job_id = %s",
            (time.time(), result, job_id),
        )

    def delete_before(self, cutoff_ns: int, *, limit: int = 5000) -> int:
        """Retention: whole traces that started before ``cutoff_ns``, a bounded number per
        call; then records older than it."""
        db = self._writer
        try:
            with db.transaction(), db.cursor() as cur:
                cur.execute(
                    "SELECT project_id, trace_id FROM traces WHERE start_ns < %s LIMIT %s",
                    (cutoff_ns, limit),
                )
                keys = [(row["project_id"], row["trace_id"]) for row in cur.fetchall()]
                for table in ("spans", "records", "traces"):
                    cur.executemany(
                        f"DELETE FROM {table} WHERE project_id = %s AND trace_id = %s", keys
                    )
                if len(keys) < limit:
                    cur.execute("DELETE FROM records WHERE time_ns < %s", (cutoff_ns,))
        except psycopg.Error as exc:
            raise StorageError(f"PostgreSQL retention failed: {exc}") from exc
        return len(keys)

    def _execute_write(self, sql: str, params: Sequence[Any]) -> None:
        try:
            with self._writer.transaction():
                self._writer.execute(sql, params)
        except psycopg.Error as exc:
            raise StorageError(f"PostgreSQL write failed: {exc}") from exc

    # -- reads ----------------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        try:
            with self._pool.connection() as db, db.cursor(row_factory=dict_row) as cur:
                return list(cur.execute(sql, params).fetchall())
        except psycopg.Error as exc:
            raise StorageError(f"PostgreSQL read failed: {exc}") from exc

    def get_trace(self, project_id: str, trace_id: str) -> dict[str, Any] | None:
        """The trace row and its spans (by start), and its records."""
        traces = self._rows(
            "SELECT * FROM traces WHERE project_id = %s AND trace_id = %s", (project_id, trace_id)
        )
        if not traces:
            return None
        try:
            with self._pool.connection() as db:
                spans: list[TraceSpan] = db.execute(
                    "SELECT span_id, parent_span_id, name, body::text, start_ns, sequence "
                    "FROM spans WHERE project_id = %s AND trace_id = %s",
                    (project_id, trace_id),
                ).fetchall()
        except psycopg.Error as exc:
            raise StorageError(f"PostgreSQL read failed: {exc}") from exc
        spans.sort(key=start_order)
        records = self._rows(
            "SELECT * FROM records WHERE project_id = %s AND trace_id = %s ORDER BY time_ns",
            (project_id, trace_id),
        )
        trace = traces[0]
        if trace["body"] is not None and not isinstance(trace["body"], str):
            trace["body"] = orjson.dumps(trace["body"]).decode()
        for record in records:
            if not isinstance(record["body"], str):
                record["body"] = orjson.dumps(record["body"]).decode()
        return {"trace": trace, "spans": spans, "records": records}

    # -- projects and keys -------------------------------------------------------------

    def _admin(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            with self._pool.connection() as db, db.cursor(row_factory=dict_row) as cur:
                cur.execute(sql, params)
                return list(cur.fetchall()) if cur.description else []
        except psycopg.Error as exc:
            raise StorageError(f"PostgreSQL failed: {exc}") from exc

    def ping(self) -> bool:
        """Whether the database answers."""
        try:
            self._admin("SELECT 1 AS one")
            return True
        except StorageError:
            return False

    def close(self) -> None:
        """Close the writer's connection and the pool."""
        self._writer.close()
        self._pool.close()

"""The one interface every store implements: write batches, read traces, keep keys.

Writes come from one writer per process (``storage/writer.py``), several
batches per transaction; reads come from request handlers, in a worker
thread, and may run while a write is under way. Every method that touches the
database blocks: callers keep it off the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from tracerelay.server.storage.rows import WriteBatch, WriteResult

__all__ = ["ApiKey", "StorageError", "Store", "TraceQuery", "TraceSpan", "start_order"]

TraceSpan: TypeAlias = tuple[str, str | None, str | None, str, int | None, int | None]
"""A span of a trace as read: (span_id, parent_span_id, name, body, start_ns, sequence);
``body`` is its JSON as ``GET /v1/traces/{id}`` returns it, but for the trace id
(``storage/rows.py``). Plain tuples: a trace of 10,000 spans is read without building
an object per span."""


def start_order(span: TraceSpan) -> tuple[int, int]:
    """The sort key of a trace's spans: start, then sequence (spans of one start)."""
    return (span[4] or 0, span[5] or 0)


class StorageError(Exception):
    """The database failed (unreachable, disk full, locked): retryable, answered 503."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key: never the key itself, only its hash."""

    key_id: str
    key_hash: str
    project_id: str
    project_name: str
    scopes: frozenset[str]
    name: str | None
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True, slots=True)
class TraceQuery:
    """The filters of ``GET /v1/traces`` (SPEC §2), already checked; None: no filter."""

    service: str | None = None
    name: str | None = None
    status: str | None = None  # "error": some span failed; "ok": none did
    min_duration_ns: int | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    user_id: str | None = None
    session_id: str | None = None
    attributes: tuple[tuple[str, str], ...] = ()  # some span has attribute key = value
    before: tuple[int, str] | None = None  # the cursor: (start_ns, trace_id) of the last seen
    limit: int = 50


class Store(Protocol):
    """Storage for one server process; see the module docstring."""

    def write(self, batches: Sequence[WriteBatch]) -> list[WriteResult]:
        """Store ``batches`` in one transaction, durably, before returning; one result
        per batch. Raises ``StorageError`` (nothing of any batch stored)."""
        ...

    def get_trace(self, project_id: str, trace_id: str) -> dict[str, Any] | None:
        """The trace row (``trace``), its spans (``spans``: ``TraceSpan`` tuples in start
        order) and its records (``records``), or None."""
        ...

    def search_traces(self, project_id: str, query: TraceQuery) -> list[dict[str, Any]]:
        """Trace rows matching ``query``, newest first, at most ``query.limit``."""
        ...

    def services(self, project_id: str, since_ns: int, until_ns: int) -> list[dict[str, Any]]:
        """Per service: spans, errors, first and last span start, in the window."""
        ...

    def dependencies(self, project_id: str, since_ns: int, until_ns: int) -> list[dict[str, Any]]:
        """Per (parent service, child service) across a parent/child span edge: calls, errors."""
        ...

    def red(
        self, project_id: str, since_ns: int, until_ns: int, service: str | None
    ) -> list[dict[str, Any]]:
        """Per (service, operation): count, errors, p50/p95/p99 duration (ns)."""
        ...

    def usage(self, project_id: str, since_ns: int, until_ns: int) -> list[dict[str, Any]]:
        """Per model: generations, input/output/total tokens, cost."""
        ...

    def add_job(self, job_id: str, project_id: str, events: int, body: bytes) -> None:
        """Keep an async batch durably until processed. Writer thread only."""
        ...

    def next_job(self) -> dict[str, Any] | None:
        """The oldest queued job (with its body), or None."""
        ...

    def finish_job(self, job_id: str, result: str) -> None:
        """Mark a job done with its result, dropping its body. Writer thread only."""
        ...

    def get_job(self, project_id: str, job_id: str) -> dict[str, Any] | None:
        """A job of the project, without its body."""
        ...

    def delete_before(self, cutoff_ns: int, *, limit: int = 5000) -> int:
        """Delete up to ``limit`` traces that started before ``cutoff_ns`` (with their
        spans and records) and records older than it; returns the traces deleted.
        Writer thread only."""
        ...

    def ensure_project(self, name: str) -> str:
        """The id of project ``name``, made if needed."""
        ...

    def project_count(self) -> int:
        """How many projects exist (0 on a fresh store)."""
        ...

    def add_key(self, key: ApiKey) -> None:
        """Store a new key."""
        ...

    def list_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included."""
        ...

    def key_by_hash(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, or None."""
        ...

    def revoke_key(self, key_id: str, at: float) -> bool:
        """Revoke a key; False if there is no such key."""
        ...

    def ping(self) -> bool:
        """Whether the database answers (``/ready``)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

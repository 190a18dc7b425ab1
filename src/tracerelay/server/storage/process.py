"""The store's writes in a child process of their own (``WriterProcess``).

    request threads ─► Writer thread (groups batches) ─► WriterProcess.write
                                                            │ pipe: the group, packed
                                                            ▼
                                          child process: store.write → COMMIT
                                                            │ pipe: duplicates per batch
                                          futures resolved ◄┘

Parsing a batch and writing it both need the interpreter lock of the process
they run in; in one process they took turns on one core while the other sat
idle. The child owns the write connection and runs the merge, the row binding
and the commit under its own lock, so the server uses both. The parent keeps
its store for reads and for maintenance calls (jobs, retention), which the
Writer runs between groups, so the two never write at once.

What crosses the pipe (``pack``/``unpack``) is each span's row and event id as
MessagePack (msgspec: ~0.7 µs a span to encode, where pickling the dataclasses
cost ~5 and plain tuples ~1.4 — on the parent's lock, so it counts twice), and
the rare trace and record events pickled beside them.

Failure modes: the child's ``StorageError`` comes back as one; a child that
died (killed, out of memory) fails the group in flight with ``StorageError``
(answered 503, retryable, nothing acknowledged) and is started again for the
next. The child ignores SIGINT (Ctrl-C reaches the whole process group; the
parent stops it in order) and exits when the parent's end of the pipe closes,
so a parent killed with ``kill -9`` leaves no writer behind.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from tracerelay.server.runtime import tune_gc
from tracerelay.server.storage.base import StorageError, Store
from tracerelay.server.storage.rows import SpanWrite, WriteBatch, WriteResult

__all__ = ["WriterProcess", "open_database", "pack", "unpack"]

_START_TIMEOUT = 60.0


def open_database(sqlite_path: str | None, database_url: str, *, migrate: bool = True) -> Store:
    """The store for a SQLite file (``sqlite_path``) or else a PostgreSQL URL."""
    if sqlite_path is None:
        from tracerelay.server.storage.postgres import PostgresStore

        return PostgresStore(database_url, migrate=migrate)
    from tracerelay.server.storage.sqlite import SqliteStore

    return SqliteStore(sqlite_path, migrate=migrate)


# A batch on the pipe: (project id, [(span row, event id)], pickled (traces, records)).
_Wire = list[tuple[str, list[tuple[tuple[Any, ...], str]], bytes]]
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_Wire)
_NOTHING = pickle.dumps(([], []))


def pack(batches: Sequence[WriteBatch]) -> bytes:
    """``batches`` as bytes for the pipe (a row's values are str, int, float or None)."""
    return _ENCODER.encode(
        [
            (
                b.project_id,
                [(w.row, w.event_id) for w in b.spans],
                pickle.dumps((b.traces, b.records)) if b.traces or b.records else _NOTHING,
            )
            for b in batches
        ]
    )


def unpack(data: bytes) -> list[WriteBatch]:
    """The batches ``pack`` made (a row holds its trace and span ids at 1 and 2)."""
    batches = []
    for project_id, spans, others in _DECODER.decode(data):
        traces, records = pickle.loads(others)
        batches.append(
            WriteBatch(project_id, [SpanWrite(r[1], r[2], r, e) for r, e in spans], traces, records)
        )
    return batches


class WriterProcess:
    """``write(batches)`` done by a child process; see the module docstring.

    Called from one thread at a time (the Writer's)."""

    def __init__(self, sqlite_path: str | None, database_url: str) -> None:
        self._target = (sqlite_path, database_url)
        self._lock = threading.Lock()
        self._process: Any = None
        self._pipe: Connection | None = None
        self.starts = 0
        self._start()

    @property
    def pid(self) -> int | None:
        """The child's process id (None while it is not running)."""
        return self._process.pid if self._process is not None else None

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded server
        parent, child = context.Pipe()
        process = context.Process(
            target=_serve, args=(child, *self._target), name="tracerelay-writer", daemon=True
        )
        process.start()
        child.close()
        if not parent.poll(_START_TIMEOUT):
            process.kill()
            raise StorageError("the writer process did not start")
        try:
            status, message = parent.recv()
        except (EOFError, OSError) as exc:
            raise StorageError(f"the writer process stopped while starting: {exc}") from exc
        if status != "ready":
            process.join(5)
            raise StorageError(message)
        self._process, self._pipe = process, parent
        self.starts += 1

    def write(self, batches: Sequence[WriteBatch]) -> list[WriteResult]:
        """Store ``batches`` in one transaction of the child; raises ``StorageError``."""
        with self._lock:
            if self._pipe is None:
                self._start()
            assert self._pipe is not None
            try:
                self._pipe.send_bytes(pack(batches))
                reply = self._pipe.recv()
            except (EOFError, OSError) as exc:
                code = self._stopped()
                raise StorageError(
                    f"the writer process stopped (exit code {code}); it is started again "
                    f"for the next write: {exc or type(exc).__name__}"
                ) from exc
        status, value = reply
        if status == "error":
            raise StorageError(value)
        return [WriteResult(set(duplicates)) for duplicates in value]

    def _stopped(self) -> int | None:
        process, self._process, pipe, self._pipe = self._process, None, self._pipe, None
        if pipe is not None:
            pipe.close()
        if process is None:
            return None
        process.join(5)
        if process.exitcode is None:
            process.kill()
            process.join(5)
        return process.exitcode  # type: ignore[no-any-return]

    def close(self, timeout: float = 30.0) -> None:
        """Let the child finish and close its store, then reap it."""
        with self._lock:
            process, pipe = self._process, self._pipe
            self._process = self._pipe = None
            if pipe is not None:
                pipe.close()  # the child sees the end of the pipe and closes its store
            if process is not None:
                process.join(timeout)
                if process.exitcode is None:
                    process.kill()
                    process.join(5)


def _serve(pipe: Connection, sqlite_path: str | None, database_url: str) -> None:
    """The child: open the store (already migrated by the parent), then write each group
    received and answer with its duplicates, until the parent's end closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        store = open_database(sqlite_path, database_url, migrate=False)
    except Exception as exc:
        pipe.send(("error", f"the writer process cannot open the store: {exc}"))
        return
    tune_gc()
    pipe.send(("ready", os.getpid()))
    try:
        while True:
            try:
                data = pipe.recv_bytes()
            except (EOFError, OSError):
                return
            try:
                results = store.write(unpack(data))
            except StorageError as exc:
                reply: tuple[str, Any] = ("error", str(exc))
            except Exception as exc:
                reply = ("error", f"the writer failed: {type(exc).__name__}: {exc}")
            else:
                reply = ("ok", [list(r.duplicates) for r in results])
            try:
                pipe.send(reply)
            except OSError:
                return
    finally:
        store.close()

"""The store's writes in a child process of their own (``WriterProcess``).

    request threads ─► Writer thread (groups batches) ─► WriterProcess.send ──┐
                                                            groups pipe       │
                                                                              ▼
                        child process: every group waiting → one store.write → COMMIT
                                                                              │
    futures resolved ◄── answers thread ◄── answers pipe: duplicates per group ┘

Parsing a batch and writing it both need the interpreter lock of the process
they run in; in one process they took turns on one core while the other sat
idle. The child owns the write connection and runs the merge, the row binding
and the commit under its own lock, so the server uses both. The parent keeps
its store for reads and for maintenance calls (jobs, retention, on its own
connection; SQLite's lock orders them with the child's transactions).

The Writer sends a group without waiting for the previous one's commit: while
the child commits, the next groups queue in the pipe (widened to 1 MiB), and
the child takes all of them into its next transaction. Answers come back in
the order sent and are handed to each group on the answers thread.

What crosses the pipe (``pack``/``unpack``) is each span's row and event id as
MessagePack (msgspec: ~0.7 µs a span to encode, where pickling the dataclasses
cost ~5 and plain tuples ~1.4 — on the parent's lock, so it counts twice), and
the rare trace and record events pickled beside them.

Failure modes: the child's ``StorageError`` comes back as one; a child that
died (killed, out of memory) fails every group it had not answered with
``StorageError`` (answered 503, retryable, nothing acknowledged) and is started
again for the next. The child ignores SIGINT (Ctrl-C reaches the whole process group; the
parent stops it in order) and exits when the parent's end of the pipe closes,
so a parent killed with ``kill -9`` leaves no writer behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import pickle
import signal
import threading
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from tracerelay.server.runtime import tune_gc
from tracerelay.server.storage.base import StorageError, Store
from tracerelay.server.storage.rows import SpanWrite, WriteBatch, WriteResult

__all__ = ["WriterProcess", "open_database", "pack", "unpack"]

_START_TIMEOUT = 60.0
_PIPE_BYTES = 1 << 20
_MAX_EVENTS = 20_000  # events per transaction at most, as the Writer's groups


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


Done = Callable[[list[WriteResult] | None, BaseException | None], None]
"""Told a sent group's outcome: its results, or the error that failed it."""


class _Child:
    """One run of the child process: its pipes, and the groups sent it awaiting answers."""

    def __init__(self, target: tuple[str | None, str]) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded server
        down_read, self.down = context.Pipe(duplex=False)  # groups, parent → child
        self.up, up_write = context.Pipe(duplex=False)  # answers, child → parent
        _widen(self.down)
        self.process = context.Process(
            target=_serve, args=(down_read, up_write, *target), name="tracerelay-writer",
            daemon=True,
        )  # fmt: skip
        self.process.start()
        down_read.close()
        up_write.close()
        self.waiting: deque[Done] = deque()
        self.lock = threading.Lock()
        self.dead = False  # the child is gone or going: send no more to it
        self.ended = False  # its answers are over: every group waiting has been told
        try:
            if not self.up.poll(_START_TIMEOUT):
                raise StorageError("the writer process did not start")
            status, message = self.up.recv()
        except (EOFError, OSError) as exc:
            self.stop(5)
            raise StorageError(f"the writer process stopped while starting: {exc}") from exc
        except StorageError:
            self.stop(5)
            raise
        if status != "ready":
            self.stop(5)
            raise StorageError(message)
        self.answers = threading.Thread(target=self._answers, name="tracerelay-writer-answers")
        self.answers.daemon = True
        self.answers.start()

    def send(self, data: bytes, done: Done) -> None:
        with self.lock:
            if self.ended:  # _answers has failed the waiting groups already
                late = True
            else:
                late = False
                self.waiting.append(done)
        if late:
            done(None, StorageError("the writer process stopped; retry"))
            return
        try:
            self.down.send_bytes(data)
        except OSError:
            # The child is gone: its answers pipe ends too, and _answers fails every
            # group still waiting, this one included.
            self.dead = True

    def _answers(self) -> None:
        """Each answer, in the order the groups were sent, to its group's ``done``; when
        the child ends, every group it did not answer fails."""
        while True:
            try:
                status, value = self.up.recv()
            except (EOFError, OSError):
                break
            with self.lock:
                done = self.waiting.popleft()
            if status == "ok":
                done([WriteResult(set(ids)) for ids in value], None)
            else:
                done(None, StorageError(value))
        self.dead = True
        self.process.join(5)
        code = self.process.exitcode
        with self.lock:
            lost, self.waiting = list(self.waiting), deque()
            self.ended = True
        for done in lost:
            done(None, StorageError(
                f"the writer process stopped (exit code {code}) before committing this batch; "
                "it is started again for the next one"
            ))  # fmt: skip

    def stop(self, timeout: float) -> None:
        """Close the groups pipe (the child writes what it holds, answers, and exits),
        wait for the answers, then reap the child."""
        self.down.close()
        answers = getattr(self, "answers", None)
        if answers is not None:
            answers.join(timeout)
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join(5)
        self.up.close()


class WriterProcess:
    """Groups written by a child process; see the module docstring.

    ``send`` returns as soon as the group is on its way: the child may be committing
    the previous one meanwhile, and takes every group waiting in the pipe into its
    next transaction. Sent from one thread at a time (the Writer's)."""

    def __init__(self, sqlite_path: str | None, database_url: str) -> None:
        self._target = (sqlite_path, database_url)
        self._lock = threading.Lock()
        self._child: _Child | None = _Child(self._target)
        self.starts = 1

    @property
    def pid(self) -> int | None:
        """The child's process id (None while it is not running)."""
        child = self._child
        return child.process.pid if child is not None and not child.dead else None

    def send(self, batches: Sequence[WriteBatch], done: Done) -> None:
        """Send ``batches`` to be written in one transaction; ``done`` is called (on
        another thread) with their results or a ``StorageError``. Starting a child
        that cannot start raises ``StorageError`` here."""
        data = pack(batches)
        with self._lock:
            child = self._child
            if child is None or child.dead:
                if child is not None:
                    child.stop(5)
                self._child = child = _Child(self._target)
                self.starts += 1
        child.send(data, done)

    def write(self, batches: Sequence[WriteBatch]) -> list[WriteResult]:
        """``send``, then wait for the commit; raises ``StorageError``."""
        answered = threading.Event()
        outcome: list[Any] = []

        def done(results: list[WriteResult] | None, error: BaseException | None) -> None:
            outcome[:] = [results, error]
            answered.set()

        self.send(batches, done)
        answered.wait()
        results, error = outcome
        if error is not None:
            raise error
        return results  # type: ignore[no-any-return]

    def close(self, timeout: float = 30.0) -> None:
        """Let the child write and answer what it was sent, close its store, and exit."""
        with self._lock:
            child, self._child = self._child, None
        if child is not None:
            child.stop(timeout)


def _widen(connection: Connection) -> None:
    """Let the pipe hold a whole group (Linux: up to 1 MiB unprivileged), so a send
    rarely waits for the child to read, nor wakes the sending thread per 64 KiB."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", 1031)
    with contextlib.suppress(OSError):
        fcntl.fcntl(connection.fileno(), setpipe, _PIPE_BYTES)


def _serve(down: Connection, up: Connection, sqlite_path: str | None, database_url: str) -> None:
    """The child: open the store (already migrated by the parent), then write the groups
    received — every one waiting in the pipe in one transaction — and answer each with
    its duplicates, until the parent closes the groups pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        store = open_database(sqlite_path, database_url, migrate=False)
    except Exception as exc:
        up.send(("error", f"the writer process cannot open the store: {exc}"))
        return
    tune_gc()
    up.send(("ready", os.getpid()))
    try:
        while True:
            try:
                groups = [unpack(down.recv_bytes())]
                events = sum(len(b) for b in groups[0])
                while events < _MAX_EVENTS and down.poll():
                    groups.append(unpack(down.recv_bytes()))
                    events += sum(len(b) for b in groups[-1])
            except (EOFError, OSError):
                return
            replies: list[tuple[str, Any]]
            try:
                results = store.write([batch for group in groups for batch in group])
            except StorageError as exc:
                replies = [("error", str(exc))] * len(groups)
            except Exception as exc:
                replies = [("error", f"the writer failed: {type(exc).__name__}: {exc}")] * len(
                    groups
                )
            else:
                answers = iter(results)
                replies = [
                    ("ok", [list(next(answers).duplicates) for _ in group]) for group in groups
                ]
            try:
                for reply in replies:
                    up.send(reply)
            except OSError:
                return
    finally:
        store.close()

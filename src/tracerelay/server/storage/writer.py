"""The writer: one thread per server process that commits requests' batches in groups.

    request handler ── submit(batch) ──► bounded queue ──► writer thread
          ▲                                                  │ takes every batch queued
          └──────── awaits its future ◄── resolved after ────┘ (up to max_group events),
                                          the group's commit     one store.write → commit

Each request waits for the commit that holds its batch: the answer is sent
only when the data is on disk (an acknowledgement is a promise), yet the
commit and its fsync are shared by every request that arrived meanwhile, so
more concurrent requests cost fewer commits each. With a ``WriterProcess`` the
thread sends each group and goes on to the next without waiting for the commit;
the answers come back on another thread (``storage/process.py``). The queue is
bounded by events; ``submit`` refuses (``QueueFull``) beyond it, and the ingest
answers 503 with Retry-After instead of growing memory.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

from tracerelay.server.storage.rows import WriteBatch, WriteResult

__all__ = ["QueueFull", "Writer"]

T = TypeVar("T")


class Writes(Protocol):
    """Where a group goes: a ``Store``, or a ``WriterProcess`` in front of one."""

    def write(self, batches: Sequence[WriteBatch]) -> list[WriteResult]: ...


class QueueFull(Exception):
    """The writer holds as many events as it may: shed load (503, Retry-After)."""


@dataclass(slots=True)
class _Job:
    batch: WriteBatch
    future: Future[WriteResult]


@dataclass(slots=True)
class _Call:
    """Maintenance (retention) run on the writer's thread, between groups."""

    function: Callable[[], object]
    future: Future[object]


class Writer:
    """Group-committing writer thread over a ``Store``; see the module docstring."""

    def __init__(
        self, store: Writes, *, max_queued: int = 200_000, max_group: int = 20_000
    ) -> None:
        self.store = store
        self.max_queued = max_queued
        self.max_group = max_group
        self._jobs: deque[_Job] = deque()
        self._calls: deque[_Call] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closing = False
        # A sink that can take a group without waiting for its commit (WriterProcess):
        # the next group is sent while the child commits this one.
        self._send: Callable[..., None] | None = getattr(store, "send", None)
        self._thread = threading.Thread(target=self._run, name="tracerelay-writer", daemon=True)
        self._thread.start()
        self.commits = 0
        self.events_written = 0

    @property
    def queued(self) -> int:
        """Events waiting for a commit."""
        return self._queued

    def submit(self, batch: WriteBatch) -> asyncio.Future[WriteResult]:
        """Queue ``batch``; the returned future resolves after its commit. Raises
        ``QueueFull`` when the queue is at its bound. Call from the event loop."""
        future: Future[WriteResult] = Future()
        size = len(batch)
        with self._cond:
            if self._closing:
                raise QueueFull("the server is shutting down")
            if self._queued and self._queued + size > self.max_queued:
                raise QueueFull(f"{self._queued} events wait to be written")
            self._jobs.append(_Job(batch, future))
            self._queued += size
            self._cond.notify()
        return asyncio.wrap_future(future)

    def call(self, function: Callable[[], T]) -> Future[T]:
        """Run ``function`` on the writer's thread (it owns the write connection) before
        the next group; the future holds its result."""
        future: Future[T] = Future()
        with self._cond:
            self._calls.append(_Call(function, future))  # type: ignore[arg-type]
            self._cond.notify()
        return future

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._calls and not self._closing:
                    self._cond.wait()
                calls = list(self._calls)
                self._calls.clear()
            for call in calls:
                try:
                    outcome: object = call.function()
                except Exception as exc:
                    _settle(call.future, error=exc)
                else:
                    _settle(call.future, result=outcome)
            with self._cond:
                if not self._jobs:
                    if self._closing:
                        return
                    continue
                group: list[_Job] = []
                size = 0
                while self._jobs and (
                    not group or size + len(self._jobs[0].batch) <= self.max_group
                ):
                    job = self._jobs.popleft()
                    group.append(job)
                    size += len(job.batch)
                self._queued -= size
            batches = [job.batch for job in group]
            if self._send is not None:  # a WriterProcess: answered on its own thread
                try:
                    self._send(batches, partial(self._done, group, size))
                except Exception as exc:
                    self._done(group, size, None, exc)
                continue
            try:
                results = self.store.write(batches)
            except Exception as exc:
                self._done(group, size, None, exc)
            else:
                self._done(group, size, results, None)

    def _done(
        self,
        group: list[_Job],
        size: int,
        results: list[WriteResult] | None,
        error: BaseException | None,
    ) -> None:
        if error is not None or results is None:
            for job in group:
                _settle(job.future, error=error or RuntimeError("no results"))
            return
        self.commits += 1
        self.events_written += size
        for job, result in zip(group, results, strict=True):
            _settle(job.future, result=result)


def _settle(future: Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    """Resolve ``future`` unless its waiter gave up meanwhile (a request whose client went
    away, a task cancelled at shutdown): the batch was still written, and a retry of it
    will be recognised as a repeat. A cancelled future must never stop the writer."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass

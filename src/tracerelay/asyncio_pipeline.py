"""The asyncio pipeline: ``BackgroundPipeline``'s queue, drained by a task on the event loop.

``AsyncClient`` uses it. Everything up to the queue is ``BackgroundPipeline``'s
own: ``submit`` is a ``deque.append`` and one comparison, from any thread, and
overflow, refusal after shutdown and fork handling are inherited unchanged.
What differs is who drains the queue:

- a task on the event loop instead of a thread, started lazily by the first
  record submitted while a loop runs in the submitting thread (or by
  ``start()``, which ``AsyncClient.start()`` and ``async with`` call); a
  backlog of a batch or more, queued before, is drained as it starts;
- waking it: where ``BackgroundPipeline`` sets a ``threading.Event``, this sets
  an ``asyncio.Event`` through ``loop.call_soon_threadsafe`` — still only when
  the wake threshold is crossed, so records from other threads are drained too;
- it processes and exports one batch (at most ``batch_size`` records) at a
  time and yields to the loop between batches (``await asyncio.sleep(0)``), so
  the loop is never held longer than one batch takes. It never waits on the
  network: the HTTP exporter's ``export`` only encodes and hands the batch to
  its sender thread.

``flush_async`` drains the same way, then waits for the exporters'
``force_flush`` in a worker thread (``asyncio.to_thread``): the loop keeps
running while delivery completes.

Without a running loop — records submitted before the loop started, or after
it closed, from threads that run no loop — nothing drains them in the
background: they wait in the queue (bounded, overflow counted as usual) until
a task starts on a loop, or until a flush or shutdown (``tracerelay.flush()``,
``shutdown()``, the exit handler), which drains inline in the calling thread.
When the loop ends while the task runs (``asyncio.run`` cancels every task),
the task processes what is queued before it goes, so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Any

from tracerelay._diagnostics import internal_error
from tracerelay.pipeline import _BACKLOG_WAIT_S, _CLOCK_RESYNC_S, BackgroundPipeline
from tracerelay.spans import resync_clock

__all__ = ["AsyncioPipeline"]

_LOCK_RETRY_S = 0.001  # another thread is flushing inline: look again this soon


class _LoopSignal(threading.Event):
    """What ``BackgroundPipeline`` calls ``_wake.set()`` on: here it wakes the drain task.

    A ``threading.Event`` by type only, so the inherited code can keep calling
    ``set()`` from any thread; nothing waits on it as such.
    """

    def __init__(self) -> None:
        super().__init__()
        self.target: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def set(self) -> None:
        """Wake the task on its loop; a no-op without a task or once its loop closed."""
        target = self.target
        if target is None:
            return
        loop, event = target
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # the loop is closed: flush or shutdown drains inline
            pass


class AsyncioPipeline(BackgroundPipeline):
    """A bounded queue drained in batches by a task on the running event loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._signal = _LoopSignal()
        self._wake = self._signal
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the drain task on the running loop now, unless one runs already.

        Call it from a coroutine; without it the first record submitted on the
        loop starts the task.
        """
        self._spawn(asyncio.get_running_loop())

    def _start(self) -> None:
        # BackgroundPipeline calls this each time the wake threshold is crossed and no
        # thread runs — always, here: a task that ended with its loop is replaced by one
        # on the next loop that submits.
        if self._task_alive():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop in this thread: the records wait (see the module docstring)
        self._spawn(loop)

    def _spawn(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._thread_lock:
            if self._task_alive() or self._closed or self._abandoned:
                return
            event = asyncio.Event()
            if len(self._queue) >= self._normal_wake_at or self._pending:
                # A backlog from before the loop ran, or records an earlier run kept
                # at exit: drain them now.
                event.set()
            self._signal.target = (loop, event)
            self._signalled = False
            # An empty context: the task must not run inside the span whose end started it.
            self._task = contextvars.Context().run(loop.create_task, self._drain_task(event))

    def _task_alive(self) -> bool:
        # A loop closed without cancelling its tasks (run_until_complete, then close)
        # leaves ours pending for ever: it counts as gone.
        task = self._task
        return task is not None and not task.done() and not task.get_loop().is_closed()

    async def _drain_task(self, event: asyncio.Event) -> None:
        try:
            while not self._abandoned:
                try:
                    await asyncio.wait_for(event.wait(), self._interval)
                except asyncio.TimeoutError:
                    pass
                event.clear()
                self._signalled = False
                try:
                    now = time.monotonic()
                    if now - self._last_resync > _CLOCK_RESYNC_S:
                        self._last_resync = now
                        resync_clock()
                    await self._drain_on_loop()
                    if self._export_lock.acquire(blocking=False):
                        try:
                            self._announce_due()  # long spans, in instant mode
                        finally:
                            self._export_lock.release()
                except Exception as exc:
                    internal_error("pipeline.task", exc)
                if self._closed and not self._queue:
                    return
        except asyncio.CancelledError:
            # The loop is ending (asyncio.run cancels every task) or shutdown stopped us:
            # process what is queued now, while the exporters still take it.
            self._drain_inline()
            raise
        finally:
            target = self._signal.target
            if target is not None and target[1] is event:  # not a successor's
                self._signal.target = None

    async def _drain_on_loop(self, deadline: float | None = None) -> bool:
        """Export queued records one batch at a time, yielding between batches.

        False if the deadline passed first. The export lock is held for one batch
        only and never across an ``await``; when another thread holds it (an inline
        flush), the task waits without blocking the loop.
        """
        queue, overflow = self._queue, self._overflow
        lock = self._export_lock
        while queue or overflow or self._pending:
            if deadline is not None and time.monotonic() > deadline:
                return False
            if self._backlogged():  # as the thread does: wait for the exporter
                await asyncio.sleep(_BACKLOG_WAIT_S)
                continue
            if not lock.acquire(blocking=False):
                await asyncio.sleep(_LOCK_RETRY_S)
                continue
            try:
                if overflow is not None and len(queue) > self._spill_at:
                    self._spill(overflow)
                if self._pending is not None and not queue and not overflow:
                    self._pending.adopt()  # once: a dead process's kept records too
                batch = self._next_batch()
                if batch:
                    self._export(batch)
            finally:
                lock.release()
            if not batch and not queue and not overflow:
                break  # the pending files ran out of readable records
            await asyncio.sleep(0)
        return True

    def _drain_inline(self) -> None:
        try:
            with self._export_lock:
                self._drain()
        except Exception as exc:
            internal_error("pipeline.task", exc)

    async def flush_async(self, timeout: float | None = None) -> bool:
        """Drain on the loop, then wait for the exporters in a thread; True if done in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            drained = await self._drain_on_loop(deadline)
        except Exception as exc:
            internal_error("pipeline.flush", exc)
            drained = False
        flushed = await asyncio.to_thread(self._flush_exporters, deadline)
        return flushed and drained

    async def shutdown_async(self, timeout: float | None = None) -> bool:
        """``flush_async``, then ``shutdown`` in a thread (exporters may block closing).

        What arrived during the flush is drained there, within what is left of
        ``timeout``; the rest is counted as ``BackgroundPipeline.shutdown`` says.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        done = await self.flush_async(timeout)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        done = await asyncio.to_thread(self.shutdown, remaining) and done
        task = self._task
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            await asyncio.wait([task])
        return done

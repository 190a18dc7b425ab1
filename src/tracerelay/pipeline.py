"""The pipeline: finished records → queue → processors → exporters.

Traced code only ever calls ``submit(record)``: a ``deque.append`` and a length
check, no lock, no I/O. A daemon thread, started lazily on the first record,
wakes every ``flush_interval`` seconds or as soon as a batch is full (in
``instant`` mode, as soon as anything is queued), takes what is queued in
batches, gives each record its event id, runs the processors and hands the
batch to every exporter.

When records arrive faster than the thread processes them, the queue grows
past ``max_queue_size``. With an ``Overflow`` (the client gives one whenever a
spool is configured) the thread then parks the newest records raw on disk at
~1 µs each and reads them back when the queue has room; the caller's queue is
cut only at ``_HARD_CAP`` times ``max_queue_size``, should even parking fall
behind. Without one, the oldest records beyond ``max_queue_size`` are dropped.
Either way every loss is counted by reason: never silent.

In instant mode an ``Announcer`` (``tracerelay.announce``) adds long spans'
announces and completions to each batch before it is processed, and the
thread also wakes on a short tick so a span is announced while it runs.

``SyncPipeline`` does the same work inline in ``submit``; ``tracerelay.testing``
uses it so a test sees each span the moment it ends.

After ``os.fork`` the owner calls ``abandon()`` on the parent's pipeline in the
child and builds a fresh one, so the child neither inherits a dead thread nor
re-exports the parent's queued records.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from tracerelay._diagnostics import internal_error
from tracerelay.export import Exporter, ExportResult
from tracerelay.ids import new_event_ids
from tracerelay.overflow import Overflow
from tracerelay.spans import Span, resync_clock

if TYPE_CHECKING:
    from tracerelay.announce import Announcer
    from tracerelay.pending import Pending

__all__ = ["BackgroundPipeline", "Pipeline", "SyncPipeline"]

Processor = Callable[[Any], Any]
_CLOCK_RESYNC_S = 60.0
_HARD_CAP = 2  # with an overflow file, the queue holds at most this many × max_queue_size
_CALLER_PARK_CHUNK = 1000  # records a caller parks at once when the queue is at its hard cap
_BACKLOG_WAIT_S = 0.005


def _span_handler(processor: Processor) -> Processor:
    """``processor.process_span`` when it is as specific as its ``__call__``, else the processor.

    A subclass that overrides only ``__call__`` must still have that override called.
    """
    mro = type(processor).__mro__

    def defined_at(name: str) -> int | None:
        return next((i for i, cls in enumerate(mro) if name in vars(cls)), None)

    fast, call = defined_at("process_span"), defined_at("__call__")
    if fast is not None and call is not None and fast <= call:
        handler: Processor = processor.process_span  # type: ignore[attr-defined]
        return handler
    return processor


class Pipeline:
    """Processing and export shared by both pipelines; counts what happens to records."""

    # Instant mode only (BackgroundPipeline): adds long spans' announces and
    # completions to each batch before it is processed (tracerelay.announce).
    _announcer: Announcer | None = None

    def __init__(self, processors: Iterable[Processor], exporters: Iterable[Exporter]) -> None:
        self.processors = list(processors)
        # For spans, a processor's ``process_span`` (if it has one) skips the type
        # dispatch its ``__call__`` would do: one Python call per processor, not two.
        self._span_chain = [(p, _span_handler(p)) for p in self.processors]
        self._chain = [(p, p) for p in self.processors]
        self.exporters = list(exporters)
        self._export_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.processed = 0
        self.exported_batches = 0
        self.failed = 0
        self.dropped: Counter[str] = Counter()
        self._closed = False

    def submit(self, record: Any) -> None:
        """Take one finished record (called from traced code: must be cheap and never raise)."""
        raise NotImplementedError

    def flush(self, timeout: float | None = None) -> bool:
        """Process and export everything submitted so far; True if done in time."""
        raise NotImplementedError

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush, then shut the exporters down; later records are dropped (counted)."""
        done = self.flush(timeout)
        self._closed = True
        self._shutdown_exporters()
        return done

    def _shutdown_exporters(self) -> None:
        for exporter in self.exporters:
            try:
                exporter.shutdown()
            except Exception as exc:
                internal_error("exporter.shutdown", exc)

    def stats(self) -> dict[str, Any]:
        """Counters: processed, exported batches, failed, dropped by reason, queued."""
        return {
            "processed": self.processed,
            "batches": self.exported_batches,
            "failed": self.failed,
            "dropped": dict(self.dropped),
            "queued": self.queued(),
        }

    def queued(self) -> int:
        """Records waiting in the queue."""
        return 0

    def abandon(self) -> None:
        """Stop without exporting anything more (in a forked child the records are the parent's)."""
        self._closed = True

    def _count_drop(self, reason: str, n: int = 1) -> None:
        with self._stats_lock:
            self.dropped[reason] += n

    def _process(self, batch: Sequence[Any]) -> list[Any]:
        out = []
        unnamed = [record for record in batch if record.event_id is None]
        for record, event_id in zip(unnamed, new_event_ids(len(unnamed)), strict=True):
            record.event_id = event_id
        span_chain, chain = self._span_chain, self._chain
        for record in batch:
            for processor, handle in span_chain if type(record) is Span else chain:
                try:
                    result = handle(record)
                except Exception as exc:
                    internal_error(f"processor {type(processor).__name__}", exc)
                    if not getattr(processor, "fail_closed", False):
                        # Keep the record as the earlier processors left it: losing it
                        # would be worse than one processor's work missing.
                        continue
                    # A redactor that failed may have left a secret in place: sending
                    # the record would be worse than losing it.
                    result = None
                if result is None:
                    self._count_drop(f"processor:{type(processor).__name__}")
                    record = None
                    break
                record = result
            if record is not None:
                out.append(record)
        return out

    def _export(self, batch: Sequence[Any]) -> None:
        """Process and export one batch; the caller holds ``_export_lock``."""
        if self._announcer is not None:
            batch = self._announcer.step(batch)
        records = self._process(batch)
        if not records:
            return
        for exporter in self.exporters:
            try:
                result = exporter.export(records)
            except Exception as exc:
                internal_error(f"exporter {type(exporter).__name__}", exc)
                result = ExportResult.FAILURE
            if result is not ExportResult.SUCCESS:
                with self._stats_lock:
                    self.failed += len(records)
        with self._stats_lock:
            self.processed += len(records)
            self.exported_batches += 1

    def _flush_exporters(self, deadline: float | None) -> bool:
        ok = True
        for exporter in self.exporters:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                ok = exporter.force_flush(remaining) and ok
            except Exception as exc:
                internal_error("exporter.force_flush", exc)
                ok = False
        return ok


class SyncPipeline(Pipeline):
    """Processes and exports each record inside ``submit``: for tests and debugging."""

    def submit(self, record: Any) -> None:
        """Process and export ``record`` now."""
        if self._closed:
            self._count_drop("shutdown")
            return
        try:
            with self._export_lock:
                self._export((record,))
        except Exception as exc:
            internal_error("pipeline.submit", exc)

    def flush(self, timeout: float | None = None) -> bool:
        """Nothing is queued; flush the exporters."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._flush_exporters(deadline)


class BackgroundPipeline(Pipeline):
    """A bounded queue drained in batches by a lazily started daemon thread."""

    def __init__(
        self,
        processors: Iterable[Processor],
        exporters: Iterable[Exporter],
        *,
        max_queue_size: int = 100_000,
        batch_size: int = 100,
        flush_interval: float = 5.0,
        instant: bool = False,
        overflow: Overflow | None = None,
        announcer: Announcer | None = None,
        pending: Pending | None = None,
    ) -> None:
        super().__init__(processors, exporters)
        self._queue: deque[Any] = deque()
        self._overflow = overflow
        self._pending = pending
        self._overflow_lock = threading.Lock()  # park/take: the thread, or a caller at the cap
        self._backlog_checks = [
            check for e in self.exporters if callable(check := getattr(e, "backlogged", None))
        ]
        # Beyond ``_spill_at`` the thread parks records in the overflow file, down to
        # half of it; the caller drops only beyond ``_max_queue``.
        self._spill_at = max_queue_size
        self._max_queue = max_queue_size * (_HARD_CAP if overflow is not None else 1)
        # In instant mode the thread is woken by every record; under load it finds
        # several queued and sends them together.
        self._normal_wake_at = min(1 if instant else batch_size, max_queue_size)
        self._wake_at = 0
        self._closed_reason = "shutdown"
        self._batch_size = batch_size
        self._interval = flush_interval
        self._wake = threading.Event()
        self._signalled = False
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._abandoned = False
        self._last_resync = time.monotonic()
        if announcer is not None:
            # Spans are announced from the thread's wake-ups: they must come often enough.
            self._announcer = announcer
            self._interval = min(self._interval, announcer.tick)

    def submit(self, record: Any) -> None:
        """Queue ``record``; drop the oldest (counted) when full. Never blocks."""
        queue = self._queue
        queue.append(record)
        # One comparison on the hot path. The threshold is 0 before the first record
        # (start the thread), after shutdown and after a fork (refuse), and otherwise
        # the batch size (1 in instant mode).
        if len(queue) >= self._wake_at:
            self._wake_worker()

    def _wake_worker(self) -> None:
        queue = self._queue
        if self._thread is None and not self._closed:
            self._start()
            self._wake_at = self._normal_wake_at
        if self._closed:
            # Nothing will drain the queue any more: refuse the newest record, counted.
            try:
                queue.pop()
                self._count_drop(self._closed_reason)
            except IndexError:
                pass
            return
        excess = len(queue) - self._max_queue
        if excess > 0 and self._overflow is not None:
            self._park_from_caller(excess)
        elif excess > 0:
            dropped = 0
            try:
                for _ in range(excess):
                    queue.popleft()
                    dropped += 1
            except IndexError:
                pass
            self._count_drop("queue_full", dropped)
        if len(queue) >= self._normal_wake_at and not self._signalled:
            self._signalled = True
            self._wake.set()

    def _park_from_caller(self, excess: int) -> None:
        """The thread cannot even park records as fast as they come (it is starved of
        the GIL, say): this caller parks the newest itself, a chunk at a time, so the
        queue never holds more than its hard cap. Rare, and ~1.5 µs a record."""
        queue, records = self._queue, []
        with self._overflow_lock:
            overflow = self._overflow
            try:
                for _ in range(max(excess, _CALLER_PARK_CHUNK)):
                    records.append(queue.pop())
            except IndexError:
                pass
            records.reverse()
            refused = overflow.park(records) if overflow is not None else records
        if refused:
            self._count_drop("queue_full", len(refused))

    def queued(self) -> int:
        """Records waiting: in the queue and parked in the overflow file."""
        overflow = self._overflow
        return len(self._queue) + (len(overflow) if overflow is not None else 0)

    def stats(self) -> dict[str, Any]:
        """``Pipeline.stats`` plus ``overflowed`` (records parked on disk so far), ``kept``
        (records written unprocessed at shutdown, for the next start: ``tracerelay.pending``)
        and ``restored`` (such records read back by this pipeline)."""
        stats = super().stats()
        stats["overflowed"] = self._overflow.parked_total if self._overflow is not None else 0
        pending = self._pending
        stats["kept"] = pending.kept if pending is not None else 0
        stats["restored"] = pending.restored if pending is not None else 0
        if pending is not None and pending.unreadable:
            stats["dropped"]["pending_unreadable"] = pending.unreadable
        return stats

    def start(self) -> None:
        """Start the thread now instead of at the first record (instant mode announces
        long spans from it, and the first span may be a long one)."""
        if self._thread is None and not self._closed:
            self._start()
            self._wake_at = self._normal_wake_at

    def _start(self) -> None:
        with self._thread_lock:
            if self._thread is not None or self._abandoned:
                return
            thread = threading.Thread(target=self._run, name="tracerelay-pipeline", daemon=True)
            thread.start()
            self._thread = thread

    def _run(self) -> None:
        pending = self._pending
        if pending is not None:
            # Records an earlier run kept at exit (its own, or a dead process's) are
            # processed as soon as the thread starts, not at the first wake-up.
            with self._export_lock:
                pending.adopt()
            if pending:
                self._wake.set()
        while not self._abandoned:
            self._wake.wait(self._interval)
            self._wake.clear()
            self._signalled = False
            try:
                now = time.monotonic()
                if now - self._last_resync > _CLOCK_RESYNC_S:
                    self._last_resync = now
                    resync_clock()
                with self._export_lock:
                    self._drain(spill=True)
                    self._announce_due()
            except Exception as exc:
                internal_error("pipeline.worker", exc)
            if self._closed and not self._queue:
                return

    def _announce_due(self) -> None:
        """Announce the spans now due even when no record woke the thread."""
        if self._announcer is not None:
            self._export(())

    def _drain(self, deadline: float | None = None, *, spill: bool = False) -> bool:
        """Export queued records, then parked ones, in batches; False if the deadline
        passed first. ``spill``: park what is beyond ``_spill_at`` (the thread does;
        a flush, which wants everything processed now, does not)."""
        queue, overflow = self._queue, self._overflow
        while queue or overflow or self._pending:
            if deadline is not None and time.monotonic() > deadline:
                return False
            if spill and self._closed:
                return False  # shutting down: the flush, not this thread, finishes up
            if spill and overflow is not None and len(queue) > self._spill_at:
                self._spill(overflow)
            if self._backlogged():
                # An exporter cannot take more yet (the network, or the spool, is slower
                # than this thread): wait for it rather than encode records only for
                # them to be spilled. Meanwhile nothing is processed, so holding many
                # records in memory buys nothing: all but a batch are parked, raw.
                if spill and overflow is not None and len(queue) > 2 * self._batch_size:
                    self._spill(overflow, keep=self._batch_size)
                time.sleep(_BACKLOG_WAIT_S)
                if self._abandoned:
                    return False
                continue
            batch = self._next_batch()
            if batch:
                self._export(batch)
            elif not queue and not overflow:
                break  # the pending files ran out of readable records
        return True

    def _next_batch(self) -> list[Any]:
        """The next batch to process, with the export lock held: from the queue, else
        the overflow file, else the pending files an earlier exit left."""
        if self._queue:
            # Only the holder of the export lock takes from the head of the queue,
            # so the records counted here are there to pop.
            return _take(self._queue, self._batch_size)
        if self._overflow:
            with self._overflow_lock:
                return self._overflow.take(self._batch_size)
        if self._pending:
            return self._pending.take(self._batch_size)
        return []

    def _backlogged(self) -> bool:
        """True when an exporter says it holds more than it should take in now."""
        return any(check() for check in self._backlog_checks)

    def _spill(self, overflow: Overflow, keep: int | None = None) -> None:
        """Park the newest records in the overflow file until the queue holds ``keep``
        (default: half of ``_spill_at``); any it refuses (unpicklable, file full) are
        processed now."""
        queue, parked = self._queue, []
        keep = self._spill_at // 2 if keep is None else keep
        try:
            for _ in range(len(queue) - keep):
                parked.append(queue.pop())
        except IndexError:
            pass  # the caller's cap trimmed the queue meanwhile
        parked.reverse()
        with self._overflow_lock:
            refused = overflow.park(parked)
        for start in range(0, len(refused), self._batch_size):
            self._export(refused[start : start + self._batch_size])

    def flush(self, timeout: float | None = None) -> bool:
        """Drain the queue from the calling thread, within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        acquired = self._export_lock.acquire(timeout=-1 if timeout is None else max(timeout, 0))
        if not acquired:
            return False
        try:
            drained = self._drain(deadline)
        except Exception as exc:
            internal_error("pipeline.flush", exc)
            drained = False
        finally:
            self._export_lock.release()
        return self._flush_exporters(deadline) and drained

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush within ``timeout``, stop the thread, shut the exporters down.

        Records the flush could not reach before the deadline are written raw to
        the spool (``tracerelay.pending``; a few ms for a full queue), processed and
        sent at the next start. Without a spool, or should that write fail, they
        are counted as dropped (``shutdown_deadline``): the process is exiting, and
        saying so is the least owed.
        """
        done = self.flush(timeout)
        self._closed = True  # the thread stops draining at its next batch
        self._wake_at = 0  # every later submit goes through the refusing branch
        self._wake.set()
        with self._export_lock:
            # With the lock held the thread is not in the middle of an export, so no
            # batch can reach an exporter after it has been shut down.
            left = list(self._queue)
            self._queue.clear()
            lost = len(left)
            with self._overflow_lock:
                overflow = self._overflow
                if self._pending is not None:
                    try:
                        _, lost = self._pending.keep(left, overflow)
                    except Exception as exc:
                        internal_error("pipeline.keep", exc)
                        lost += len(overflow) if overflow is not None else 0
                elif overflow is not None:
                    lost += len(overflow)
                if overflow is not None:
                    overflow.close()
            self._shutdown_exporters()
        if lost:
            self._count_drop("shutdown_deadline", lost)
        return done

    def abandon(self) -> None:
        """Forget the queue without exporting it (in a forked child: it is the parent's)."""
        self._abandoned = True
        self._closed = True
        self._closed_reason = "forked"
        self._wake_at = 0
        self._queue.clear()
        # The overflow file's descriptor is shared with the parent: never touch the
        # file from here. The parent's records in it are the parent's to send, and so
        # are the pending files its pipeline was reading.
        self._overflow = None
        self._pending = None


def _take(queue: deque[Any], n: int) -> list[Any]:
    """Up to ``n`` records from the head of ``queue``. A caller at the queue's cap may
    take records meanwhile (the oldest, without an overflow file), so the queue may
    run short before ``n``."""
    batch: list[Any] = []
    popleft = queue.popleft
    try:
        for _ in range(min(len(queue), n)):
            batch.append(popleft())
    except IndexError:
        pass
    return batch

"""The sender: threads that get encoded events to the server, or to the spool.

    HttpExporter.export ──► Sender.enqueue (bounded by bytes; overflow → spool)
                                 │ sender threads, one request in flight each
                                 ▼
       breaker open? ──► spool          else POST a batch (size from AIMD)
                                        through the policy (``deliverer.Deliverer``)
                                 │ queue idle and breaker closed
                                 ▼
                          replay the spool, oldest first (one thread)

One thread, ``tracerelay-sender``, starts with the first batch and stays; it
alone adopts orphaned spool files and replays the spool. When a backlog builds
(a full batch waiting while every sender thread is busy) and the limit of
requests in flight allows (``inflight.InFlight``: 1 … ``connection_pool_size``,
grown only while requests leave the process idle, i.e. the server is slow or
far), extra threads ``tracerelay-sender-2``, ``-3``, … start, each with one
request in flight; an extra thread ends after ``_EXTRA_IDLE_S`` without work.
An idle or lightly loaded app, or one sending to a fast server, keeps the one.

Shared by every thread: the queue, the limit, the pause (a Retry-After or a
backoff holds them all), the circuit breaker (while it is not closed, one
request at a time, so only one thread probes), the counters. ``flush`` counts
the events of every request in flight; ``close`` spools the batches of every
request still out at the deadline.

In instant mode (``stream=True``) a request of one event — what a thread finds
when spans end slower than a round trip — goes to ``/v1/uploads/stream``
instead; whenever more wait, they leave together as a batch.

Nothing here blocks the pipeline thread or traced code: ``enqueue`` takes a
lock held only for list operations. Waits (backoff, Retry-After) happen on the
sender's own threads and end early at shutdown, when whatever has not left is
written to the spool.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

from tracerelay._diagnostics import internal_error
from tracerelay.delivery.aimd import Aimd
from tracerelay.delivery.breaker import CircuitBreaker
from tracerelay.delivery.deliverer import Deliverer
from tracerelay.delivery.encoding import EncodedEvent, Encoder
from tracerelay.delivery.inflight import InFlight, Timing
from tracerelay.delivery.policy import Action, Backoff, Outcome
from tracerelay.delivery.spool import Spool
from tracerelay.delivery.transport import HttpTransport

__all__ = ["Sender"]

_IDLE_WAIT_S = 1.0
_EXTRA_IDLE_S = 5.0  # an extra sender thread without work this long ends
_SPILL_CHUNK = 5000  # events per spool file while the breaker is open
_STOP_GRACE_S = 1.0  # after the deadline, how long a send may take to notice the stop
_PRIMARY = 1  # the index of the thread that stays, replays and adopts


class Sender:
    """Delivers encoded events in batches from its own threads; see the module docstring."""

    def __init__(
        self,
        transport: HttpTransport,
        encoder: Encoder,
        *,
        batch_size: Aimd,
        backoff: Backoff,
        max_retries: int,
        max_queue_bytes: int,
        max_in_flight: int = 1,
        spool: Spool | None = None,
        breaker: CircuitBreaker | None = None,
        durable: bool = False,
        stream: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.deliverer = Deliverer(
            transport,
            encoder,
            batch_size=batch_size,
            backoff=backoff,
            max_retries=max_retries,
            spool=spool,
            breaker=breaker,
            stream=stream,
            observer=self._observe,
            clock=clock,
        )
        self.transport = transport
        self.batch_size = batch_size
        self.backoff = backoff
        self.max_queue_bytes = max_queue_bytes
        self.spool = spool
        self.breaker = breaker
        self.durable = durable and spool is not None
        self.inflight = InFlight(max_in_flight)
        self._queue: deque[EncodedEvent] = deque()
        self._queued_bytes = 0
        self._in_flight = 0  # events taken from the queue and not done yet, all threads
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # sender threads wait here for work
        self._settled = threading.Condition(self._lock)  # flush waits here for progress
        self._closing = False
        self._threads: dict[int, threading.Thread] = {}  # index → thread; 1 is the primary
        self._batches: dict[int, list[EncodedEvent]] = {}  # index → the new batch it is sending
        self._replay_not_before = 0.0  # monotonic time; a failed replay waits a backoff

    @property
    def counts(self) -> Counter[str]:
        """The delivery counters (``Deliverer.counts``)."""
        return self.deliverer.counts

    # -- called from the pipeline thread ----------------------------------------------

    def enqueue(self, events: Sequence[EncodedEvent]) -> None:
        """Take encoded events for delivery; never blocks on the network."""
        if self.durable and not self._closing:
            # Disk durability: the batch is on disk before anything else happens to it;
            # the primary thread sends it from the spool and removes it once delivered.
            self.deliverer.to_spool(list(events), "pending")
            with self._lock:
                self._replay_not_before = 0.0
                self._start_thread()
                self._work.notify_all()  # only the primary replays: wake it, not just any
            return
        spill: list[EncodedEvent] = []
        with self._lock:
            if self._closing:
                spill = list(events)
            else:
                self._queue.extend(events)
                self._queued_bytes += sum(len(e.data) for e in events)
                # Past max_queue_bytes the sender threads spill the oldest in large files
                # (while the breaker is open). Only if they cannot (stuck in requests) and
                # the queue reaches twice the bound does this thread spill, to keep memory
                # bounded: one file down to the bound, not one per batch.
                bound = self._bound()
                if self._queued_bytes > 2 * bound:
                    spill = self._pop_oldest(self._queued_bytes - bound)
                self._work.notify()
                self._start_thread()
                self._add_thread_if_backlogged()
        for start in range(0, len(spill), _SPILL_CHUNK):
            chunk = spill[start : start + _SPILL_CHUNK]
            self.deliverer.to_spool(chunk, "queue_full" if not self._closing else "shutdown")

    def backlogged(self) -> bool:
        """True while more encoded bytes wait than the queue's bound: the pipeline then
        holds back, parking raw records instead of encoding more for this queue."""
        return self._queued_bytes > self._bound()

    def start(self) -> None:
        """Start sending now, without waiting for a first batch: replays what was spooled."""
        with self._lock:
            self._start_thread()

    def flush(self, timeout: float | None) -> bool:
        """Wait until everything taken so far (spool included) is delivered; True if it was."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._replay_not_before = 0.0
            if self.spool is not None:
                self._start_thread()  # a flush also replays what an earlier run left
            self._work.notify_all()  # only the primary replays: wake it, not just any
            while self._queue or self._in_flight or self._spooled_here():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                primary = self._threads.get(_PRIMARY)
                if primary is None or not primary.is_alive():
                    return False
                self._settled.wait(remaining if remaining is not None else _IDLE_WAIT_S)
        return True

    def close(self, timeout: float) -> None:
        """Deliver what can be within ``timeout``, spool the rest, release the connections."""
        with self._lock:
            self._closing = True
            self._work.notify_all()
            threads = list(self._threads.values())
        deadline = time.monotonic() + max(timeout, 0.0)
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        if any(thread.is_alive() for thread in threads):
            self.deliverer.stop.set()  # end waits and retries: what is left goes to the spool
            with self._lock:
                self._work.notify_all()
            # A thread in a backoff or between requests sees the stop at once and spools
            # its own batch; one blocked on its socket cannot see it before the request
            # returns, so the grace ends as soon as only those are left.
            grace = time.monotonic() + _STOP_GRACE_S
            while time.monotonic() < grace:
                alive = [thread for thread in threads if thread.is_alive()]
                if len(alive) <= self.deliverer.on_wire:
                    break
                alive[0].join(0.01)
        with self._lock:
            # Requests still blocked on their sockets past the deadline: keep their
            # batches. Should one complete after all, the server drops the repeat.
            stuck = [event for batch in self._batches.values() for event in batch]
            rest = stuck + list(self._queue)
            self._queue.clear()
            self._queued_bytes = 0
        if rest:
            self.deliverer.to_spool(rest, "shutdown")
        self.deliverer.sealed = True
        self.transport.close()

    def metrics(self) -> dict[str, Any]:
        """Delivery counters for ``client.metrics()``."""
        counts = self.deliverer.counts
        batches = counts["batches"]
        attempts = counts["requests"]
        return {
            "queue_depth": len(self._queue),
            "items_delivered": counts["delivered"],
            "items_failed": counts["failed"],
            "items_spooled": counts["spooled"],
            "items_dropped": counts["dropped"],
            "duplicates": counts["duplicates"],
            "batches_processed": batches,
            "avg_batch_size": counts["delivered"] / batches if batches else 0.0,
            "avg_response_ms": 1000 * self.deliverer.rtt_total / attempts if attempts else 0.0,
            "error_rate": counts["request_errors"] / attempts if attempts else 0.0,
            "circuit_state": self.breaker.state if self.breaker else "disabled",
            "batch_size": self.batch_size.value,
            "in_flight_limit": self.inflight.limit.value,
            "requests_in_flight": self.inflight.requests,
        }

    # -- threads (every method below with "lock held" runs under self._lock) ------------

    def _start_thread(self) -> None:
        """Start the primary thread on first use (lock held)."""
        if _PRIMARY not in self._threads and not self._closing:
            self._spawn(_PRIMARY)

    def _add_thread_if_backlogged(self) -> None:
        """Start one more thread when every thread is busy with a request and another
        request may start (a full batch waits, the limit allows it) (lock held)."""
        threads = self._threads
        if (
            self._closing
            or _PRIMARY not in threads
            or self.inflight.requests < len(threads)  # a thread is free, or about to be
            or len(threads) >= self.inflight.maximum
            or not self._may_start()
        ):
            return
        self._spawn(
            next(i for i in range(_PRIMARY + 1, self.inflight.maximum + 1) if i not in threads)
        )

    def _spawn(self, index: int) -> None:
        name = "tracerelay-sender" if index == _PRIMARY else f"tracerelay-sender-{index}"
        thread = threading.Thread(target=self._run, args=(index,), name=name, daemon=True)
        self._threads[index] = thread
        try:
            thread.start()
        except RuntimeError as exc:  # out of threads, or the interpreter is exiting
            del self._threads[index]
            internal_error("sender.spawn", exc)

    def _run(self, index: int) -> None:
        if index == _PRIMARY and self.spool is not None:
            try:
                self.spool.adopt_orphans()
            except Exception as exc:
                internal_error("sender.adopt", exc)
        while True:
            with self._lock:
                work = self._next(index)
                if work is None:
                    del self._threads[index]
                    return
                batch, size = work
                self.inflight.started()
                self._in_flight += len(batch)
                self._batches[index] = batch
                self._add_thread_if_backlogged()
            try:
                if batch:
                    self.deliverer.deliver(batch, from_spool=False, size=size)
                else:
                    self._replay()
            except Exception as exc:
                internal_error("sender.run", exc)
                if batch:
                    self.deliverer.to_spool(batch, "internal_error")
            finally:
                with self._lock:
                    self.inflight.finished()
                    self._in_flight -= len(batch)
                    del self._batches[index]
                    self._work.notify()  # a slot is free: a waiting thread may start
                    self._settled.notify_all()

    def _next(self, index: int) -> tuple[list[EncodedEvent], int] | None:
        """Wait for this thread's next work (lock held): a batch and the batch size it
        was taken at, ``[]`` for a replay of the spool (the primary), or None when the
        thread should end."""
        idle_since = time.monotonic()
        while True:
            if self.deliverer.stop.is_set():
                return None  # past the shutdown deadline: close() spools what is queued
            if self._queue:
                work = self._take()
                if work is not None:
                    return work
            elif self._closing:
                return None
            if index == _PRIMARY:
                if self._replay_due():
                    return [], 0
            elif self._closing or time.monotonic() - idle_since >= _EXTRA_IDLE_S:
                return None
            self._work.wait(self._idle_wait(index, idle_since))

    def _may_start(self) -> bool:
        """Whether a request for queued events may start now (lock held)."""
        if not self._queue or self.deliverer.paused():
            return False
        if self.breaker is not None and not self.breaker.allows_requests():
            return self.inflight.requests == 0  # one at a time: one probe, one spill
        return self.inflight.may_start(len(self._queue), self.batch_size.value)

    def _take(self) -> tuple[list[EncodedEvent], int] | None:
        """The next batch and the batch size it was taken at, if a request may start
        now (lock held)."""
        if not self._may_start():
            return None
        # While the breaker is open nothing can be sent: spill what is queued in
        # large files (one fsync each), not batch by batch.
        size = _SPILL_CHUNK if self._breaker_open() else self.batch_size.value
        queue = self._queue
        batch = [queue.popleft() for _ in range(min(size, len(queue)))]
        self._queued_bytes -= sum(len(e.data) for e in batch)
        return batch, size

    def _idle_wait(self, index: int, idle_since: float) -> float:
        wait = _IDLE_WAIT_S
        if self.breaker is not None and not self.breaker.allows_requests():
            wait = min(wait, self.breaker.seconds_until_probe())
        if self._replay_not_before:
            wait = min(wait, self._replay_not_before - time.monotonic())
        if self.deliverer.paused():
            wait = min(wait, self.deliverer.resume_in())
        if index != _PRIMARY:
            wait = min(wait, idle_since + _EXTRA_IDLE_S - time.monotonic())
        return max(0.05, wait)

    def _observe(self, timing: Timing, outcome: Outcome) -> None:
        """After every request, from the thread that made it: adapt the concurrency limit."""
        with self._lock:
            before = self.inflight.limit.value
            backlog = self.inflight.binding(len(self._queue), self.batch_size.value)
            if self.inflight.observe(timing, outcome, backlog=backlog) > before:
                self._work.notify()  # a thread waiting for a free slot may start now
            if outcome.action is Action.DONE:
                self._replay_not_before = 0.0  # the server is back: replay without waiting

    # -- the queue's bound -------------------------------------------------------------

    def _bound(self) -> int:
        """``max_queue_bytes``; a quarter of it while nothing can be sent (backing off,
        or the breaker open): there is no reason to hold much in memory then."""
        if self.deliverer.paused() or self._breaker_open():
            return self.max_queue_bytes // 4
        return self.max_queue_bytes

    def _pop_oldest(self, nbytes: int) -> list[EncodedEvent]:
        """Take the oldest queued events holding at least ``nbytes`` (lock held)."""
        taken: list[EncodedEvent] = []
        queue, freed = self._queue, 0
        while freed < nbytes and len(queue) > 1:
            event = queue.popleft()
            freed += len(event.data)
            taken.append(event)
        self._queued_bytes -= freed
        return taken

    def _breaker_open(self) -> bool:
        """True while the breaker is open and no probe is due yet."""
        breaker = self.breaker
        return breaker is not None and breaker.state == "open" and breaker.seconds_until_probe() > 0

    # -- the spool ----------------------------------------------------------------------

    def _spooled_here(self) -> bool:
        return self.spool is not None and bool(self.spool.entries())

    def _replay_due(self) -> bool:
        """Whether the primary should replay the spool now (lock held)."""
        if self.spool is None or self._closing or time.monotonic() < self._replay_not_before:
            return False
        if self.deliverer.paused() or not self.inflight.has_room():
            return False
        if self.breaker is not None and self.breaker.state == "open":
            return self.breaker.seconds_until_probe() == 0.0 and self._spooled_here()
        return self._spooled_here()

    def _replay(self) -> None:
        """Replay spooled batches, oldest first, from one listing of the directory.

        Stops at the first batch that cannot be delivered (it waits a backoff
        before the next try), at shutdown, or when new records are waiting: they
        are sent first, and the replay continues on the next idle turn.
        """
        assert self.spool is not None
        for entry in self.spool.entries():
            if self._closing or self.deliverer.stop.is_set() or self._queue:
                return
            stored = self.spool.read(entry)
            if stored is None:  # corrupt: the spool set it aside and warned
                continue
            events = stored.encoded()
            if not self.deliverer.deliver(events, from_spool=True):
                self.spool.update_attempts(entry, stored.attempts + 1)
                with self._lock:
                    # Wait before the next replay, longer after each failure of this
                    # batch; a successful send or a flush ends the wait early.
                    self._replay_not_before = time.monotonic() + self.backoff.bound(stored.attempts)
                return
            self.spool.remove(entry)
            self.deliverer.count("replayed", len(events))

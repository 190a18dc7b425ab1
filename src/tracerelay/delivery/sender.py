"""The sender: a thread that gets encoded events to the server, or to the spool.

    HttpExporter.export ──► Sender.enqueue (bounded by bytes; overflow → spool)
                                 │ sender thread
                                 ▼
       breaker open? ──► spool          else POST a batch (size from AIMD)
           200/409 done · 207 resend retryable, report the rest once
           413 halve to one event → cut its largest text → dead-letter to the spool
           429/503/5xx/timeouts/resets retry after Retry-After or jittered backoff,
             up to max_retries, then spool · 400/401/403/404 one coded warning, spool
                                 │ queue idle and breaker closed
                                 ▼
                          replay the spool, oldest first

In instant mode (``stream=True``) a request of one event — what the thread finds
when spans end slower than a round trip — goes to ``/v1/uploads/stream``
instead, answered through the same policy; whenever more wait, they leave
together as a batch.

Nothing here blocks the pipeline thread or traced code: ``enqueue`` takes a
lock held only for list operations. Waits (backoff, Retry-After) happen on the
sender's own thread and end early at shutdown, when whatever has not left is
written to the spool.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import orjson

from tracerelay._diagnostics import internal_error, logger, warn_once
from tracerelay.delivery.aimd import Aimd
from tracerelay.delivery.breaker import CircuitBreaker
from tracerelay.delivery.encoding import EncodedBatch, EncodedEvent, Encoder
from tracerelay.delivery.policy import (
    Action,
    Backoff,
    Outcome,
    classify,
    classify_error,
    retryable_events,
    split_in_halves,
)
from tracerelay.delivery.spool import Spool
from tracerelay.delivery.transport import HttpTransport
from tracerelay.jsonsafe import truncate_text
from tracerelay.serialization import dumps

__all__ = ["Sender"]

_TRUNCATE_TO = 1024  # characters kept of each long text when one event is too large
_IDLE_WAIT_S = 1.0
_SPILL_CHUNK = 5000  # events per spool file while the breaker is open
_STOP_GRACE_S = 1.0  # after the deadline, how long a send may take to notice the stop


class Sender:
    """Delivers encoded events in batches from its own thread; see the module docstring."""

    def __init__(
        self,
        transport: HttpTransport,
        encoder: Encoder,
        *,
        batch_size: Aimd,
        backoff: Backoff,
        max_retries: int,
        max_queue_bytes: int,
        spool: Spool | None = None,
        breaker: CircuitBreaker | None = None,
        durable: bool = False,
        stream: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.transport = transport
        self.encoder = encoder
        self.batch_size = batch_size
        self.backoff = backoff
        self.max_retries = max_retries
        self.max_queue_bytes = max_queue_bytes
        self.spool = spool
        self.breaker = breaker
        self.durable = durable and spool is not None
        self.stream = stream
        self._clock = clock
        self._queue: deque[EncodedEvent] = deque()
        self._queued_bytes = 0
        self._in_flight = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()  # set at the shutdown deadline: waits end at once
        self._pausing = False  # waiting before a retry
        self._closing = False
        self._thread: threading.Thread | None = None
        self._replay_not_before = 0.0  # monotonic time; a failed replay waits a backoff
        self._current: list[EncodedEvent] = []  # the new batch being sent right now
        self.counts: Counter[str] = Counter()
        self._rtt_total = 0.0

    # -- called from the pipeline thread ----------------------------------------------

    def enqueue(self, events: Sequence[EncodedEvent]) -> None:
        """Take encoded events for delivery; never blocks on the network."""
        if self.durable and not self._closing:
            # Disk durability: the batch is on disk before anything else happens to it;
            # the thread sends it from the spool and removes it once delivered.
            self._to_spool(list(events), "pending")
            with self._cond:
                self._replay_not_before = 0.0
                self._start_thread()
                self._cond.notify()
            return
        spill: list[EncodedEvent] = []
        with self._cond:
            if self._closing:
                spill = list(events)
            else:
                self._queue.extend(events)
                self._queued_bytes += sum(len(e.data) for e in events)
                # Past max_queue_bytes the sender thread spills the oldest in large files
                # (see ``_run``). Only if it cannot (stuck in a request) and the
                # queue reaches twice the bound does this thread spill, to keep memory
                # bounded: one file down to the bound, not one per batch.
                bound = self._bound()
                if self._queued_bytes > 2 * bound:
                    spill = self._pop_oldest(self._queued_bytes - bound)
                self._cond.notify()
            self._start_thread()
        for start in range(0, len(spill), _SPILL_CHUNK):
            chunk = spill[start : start + _SPILL_CHUNK]
            self._to_spool(chunk, "queue_full" if not self._closing else "shutdown")

    def backlogged(self) -> bool:
        """True while more encoded bytes wait than the queue's bound: the pipeline then
        holds back, parking raw records instead of encoding more for this queue."""
        return self._queued_bytes > self._bound()

    def start(self) -> None:
        """Start sending now, without waiting for a first batch: replays what was spooled."""
        with self._cond:
            self._start_thread()

    def _start_thread(self) -> None:
        """Start the sender thread on first use (called with the condition held)."""
        if self._thread is None and not self._closing:
            self._thread = threading.Thread(target=self._run, name="tracerelay-sender", daemon=True)
            self._thread.start()

    def flush(self, timeout: float | None) -> bool:
        """Wait until everything taken so far (spool included) is delivered; True if it was."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._replay_not_before = 0.0
            if self.spool is not None:
                self._start_thread()  # a flush also replays what an earlier run left
            self._cond.notify()
            while self._queue or self._in_flight or self._spooled_here():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if self._thread is None or not self._thread.is_alive():
                    return False
                self._cond.wait(remaining if remaining is not None else _IDLE_WAIT_S)
        return True

    def close(self, timeout: float) -> None:
        """Deliver what can be within ``timeout``, spool the rest, release the connection."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(max(timeout, 0.0))
            if thread.is_alive():
                self._stop.set()  # end waits and retries: what is left goes to the spool
                with self._cond:
                    self._cond.notify_all()
                thread.join(_STOP_GRACE_S)
        with self._cond:
            # A request still blocked on the socket past the deadline: keep its batch.
            # Should the request complete after all, the server drops the repeat.
            stuck = list(self._current) if thread is not None and thread.is_alive() else []
            rest = stuck + list(self._queue)
            self._queue.clear()
            self._queued_bytes = 0
        if rest:
            self._to_spool(rest, "shutdown")
        self.transport.close()

    def metrics(self) -> dict[str, Any]:
        """Delivery counters for ``client.metrics()``."""
        batches = self.counts["batches"]
        attempts = self.counts["requests"]
        return {
            "queue_depth": len(self._queue),
            "items_delivered": self.counts["delivered"],
            "items_failed": self.counts["failed"],
            "items_spooled": self.counts["spooled"],
            "items_dropped": self.counts["dropped"],
            "duplicates": self.counts["duplicates"],
            "batches_processed": batches,
            "avg_batch_size": self.counts["delivered"] / batches if batches else 0.0,
            "avg_response_ms": 1000 * self._rtt_total / attempts if attempts else 0.0,
            "error_rate": self.counts["request_errors"] / attempts if attempts else 0.0,
            "circuit_state": self.breaker.state if self.breaker else "disabled",
            "batch_size": self.batch_size.value,
        }

    # -- the sender thread ------------------------------------------------------------

    def _run(self) -> None:
        if self.spool is not None:
            try:
                self.spool.adopt_orphans()
            except Exception as exc:
                internal_error("sender.adopt", exc)
        while True:
            with self._cond:
                while not self._queue and not self._closing and not self._replay_due():
                    self._cond.wait(self._idle_wait())
                if not self._queue and (self._closing or self._stop.is_set()):
                    return
                # While the breaker is open nothing can be sent: spill what is queued in
                # large files (one fsync each), not batch by batch.
                size = _SPILL_CHUNK if self._breaker_open() else self.batch_size.value
                batch = [self._queue.popleft() for _ in range(min(size, len(self._queue)))]
                self._queued_bytes -= sum(len(e.data) for e in batch)
                self._in_flight += len(batch)
            try:
                if batch:
                    self._send_new(batch)
                else:
                    self._replay_one()
            except Exception as exc:
                internal_error("sender.run", exc)
                if batch:
                    self._to_spool(batch, "internal_error")
            finally:
                with self._cond:
                    self._in_flight -= len(batch)
                    self._cond.notify_all()

    def _bound(self) -> int:
        """``max_queue_bytes``; a quarter of it while nothing can be sent (backing off,
        or the breaker open): there is no reason to hold much in memory then."""
        if self._pausing or self._breaker_open():
            return self.max_queue_bytes // 4
        return self.max_queue_bytes

    def _pause(self, delay: float) -> bool:
        """Wait ``delay`` seconds before a retry; True if stopped meanwhile. While it
        waits the queue's bound is lower (``_bound``): the pipeline holds back."""
        self._pausing = True
        try:
            return self._stop.wait(delay)
        finally:
            self._pausing = False

    def _pop_oldest(self, nbytes: int) -> list[EncodedEvent]:
        """Take the oldest queued events holding at least ``nbytes`` (condition held)."""
        taken: list[EncodedEvent] = []
        queue, freed = self._queue, 0
        while freed < nbytes and len(queue) > 1:
            event = queue.popleft()
            freed += len(event.data)
            taken.append(event)
        self._queued_bytes -= freed
        return taken

    def _idle_wait(self) -> float:
        wait = _IDLE_WAIT_S
        if self.breaker is not None and not self.breaker.allows_requests():
            wait = min(wait, self.breaker.seconds_until_probe())
        if self._replay_not_before:
            wait = min(wait, self._replay_not_before - time.monotonic())
        return max(0.05, wait)

    def _spooled_here(self) -> bool:
        return self.spool is not None and bool(self.spool.entries())

    def _replay_due(self) -> bool:
        if self.spool is None or self._closing or time.monotonic() < self._replay_not_before:
            return False
        if self.breaker is not None and self.breaker.state == "open":
            return self.breaker.seconds_until_probe() == 0.0 and self._spooled_here()
        return self._spooled_here()

    def _send_new(self, batch: list[EncodedEvent]) -> None:
        self._current = batch
        try:
            self.deliver(batch, from_spool=False)
        finally:
            self._current = []

    def _replay_one(self) -> None:
        """Replay spooled batches, oldest first, from one listing of the directory.

        Stops at the first batch that cannot be delivered (it waits a backoff
        before the next try), at shutdown, or when new records are waiting: they
        are sent first, and the replay continues on the next idle turn.
        """
        assert self.spool is not None
        for entry in self.spool.entries():
            if self._closing or self._stop.is_set() or self._queue:
                return
            stored = self.spool.read(entry)
            if stored is None:  # corrupt: the spool set it aside and warned
                continue
            events = stored.encoded()
            if not self.deliver(events, from_spool=True):
                self.spool.update_attempts(entry, stored.attempts + 1)
                with self._cond:
                    # Wait before the next replay, longer after each failure of this
                    # batch; a successful send or a flush ends the wait early.
                    self._replay_not_before = time.monotonic() + self.backoff.bound(stored.attempts)
                return
            self.spool.remove(entry)
            self.counts["replayed"] += len(events)

    # -- one batch, through every answer the server may give -------------------------

    def deliver(self, events: list[EncodedEvent], *, from_spool: bool) -> bool:
        """Deliver ``events`` now, on the calling thread, through every answer the policy
        knows; True when all are done. Otherwise the rest goes to the spool — or, when
        ``from_spool``, stays where it already is. ``tracerelay spool replay`` uses this."""
        pending = [events]
        undelivered: list[EncodedEvent] = []
        while pending:
            batch = pending.pop()
            rest = self._attempt(batch, pending)
            undelivered.extend(rest)
        if undelivered and not from_spool:
            self._to_spool(undelivered, "undelivered")
        return not undelivered

    def _attempt(
        self, events: list[EncodedEvent], pending: list[list[EncodedEvent]]
    ) -> list[EncodedEvent]:
        """Try one batch until it is done, split, or given up; returns what was not delivered."""
        attempt = 0
        truncated = False
        while events:
            if self._stop.is_set():
                return events
            if self._breaker_blocks():
                return events
            outcome, response = self._post(events)
            action = outcome.action
            if action is Action.DONE:
                self._done(events, response)
                return []
            if action is Action.PARTIAL:
                resend, final = retryable_events(
                    events, _json(response).get("errors"), lambda e: e.event_id
                )
                self._report_rejected_events(final)
                self.counts["delivered"] += len(events) - len(resend) - len(final)
                self.counts["batches"] += 1
                events = resend
                if not events:
                    return []
            elif action is Action.SPLIT:
                if len(events) > 1:
                    left, right = split_in_halves(events)
                    pending.extend([list(right), list(left)])
                    return []
                if truncated:
                    self._dead_letter(events, "too_large")
                    return []
                events, truncated = [_truncated(events[0])], True
                continue
            elif action is Action.REJECT:
                self._report(outcome)
                return events
            else:  # RETRY
                if self.breaker is not None:
                    self.breaker.record_failure()
                if outcome.backpressure:
                    self.batch_size.backpressure()
            attempt += 1
            if attempt > self.max_retries:
                return events
            if self._pause(self.backoff.delay(attempt - 1, outcome.retry_after)):
                return events
        return []

    def _post(self, events: list[EncodedEvent]) -> tuple[Outcome, httpx.Response | None]:
        batch = self._body(events)
        started = time.monotonic()
        self.counts["requests"] += 1
        try:
            response = self.transport.post(batch)
        except httpx.TransportError as exc:
            self.counts["request_errors"] += 1
            logger.debug("tracerelay: batch of %d events failed: %r", len(events), exc)
            return classify_error(exc), None
        rtt = time.monotonic() - started
        self._rtt_total += rtt
        outcome = classify(response.status_code, response.headers, now=self._clock())
        if outcome.action is Action.DONE and len(events) >= self.batch_size.value:
            self.batch_size.success(rtt, len(events))
        elif outcome.action is Action.RETRY:
            self.counts["request_errors"] += 1
        return outcome, response

    def _body(self, events: list[EncodedEvent]) -> EncodedBatch:
        """The request for ``events``: one event alone is a stream upload when ``stream``.

        Only the endpoint and body differ; the answer (``{"event_id", "status"}``
        with the same status codes) goes through the same policy as a batch's.
        """
        if self.stream and len(events) == 1:
            return self.encoder.encode_stream(events[0])
        return self.encoder.encode(events)

    def _breaker_open(self) -> bool:
        """True while the breaker is open and no probe is due yet."""
        breaker = self.breaker
        return breaker is not None and breaker.state == "open" and breaker.seconds_until_probe() > 0

    def _breaker_blocks(self) -> bool:
        """True while the breaker is open; when its probe is due, probe (and maybe close)."""
        breaker = self.breaker
        if breaker is None or breaker.allows_requests():
            return False
        if not breaker.should_probe():
            return True
        healthy = self.transport.health()
        breaker.probe_result(healthy)
        return not healthy

    def _done(self, events: list[EncodedEvent], response: httpx.Response | None) -> None:
        if self.breaker is not None:
            self.breaker.record_success()
        body = _json(response)
        duplicates = body.get("duplicate_events")
        if isinstance(duplicates, int) and duplicates > 0:
            self.counts["duplicates"] += duplicates
        elif body.get("status") == "duplicate":  # a stream upload's answer
            self.counts["duplicates"] += 1
        self.counts["delivered"] += len(events)
        self.counts["batches"] += 1
        with self._cond:
            self._replay_not_before = 0.0

    def _report(self, outcome: Outcome) -> None:
        warn_once(
            f"reject:{outcome.code}",
            "tracerelay: [%s] %s. Fix: %s. Undelivered batches are kept in the spool.",
            outcome.code,
            outcome.message,
            outcome.fix,
        )

    def _report_rejected_events(self, errors: list[dict[str, Any]]) -> None:
        self.counts["failed"] += len(errors)
        for error in errors:
            warn_once(
                f"event-error:{error.get('error')}",
                "tracerelay: the server refused an event (%s): %s",
                error.get("error"),
                error.get("details", ""),
            )

    def _dead_letter(self, events: list[EncodedEvent], reason: str) -> None:
        warn_once(
            f"dead-letter:{reason}",
            "tracerelay: an event is too large for the server even cut down; kept in the spool",
        )
        self._to_spool(events, reason)

    def _to_spool(self, events: list[EncodedEvent], reason: str) -> None:
        if self.spool is not None and self.spool.write_encoded(events, reason=reason):
            self.counts["spooled"] += len(events)
            return
        self.counts["dropped"] += len(events)
        warn_once(
            f"drop:{reason}",
            "tracerelay: %d events dropped (%s): no spool to keep them; set spool_dir",
            len(events),
            reason,
        )


def _json(response: httpx.Response | None) -> dict[str, Any]:
    if response is None:
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _truncated(event: EncodedEvent) -> EncodedEvent:
    """The event with every long text cut to ``_TRUNCATE_TO`` characters, marked as cut."""
    envelope = orjson.loads(event.data)

    def cut(value: Any) -> Any:
        if isinstance(value, str):
            return truncate_text(value, _TRUNCATE_TO)
        if isinstance(value, list):
            return [cut(v) for v in value]
        if isinstance(value, dict):
            return {k: cut(v) for k, v in value.items()}
        return value

    payload = envelope.get("payload")
    if isinstance(payload, dict):
        payload = cut(payload)
        attributes = payload.setdefault("attributes", {})
        if isinstance(attributes, dict):
            attributes["tracerelay.truncated"] = True
        envelope["payload"] = payload
    return EncodedEvent(event.event_id, dumps(envelope))

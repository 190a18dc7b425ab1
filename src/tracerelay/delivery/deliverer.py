"""One batch through every answer the server may give: the delivery policy, applied.

    deliver(events) ──► breaker open? ──► give up (the caller spools)
                        POST (a stream upload when alone and ``stream``)
           200/409 done · 207 resend retryable, report the rest once
           413 halve to one event → cut its largest text → dead-letter to the spool
           429/503/5xx/timeouts/resets retry after Retry-After or jittered backoff,
             up to max_retries · 400/401/403/404 one coded warning, give up

``Deliverer.deliver`` runs on the calling thread: the sender's threads (one
per request in flight) and ``tracerelay spool replay`` call it. Everything it
shares between them is safe to share: the counters (``count``), the circuit
breaker, the batch-size limit, and the pause. A pause (Retry-After, or
backoff after a failure) holds every thread, not only the one that was
answered: the server said it is overloaded, or it is failing, and a request
from another thread would only add to it. A thread about to post waits for
the pause to end (``hold``); a longer pause from another thread extends it.
``stop`` (set at the shutdown deadline) ends every wait at once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from tracerelay._diagnostics import logger, warn_once
from tracerelay.delivery.aimd import Aimd
from tracerelay.delivery.breaker import CircuitBreaker
from tracerelay.delivery.encoding import EncodedBatch, EncodedEvent, Encoder
from tracerelay.delivery.inflight import Timing, run_delay
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

__all__ = ["Deliverer", "Observer"]

_TRUNCATE_TO = 1024  # characters kept of each long text when one event is too large

Observer = Callable[[Timing, Outcome], None]
"""Called after every request with its clocks and outcome (the sender adapts concurrency)."""


class Deliverer:
    """Delivers one batch at a time per calling thread; see the module docstring."""

    def __init__(
        self,
        transport: HttpTransport,
        encoder: Encoder,
        *,
        batch_size: Aimd,
        backoff: Backoff,
        max_retries: int,
        spool: Spool | None = None,
        breaker: CircuitBreaker | None = None,
        stream: bool = False,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.transport = transport
        self.encoder = encoder
        self.batch_size = batch_size
        self.backoff = backoff
        self.max_retries = max_retries
        self.spool = spool
        self.breaker = breaker
        self.stream = stream
        self.observer = observer
        self.stop = threading.Event()
        # Set by the sender's close() once it has spooled the batches of requests still
        # out: whatever such a request later fails to deliver is on disk already.
        self.sealed = False
        """Set at the shutdown deadline: waits and retries end, the caller spools."""
        self.counts: Counter[str] = Counter()
        self.rtt_total = 0.0
        self.on_wire = 0
        """Threads blocked in a request right now: they see ``stop`` only once it returns."""
        self._clock = clock
        self._lock = threading.Lock()  # counters, and the end of the pause
        self._resume_at = 0.0  # monotonic time before which no request goes out

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to a counter; safe from any thread (``Counter`` updates are not)."""
        with self._lock:
            self.counts[key] += n

    # -- the pause shared by every thread -------------------------------------------

    def paused(self) -> bool:
        """True while a Retry-After or backoff pause is on."""
        return time.monotonic() < self._resume_at

    def resume_in(self) -> float:
        """Seconds until the pause ends (0 when none is on)."""
        return max(0.0, self._resume_at - time.monotonic())

    def pause(self, delay: float) -> bool:
        """Hold every thread's requests ``delay`` seconds (or longer, if another thread
        asked for longer) and wait them out; True if stopped meanwhile."""
        with self._lock:
            self._resume_at = max(self._resume_at, time.monotonic() + delay)
        return self.hold()

    def hold(self) -> bool:
        """Wait while a pause is on; True if stopped (now or meanwhile)."""
        while True:
            remaining = self._resume_at - time.monotonic()
            if remaining <= 0:
                return self.stop.is_set()
            if self.stop.wait(remaining):
                return True

    # -- one batch ---------------------------------------------------------------------

    def deliver(
        self, events: list[EncodedEvent], *, from_spool: bool, size: int | None = None
    ) -> bool:
        """Deliver ``events`` now, on the calling thread, through every answer the policy
        knows; True when all are done. Otherwise the rest goes to the spool — or, when
        ``from_spool``, stays where it already is.

        ``size`` is the batch size the events were taken at (default: the current
        one). A batch that size is full, and its round trip says something about the
        adaptive limits; judged against the size at its answer instead, batches
        taken together would not count once the first answer had grown it.
        """
        full = self.batch_size.value if size is None else size
        pending = [events]
        undelivered: list[EncodedEvent] = []
        while pending:
            batch = pending.pop()
            rest = self._attempt(batch, pending, full)
            undelivered.extend(rest)
        if undelivered and not from_spool:
            self.to_spool(undelivered, "undelivered")
        return not undelivered

    def _attempt(
        self, events: list[EncodedEvent], pending: list[list[EncodedEvent]], full: int
    ) -> list[EncodedEvent]:
        """Try one batch until it is done, split, or given up; returns what was not delivered."""
        attempt = 0
        truncated = False
        while events:
            if self.hold():  # another thread's pause holds this one too
                return events
            if self._breaker_blocks():
                return events
            outcome, response = self._post(events, len(events) >= full)
            action = outcome.action
            if action is Action.DONE:
                self._done(events, response)
                return []
            if action is Action.PARTIAL:
                resend, final = retryable_events(
                    events, _json(response).get("errors"), lambda e: e.event_id
                )
                self._report_rejected_events(final)
                with self._lock:
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
            if self.pause(self.backoff.delay(attempt - 1, outcome.retry_after)):
                return events
        return []

    def _post(
        self, events: list[EncodedEvent], full: bool
    ) -> tuple[Outcome, httpx.Response | None]:
        # Clocks over the same span, for the concurrency limit (inflight.py), which
        # learns only from full batches: a short one pays for no schedstat reads.
        measure = full and self.observer is not None
        delay0 = run_delay() if measure else 0.0
        cpu0, process0, started = time.thread_time(), time.process_time(), time.monotonic()
        batch = self._body(events)
        sent = time.monotonic()
        answer = self._send(batch)
        rtt = time.monotonic() - sent
        response: httpx.Response | None = None
        if isinstance(answer, httpx.TransportError):
            logger.debug("tracerelay: batch of %d events failed: %r", len(events), answer)
            outcome = classify_error(answer)
        else:
            response = answer
            outcome = classify(response.status_code, response.headers, now=self._clock())
        with self._lock:
            self.counts["requests"] += 1
            if response is not None:
                self.rtt_total += rtt
            if outcome.action is Action.RETRY:
                self.counts["request_errors"] += 1
        if outcome.action is Action.DONE and full:
            self.batch_size.success(rtt, len(events))
        if self.observer is not None:
            timing = Timing(
                wall=time.monotonic() - started,
                cpu=time.thread_time() - cpu0,
                process_cpu=time.process_time() - process0,
                run_delay=run_delay() - delay0 if measure else 0.0,
                events=len(events),
                full=full,
            )
            self.observer(timing, outcome)
        return outcome, response

    def _send(self, batch: EncodedBatch) -> httpx.Response | httpx.TransportError:
        """POST ``batch``: the response, or the transport error; ``on_wire`` meanwhile."""
        with self._lock:
            self.on_wire += 1
        try:
            return self.transport.post(batch)
        except httpx.TransportError as exc:
            return exc
        finally:
            with self._lock:
                self.on_wire -= 1

    def _body(self, events: list[EncodedEvent]) -> EncodedBatch:
        """The request for ``events``: one event alone is a stream upload when ``stream``.

        Only the endpoint and body differ; the answer (``{"event_id", "status"}``
        with the same status codes) goes through the same policy as a batch's.
        """
        if self.stream and len(events) == 1:
            return self.encoder.encode_stream(events[0])
        return self.encoder.encode(events)

    def _breaker_blocks(self) -> bool:
        """True while the breaker is open; when its probe is due, probe (and maybe close).

        The breaker lets one caller probe (``should_probe`` moves it to half-open), so
        with several threads only one probes; the others give up their batch meanwhile.
        """
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
        with self._lock:
            if isinstance(duplicates, int) and duplicates > 0:
                self.counts["duplicates"] += duplicates
            elif body.get("status") == "duplicate":  # a stream upload's answer
                self.counts["duplicates"] += 1
            self.counts["delivered"] += len(events)
            self.counts["batches"] += 1

    # -- reporting, and what cannot be delivered ---------------------------------------

    def _report(self, outcome: Outcome) -> None:
        warn_once(
            f"reject:{outcome.code}",
            "tracerelay: [%s] %s. Fix: %s. Undelivered batches are kept in the spool.",
            outcome.code,
            outcome.message,
            outcome.fix,
        )

    def _report_rejected_events(self, errors: list[dict[str, Any]]) -> None:
        self.count("failed", len(errors))
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
        self.to_spool(events, reason)

    def to_spool(self, events: list[EncodedEvent], reason: str) -> None:
        """Keep ``events`` in the spool (counted as spooled), or count them dropped."""
        if self.sealed:
            return  # a request that outlived close(): its batch was spooled there
        if self.spool is not None and self.spool.write_encoded(events, reason=reason):
            self.count("spooled", len(events))
            return
        self.count("dropped", len(events))
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

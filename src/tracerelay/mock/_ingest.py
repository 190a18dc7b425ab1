"""What the mock ingest server does with a request body: decode, validate, record, answer.

Nothing here touches sockets. ``decode_body`` undoes ``Content-Encoding``
within a size bound, ``parse_json`` reads the JSON, ``handle_batch`` and
``handle_stream`` validate it against SPEC §2 and record the valid events in a
``Ledger``, returning the status and body to send. Both endpoints record alike:
the same id check, the same counts, a repeat of an id is a duplicate whichever
endpoint brought either copy; the ledger also keeps which endpoint each event
came through and the identity the request carried (``resource`` or
``system_info``). Unreadable input raises ``RequestError``, which always
carries a 4xx status: bad input never earns a 5xx.
"""

from __future__ import annotations

import json
import re
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from tracerelay.ids import new_event_id
from tracerelay.mock._faults import FAULT_KINDS
from tracerelay.records import EVENT_TYPES

__all__ = [
    "BATCH_PATH",
    "EVENT_TYPES",
    "STREAM_PATH",
    "Ledger",
    "RequestError",
    "decode_body",
    "error_body",
    "format_stats",
    "handle_batch",
    "handle_stream",
    "parse_json",
]

# A ULID: 26 Crockford base-32 digits, the first at most 7 (128 bits). Lowercase is
# tolerated, as the ULID spec asks of decoders; ids are recorded uppercased.
_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}", re.IGNORECASE)

BATCH_PATH = "/v1/telemetry/batch"
STREAM_PATH = "/v1/uploads/stream"
REQUEST_LOG_SIZE = 10_000
"""How many ingest requests ``Ledger.requests`` remembers, newest first kept."""


def error_body(code: str, message: str, fix: str) -> dict[str, str]:
    """The JSON body of every error answer: a stable code, what happened, what to do."""
    return {"error": code, "message": message, "fix": fix}


class RequestError(Exception):
    """The request cannot be processed; ``status`` (always 4xx) and ``body`` are the answer."""

    def __init__(self, status: int, code: str, message: str, fix: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(code, message, fix)


def _too_large(limit: int) -> RequestError:
    return RequestError(
        413,
        "payload_too_large",
        f"the decompressed body is larger than {limit} bytes",
        "send smaller batches",
    )


def _gunzip(data: bytes, limit: int) -> bytes:
    out = bytearray()
    while data:
        # wbits 16+: gzip framing. Several concatenated members are one valid gzip stream.
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            while data:
                # Never inflate more than one byte past the bound: a bomb costs us `limit`.
                out += inflater.decompress(data, limit + 1 - len(out))
                if len(out) > limit:
                    raise _too_large(limit)
                data = inflater.unconsumed_tail
                if inflater.eof:
                    break
        except zlib.error as exc:
            raise RequestError(
                400, "invalid_gzip", f"the gzip body cannot be read: {exc}", "send valid gzip"
            ) from None
        if not inflater.eof:
            raise RequestError(
                400, "invalid_gzip", "the gzip body is truncated", "send the whole gzip stream"
            )
        data = inflater.unused_data
    return bytes(out)


def decode_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body with ``Content-Encoding`` undone (gzip or identity), at most ``limit`` bytes."""
    name = (encoding or "identity").strip().lower()
    if name == "gzip":
        return _gunzip(body, limit)
    if name != "identity":
        raise RequestError(
            415,
            "unsupported_encoding",
            f"Content-Encoding {encoding!r} is not supported by the mock server",
            "send gzip or an uncompressed body",
        )
    if len(body) > limit:
        raise _too_large(limit)
    return body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> Any:
    """The JSON value in ``raw`` (UTF-8, no NaN/Infinity); RequestError 400 when unreadable."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8 and over-long integers as well as bad syntax.
        raise RequestError(
            400, "invalid_json", f"the body is not valid JSON: {exc}", "send a UTF-8 JSON object"
        ) from None


def _bad_event(event_id: object, code: str, details: str) -> dict[str, Any]:
    return {
        "event_id": event_id if isinstance(event_id, str) else None,
        "error": code,
        "details": details,
        "retryable": False,
    }


def check_event(event: object) -> tuple[str, dict[str, Any]] | dict[str, Any]:
    """(event id, the event) for a valid event, else its SPEC §2 error entry."""
    if not isinstance(event, dict):
        return _bad_event(None, "invalid_event", f"expected an object, got {type(event).__name__}")
    event_id = event.get("event_id")
    if not isinstance(event_id, str) or not _ULID.fullmatch(event_id):
        return _bad_event(event_id, "invalid_event_id", "event_id: expected a 26-character ULID")
    if event.get("event_type") not in EVENT_TYPES:
        return _bad_event(
            event_id,
            "invalid_event_type",
            f"event_type: expected one of {', '.join(sorted(EVENT_TYPES))}",
        )
    timestamp = event.get("timestamp")
    if timestamp is not None and (
        isinstance(timestamp, bool) or not isinstance(timestamp, (int, float))
    ):
        return _bad_event(event_id, "invalid_timestamp", "timestamp: expected Unix seconds")
    payload = event.get("payload")
    if not isinstance(payload, dict):
        return _bad_event(event_id, "invalid_payload", "payload: expected an object")
    return event_id.upper(), event


class Ledger:
    """Everything the mock server has counted and received; safe to use from any thread.

    Memory grows with the number of distinct event ids (one count, the last
    payload, its type and how it arrived, each); every other counter is keyed by
    a bounded set of names.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: dict[str, int] = {}
        self._payloads: dict[str, dict[str, Any]] = {}
        self._types: dict[str, str] = {}
        self._arrivals: dict[str, dict[str, Any]] = {}
        self._requests: Counter[str] = Counter()
        self._requests_by_path: Counter[str] = Counter()
        self._events_by_path: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._deliveries = 0
        self._in_progress = 0
        self._in_progress_max = 0
        self._log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)

    def record(
        self,
        events: Iterable[tuple[str, dict[str, Any]]],
        arrival: dict[str, Any] | None = None,
    ) -> list[bool]:
        """Record valid events (id, event) in order; for each, whether its id was seen before.

        ``arrival`` says how they came (``{"path": ..., "resource": ...}`` or
        ``{"path": ..., "system_info": ...}``); one dict shared by a request's events.
        """
        arrival = arrival if arrival is not None else {"path": None}
        path = str(arrival.get("path"))
        seen = []
        with self._lock:
            for event_id, event in events:
                count = self._received.get(event_id, 0)
                self._received[event_id] = count + 1
                self._payloads[event_id] = event["payload"]
                self._types[event_id] = event["event_type"]
                self._arrivals[event_id] = arrival
                self._events_by_path[path] += 1
                self._deliveries += 1
                seen.append(count > 0)
        return seen

    def count_request(
        self, outcome: str, path: str | None = None, arrived: float | None = None
    ) -> None:
        """Count one ingest request by its status code (``"reset"`` when cut off) and path;
        ``arrived`` (Unix time) logs it in ``requests`` with the time of its answer."""
        with self._lock:
            self._requests[outcome] += 1
            if path is not None:
                self._requests_by_path[path] += 1
            if arrived is not None:
                answer = {"path": path, "outcome": outcome, "arrived": arrived}
                self._log.append({**answer, "answered": time.time()})

    def request_started(self) -> None:
        """An ingest request is being handled: counts towards ``concurrent_requests_max``."""
        with self._lock:
            self._in_progress += 1
            self._in_progress_max = max(self._in_progress_max, self._in_progress)

    def request_ended(self) -> None:
        """The ingest request has its answer (or was cut off)."""
        with self._lock:
            self._in_progress -= 1

    def requests(self) -> list[dict[str, Any]]:
        """The latest ingest requests in the order they were answered (a copy)."""
        with self._lock:
            return [dict(entry) for entry in self._log]

    def count_fault(self, kind: str) -> None:
        """Count one injected fault of ``kind`` (a ``FAULT_KINDS`` entry)."""
        with self._lock:
            self._faults[kind] += 1

    def received(self) -> dict[str, int]:
        """Event id → how many times it was delivered (a copy)."""
        with self._lock:
            return dict(self._received)

    def payloads(self) -> dict[str, dict[str, Any]]:
        """Event id → the payload of its latest delivery (a copy of the mapping)."""
        with self._lock:
            return dict(self._payloads)

    def event_types(self) -> dict[str, str]:
        """Event id → the ``event_type`` of its latest delivery (a copy)."""
        with self._lock:
            return dict(self._types)

    def arrivals(self) -> dict[str, dict[str, Any]]:
        """Event id → how its latest delivery came: endpoint path and identity (a copy)."""
        with self._lock:
            return {event_id: dict(how) for event_id, how in self._arrivals.items()}

    def stats(self) -> dict[str, Any]:
        """The counters, as ``GET /mock/stats`` returns them."""
        with self._lock:
            unique = len(self._received)
            return {
                "requests_by_status": dict(sorted(self._requests.items())),
                "requests_by_path": dict(sorted(self._requests_by_path.items())),
                "requests_total": sum(self._requests.values()),
                "faults_injected": {kind: self._faults[kind] for kind in FAULT_KINDS},
                "events_received": unique,
                "duplicates_received": self._deliveries - unique,
                "event_deliveries": self._deliveries,
                "event_deliveries_by_path": dict(sorted(self._events_by_path.items())),
                "concurrent_requests_max": self._in_progress_max,
            }

    def reset(self) -> None:
        """Forget every event and counter."""
        with self._lock:
            self._received.clear()
            self._payloads.clear()
            self._types.clear()
            self._arrivals.clear()
            self._requests.clear()
            self._requests_by_path.clear()
            self._events_by_path.clear()
            self._faults.clear()
            self._deliveries = 0
            self._in_progress_max = self._in_progress
            self._log.clear()


def _envelope_error(message: str) -> RequestError:
    return RequestError(
        400,
        "invalid_envelope",
        message,
        'send {"events": [...], "resource": {...}} as SPEC §2 describes',
    )


def _dedup_options(data: dict[str, Any]) -> tuple[bool, bool]:
    options = data.get("deduplication")
    if options is None:
        return True, False
    if not isinstance(options, dict):
        raise _envelope_error("deduplication: expected an object")
    enabled = options.get("enabled", True)
    fail = options.get("fail_on_duplicate", False)
    if not isinstance(enabled, bool) or not isinstance(fail, bool):
        raise _envelope_error("deduplication.enabled and .fail_on_duplicate must be booleans")
    return enabled, fail


def handle_batch(ledger: Ledger, data: Any) -> tuple[int, dict[str, Any]]:
    """Process a ``POST /v1/telemetry/batch`` body; (status, response body) per SPEC §2.

    Processed synchronously even when ``async_mode`` is asked for (``job_id`` stays
    null). With ``fail_on_duplicate`` the new events are still kept and the answer
    is 409, which clients treat as delivered.
    """
    started = time.perf_counter()
    if not isinstance(data, dict):
        raise _envelope_error("the body must be a JSON object")
    events = data.get("events")
    if not isinstance(events, list):
        raise _envelope_error("events: expected a list")
    for name in ("resource", "system_info"):
        if data.get(name) is not None and not isinstance(data[name], dict):
            raise _envelope_error(f"{name}: expected an object")
    dedup, fail_on_duplicate = _dedup_options(data)
    valid: list[tuple[str, dict[str, Any]]] = []
    errors: list[dict[str, Any]] = []
    for event in events:
        checked = check_event(event)
        if isinstance(checked, tuple):
            valid.append(checked)
        else:
            errors.append(checked)
    seen = ledger.record(valid, {"path": BATCH_PATH, "resource": data.get("resource")})
    duplicate_ids = [
        event_id for (event_id, _), again in zip(valid, seen, strict=True) if again and dedup
    ]
    duplicates = len(duplicate_ids)
    body = {
        "batch_id": new_event_id(),
        "processed_events": len(valid) - duplicates,
        "duplicate_events": duplicates,
        "failed_events": len(errors),
        "processing_time_ms": round((time.perf_counter() - started) * 1000),
        "errors": errors,
        "duplicate_event_ids": list(dict.fromkeys(duplicate_ids)),
        "job_id": None,
    }
    if errors:
        return 207, body
    if duplicates and fail_on_duplicate:
        return 409, body
    return 200, body


def handle_stream(ledger: Ledger, data: Any) -> tuple[int, dict[str, Any]]:
    """Process a ``POST /v1/uploads/stream`` body: one event, answered processed or duplicate."""
    if not isinstance(data, dict) or not isinstance(data.get("event"), dict):
        raise _envelope_error('the body must be {"event": {...}, "system_info": {...}}')
    if data.get("system_info") is not None and not isinstance(data["system_info"], dict):
        raise _envelope_error("system_info: expected an object")
    checked = check_event(data["event"])
    if not isinstance(checked, tuple):
        raise RequestError(
            400, checked["error"], checked["details"], "send one event as SPEC §2 describes"
        )
    (again,) = ledger.record(
        [checked], {"path": STREAM_PATH, "system_info": data.get("system_info")}
    )
    return 200, {"event_id": checked[0], "status": "duplicate" if again else "processed"}


def format_stats(stats: dict[str, Any]) -> list[str]:
    """Lines summing up ``Ledger.stats()`` for a person reading a terminal."""
    requests = stats["requests_by_status"]
    by_status = ", ".join(f"{status} ×{count}" for status, count in requests.items())
    faults = ", ".join(f"{kind} ×{n}" for kind, n in stats["faults_injected"].items() if n)
    paths = ", ".join(f"{path} ×{count}" for path, count in stats["requests_by_path"].items())
    return [
        f"requests: {stats['requests_total']}" + (f" ({by_status})" if by_status else ""),
        f"endpoints: {paths or 'none'}",
        f"in flight: at most {stats['concurrent_requests_max']} requests at once",
        f"faults injected: {faults or 'none'}",
        f"events: {stats['events_received']} unique, {stats['duplicates_received']} duplicate "
        f"deliveries, {stats['event_deliveries']} deliveries in all",
    ]

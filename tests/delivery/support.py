"""Helpers shared by the delivery tests that talk to a real ``MockServer``."""

from __future__ import annotations

import time
from typing import Any

import tracerelay
from tracerelay.mock import Faults, MockServer

# Options for tests against a local server: quick retries, short timeouts, no env.
FAST: dict[str, Any] = {
    "retry_backoff": 0.01,
    "max_retries": 30,
    "timeout": 2.0,
    "recovery_timeout": 0.5,
    "batch_flush_interval": 0.1,
    "environ": {},
}

# About 30 % of requests fail (429, 500, 503, resets, lost replies, slow replies)...
FAULTY = Faults(
    rate_429=0.06,
    rate_500=0.06,
    rate_503=0.06,
    rate_reset=0.05,
    rate_lost_reply=0.05,
    rate_slow=0.02,
    slow_seconds=0.3,
    retry_after=0.05,
)
# ...and the client options that see every event through them: small adaptive batches,
# a breaker that does not open on the first failures.
THROUGH_FAULTS: dict[str, Any] = {
    "failure_threshold": 50,
    "batch_max_size": 20,
    "min_batch_size": 5,
    "max_batch_size": 40,
    **FAST,
}


def spans_received(server: MockServer) -> list[dict[str, Any]]:
    """The span payloads the server holds (the latest delivery of each event id)."""
    return [p for p in server.events.values() if "span_id" in p and "start_time_unix_nano" in p]


def wait_for_delivery(deadline_s: float, step_s: float = 1.0) -> None:
    """Flush again and again until everything (spool included) is delivered or time is up."""
    deadline = time.monotonic() + deadline_s
    while not tracerelay.flush(timeout=step_s) and time.monotonic() < deadline:
        pass

"""Helpers shared by the delivery tests that talk to a real ``MockServer``."""

from __future__ import annotations

import time
from typing import Any

import tracerelay
from tracerelay.mock import MockServer


def spans_received(server: MockServer) -> list[dict[str, Any]]:
    """The span payloads the server holds (the latest delivery of each event id)."""
    return [p for p in server.events.values() if "span_id" in p and "start_time_unix_nano" in p]


def wait_for_delivery(deadline_s: float, step_s: float = 1.0) -> None:
    """Flush again and again until everything (spool included) is delivered or time is up."""
    deadline = time.monotonic() + deadline_s
    while not tracerelay.flush(timeout=step_s) and time.monotonic() < deadline:
        pass

"""Fault settings of the mock ingest server, and the seeded draw that applies them.

Each request to an ingest endpoint draws one number from the server's seeded
``random.Random`` and maps it onto the cumulative rates in ``FAULT_KINDS``
order, so at most one fault hits a request and a given seed replays the same
sequence of faults for the same sequence of requests.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["FAULT_KINDS", "Faults"]

FAULT_KINDS = ("413", "429", "500", "503", "slow", "reset", "lost_reply")
"""Every kind of injected fault, in the order the cumulative draw visits them."""

_MAX_SLOW_SECONDS = 300.0
_MAX_RETRY_AFTER = 86_400.0
# Float sums such as 0.1 + 0.2 + 0.7 land a hair above 1; that is still "at most one fault".
_SUM_SLACK = 1e-9


def _number(name: str, value: object, low: float, high: float, unit: str) -> None:
    # bool is an int subclass; `rate_429=True` is a mistake, not "rate 1".
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number from {low:g} to {high:g} {unit}, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be from {low:g} to {high:g} {unit}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Faults:
    """How often the mock server misbehaves, as fractions of ingest requests (0 – 1 each).

    - ``rate_413``, ``rate_429``, ``rate_500``, ``rate_503``: answer with that status
      (429 and 503 carry ``Retry-After``); the events are not recorded.
    - ``rate_slow``: record the events, then hold the reply for ``slow_seconds``, so a
      client with a shorter read timeout gives up on a batch the server already has.
    - ``rate_reset``: read the request, then reset the connection (no reply, nothing recorded).
    - ``rate_lost_reply``: record the events, then reset the connection: processed,
      but the client never learns it.
    - ``retry_after``: seconds announced with 429/503, as delta-seconds or, with
      ``retry_after_http_date``, as an HTTP date that far in the future.
    - ``latency``: seconds every ingest request takes before its answer (or its
      fault), as a distant or busy server's would; a slow reply adds ``slow_seconds``.

    The rates must add up to at most 1: a request gets at most one fault.
    """

    rate_413: float = 0.0
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_slow: float = 0.0
    slow_seconds: float = 1.0
    rate_reset: float = 0.0
    rate_lost_reply: float = 0.0
    retry_after: float = 1.0
    retry_after_http_date: bool = False
    latency: float = 0.0

    def __post_init__(self) -> None:
        for kind in FAULT_KINDS:
            _number(f"rate_{kind}", getattr(self, f"rate_{kind}"), 0.0, 1.0, "(a fraction)")
        _number("slow_seconds", self.slow_seconds, 0.0, _MAX_SLOW_SECONDS, "seconds")
        _number("retry_after", self.retry_after, 0.0, _MAX_RETRY_AFTER, "seconds")
        _number("latency", self.latency, 0.0, _MAX_SLOW_SECONDS, "seconds")
        if not isinstance(self.retry_after_http_date, bool):
            raise ValueError(
                f"retry_after_http_date must be true or false, got {self.retry_after_http_date!r}"
            )
        total = sum(self.rates().values())
        if total > 1.0 + _SUM_SLACK:
            raise ValueError(
                f"the fault rates add up to {total:g}, but a request gets at most one fault: "
                "lower them so they add up to at most 1"
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Faults:
        """Faults from a JSON-like mapping of field names (absent fields take their defaults).

        Raises ValueError naming an unknown field, as well as for any bad value.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown fault setting {unknown[0]!r}; "
                f"the settings are: {', '.join(sorted(known))}"
            )
        return cls(**dict(data))

    def rates(self) -> dict[str, float]:
        """Fault kind → its rate, in draw order."""
        return {kind: getattr(self, f"rate_{kind}") for kind in FAULT_KINDS}

    def as_dict(self) -> dict[str, Any]:
        """Every field by name: what ``from_mapping`` takes back and ``/mock/faults`` shows."""
        return asdict(self)

    def draw(self, rng: random.Random) -> str | None:
        """The fault for one request (a ``FAULT_KINDS`` entry), or None; consumes one draw."""
        point = rng.random()
        bound = 0.0
        for kind, rate in self.rates().items():
            bound += rate
            if point < bound:
                return kind
        return None

    def describe(self) -> str:
        """One line for people: the non-zero rates and the timings they use."""
        active = [f"{kind} {rate * 100:g}%" for kind, rate in self.rates().items() if rate]
        latency = f"every answer after {self.latency:g} s" if self.latency else ""
        if not active:
            return latency or "none (every request is answered normally)"
        notes = [latency] if latency else []
        if self.rate_slow:
            notes.append(f"slow replies take {self.slow_seconds:g} s")
        if self.rate_429 or self.rate_503:
            form = "an HTTP date" if self.retry_after_http_date else "seconds"
            notes.append(f"Retry-After {self.retry_after:g} s as {form}")
        return " · ".join(active) + (f" ({'; '.join(notes)})" if notes else "")

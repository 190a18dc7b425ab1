"""What to do with a batch after the server answered (or did not): the delivery policy.

The HTTP exporter sends a batch and hands the answer here. ``classify`` turns
a status code (or ``classify_error`` a transport error) into an ``Outcome``:

    200 201 202 409           done (a 409 means the server already has them)
    207                       partial: resend only the events marked retryable
    413                       split the batch in halves, down to one event
    429 503                   retry after ``Retry-After`` (seconds or HTTP date), else backoff
    408 425 500 502 504 5xx   retry with backoff
    timeouts, resets, refused retry with backoff
    400 401 403 404 other 4xx reject: no retry, one actionable message, batch kept in the spool

``Backoff`` gives exponential delays with full jitter (a uniform draw below
the exponential bound), which spreads many clients' retries instead of
synchronising them. Nothing here does I/O or sleeps: it is all decisions,
tested on its own.
"""

from __future__ import annotations

import email.utils
import enum
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "Action",
    "Backoff",
    "Outcome",
    "classify",
    "classify_error",
    "parse_retry_after",
    "retryable_events",
    "split_in_halves",
]

T = TypeVar("T")

MAX_RETRY_AFTER_S = 3600.0
"""A server asking for a longer pause is capped: the spool holds data meanwhile anyway."""


class Action(enum.Enum):
    """What the sender does next with the batch."""

    DONE = "done"
    PARTIAL = "partial"
    SPLIT = "split"
    RETRY = "retry"
    REJECT = "reject"


@dataclass(frozen=True)
class Outcome:
    """A decision about one attempt: the action, a wait, and for rejections a coded message."""

    action: Action
    retry_after: float | None = None
    code: str | None = None
    message: str = ""
    fix: str = ""
    backpressure: bool = False
    """True when the server said it is overloaded (429/503): adaptive limits shrink."""


_REJECTIONS: dict[int, tuple[str, str, str]] = {
    400: (
        "TR-NET-BAD-REQUEST",
        "the server could not read the batch (400)",
        "upgrade the SDK or the server so they speak the same protocol version",
    ),
    401: (
        "TR-AUTH-REJECTED",
        "the server rejected the api key (401)",
        "set api_key (or TRACERELAY_API_KEY) to a key the server issued; "
        "`tracerelay keys create` makes one",
    ),
    403: (
        "TR-AUTH-SCOPE",
        "the api key may not ingest into this project (403)",
        "use a key with the `ingest` scope for the project you send to",
    ),
    404: (
        "TR-NET-ENDPOINT",
        "the server has no ingest endpoint at this address (404)",
        "point endpoint at the tracerelay server's base URL, e.g. http://127.0.0.1:4319",
    ),
}
_RETRY_STATUS = frozenset({408, 425, 500, 502, 504})


def classify(status: int, headers: Mapping[str, str] | None = None, *, now: float) -> Outcome:
    """The outcome of a response with ``status``; ``now`` (Unix seconds) dates Retry-After."""
    if status in (200, 201, 202, 409):
        return Outcome(Action.DONE)
    if status == 207:
        return Outcome(Action.PARTIAL)
    if status == 413:
        return Outcome(Action.SPLIT)
    if status in (429, 503):
        value = _header(headers, "retry-after")
        return Outcome(
            Action.RETRY, retry_after=parse_retry_after(value, now=now), backpressure=True
        )
    if status in _RETRY_STATUS or status >= 500:
        return Outcome(Action.RETRY)
    code, message, fix = _REJECTIONS.get(
        status,
        (
            "TR-NET-REJECTED",
            f"the server refused the batch ({status})",
            "check the server's log for the reason; the batch stays in the spool",
        ),
    )
    return Outcome(Action.REJECT, code=code, message=message, fix=fix)


def classify_error(exc: BaseException) -> Outcome:
    """The outcome of a transport failure: timeouts, resets and refusals are all retried.

    Timeouts count as backpressure: the server (or the path to it) is too slow
    for the current load, so adaptive limits shrink.
    """
    name = type(exc).__name__
    return Outcome(Action.RETRY, message=f"{name}: {exc}", backpressure="Timeout" in name)


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        for key, item in headers.items():
            if key.lower() == name:
                return item
    return value


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date.

    None when absent or unreadable (the caller then backs off as usual). Past
    dates give 0; waits are capped at ``MAX_RETRY_AFTER_S``.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER_S)
    try:
        seconds = float(text)  # not standard, but some servers send "1.5"
    except ValueError:
        pass
    else:
        return None if math.isnan(seconds) else min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None  # HTTP dates are GMT; one without a zone is not one
    return min(max(when.timestamp() - now, 0.0), MAX_RETRY_AFTER_S)


class Backoff:
    """Exponential backoff with full jitter: attempt n waits U(0, min(cap, base·2ⁿ)).

    ``rng`` may be given for reproducible tests.
    """

    __slots__ = ("_random", "base", "cap")

    def __init__(self, base: float, cap: float = 60.0, *, rng: random.Random | None = None) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"need 0 < base <= cap, got base={base!r} cap={cap!r}")
        self.base = base
        self.cap = cap
        self._random = (rng or random.Random()).random

    def bound(self, attempt: int) -> float:
        """The largest wait for ``attempt`` (0 for the first retry)."""
        # 2**attempt overflows floats past ~1000 attempts; the cap is reached long before.
        return self.cap if attempt >= 64 else min(self.cap, self.base * (2**attempt))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before the next try; a server's ``retry_after`` wins when it is given."""
        if retry_after is not None:
            return retry_after
        return self._random() * self.bound(attempt)


def split_in_halves(items: Sequence[T]) -> tuple[Sequence[T], Sequence[T]]:
    """Two halves of a batch, order kept; the first gets the extra item."""
    middle = (len(items) + 1) // 2
    return items[:middle], items[middle:]


def retryable_events(
    events: Sequence[T], errors: Any, event_id: Any = lambda event: event["event_id"]
) -> tuple[list[T], list[dict[str, Any]]]:
    """After a 207: the events to send again, and the errors to report once.

    ``errors`` is the response's list of ``{event_id, error, details, retryable}``;
    events it does not mention were accepted. A malformed list retries nothing
    and reports nothing: the server said most of the batch was taken.
    """
    retry_ids: set[str] = set()
    final: list[dict[str, Any]] = []
    if isinstance(errors, list):
        for error in errors:
            if not isinstance(error, dict) or not isinstance(error.get("event_id"), str):
                continue
            if error.get("retryable") is True:
                retry_ids.add(error["event_id"])
            else:
                final.append(error)
    return [event for event in events if event_id(event) in retry_ids], final

"""Identifiers: W3C-compatible trace and span ids, ULID event ids.

Trace and span ids come from a private random generator so that a user's
``random.seed(...)`` can never make two processes emit the same ids; it is
reseeded in a forked child for the same reason. Event ids are ULIDs: sortable
by time, assigned once per record and reused on every resend, which is what
lets the server deduplicate. They are encoded here with a 1,024-entry table of
character pairs (about 0.6 µs each, a sixth of what a general ULID object
costs); the test suite checks every form against the python-ulid parser.
"""

from __future__ import annotations

import os
import random
import re
import time

__all__ = [
    "INVALID_SPAN_ID",
    "INVALID_TRACE_ID",
    "is_valid_span_id",
    "is_valid_trace_id",
    "new_event_id",
    "new_event_ids",
    "new_span_id",
    "new_trace_id",
]

INVALID_TRACE_ID = "0" * 32
INVALID_SPAN_ID = "0" * 16
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")

_rng = random.Random()
_bits = _rng.getrandbits
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
# (first second of the cached millisecond, first second of the next one, its 10 characters);
# the empty interval makes the first call compute it.
_prefix_cache: tuple[float, float, str] = (1.0, 0.0, "")


def new_trace_id() -> str:
    """A random 32-hex-digit trace id, never all zeros."""
    return (_bits(128) or 1).to_bytes(16, "big").hex()


def new_span_id() -> str:
    """A random 16-hex-digit span id, never all zeros."""
    return (_bits(64) or 1).to_bytes(8, "big").hex()


def new_event_id(timestamp: float | None = None) -> str:
    """A 26-character ULID; ``timestamp`` (Unix seconds, default now) sets its time part."""
    start, end, prefix = _prefix_cache
    if timestamp is None:
        timestamp = time.time()
    if not start <= timestamp < end:
        prefix = _encode_millisecond(timestamp)
    n = _bits(80)
    p = _PAIRS
    return (
        prefix
        + p[n >> 70]
        + p[(n >> 60) & 1023]
        + p[(n >> 50) & 1023]
        + p[(n >> 40) & 1023]
        + p[(n >> 30) & 1023]
        + p[(n >> 20) & 1023]
        + p[(n >> 10) & 1023]
        + p[n & 1023]
    )


def new_event_ids(count: int, timestamp: float | None = None) -> list[str]:
    """``count`` distinct ULIDs for one moment: what the pipeline gives a batch.

    Each run of 32 shares a fresh random 75-bit head and ends in each of the 32
    digits in turn (ascending within the run, as the ULID spec's monotonic form),
    so an id costs a string concatenation instead of an encoding: about 80 ns
    against 600 ns for ``new_event_id``.
    """
    start, end, prefix = _prefix_cache
    if timestamp is None:
        timestamp = time.time()
    if not start <= timestamp < end:
        prefix = _encode_millisecond(timestamp)
    ids: list[str] = []
    p = _PAIRS
    while len(ids) < count:
        n = _bits(75)
        head = (
            prefix
            + p[n >> 65]
            + p[(n >> 55) & 1023]
            + p[(n >> 45) & 1023]
            + p[(n >> 35) & 1023]
            + p[(n >> 25) & 1023]
            + p[(n >> 15) & 1023]
            + p[(n >> 5) & 1023]
            + _CROCKFORD[n & 31]
        )
        ids.extend([head + digit for digit in _CROCKFORD[: count - len(ids)]])
    return ids


def _encode_millisecond(timestamp: float) -> str:
    """The 10-character time part for ``timestamp``, cached as the current millisecond."""
    global _prefix_cache
    ms = int(timestamp * 1000)
    # The product may round across a millisecond boundary (1.001 * 1000 is 1000.999…):
    # settle on the millisecond whose boundaries, as floats, enclose the timestamp.
    if (ms + 1) / 1000 <= timestamp:
        ms += 1
    elif ms / 1000 > timestamp:
        ms -= 1
    if not 0 <= ms < 1 << 48:
        raise ValueError(f"ULID timestamp out of range: {timestamp!r}")
    p = _PAIRS
    prefix = (
        p[ms >> 40]
        + p[(ms >> 30) & 1023]
        + p[(ms >> 20) & 1023]
        + p[(ms >> 10) & 1023]
        + p[ms & 1023]
    )
    _prefix_cache = (ms / 1000, (ms + 1) / 1000, prefix)  # one rebinding: safe to race
    return prefix


def is_valid_trace_id(value: object) -> bool:
    """True for 32 lowercase hex digits that are not all zero (W3C)."""
    return isinstance(value, str) and value != INVALID_TRACE_ID and bool(_TRACE_ID.fullmatch(value))


def is_valid_span_id(value: object) -> bool:
    """True for 16 lowercase hex digits that are not all zero (W3C)."""
    return isinstance(value, str) and value != INVALID_SPAN_ID and bool(_SPAN_ID.fullmatch(value))


os.register_at_fork(after_in_child=_rng.seed)

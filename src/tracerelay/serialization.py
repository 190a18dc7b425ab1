"""Records to bytes: the event envelope and batch body of SPEC §2, encoded with orjson.

orjson was chosen by measurement (``bench/serialization.py``): on span-shaped
dicts it encodes faster than msgspec's untyped encoder and the standard
``json`` module. Values that processing has not made JSON-safe still encode:
``default`` turns them into a safe repr instead of failing the batch.
"""

from __future__ import annotations

from typing import Any

import orjson

from tracerelay.jsonsafe import safe_repr, to_jsonable

__all__ = ["dumps", "envelope", "loads"]

_RETRY_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return list(value)
    return safe_repr(value)


def dumps(value: Any) -> bytes:
    """JSON bytes for ``value``; anything orjson cannot encode becomes a safe repr."""
    # Plain options first: OPT_NON_STR_KEYS doubles the cost of every call, and
    # processed records only have str keys. Anything odd takes the slower retries.
    try:
        return orjson.dumps(value, default=_default)
    except TypeError:
        pass
    try:
        return orjson.dumps(value, default=_default, option=_RETRY_OPTIONS)
    except TypeError:
        # An integer beyond 64 bits, or nesting deeper than orjson allows: fall back to
        # a sanitised copy rather than losing the record.
        return orjson.dumps(to_jsonable(value, max_length=1 << 30), option=_RETRY_OPTIONS)


def loads(data: bytes | str) -> Any:
    """Parse JSON."""
    return orjson.loads(data)


def envelope(record: Any) -> dict[str, Any]:
    """The SPEC §2 event for one record: event_id, event_type, timestamp, payload."""
    return {
        "event_id": record.event_id,
        "event_type": record.event_type,
        "timestamp": record.timestamp,
        "payload": record.to_wire(),
    }

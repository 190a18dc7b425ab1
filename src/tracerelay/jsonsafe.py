"""Turn any Python value into something JSON can hold, within a size budget.

Used where a user's value enters a record: captured function input/output
(in the caller, so later mutation of the object cannot change what was
recorded) and attribute sanitisation in the processing stage. It never
raises: an object whose ``repr`` fails becomes a marker naming its type,
a cycle becomes ``"<cycle>"``, deep nesting stops at ``max_depth``, and long
text is cut with a marker saying how much was dropped.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = [
    "TRUNCATED_MARK",
    "encodable",
    "int_text",
    "is_encodable",
    "safe_repr",
    "to_jsonable",
    "truncate_text",
]

TRUNCATED_MARK = "…[truncated {} chars]"
_SCALARS = (str, int, float, bool, type(None))
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


def truncate_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with a marker saying how many went."""
    if len(text) <= limit:
        return text
    return text[:limit] + TRUNCATED_MARK.format(len(text) - limit)


def safe_repr(value: object, limit: int = 256) -> str:
    """``repr(value)``, or a marker with the type's name if ``repr`` itself fails."""
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__qualname__}>"
    return truncate_text(text, limit)


def to_jsonable(
    value: Any,
    *,
    max_length: int = 8192,
    max_depth: int = 8,
    max_items: int = 1000,
) -> Any:
    """A JSON-compatible copy of ``value``: dicts with str keys, lists, scalars.

    Strings longer than ``max_length`` are truncated, containers keep their
    first ``max_items`` entries, nesting past ``max_depth`` becomes a repr.
    Non-finite floats become strings, since JSON has no NaN.
    """
    return _convert(value, max_length, max_depth, max_items, set())


def _convert(value: Any, limit: int, depth: int, items: int, seen: set[int]) -> Any:
    kind = type(value)
    if kind is str:
        return encodable(truncate_text(value, limit))
    if kind is bool or value is None:
        return value
    if kind is int:
        # JSON encoders stop at 64 bits; larger integers travel as text.
        return value if _I64_MIN <= value <= _I64_MAX else truncate_text(int_text(value), limit)
    if kind is float:
        return value if math.isfinite(value) else str(value)
    if isinstance(value, enum.Enum):
        return _convert(value.value, limit, depth, items, seen)
    if isinstance(value, _SCALARS):  # subclasses of str/int/float
        return _convert(_base_scalar(value), limit, depth, items, seen)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if depth <= 0:
        return safe_repr(value, min(limit, 256))
    ident = id(value)
    if ident in seen:
        return "<cycle>"
    seen.add(ident)
    try:
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for i, (key, item) in enumerate(value.items()):
                if i >= items:
                    out["…"] = f"{len(value) - items} more"
                    break
                name = encodable(key) if isinstance(key, str) else safe_repr(key, 128)
                out[name] = _convert(item, limit, depth - 1, items, seen)
            return out
        if isinstance(value, (list, tuple, set, frozenset)):
            seq = list(value)
            converted = [_convert(v, limit, depth - 1, items, seen) for v in seq[:items]]
            if len(seq) > items:
                converted.append(f"… {len(seq) - items} more")
            return converted
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
            return _convert(fields, limit, depth, items, seen)
        try:
            dump = getattr(value, "model_dump", None)  # pydantic v2 models, common in LLM apps
            if callable(dump):
                return _convert(dump(), limit, depth, items, seen)
        except Exception:
            pass  # a model_dump (or a __getattr__) that fails: fall back to the repr
        return safe_repr(value, min(limit, 1024))
    finally:
        seen.discard(ident)


def int_text(value: int) -> str:
    """``str(value)``, or hexadecimal past the interpreter's digit limit for ``str``."""
    try:
        return str(value)
    except ValueError:
        return hex(value)


def is_encodable(text: str) -> bool:
    """True when ``text`` encodes as UTF-8 (no lone surrogates), as JSON encoders need."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def encodable(text: str) -> str:
    """``text`` with lone surrogates (left by ``surrogateescape``) written as ``\\udcXX``."""
    return text if is_encodable(text) else text.encode("utf-8", "backslashreplace").decode()


def _base_scalar(value: Any) -> Any:
    for base in (bool, int, float, str):
        if isinstance(value, base):
            try:
                return base(value)
            except Exception:
                return safe_repr(value)
    return safe_repr(value)

"""Sanitising and bounding records: the second processor, right after validation.

    validation → **limits** → secret redaction → PII redaction → yours

Traced code may put anything into a record; here, in the pipeline's thread, it
becomes what the SPEC's data model allows and the wire can carry:

- attributes (of spans, events, links, all other records): text keys; values
  ``str``, ``bool``, ``int``, ``float`` or a list of one of them. ``None`` values
  are dropped, as in OpenTelemetry (unset, not null). Lists and tuples of one
  scalar type stay lists; other sequences become lists of text (non-strings as
  JSON); dicts, sets and objects become the compact JSON of their ``to_jsonable``
  form. Integers beyond 64 bits and NaN/infinity become text; text is cut to
  ``max_attribute_length``. The first ``max_attributes`` stay, and
  ``tracerelay.dropped_attributes`` counts the rest (bookkeeping comes on top).
- span events: the first ``max_events - 1`` and the last (usually the exception
  that ended the span) stay; ``tracerelay.dropped_events`` counts the rest.
- span input/output: ``to_jsonable`` within ``max_io_length``.
- the whole span: encoded only when an upper bound of its size, summed on the
  way, exceeds ``max_span_bytes``; if really too large, the largest values are cut
  (with a visible marker), then if need be whole events, links and attributes are
  dropped (counted), and ``tracerelay.truncated`` is set. A span whose fixed
  fields alone are too large is left as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tracerelay.jsonsafe import (
    TRUNCATED_MARK,
    encodable,
    int_text,
    is_encodable,
    safe_repr,
    to_jsonable,
    truncate_text,
)
from tracerelay.records import Score
from tracerelay.serialization import dumps
from tracerelay.spans import Span

__all__ = ["DROPPED_ATTRIBUTES", "DROPPED_EVENTS", "DROPPED_LINKS", "TRUNCATED", "LimitsProcessor"]

DROPPED_ATTRIBUTES = "tracerelay.dropped_attributes"
DROPPED_EVENTS = "tracerelay.dropped_events"
DROPPED_LINKS = "tracerelay.dropped_links"
TRUNCATED = "tracerelay.truncated"
_OWN = frozenset({DROPPED_ATTRIBUTES, DROPPED_EVENTS, DROPPED_LINKS, TRUNCATED})

_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_isfinite = math.isfinite


def _in_64_bits(value: int) -> bool:
    return _I64_MIN <= value <= _I64_MAX


# Per scalar type, what every item must pass for a list of that type to stay as it is.
_PLAIN: dict[type, Any] = {str: None, bool: None, int: _in_64_bits, float: _isfinite}
# Upper bounds in encoded bytes, besides the text counted in characters: one character
# (\u00XX); one attribute (quotes, colon, comma, longest number); a span's fixed fields
# (476 at most, measured); an event; a link; the key of input or output.
_CHAR_BYTES = 6
_ITEM_BYTES = 32
_SPAN_BYTES = 640
_EVENT_BYTES = 64
_LINK_BYTES = 128
_IO_KEY_BYTES = 16
_UNKNOWN_BYTES = 1 << 40  # a fixed field that is not text: have the span measured
# Encoded size of a truncation marker (…[truncated N chars] in quotes), rounded up.
_MARK_BYTES = 40
# Values encoded smaller than this are not cut: the marker would eat most of the saving.
_MIN_CUT = 96
_CUT_ROUNDS = 4


class LimitsProcessor:
    """Make a record's content scalar, JSON-safe and bounded, in place; never drops one.

    About 1.5 µs for a span with a few plain attributes: nothing is encoded
    unless the span may be larger than ``max_span_bytes``.
    """

    __slots__ = ("_io_len", "_len", "_max_attrs", "_max_bytes", "_max_events")

    def __init__(
        self,
        *,
        max_attributes: int,
        max_attribute_length: int,
        max_events: int,
        max_io_length: int,
        max_span_bytes: int,
    ) -> None:
        self._max_attrs = max_attributes
        self._len = max_attribute_length
        self._max_events = max_events
        self._io_len = max_io_length
        self._max_bytes = max_span_bytes

    def __call__(self, record: Any) -> Any:
        """Sanitise and bound ``record``; returns it."""
        if isinstance(record, Span):
            return self.process_span(record)
        attrs = getattr(record, "attributes", None)
        if isinstance(attrs, Mapping):
            record.attributes = self._attributes(attrs)[0]
        if isinstance(record, Score):
            self._score(record)
        return record

    # -- spans ------------------------------------------------------------------------

    def process_span(self, span: Span) -> Span:
        """The span sanitised and bounded in place: the pipeline calls this for spans directly."""
        attrs, bound = self._attributes(span.attributes)
        span.attributes = attrs
        events: list[Any] | None = span._events
        if events:
            excess = len(events) - self._max_events
            if excess > 0:
                events = span._events = events[: self._max_events - 1] + events[-1:]
                attrs[DROPPED_EVENTS] = excess
                bound += _ITEM_BYTES * 2
            for i, event in enumerate(events):
                if type(event) is not dict:
                    events[i] = event = {"name": safe_repr(event)}
                bound += self._event(event, span.start_time_unix_nano)
        links: list[Any] | None = span._links
        if links:
            for i, link in enumerate(links):
                if type(link) is not dict:
                    links[i] = link = {"trace_id": safe_repr(link)}
                bound += self._link(link)
        if span.input is not None:
            span.input, size = self._io(span.input)
            bound += size
        if span.output is not None:
            span.output, size = self._io(span.output)
            bound += size
        if span.usage is not None:
            if not _plain_ints(span.usage):
                span.usage = _repair(to_jsonable(span.usage))
            bound += len(_encode(span.usage))
        model: Any = span.model
        if not (model is None or type(model) is str):
            span.model = self._text(model)
        message: Any = span.status_message
        if type(message) is not str:
            span.status_message = "" if message is None else self._text(message)
        try:
            # join() takes only text: one C call checks the fixed fields and sums their lengths.
            fixed = (span.name, span.kind, span.type, span.trace_id, span.span_id, span.trace_state)
            text = "".join(fixed) + span.status_message + (span.model or "")
            chars = len(text) + len(span.parent_span_id or "")
        except TypeError:
            chars = _UNKNOWN_BYTES
        if bound + _CHAR_BYTES * chars + _SPAN_BYTES > self._max_bytes:
            self._fit(span)
        return span

    def _event(self, event: dict[str, Any], start: int) -> int:
        """Clean one span event in place; returns an upper bound of its encoded size."""
        event["name"] = name = self._text(event.get("name"))
        when: Any = event.get("time_unix_nano")
        if type(when) is not int or not 0 <= when <= _I64_MAX:
            event["time_unix_nano"] = start
        event["attributes"], bound = self._attributes(event.get("attributes"))
        return bound + _CHAR_BYTES * len(name) + _EVENT_BYTES

    def _link(self, link: dict[str, Any]) -> int:
        """Clean one link in place; returns an upper bound of its encoded size."""
        for key in ("trace_id", "span_id"):
            link[key] = self._text(link.get(key))
        link["attributes"], bound = self._attributes(link.get("attributes"))
        return bound + _LINK_BYTES + _CHAR_BYTES * (len(link["trace_id"]) + len(link["span_id"]))

    def _io(self, value: Any) -> tuple[Any, int]:
        """``value`` as JSON-safe data within ``max_io_length``, and its encoded size."""
        try:
            plain = to_jsonable(value, max_length=self._io_len)
        except Exception:
            plain = safe_repr(value, self._io_len)
        try:
            return plain, len(dumps(plain)) + _IO_KEY_BYTES
        except TypeError:
            # Integers beyond 64 bits or lone surrogates: orjson cannot encode them.
            plain = _repair(plain)
            return plain, len(dumps(plain)) + _IO_KEY_BYTES

    # -- attributes ----------------------------------------------------------------------

    def _attributes(self, attrs: Any) -> tuple[dict[str, Any], int]:
        """The attributes bounded and scalar, with an upper bound of their encoded size.

        The same dict when its keys can stay: the common case, one pass, nothing copied.
        """
        limit = self._len
        if type(attrs) is dict and len(attrs) <= self._max_attrs:
            chars = extra = 0
            for key, value in attrs.items():
                if type(key) is not str or len(key) > limit or not is_encodable(key):
                    break
                chars += len(key)
                kind = type(value)
                if kind is str:
                    if len(value) <= limit and (value.isascii() or is_encodable(value)):
                        chars += len(value)
                        continue
                elif (
                    kind is bool
                    or (kind is int and _I64_MIN <= value <= _I64_MAX)
                    or (kind is float and _isfinite(value))
                ):
                    continue
                value = self._value(value)
                if value is None:
                    break
                # Replacing a value keeps the keys, which a dict allows while iterating.
                attrs[key] = value
                extra += len(_encode(value))
            else:
                return attrs, _CHAR_BYTES * chars + _ITEM_BYTES * len(attrs) + extra + 2
        out: dict[str, Any] = {}
        dropped = 0
        for key, value in attrs.items() if isinstance(attrs, Mapping) else ():
            if value is None:
                continue
            name = self._str(key if type(key) is str else _key_text(key))
            if len(out) >= self._max_attrs and name not in out:
                dropped += 1
                continue
            value = self._value(value)
            if value is not None:
                out[name] = value
        if dropped:
            out[DROPPED_ATTRIBUTES] = dropped
        return out, len(_encode(out))

    def _value(self, value: Any) -> Any:
        """One attribute value as a scalar or a list of scalars (None: drop it)."""
        kind = type(value)
        if kind is str:
            return self._str(value)
        if kind is bool:
            return value
        if kind is int:
            return value if _in_64_bits(value) else self._str(int_text(value))
        if kind is float:
            return value if _isfinite(value) else str(value)
        if kind is list or kind is tuple:
            first = type(value[0]) if value else str
            if first in _PLAIN and all(type(v) is first for v in value):
                if first is str:
                    return [self._str(v) for v in value]
                if _PLAIN[first] is None or all(map(_PLAIN[first], value)):
                    return list(value)
            return [self._text(v) for v in value]
        return None if value is None else self._json_text(value)

    def _text(self, value: Any) -> str:
        """``value`` as one text: itself if a string, else its JSON text."""
        kind = type(value)
        if kind is str:
            return self._str(value)
        # A nested list goes through to_jsonable, which stops at cycles.
        plain = self._json_text(value) if kind is list or kind is tuple else self._value(value)
        return plain if type(plain) is str else self._str(_encode(plain).decode())

    def _json_text(self, value: Any) -> Any:
        """Anything not plain: containers as compact JSON text, other values as scalars."""
        try:
            plain = to_jsonable(value, max_length=self._len, max_items=min(1000, self._len))
            if type(plain) is dict or type(plain) is list:
                return self._str(_encode(plain).decode())
        except Exception:
            return self._str(f"<unrepresentable {type(value).__qualname__}>")
        return self._value(plain)  # a str, int, float, bool or None: no further recursion

    def _str(self, text: str) -> str:
        if len(text) > self._len:
            text = truncate_text(text, self._len)
        return text if is_encodable(text) else truncate_text(encodable(text), self._len)

    def _score(self, score: Score) -> None:
        value: Any = score.value
        if type(value) not in (str, int, float, bool) and isinstance(value, (str, int, float)):
            value = to_jsonable(value)  # enums and other subclasses
        if type(value) is str or type(value) is int:
            value = self._value(value)  # a str cut to length, a huge int as text
        elif not (type(value) is bool or (type(value) is float and _isfinite(value))):
            value = self._str(safe_repr(value))
        score.value = value
        kind = type(value)
        score.data_type = "boolean" if kind is bool else "categorical" if kind is str else "numeric"

    # -- cutting a span down to max_span_bytes -------------------------------------------

    def _fit(self, span: Span) -> None:
        limit = self._max_bytes
        size = len(_encode(span.to_wire()))
        if size <= limit or _skeleton_size(span) > limit:
            return
        span.attributes[TRUNCATED] = True
        for _ in range(_CUT_ROUNDS):
            if not _cut_largest(span, size - limit):
                break
            size = len(_encode(span.to_wire()))
            if size <= limit:
                return
        _drop_items(span, size - limit)
        if len(_encode(span.to_wire())) > limit:
            # Last resort, which the skeleton check allowed for: only markers remain.
            for name in ("input", "output"):
                if getattr(span, name) is not None:
                    setattr(span, name, truncate_text(_encode(getattr(span, name)).decode(), 0))
            span.status_message = truncate_text(span.status_message, 0)


def _cut_largest(span: Span, excess: int) -> bool:
    """Cut the largest values down to one common size that saves ``excess`` bytes.

    False when nothing was large enough to be worth cutting.
    """
    slots: list[tuple[int, Any, str]] = []

    def add(holder: Any, key: str, value: Any) -> None:
        # Input and output may be anything JSON; attributes only text and lists can shrink.
        if type(value) is str or type(value) is list or (holder is span and value is not None):
            cost = len(_encode(value))
            if cost > _MIN_CUT:
                slots.append((cost, holder, key))

    for name in ("input", "output", "status_message"):
        add(span, name, getattr(span, name))
    links = [link["attributes"] for link in span.links]
    for attrs in (span.attributes, *(event["attributes"] for event in span.events), *links):
        for key, value in attrs.items():
            add(attrs, key, value)
    if not slots:
        return False
    slots.sort(key=lambda slot: slot[0], reverse=True)
    # Water-filling: the level at which trimming every larger value saves enough,
    # with slack for the markers and for estimates thrown off by multi-byte text.
    need = excess + excess // 50 + 64
    level, total = _MIN_CUT, 0
    for i, (cost, _, _) in enumerate(slots):
        total += cost
        fill = (total - need) // (i + 1)
        if fill >= (slots[i + 1][0] if i + 1 < len(slots) else 0):
            level = max(fill, _MIN_CUT)
            break
    for cost, holder, key in slots:
        if cost <= level:
            break
        if holder is span:
            setattr(span, key, _shrink(getattr(span, key), cost, level, attribute=False))
        else:
            holder[key] = _shrink(holder[key], cost, level, attribute=True)
    return True


def _shrink(value: Any, cost: int, budget: int, *, attribute: bool) -> Any:
    """``value`` made to encode in about ``budget`` bytes, with a visible marker."""
    if type(value) is str:
        keep = max(0, (budget - _MARK_BYTES) * len(value) // cost)
        return truncate_text(value, keep) if keep < len(value) else value
    if attribute:
        kept: list[Any] = []
        used = 2 + _MARK_BYTES
        for item in value:
            used += len(_encode(item)) + 1
            if used > budget:
                break
            kept.append(item)
        # A list of numbers or booleans must stay one type: tracerelay.truncated marks it.
        if len(kept) < len(value) and type(value[0]) is str:
            kept.append(f"…[truncated {len(value) - len(kept)} items]")
        return kept
    # Structured input/output: first try keeping the structure, with shorter strings and lists.
    for share in (4, 32):
        smaller = to_jsonable(value, max_length=max(16, budget // share), max_items=budget // 64)
        if len(_encode(smaller)) <= budget:
            return smaller
    text = _encode(value).decode()
    return _shrink(text, len(_encode(text)), budget, attribute=False)


def _drop_items(span: Span, excess: int) -> None:
    """Drop whole events (the last one last), links, then attributes, to save ``excess``."""
    need = excess + 160  # room for the counters this adds
    attrs = span.attributes
    for field, counter in (("_events", DROPPED_EVENTS), ("_links", DROPPED_LINKS)):
        items = getattr(span, field) or []
        gone = set()
        for i in [*range(len(items) - 2, -1, -1), len(items) - 1] if items else ():
            if need <= 0:
                break
            need -= len(_encode(items[i])) + 1
            gone.add(i)
        if gone:
            setattr(span, field, [x for i, x in enumerate(items) if i not in gone] or None)
            _add_count(attrs, counter, len(gone))
    # The user's attributes first, the newest first; then other processors' notes.
    keys = [k for k in reversed(attrs) if not k.startswith("tracerelay.")]
    keys += [k for k in reversed(attrs) if k.startswith("tracerelay.") and k not in _OWN]
    count = 0
    for key in keys:
        if need <= 0:
            break
        need -= len(_encode({key: attrs.pop(key)})) - 1  # a comma instead of the braces
        count += 1
    _add_count(attrs, DROPPED_ATTRIBUTES, count)


def _add_count(attrs: dict[str, Any], key: str, count: int) -> None:
    if count:
        previous = attrs.get(key)
        attrs[key] = count + (previous if type(previous) is int else 0)


def _skeleton_size(span: Span) -> int:
    """Encoded size of ``span`` once ``_fit`` removed or cut all it may."""
    marker = TRUNCATED_MARK.format(1 << 32)
    wire = span.to_wire()
    wire.pop("events", None)
    wire.pop("links", None)
    for name in ("input", "output"):
        if name in wire:
            wire[name] = marker
    wire["status"] = {"code": span.status_code, "message": marker}
    wire["attributes"] = dict.fromkeys(_OWN, 1 << 32)
    return len(_encode(wire))


# -- JSON helpers --------------------------------------------------------------------------


def _encode(value: Any) -> bytes:
    try:
        return dumps(value)
    except TypeError:
        return dumps(_repair(value))


def _repair(value: Any) -> Any:
    """A copy of JSON-like ``value`` that orjson can encode (no huge ints, no surrogates)."""
    kind = type(value)
    if kind is str:
        return encodable(value)
    if kind is int:
        return value if _I64_MIN <= value <= _I64_MAX else int_text(value)
    if isinstance(value, Mapping):
        return {
            encodable(k if type(k) is str else _key_text(k)): _repair(v) for k, v in value.items()
        }
    if kind is list or kind is tuple:
        return [_repair(v) for v in value]
    return value


def _plain_ints(usage: Any) -> bool:
    return type(usage) is dict and all(
        type(k) is str and type(v) is int and _in_64_bits(v) for k, v in usage.items()
    )


def _key_text(key: object) -> str:
    return str.__str__(key) if isinstance(key, str) else safe_repr(key)

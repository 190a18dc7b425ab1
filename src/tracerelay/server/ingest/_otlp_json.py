"""OTLP/JSON (``application/json``) → tracerelay spans.

The body is parsed by orjson and walked as plain dicts and lists, which costs a
fraction of protobuf's ``json_format.Parse`` and needs no rewriting of the hex
ids first. The OTLP spec's deviations from protobuf's JSON mapping are followed
(hex ``traceId``/``spanId``, lowerCamelCase keys, enums as integers), and 64-bit
integers are read from strings or numbers. Where it costs no meaning, what
protobuf's JSON mapping would send is read too: snake_case keys, enum names,
base64 ids. Unknown fields are ignored. Anything else that does not fit the
``ExportTraceServiceRequest`` schema is a 400, with what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any

import orjson

from tracerelay.processing.validation import INVALID_PARENT
from tracerelay.server.ingest._otlp_mapping import (
    DEPTH_MARKER,
    KINDS,
    MAX_VALUE_DEPTH,
    STATUS_CODES,
    OtlpError,
    OtlpSpan,
    Report,
    b64,
    finite,
    flatten,
    llm_fields,
    span_payload,
)

__all__ = ["decode_json"]

_KIND_NAMES = {
    "SPAN_KIND_UNSPECIFIED": "internal",
    "SPAN_KIND_INTERNAL": "internal",
    "SPAN_KIND_SERVER": "server",
    "SPAN_KIND_CLIENT": "client",
    "SPAN_KIND_PRODUCER": "producer",
    "SPAN_KIND_CONSUMER": "consumer",
}
_STATUS_NAMES = {"STATUS_CODE_UNSET": "unset", "STATUS_CODE_OK": "ok", "STATUS_CODE_ERROR": "error"}
# AnyValue's oneof under both key spellings; any other field (such as the profiles-only
# stringValueStrindex) is unknown here, so the value reads as empty
_ANY_FIELDS = {
    "stringValue": "string",
    "string_value": "string",
    "boolValue": "bool",
    "bool_value": "bool",
    "intValue": "int",
    "int_value": "int",
    "doubleValue": "double",
    "double_value": "double",
    "arrayValue": "array",
    "array_value": "array",
    "kvlistValue": "kvlist",
    "kvlist_value": "kvlist",
    "bytesValue": "bytes",
    "bytes_value": "bytes",
}
_HEX_TRACE_ID = re.compile("[0-9a-fA-F]{32}").fullmatch
_HEX_SPAN_ID = re.compile("[0-9a-fA-F]{16}").fullmatch
_BASE64 = re.compile("[A-Za-z0-9+/_-]*={0,2}").fullmatch
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16
_I64_MIN, _I64_MAX, _U64_MAX = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1


class _Shape(ValueError):
    """The JSON document does not fit the ExportTraceServiceRequest schema."""


def decode_json(body: bytes) -> tuple[list[OtlpSpan], Report]:
    """The spans of an OTLP/JSON ``ExportTraceServiceRequest``, and what was rejected."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OtlpError(400, f"the body is not valid JSON: {exc}") from exc
    report = Report()
    spans: list[OtlpSpan] = []
    try:
        request = _object(document, "the body")
        for resource_spans in _array(_pick(request, "resourceSpans", "resource_spans")):
            resource_spans = _object(resource_spans, "a resourceSpans item")
            resource = _object(resource_spans.get("resource"), "resource")
            resource_attributes = _attributes(resource.get("attributes"))
            for scope_spans in _array(_pick(resource_spans, "scopeSpans", "scope_spans")):
                scope_spans = _object(scope_spans, "a scopeSpans item")
                scope = _object(scope_spans.get("scope"), "scope")
                scope_name = _string(scope.get("name"), "scope name")
                scope_version = _string(scope.get("version"), "scope version")
                for span in _array(scope_spans.get("spans")):
                    payload = _span(_object(span, "a span"), report)
                    if payload is None:
                        continue
                    if scope_name:
                        payload["scope"] = {"name": scope_name, "version": scope_version}
                    spans.append(OtlpSpan(resource_attributes, payload))
    except (TypeError, ValueError, AttributeError) as exc:  # _Shape, and any shape unforeseen
        raise OtlpError(
            400, f"the body is not an OTLP/JSON ExportTraceServiceRequest: {exc}"
        ) from exc
    return spans, report


def _span(span: dict[str, Any], report: Report) -> dict[str, Any] | None:
    name = _string(span.get("name"), "span name")
    trace_id = _id(_pick(span, "traceId", "trace_id"), _HEX_TRACE_ID, 16, "traceId")
    span_id = _id(_pick(span, "spanId", "span_id"), _HEX_SPAN_ID, 8, "spanId")
    problem = _id_problem("trace_id", trace_id, _ZERO_TRACE_ID) or _id_problem(
        "span_id", span_id, _ZERO_SPAN_ID
    )
    if problem is not None or trace_id is None or span_id is None:
        report.reject(problem or "invalid id", name)
        return None
    attributes = _attributes(span.get("attributes"))
    raw_parent = _pick(span, "parentSpanId", "parent_span_id")
    parent = _id(raw_parent, _HEX_SPAN_ID, 8, "parentSpanId")
    if parent in {"", _ZERO_SPAN_ID}:
        parent = None
    elif parent is None or parent == span_id:
        attributes[INVALID_PARENT] = parent or raw_parent[:64]
        parent = None
    status = _object(span.get("status"), "status")
    payload = span_payload(
        trace_id,
        span_id,
        parent,
        name,
        _enum(span.get("kind"), KINDS, _KIND_NAMES, "kind"),
        _uint64(_pick(span, "startTimeUnixNano", "start_time_unix_nano"), "startTimeUnixNano"),
        _uint64(_pick(span, "endTimeUnixNano", "end_time_unix_nano"), "endTimeUnixNano"),
        {
            "code": _enum(status.get("code"), STATUS_CODES, _STATUS_NAMES, "status code"),
            "message": _string(status.get("message"), "status message"),
        },
        attributes,
    )
    events = _array(span.get("events"))
    if events:
        payload["events"] = [_event(_object(event, "an event")) for event in events]
    links = _array(span.get("links"))
    if links:
        kept = _links(links, name, report)
        if kept:
            payload["links"] = kept
    trace_state = _string(_pick(span, "traceState", "trace_state"), "traceState")
    if trace_state:
        payload["trace_state"] = trace_state
    llm_fields(payload, attributes)
    return payload


def _event(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": _string(event.get("name"), "event name"),
        "time_unix_nano": _uint64(_pick(event, "timeUnixNano", "time_unix_nano"), "timeUnixNano"),
        "attributes": _attributes(event.get("attributes")),
    }


def _links(links: list[Any], name: str, report: Report) -> list[dict[str, Any]]:
    kept = []
    for link in links:
        link = _object(link, "a link")
        trace_id = _id(_pick(link, "traceId", "trace_id"), _HEX_TRACE_ID, 16, "link traceId")
        span_id = _id(_pick(link, "spanId", "span_id"), _HEX_SPAN_ID, 8, "link spanId")
        attributes = _attributes(link.get("attributes"))
        problem = _id_problem("link trace_id", trace_id, _ZERO_TRACE_ID) or _id_problem(
            "link span_id", span_id, _ZERO_SPAN_ID
        )
        if problem is not None:
            report.drop_link(problem, name)
        else:
            kept.append({"trace_id": trace_id, "span_id": span_id, "attributes": attributes})
    return kept


def _id(value: Any, hex_pattern: Callable[[str], Any], size: int, what: str) -> str | None:
    """Lowercase hex of an id: ``""`` when absent, None when not ``size`` bytes of hex
    (or of base64, as protobuf's own JSON mapping would send)."""
    if type(value) is not str:
        if value is None:
            return ""
        raise _Shape(f"{what} must be a string, not {_json_type(value)}")
    if hex_pattern(value):
        return value.lower()
    if value and len(value) == (size + 2) // 3 * 4 and _BASE64(value):
        try:
            raw = base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
        except binascii.Error:
            return None
        if len(raw) == size:
            return raw.hex()
    return "" if value == "" else None


def _id_problem(field: str, value: str | None, zero: str) -> str | None:
    if value is None:
        return f"{field} is not {len(zero)} hex digits"
    if not value:
        return f"{field} is empty"
    if value == zero:
        return f"{field} is all zeros"
    return None


def _attributes(items: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for item in _array(items):
        if type(item) is not dict:
            raise _Shape(f"an attribute must be an object, not {_json_type(item)}")
        key = _string(item.get("key"), "an attribute key")
        value = item.get("value")
        if type(value) is dict and len(value) == 1:
            text = value.get("stringValue")
            if type(text) is str:
                attributes[key] = text
                continue
        attributes[key] = flatten(_plain(value, 1))
    return attributes


def _plain(value: Any, level: int) -> Any:
    """An AnyValue as plain JSON data; ``level`` is 1 + the containers it sits in."""
    if value is None:
        return None
    if type(value) is not dict:
        raise _Shape(f"an attribute value must be an object, not {_json_type(value)}")
    which = None
    item = None
    for field, candidate in value.items():
        kind = _ANY_FIELDS.get(field)
        if kind is None or candidate is None:
            continue
        if which is not None:
            raise _Shape(f"an attribute value sets both {which}Value and {kind}Value")
        which, item = kind, candidate
    if which == "string":
        return _string(item, "stringValue")
    if which == "int":
        return _integer(item, "intValue", _I64_MIN, _I64_MAX)
    if which == "bool":
        if type(item) is not bool:
            raise _Shape(f"boolValue must be true or false, not {_json_type(item)}")
        return item
    if which == "double":
        return _double(item)
    if which == "array":
        if level > MAX_VALUE_DEPTH:
            return DEPTH_MARKER
        values = _array(_object(item, "arrayValue").get("values"))
        return [_plain(element, level + 1) for element in values]
    if which == "kvlist":
        if level > MAX_VALUE_DEPTH:
            return DEPTH_MARKER
        plain = {}
        for entry in _array(_object(item, "kvlistValue").get("values")):
            entry = _object(entry, "a kvlistValue entry")
            plain[_string(entry.get("key"), "a key")] = _plain(entry.get("value"), level + 1)
        return plain
    if which == "bytes":
        return b64(_bytes(item))
    return None


def _pick(obj: dict[str, Any], camel: str, snake: str) -> Any:
    """``obj[camel]``, else the field under its original (snake_case) proto name."""
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _object(value: Any, what: str) -> dict[str, Any]:
    if type(value) is dict:
        return value
    if value is None:
        return {}
    raise _Shape(f"{what} must be an object, not {_json_type(value)}")


def _array(value: Any) -> list[Any]:
    if type(value) is list:
        return value
    if value is None:
        return []
    raise _Shape(f"expected an array, not {_json_type(value)}")


def _string(value: Any, what: str) -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    raise _Shape(f"{what} must be a string, not {_json_type(value)}")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number")


def _uint64(value: Any, what: str) -> int:
    return _integer(value, what, 0, _U64_MAX)


def _integer(value: Any, what: str, low: int, high: int) -> int:
    if type(value) is int:
        number = value
    elif type(value) is str:
        try:
            number = int(value)
        except ValueError:
            raise _Shape(f"{what} must be an integer, not {value[:40]!r}") from None
    elif type(value) is float and value.is_integer():
        number = int(value)
    elif value is None:
        return 0
    else:
        raise _Shape(f"{what} must be an integer, not {_json_type(value)}")
    if not low <= number <= high:
        raise _Shape(f"{what} is out of range: {number}")
    return number


def _enum(value: Any, numbers: dict[int, str], names: dict[str, str], what: str) -> str:
    if type(value) is int:
        return numbers.get(value, numbers[0])
    if type(value) is str:
        return names.get(value, numbers[0])
    if value is None:
        return numbers[0]
    raise _Shape(f"{what} must be an integer, not {_json_type(value)}")


def _double(value: Any) -> float | str:
    if type(value) is float:
        return finite(value)
    if type(value) is int:
        return float(value)
    if type(value) is str:
        try:
            return finite(float(value))
        except ValueError:
            raise _Shape(f"doubleValue must be a number, not {value[:40]!r}") from None
    raise _Shape(f"doubleValue must be a number, not {_json_type(value)}")


def _bytes(value: Any) -> bytes:
    if type(value) is str and _BASE64(value):
        text = value.replace("-", "+").replace("_", "/").rstrip("=")
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except binascii.Error:
            pass
    raise _Shape("bytesValue must be base64 text")

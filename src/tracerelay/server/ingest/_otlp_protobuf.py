"""Binary protobuf OTLP (``application/x-protobuf``) → tracerelay spans.

The body is parsed by protobuf's C implementation (upb); the payloads are built by
straight-line field reads, since each read through upb's Python wrappers costs a
few hundred nanoseconds and reflection (``ListFields``, ``MessageToDict``) costs
many times more.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

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
    scalar,
    span_payload,
)

__all__ = ["decode_protobuf"]

_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)


def decode_protobuf(body: bytes) -> tuple[list[OtlpSpan], Report]:
    """The spans of a protobuf ``ExportTraceServiceRequest``, and what was rejected."""
    try:
        request = ExportTraceServiceRequest.FromString(body)
    except Exception as exc:  # DecodeError, or whatever else upb makes of hostile bytes
        raise OtlpError(
            400,
            f"the body is not a protobuf-encoded OTLP ExportTraceServiceRequest ({exc}); "
            "is it truncated, compressed without a Content-Encoding header, or not protobuf?",
        ) from exc
    report = Report()
    spans: list[OtlpSpan] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            scope_name = scope.name
            scope_version = scope.version
            for span in scope_spans.spans:
                payload = _span(span, report)
                if payload is None:
                    continue
                if scope_name:
                    payload["scope"] = {"name": scope_name, "version": scope_version}
                spans.append(OtlpSpan(resource, payload))
    return spans, report


def _span(span: Any, report: Report) -> dict[str, Any] | None:
    trace_id = span.trace_id
    span_id = span.span_id
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE_ID:
        report.reject(_id_problem("trace_id", trace_id, 16), span.name)
        return None
    if len(span_id) != 8 or span_id == _ZERO_SPAN_ID:
        report.reject(_id_problem("span_id", span_id, 8), span.name)
        return None
    attributes = _attributes(span.attributes)
    parent_id = span.parent_span_id
    parent = None
    if parent_id and parent_id != _ZERO_SPAN_ID:
        if len(parent_id) == 8 and parent_id != span_id:
            parent = parent_id.hex()
        else:
            attributes[INVALID_PARENT] = parent_id.hex()[:64]
    status = span.status
    payload = span_payload(
        trace_id.hex(),
        span_id.hex(),
        parent,
        span.name,
        KINDS.get(span.kind, "internal"),
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        {"code": STATUS_CODES.get(status.code, "unset"), "message": status.message},
        attributes,
    )
    events = span.events
    if events:
        payload["events"] = [
            {
                "name": event.name,
                "time_unix_nano": event.time_unix_nano,
                "attributes": _attributes(event.attributes),
            }
            for event in events
        ]
    links = span.links
    if links:
        kept = _links(links, span.name, report)
        if kept:
            payload["links"] = kept
    trace_state = span.trace_state
    if trace_state:
        payload["trace_state"] = trace_state
    llm_fields(payload, attributes)
    return payload


def _id_problem(field: str, value: bytes, size: int) -> str:
    if not value:
        return f"{field} is empty"
    if len(value) != size:
        return f"{field} is not {size} bytes"
    return f"{field} is all zeros"


def _links(links: Any, name: str, report: Report) -> list[dict[str, Any]]:
    kept = []
    for link in links:
        trace_id = link.trace_id
        span_id = link.span_id
        if len(trace_id) != 16 or trace_id == _ZERO_TRACE_ID:
            report.drop_link(_id_problem("link trace_id", trace_id, 16), name)
        elif len(span_id) != 8 or span_id == _ZERO_SPAN_ID:
            report.drop_link(_id_problem("link span_id", span_id, 8), name)
        else:
            kept.append(
                {
                    "trace_id": trace_id.hex(),
                    "span_id": span_id.hex(),
                    "attributes": _attributes(link.attributes),
                }
            )
    return kept


def _attributes(key_values: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for key_value in key_values:
        value = key_value.value
        # Most values are strings: reading string_value first saves the WhichOneof call,
        # which costs as much as the rest of the work on one attribute.
        text = value.string_value
        if text:
            attributes[key_value.key] = text
            continue
        which = value.WhichOneof("value")
        if which == "int_value":
            attributes[key_value.key] = value.int_value
        elif which == "bool_value":
            attributes[key_value.key] = value.bool_value
        elif which == "double_value":
            attributes[key_value.key] = finite(value.double_value)
        elif which == "array_value":
            attributes[key_value.key] = _array(value.array_value.values)
        elif which == "string_value":
            attributes[key_value.key] = ""
        else:
            attributes[key_value.key] = flatten(_plain(value, 1))
    return attributes


def _array(values: Any) -> list[Any]:
    """An attribute's array: its scalars, and any container in it as JSON text."""
    items = []
    for value in values:
        text = value.string_value
        if text:
            items.append(text)
        else:
            items.append(scalar(_plain(value, 2)))
    return items


def _plain(value: Any, level: int) -> Any:
    """An AnyValue as plain JSON data; ``level`` is 1 + the containers it sits in."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "bool_value":
        return value.bool_value
    if which == "double_value":
        return finite(value.double_value)
    if which == "array_value":
        if level > MAX_VALUE_DEPTH:
            return DEPTH_MARKER
        return [_plain(item, level + 1) for item in value.array_value.values]
    if which == "kvlist_value":
        if level > MAX_VALUE_DEPTH:
            return DEPTH_MARKER
        return {kv.key: _plain(kv.value, level + 1) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return b64(value.bytes_value)
    return None  # no value, or string_value_strindex (a profiles-only table reference)

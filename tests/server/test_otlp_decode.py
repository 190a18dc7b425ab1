"""OTLP/HTTP trace bodies decode to the payloads the SDK sends, whatever the encoding.

Spans come from the real OpenTelemetry SDK and its OTLP encoder; the OTLP/JSON
form is written here from the same spans, per the OTLP spec, independently of
protobuf's JSON mapping. Hostile bodies must end in ``OtlpError`` (400 or 415)
and nothing else.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import pytest
from google.protobuf.json_format import MessageToDict, Parse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from tracerelay.server.ingest.otlp import (
    DEPTH_MARKER,
    MAX_VALUE_DEPTH,
    OtlpDecoded,
    OtlpError,
    decode_otlp,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
REMOTE_TRACE_ID = 0x5B8EFFF798038103D269B633813FC60C
REMOTE_SPAN_ID = 0xEEE19B7EC3C1B174


# --- spans from the real OpenTelemetry SDK --------------------------------------------


def record(body: Any) -> list[ReadableSpan]:
    """Run ``body(tracer_provider)`` and return the spans the SDK finished."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "checkout", "deployment.environment": "test"})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    body(provider)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def shop_workload(provider: TracerProvider) -> None:
    """Every kind and status, attributes of every type, events, an exception, a link,
    a remote parent with a trace state, and two instrumentation scopes."""
    tracer = provider.get_tracer("shop.orders", "2.1.0")
    payments = provider.get_tracer("shop.payments")
    with tracer.start_as_current_span("load cart") as upstream:
        upstream.set_attribute("cart.items", 3)
    remote = SpanContext(
        REMOTE_TRACE_ID,
        REMOTE_SPAN_ID,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "abc"), ("shop", "1")]),
    )
    with tracer.start_as_current_span(
        "POST /orders",
        context=trace.set_span_in_context(trace.NonRecordingSpan(remote)),
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "POST",
            "http.response.status_code": 201,
            "discount.ratio": 0.25,
            "order.gift": False,
            "order.skus": ["sku-1", "sku-2"],
            "order.quantities": [1, 3],
            "order.weights": [0.5, 1.5],
            "order.fragile": [True, False],
        },
        links=[Link(upstream.get_span_context(), {"link.reason": "same cart"})],
    ) as root:
        root.add_event("validated", {"items": 3, "warnings": ["slow stock lookup"]})
        with payments.start_as_current_span("charge card", kind=SpanKind.CLIENT) as charge:
            charge.record_exception(ValueError("card declined"))
            charge.set_status(Status(StatusCode.ERROR, "card declined"))
        with tracer.start_as_current_span("publish order", kind=SpanKind.PRODUCER):
            pass
        with tracer.start_as_current_span("consume order", kind=SpanKind.CONSUMER):
            pass
        root.set_status(Status(StatusCode.OK))


@pytest.fixture(scope="module")
def shop_spans() -> list[ReadableSpan]:
    return record(shop_workload)


def protobuf_body(spans: Sequence[ReadableSpan]) -> bytes:
    """The body OpenTelemetry's OTLP/HTTP exporter sends for ``spans``."""
    body: bytes = encode_spans(spans).SerializeToString()
    return body


def expected_payload(span: ReadableSpan) -> dict[str, Any]:
    """What the decoder must give for ``span``, read off the SDK's own span object."""
    context = span.get_span_context()
    scope = span.instrumentation_scope
    payload: dict[str, Any] = {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
        "name": span.name,
        "kind": span.kind.name.lower(),
        "type": "span",
        "start_time_unix_nano": span.start_time,
        "end_time_unix_nano": span.end_time,
        "status": {
            "code": span.status.status_code.name.lower(),
            "message": span.status.description or "",
        },
        "attributes": plain(span.attributes),
        "scope": {"name": scope.name, "version": scope.version or ""},
    }
    if span.events:
        payload["events"] = [
            {"name": e.name, "time_unix_nano": e.timestamp, "attributes": plain(e.attributes)}
            for e in span.events
        ]
    if span.links:
        payload["links"] = [
            {
                "trace_id": format(link.context.trace_id, "032x"),
                "span_id": format(link.context.span_id, "016x"),
                "attributes": plain(link.attributes),
            }
            for link in span.links
        ]
    if context.trace_state:
        payload["trace_state"] = ",".join(f"{k}={v}" for k, v in context.trace_state.items())
    return payload


def plain(attributes: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in (attributes or {}).items()}


def by_span_id(decoded: OtlpDecoded) -> dict[str, dict[str, Any]]:
    return {span.payload["span_id"]: span.payload for span in decoded.spans}


# --- OTLP/JSON, written per the OTLP spec (not through protobuf's JSON mapping) ---------


def otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """``spans`` as an OTLP/JSON ExportTraceServiceRequest: lowerCamelCase keys, hex ids,
    64-bit integers as strings, enums as integers."""
    scopes: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for span in spans:
        scope = span.instrumentation_scope
        scopes.setdefault((scope.name, scope.version), []).append(_json_span(span))
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _json_attributes(spans[0].resource.attributes)},
                "scopeSpans": [
                    {
                        "scope": {"name": name, **({"version": version} if version else {})},
                        "spans": group,
                    }
                    for (name, version), group in scopes.items()
                ],
            }
        ]
    }


def _json_span(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    out: dict[str, Any] = {
        "traceId": format(context.trace_id, "032x"),
        "spanId": format(context.span_id, "016x"),
        "name": span.name,
        "kind": span.kind.value + 1,  # the API's enum starts at INTERNAL = 0, OTLP's at 1
        "startTimeUnixNano": str(span.start_time),
        "endTimeUnixNano": str(span.end_time),
        "attributes": _json_attributes(span.attributes),
        "status": {"code": span.status.status_code.value},
    }
    if span.status.description:
        out["status"]["message"] = span.status.description
    if span.parent:
        out["parentSpanId"] = format(span.parent.span_id, "016x")
    if context.trace_state:
        out["traceState"] = ",".join(f"{k}={v}" for k, v in context.trace_state.items())
    if span.events:
        out["events"] = [
            {
                "name": e.name,
                "timeUnixNano": str(e.timestamp),
                "attributes": _json_attributes(e.attributes),
            }
            for e in span.events
        ]
    if span.links:
        out["links"] = [
            {
                "traceId": format(link.context.trace_id, "032x"),
                "spanId": format(link.context.span_id, "016x"),
                "attributes": _json_attributes(link.attributes),
            }
            for link in span.links
        ]
    return out


def _json_attributes(attributes: Any) -> list[dict[str, Any]]:
    return [{"key": k, "value": _json_value(v)} for k, v in (attributes or {}).items()]


def _json_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    return {"arrayValue": {"values": [_json_value(v) for v in value]}}


# --- the real SDK's spans ----------------------------------------------------------------


def test_real_sdk_spans_decode_to_sdk_shaped_payloads(shop_spans: list[ReadableSpan]) -> None:
    decoded = decode_otlp(protobuf_body(shop_spans), PROTOBUF)
    assert decoded.rejected == 0
    assert decoded.error_message == ""
    payloads = by_span_id(decoded)
    assert len(payloads) == len(shop_spans) == 5
    for span in shop_spans:
        assert payloads[format(span.get_span_context().span_id, "016x")] == expected_payload(span)


def test_real_sdk_ids_parents_kinds_status_and_scopes(shop_spans: list[ReadableSpan]) -> None:
    payloads = {
        s.payload["name"]: s.payload for s in decode_otlp(protobuf_body(shop_spans), PROTOBUF).spans
    }
    root = payloads["POST /orders"]
    assert root["trace_id"] == format(REMOTE_TRACE_ID, "032x")
    assert root["parent_span_id"] == format(REMOTE_SPAN_ID, "016x")
    assert root["trace_state"] == "vendor=abc,shop=1"
    assert payloads["load cart"]["parent_span_id"] is None
    assert payloads["charge card"]["parent_span_id"] == root["span_id"]
    assert {name: p["kind"] for name, p in payloads.items()} == {
        "load cart": "internal",
        "POST /orders": "server",
        "charge card": "client",
        "publish order": "producer",
        "consume order": "consumer",
    }
    assert root["status"] == {"code": "ok", "message": ""}
    assert payloads["charge card"]["status"] == {"code": "error", "message": "card declined"}
    assert payloads["load cart"]["status"]["code"] == "unset"
    assert root["scope"] == {"name": "shop.orders", "version": "2.1.0"}
    assert payloads["charge card"]["scope"] == {"name": "shop.payments", "version": ""}
    assert root["start_time_unix_nano"] < payloads["charge card"]["start_time_unix_nano"]
    assert root["end_time_unix_nano"] > root["start_time_unix_nano"] > 1_600_000_000 * 10**9


def test_real_sdk_attributes_events_links_and_resource(shop_spans: list[ReadableSpan]) -> None:
    decoded = decode_otlp(protobuf_body(shop_spans), PROTOBUF)
    payloads = {s.payload["name"]: s.payload for s in decoded.spans}
    root = payloads["POST /orders"]
    assert root["attributes"] == {
        "http.request.method": "POST",
        "http.response.status_code": 201,
        "discount.ratio": 0.25,
        "order.gift": False,
        "order.skus": ["sku-1", "sku-2"],
        "order.quantities": [1, 3],
        "order.weights": [0.5, 1.5],
        "order.fragile": [True, False],
    }
    assert root["events"][0]["name"] == "validated"
    assert root["events"][0]["attributes"] == {"items": 3, "warnings": ["slow stock lookup"]}
    assert root["links"] == [
        {
            "trace_id": payloads["load cart"]["trace_id"],
            "span_id": payloads["load cart"]["span_id"],
            "attributes": {"link.reason": "same cart"},
        }
    ]
    exception = payloads["charge card"]["events"][0]
    assert exception["name"] == "exception"
    assert exception["attributes"]["exception.type"] == "ValueError"
    assert exception["attributes"]["exception.message"] == "card declined"
    assert "exception.stacktrace" in exception["attributes"]
    assert "events" not in payloads["load cart"]
    assert "links" not in payloads["load cart"]
    resource = decoded.spans[0].resource
    assert resource["service.name"] == "checkout"
    assert resource["deployment.environment"] == "test"
    assert resource == dict(shop_spans[0].resource.attributes)
    assert all(s.resource is resource for s in decoded.spans)


# --- OTLP/JSON --------------------------------------------------------------------------


def test_otlp_json_decodes_to_the_same_payloads(shop_spans: list[ReadableSpan]) -> None:
    from_protobuf = decode_otlp(protobuf_body(shop_spans), PROTOBUF)
    from_json = decode_otlp(orjson.dumps(otlp_json(shop_spans)), JSON)
    assert from_json.rejected == 0
    assert by_span_id(from_json) == by_span_id(from_protobuf)
    assert from_json.spans[0].resource == from_protobuf.spans[0].resource
    for span in shop_spans:
        expected = expected_payload(span)
        assert by_span_id(from_json)[expected["span_id"]] == expected


def test_otlp_json_reads_uppercase_hex_and_integers_as_numbers(
    shop_spans: list[ReadableSpan],
) -> None:
    document = otlp_json(shop_spans)
    for span in document["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        span["traceId"] = span["traceId"].upper()
        span["spanId"] = span["spanId"].upper()
        span["startTimeUnixNano"] = int(span["startTimeUnixNano"])
        for attribute in span["attributes"]:
            if "intValue" in attribute["value"]:
                attribute["value"]["intValue"] = int(attribute["value"]["intValue"])
    decoded = decode_otlp(orjson.dumps(document), "application/json; charset=utf-8")
    assert by_span_id(decoded) == by_span_id(decode_otlp(protobuf_body(shop_spans), PROTOBUF))


@pytest.mark.parametrize("snake_case", [False, True])
def test_protobufs_own_json_mapping_is_read_too(
    shop_spans: list[ReadableSpan], snake_case: bool
) -> None:
    # base64 ids, enum names, and (with preserving_proto_field_name) snake_case keys
    document = MessageToDict(encode_spans(shop_spans), preserving_proto_field_name=snake_case)
    decoded = decode_otlp(orjson.dumps(document), JSON)
    assert by_span_id(decoded) == by_span_id(decode_otlp(protobuf_body(shop_spans), PROTOBUF))


# --- GenAI --------------------------------------------------------------------------------


def _one_span(attributes: dict[str, Any], content_type: str) -> dict[str, Any]:
    def body(provider: TracerProvider) -> None:
        with provider.get_tracer("llm").start_as_current_span("call", attributes=attributes):
            pass

    spans = record(body)
    data = protobuf_body(spans) if content_type == PROTOBUF else orjson.dumps(otlp_json(spans))
    (span,) = decode_otlp(data, content_type).spans
    return span.payload


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_genai_attributes_make_a_generation_with_model_and_usage(content_type: str) -> None:
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 30,
    }
    payload = _one_span(attributes, content_type)
    assert payload["type"] == "generation"
    assert payload["model"] == "gpt-4o-mini-2024-07-18"
    assert payload["usage"] == {"input_tokens": 120, "output_tokens": 30, "total_tokens": 150}
    assert payload["attributes"] == attributes


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_genai_older_token_names_and_request_model(content_type: str) -> None:
    payload = _one_span(
        {
            "gen_ai.request.model": "claude-3-haiku",
            "gen_ai.usage.prompt_tokens": 7,
            "gen_ai.usage.completion_tokens": 5,
        },
        content_type,
    )
    assert (payload["type"], payload["model"]) == ("generation", "claude-3-haiku")
    assert payload["usage"] == {"input_tokens": 7, "output_tokens": 5, "total_tokens": 12}


@pytest.mark.parametrize(
    ("attributes", "expected_type"),
    [
        ({"gen_ai.usage.input_tokens": 42}, "generation"),
        ({"gen_ai.operation.name": "embeddings"}, "generation"),
        ({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}, "tool"),
        ({"gen_ai.operation.name": "invoke_agent", "gen_ai.request.model": "m"}, "agent"),
        ({"tracerelay.type": "retrieval", "gen_ai.request.model": "m"}, "retrieval"),
        ({"http.request.method": "GET", "gen_ai.request.model": ""}, "span"),
    ],
)
def test_span_type_from_attributes(attributes: dict[str, Any], expected_type: str) -> None:
    payload = _one_span(attributes, PROTOBUF)
    assert payload["type"] == expected_type
    if attributes.get("gen_ai.request.model"):
        assert payload["model"] == attributes["gen_ai.request.model"]
    else:
        assert "model" not in payload
    if expected_type == "span":
        assert "usage" not in payload
    if "gen_ai.usage.input_tokens" in attributes:
        assert payload["usage"] == {"input_tokens": 42, "total_tokens": 42}


# --- ids: rejected spans, roots, bad parents, bad links -----------------------------------

GOOD_TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
GOOD_SPAN = bytes.fromhex("b7ad6b7169203331")


def request_of(*spans: PbSpan) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    scope_spans.scope.name = "test"
    scope_spans.spans.extend(spans)
    return request


def pb_span(
    name: str, trace_id: bytes = GOOD_TRACE, span_id: bytes = GOOD_SPAN, **fields: Any
) -> PbSpan:
    return PbSpan(name=name, trace_id=trace_id, span_id=span_id, start_time_unix_nano=1, **fields)


def each_encoding(request: ExportTraceServiceRequest) -> Iterator[tuple[str, OtlpDecoded]]:
    yield PROTOBUF, decode_otlp(request.SerializeToString(), PROTOBUF)
    yield JSON, decode_otlp(orjson.dumps(hex_ids(MessageToDict(request))), JSON)


def hex_ids(document: dict[str, Any]) -> dict[str, Any]:
    """Protobuf's JSON mapping turned into OTLP/JSON: base64 ids rewritten as hex."""

    def rewrite(obj: dict[str, Any], keys: Sequence[str]) -> None:
        for key in keys:
            if key in obj:
                obj[key] = base64.b64decode(obj[key]).hex()

    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                rewrite(span, ("traceId", "spanId", "parentSpanId"))
                for link in span.get("links", []):
                    rewrite(link, ("traceId", "spanId"))
    return document


def test_invalid_ids_reject_those_spans_only_and_say_why() -> None:
    request = request_of(
        pb_span("kept"),
        pb_span("zero trace", trace_id=bytes(16)),
        pb_span("short trace", trace_id=b"\x01" * 8),
        pb_span("no span id", span_id=b""),
        pb_span("zero span", span_id=bytes(8)),
        pb_span("long span", span_id=b"\x02" * 16),
    )
    for content_type, decoded in each_encoding(request):
        assert [s.payload["name"] for s in decoded.spans] == ["kept"], content_type
        assert decoded.rejected == 5
        message = decoded.error_message
        assert message.startswith("rejected 5 spans: ")
        assert "trace_id is all zeros" in message
        assert "span_id is empty" in message
        assert "span_id is all zeros" in message
        assert "'zero trace'" in message
        response = ExportTraceServiceResponse.FromString(decoded.response_bytes(PROTOBUF))
        assert response.HasField("partial_success")
        assert response.partial_success.rejected_spans == 5
        assert response.partial_success.error_message == message
        as_json = Parse(decoded.response_bytes(JSON), ExportTraceServiceResponse())
        assert as_json == response
        assert decoded.response_json() == decoded.response_bytes(JSON)


def test_a_clean_request_answers_without_partial_success(shop_spans: list[ReadableSpan]) -> None:
    for content_type, body in (
        (PROTOBUF, protobuf_body(shop_spans)),
        (JSON, orjson.dumps(otlp_json(shop_spans))),
    ):
        decoded = decode_otlp(body, content_type)
        response = ExportTraceServiceResponse.FromString(decoded.response_bytes(PROTOBUF))
        assert not response.HasField("partial_success")
        assert decoded.response_bytes(PROTOBUF) == b""
        assert orjson.loads(decoded.response_bytes(content_type) or b"{}") == {}


def test_empty_zero_malformed_and_own_parent_ids() -> None:
    request = request_of(
        pb_span("no parent", span_id=b"\x01" * 8),
        pb_span("zero parent", span_id=b"\x02" * 8, parent_span_id=bytes(8)),
        pb_span("child", span_id=b"\x03" * 8, parent_span_id=b"\x01" * 8),
        pb_span("short parent", span_id=b"\x04" * 8, parent_span_id=b"\xab\xcd"),
        pb_span("own parent", span_id=b"\x05" * 8, parent_span_id=b"\x05" * 8),
    )
    for content_type, decoded in each_encoding(request):
        payloads = {s.payload["name"]: s.payload for s in decoded.spans}
        assert decoded.rejected == 0, content_type
        assert payloads["no parent"]["parent_span_id"] is None
        assert payloads["zero parent"]["parent_span_id"] is None
        assert payloads["child"]["parent_span_id"] == "01" * 8
        assert payloads["short parent"]["parent_span_id"] is None
        assert payloads["short parent"]["attributes"] == {
            "tracerelay.invalid_parent_span_id": "abcd"
        }
        assert payloads["own parent"]["parent_span_id"] is None
        assert payloads["own parent"]["attributes"] == {
            "tracerelay.invalid_parent_span_id": "05" * 8
        }
        assert "tracerelay.invalid_parent_span_id" not in payloads["zero parent"]["attributes"]


def test_a_link_with_invalid_ids_is_dropped_with_a_warning() -> None:
    span = pb_span("linked")
    span.links.add(trace_id=GOOD_TRACE, span_id=b"\x07" * 8)
    span.links.add(trace_id=bytes(16), span_id=b"\x07" * 8)
    for content_type, decoded in each_encoding(request_of(span)):
        (payload,) = (s.payload for s in decoded.spans)
        assert payload["links"] == [
            {"trace_id": GOOD_TRACE.hex(), "span_id": "07" * 8, "attributes": {}}
        ], content_type
        assert decoded.rejected == 0
        assert decoded.error_message.startswith("dropped 1 link: link trace_id is all zeros")
        response = ExportTraceServiceResponse.FromString(decoded.response_bytes(PROTOBUF))
        assert response.partial_success.rejected_spans == 0
        assert response.partial_success.error_message == decoded.error_message


# --- attribute values ----------------------------------------------------------------------


def any_array(*values: AnyValue) -> AnyValue:
    value = AnyValue()
    value.array_value.values.extend(values)
    return value


def any_kvlist(**values: AnyValue) -> AnyValue:
    value = AnyValue()
    value.kvlist_value.values.extend(KeyValue(key=k, value=v) for k, v in values.items())
    return value


def with_attributes(**values: AnyValue) -> ExportTraceServiceRequest:
    span = pb_span("values")
    span.attributes.extend(KeyValue(key=k, value=v) for k, v in values.items())
    return request_of(span)


def test_attribute_values_become_scalars_or_lists_of_scalars() -> None:
    request = with_attributes(
        text=AnyValue(string_value="a"),
        empty_text=AnyValue(string_value=""),
        number=AnyValue(int_value=-(2**63)),
        flag=AnyValue(bool_value=True),
        nan=AnyValue(double_value=float("nan")),
        inf=AnyValue(double_value=float("-inf")),
        raw=AnyValue(bytes_value=b"\x00\xffbin"),
        nothing=AnyValue(),
        strindex=AnyValue(string_value_strindex=3),
        mixed=any_array(
            AnyValue(int_value=1),
            AnyValue(string_value="x"),
            any_array(AnyValue(bool_value=False)),
            any_kvlist(k=AnyValue(double_value=1.5)),
        ),
        mapping=any_kvlist(
            name=AnyValue(string_value="n"),
            inner=any_kvlist(deep=any_array(AnyValue(int_value=2))),
            blob=AnyValue(bytes_value=b"\x01"),
        ),
    )
    for content_type, decoded in each_encoding(request):
        attributes = decoded.spans[0].payload["attributes"]
        assert attributes == {
            "text": "a",
            "empty_text": "",
            "number": -(2**63),
            "flag": True,
            "nan": "nan",
            "inf": "-inf",
            "raw": base64.b64encode(b"\x00\xffbin").decode(),
            "nothing": None,
            "strindex": None,
            "mixed": [1, "x", "[false]", '{"k":1.5}'],
            "mapping": '{"name":"n","inner":{"deep":[2]},"blob":"AQ=="}',
        }, content_type
        assert json.loads(attributes["mapping"]) == {
            "name": "n",
            "inner": {"deep": [2]},
            "blob": "AQ==",
        }


def nested(levels: int) -> AnyValue:
    """``levels`` containers, arrays and key-value lists in turn, the outermost a kvlist."""
    value = AnyValue(string_value="leaf")
    for level in range(levels):
        value = any_kvlist(k=value) if (levels - level) % 2 else any_array(value)
    return value


def depth_of(value: Any) -> int:
    """Containers nested in ``value`` before the marker or a leaf."""
    depth = 0
    while isinstance(value, (list, dict)):
        depth += 1
        value = value[0] if isinstance(value, list) else value["k"]
    return depth


def test_deep_nesting_is_capped_with_a_marker() -> None:
    # 25 levels is as deep as upb lets a protobuf body nest (about 100 messages)
    for content_type, decoded in each_encoding(with_attributes(deep=nested(25))):
        value = json.loads(decoded.spans[0].payload["attributes"]["deep"])
        assert depth_of(value) == MAX_VALUE_DEPTH, content_type
        assert DEPTH_MARKER in decoded.spans[0].payload["attributes"]["deep"]
    for content_type, decoded in each_encoding(with_attributes(shallow=nested(MAX_VALUE_DEPTH))):
        value = json.loads(decoded.spans[0].payload["attributes"]["shallow"])
        assert DEPTH_MARKER not in json.dumps(value), content_type
        assert depth_of(value) == MAX_VALUE_DEPTH


def test_json_nested_far_deeper_is_capped_not_a_recursion_error() -> None:
    def body(levels: int) -> bytes:
        value = '{"stringValue":"leaf"}'
        value = '{"kvlistValue":{"values":[{"key":"k","value":' * levels + value + "}]}}" * levels
        ids = f'"traceId":"{GOOD_TRACE.hex()}","spanId":"{GOOD_SPAN.hex()}"'
        span = f'{{{ids},"attributes":[{{"key":"deep","value":{value}}}]}}'
        return f'{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{span}]}}]}}]}}'.encode()

    (span,) = decode_otlp(body(240), JSON).spans
    assert depth_of(json.loads(span.payload["attributes"]["deep"])) == MAX_VALUE_DEPTH
    with pytest.raises(OtlpError) as too_deep:
        decode_otlp(body(400), JSON)  # past orjson's depth limit
    assert too_deep.value.status == 400


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field, written by hand."""
    head = bytearray()
    for n in (number << 3 | 2, len(payload)):
        while n > 0x7F:
            head.append(n & 0x7F | 0x80)
            n >>= 7
        head.append(n)
    return bytes(head) + payload


def hand_built_nesting(levels: int) -> bytes:
    """A request whose one span has an attribute of ``levels`` nested key-value lists,
    written byte by byte: protobuf itself refuses to build one past its depth limit."""
    value = _field(1, b"leaf")
    for _ in range(levels):
        value = _field(6, _field(1, _field(1, b"k") + _field(2, value)))
    span = pb_span("deep").SerializeToString() + _field(9, _field(1, b"deep") + _field(2, value))
    return _field(1, _field(2, _field(2, span)))


def test_protobuf_nested_past_upbs_limit_is_a_400() -> None:
    (span,) = decode_otlp(hand_built_nesting(20), PROTOBUF).spans
    assert depth_of(json.loads(span.payload["attributes"]["deep"])) == MAX_VALUE_DEPTH
    with pytest.raises(OtlpError) as error:
        decode_otlp(hand_built_nesting(2000), PROTOBUF)
    assert error.value.status == 400
    assert "ExportTraceServiceRequest" in error.value.message


# --- bodies that are not requests -----------------------------------------------------------

TRACE_HEX = GOOD_TRACE.hex()
SPAN_HEX = GOOD_SPAN.hex()


def _json_request(span: Any) -> bytes:
    return orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})


def _span_with(**fields: Any) -> bytes:
    return _json_request({"traceId": TRACE_HEX, "spanId": SPAN_HEX, **fields})


@pytest.mark.parametrize(
    ("content_type", "body", "says"),
    [
        (PROTOBUF, b"\xff\xff\xff\xff", "protobuf"),
        (PROTOBUF, b'{"resourceSpans": []}', "protobuf"),
        (JSON, b"", "not valid JSON"),
        (JSON, b'{"resourceSpans": [', "not valid JSON"),
        (JSON, b"\xff\xfe", "not valid JSON"),
        (JSON, b"[]", "the body must be an object"),
        (JSON, b'{"resourceSpans": {}}', "expected an array"),
        (JSON, _json_request("a span"), "a span must be an object"),
        (JSON, _span_with(name=5), "span name must be a string"),
        (JSON, _span_with(traceId=12), "traceId must be a string"),
        (JSON, _span_with(startTimeUnixNano="soon"), "startTimeUnixNano must be an integer"),
        (JSON, _span_with(startTimeUnixNano="-1"), "out of range"),
        (JSON, _span_with(endTimeUnixNano=str(2**64)), "out of range"),
        (JSON, _span_with(kind=2.5), "kind must be an integer"),
        (JSON, _span_with(attributes={"k": "v"}), "expected an array"),
        (JSON, _span_with(attributes=["k"]), "an attribute must be an object"),
        (JSON, _span_with(attributes=[{"key": "k", "value": "v"}]), "must be an object"),
        (JSON, _span_with(attributes=[{"key": "k", "value": {"intValue": "1.5"}}]), "intValue"),
        (JSON, _span_with(attributes=[{"key": "k", "value": {"intValue": str(2**63)}}]), "range"),
        (JSON, _span_with(attributes=[{"key": "k", "value": {"boolValue": "yes"}}]), "boolValue"),
        (JSON, _span_with(attributes=[{"key": "k", "value": {"doubleValue": "x"}}]), "doubleValue"),
        (JSON, _span_with(attributes=[{"key": "k", "value": {"bytesValue": "!!"}}]), "base64"),
        (
            JSON,
            _span_with(attributes=[{"key": "k", "value": {"stringValue": "a", "intValue": 1}}]),
            "sets both",
        ),
        (JSON, _span_with(events=[{"timeUnixNano": []}]), "timeUnixNano must be an integer"),
        (JSON, _span_with(links=[{"traceId": {}}]), "link traceId must be a string"),
    ],
)
def test_undecodable_bodies_are_400_with_a_message(
    content_type: str, body: bytes, says: str
) -> None:
    with pytest.raises(OtlpError) as error:
        decode_otlp(body, content_type)
    assert error.value.status == 400
    assert says in error.value.message
    assert error.value.__cause__ is not None


def test_a_truncated_protobuf_body_is_a_400(shop_spans: list[ReadableSpan]) -> None:
    body = protobuf_body(shop_spans)
    for cut in (len(body) - 1, len(body) // 2, 3):
        with pytest.raises(OtlpError) as error:
            decode_otlp(body[:cut], PROTOBUF)
        assert error.value.status == 400


@pytest.mark.parametrize(
    "content_type", ["", "text/plain", "application/grpc", "application/jsonl"]
)
def test_unsupported_content_types_are_415(content_type: str) -> None:
    with pytest.raises(OtlpError) as error:
        decode_otlp(b"{}", content_type)
    assert error.value.status == 415
    assert "application/x-protobuf" in error.value.message


@pytest.mark.parametrize(
    "content_type",
    ["application/x-protobuf", "application/protobuf", "Application/X-Protobuf; proto=x"],
)
def test_protobuf_content_types(content_type: str) -> None:
    decoded = decode_otlp(request_of(pb_span("s")).SerializeToString(), content_type)
    assert [s.payload["name"] for s in decoded.spans] == ["s"]
    assert decoded.response_bytes(content_type) == b""


def test_empty_requests_are_full_successes() -> None:
    for content_type, body in ((PROTOBUF, b""), (JSON, b"{}"), (JSON, b'{"resourceSpans": null}')):
        decoded = decode_otlp(body, content_type)
        assert (decoded.spans, decoded.rejected, decoded.error_message) == ([], 0, "")


# --- properties ------------------------------------------------------------------------------


def assert_decodes_or_400(body: bytes, content_type: str) -> None:
    """``body`` decodes to storable payloads, or fails with a 400, and nothing else."""
    try:
        decoded = decode_otlp(body, content_type)
    except OtlpError as error:
        status = error.status
    else:
        status = 200
        orjson.dumps([s.payload for s in decoded.spans])
    assert status in {200, 400}


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300), content_type=st.sampled_from([PROTOBUF, JSON]))
def test_arbitrary_bytes_raise_nothing_but_otlp_error(body: bytes, content_type: str) -> None:
    assert_decodes_or_400(body, content_type)


_KEYS = st.sampled_from(
    [
        "resourceSpans",
        "scopeSpans",
        "spans",
        "resource",
        "scope",
        "attributes",
        "key",
        "value",
        "stringValue",
        "intValue",
        "doubleValue",
        "boolValue",
        "bytesValue",
        "arrayValue",
        "kvlistValue",
        "values",
        "traceId",
        "spanId",
        "parentSpanId",
        "name",
        "kind",
        "status",
        "code",
        "events",
        "links",
        "startTimeUnixNano",
        "timeUnixNano",
    ]
) | st.text(max_size=6)
_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from([TRACE_HEX, SPAN_HEX, "0" * 32, "AQID"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_KEYS, children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(document=_JSON_VALUES)
def test_arbitrary_json_raises_nothing_but_otlp_error(document: Any) -> None:
    assert_decodes_or_400(orjson.dumps(document), JSON)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    children = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in children:
        yield from _paths(child, (*prefix, key))


@pytest.fixture(scope="module")
def shop_json(shop_spans: list[ReadableSpan]) -> dict[str, Any]:
    return otlp_json(shop_spans)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_valid_document_with_any_node_replaced_raises_nothing_but_otlp_error(
    shop_json: dict[str, Any], data: st.DataObject
) -> None:
    document = copy.deepcopy(shop_json)
    path = data.draw(st.sampled_from(list(_paths(document))[1:]))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = data.draw(_JSON_VALUES)
    assert_decodes_or_400(orjson.dumps(document), JSON)


# generated protobuf requests: the JSON form of each decodes to the same payloads

_SCALARS = st.one_of(
    st.text(max_size=12).map(lambda s: AnyValue(string_value=s)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
    st.floats().map(lambda f: AnyValue(double_value=f)),
    st.binary(max_size=8).map(lambda b: AnyValue(bytes_value=b)),
    st.just(AnyValue()),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=3).map(lambda vs: any_array(*vs))
        | st.dictionaries(st.text(max_size=4), children, max_size=3).map(lambda d: any_kvlist(**d))
    ),
    max_leaves=8,
)
_ATTRIBUTES = st.lists(st.builds(KeyValue, key=st.text(max_size=8), value=_VALUES), max_size=4)


def _ids(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size) | st.sampled_from(
        [b"", bytes(size), b"\x01\x02\x03"]
    )


@st.composite
def _spans(draw: st.DrawFn) -> PbSpan:
    span = PbSpan(
        trace_id=draw(_ids(16)),
        span_id=draw(_ids(8)),
        name=draw(st.text(max_size=10)),
        kind=draw(st.integers(0, 7)),
        start_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
        end_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
        trace_state=draw(st.sampled_from(["", "a=b"])),
    )
    span.parent_span_id = span.span_id if draw(st.booleans()) else draw(_ids(8))
    span.attributes.extend(draw(_ATTRIBUTES))
    span.status.code = draw(st.integers(0, 3))
    span.status.message = draw(st.text(max_size=8))
    for _ in range(draw(st.integers(0, 2))):
        event = span.events.add(
            name=draw(st.text(max_size=6)), time_unix_nano=draw(st.integers(0, 2**64 - 1))
        )
        event.attributes.extend(draw(_ATTRIBUTES))
    for _ in range(draw(st.integers(0, 2))):
        link = span.links.add(trace_id=draw(_ids(16)), span_id=draw(_ids(8)))
        link.attributes.extend(draw(_ATTRIBUTES))
    return span


@st.composite
def _requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(draw(_ATTRIBUTES))
        for _ in range(draw(st.integers(0, 2))):
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = draw(st.sampled_from(["", "lib"]))
            scope_spans.scope.version = draw(st.sampled_from(["", "1.0"]))
            scope_spans.spans.extend(draw(st.lists(_spans(), max_size=3)))
    return request


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=_requests(), integer_enums=st.booleans())
def test_protobuf_and_otlp_json_agree_on_any_request(
    request: ExportTraceServiceRequest, integer_enums: bool
) -> None:
    from_protobuf = decode_otlp(request.SerializeToString(), PROTOBUF)
    document = hex_ids(MessageToDict(request, use_integers_for_enums=integer_enums))
    from_json = decode_otlp(orjson.dumps(document), JSON)
    assert [s.payload for s in from_json.spans] == [s.payload for s in from_protobuf.spans]
    assert [s.resource for s in from_json.spans] == [s.resource for s in from_protobuf.spans]
    assert from_json.rejected == from_protobuf.rejected
    assert bool(from_json.error_message) == bool(from_protobuf.error_message)
    orjson.dumps([s.payload for s in from_protobuf.spans])

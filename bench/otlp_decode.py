"""Decoding OTLP/HTTP trace bodies: tracerelay's decoder against protobuf's own route, in one run.

The bodies are what OpenTelemetry really sends: 512 spans recorded by the
OpenTelemetry SDK (TracerProvider, InMemorySpanExporter) in a checkout-like
workload — HTTP server spans, database and LLM client spans with about eight
attributes each, some events — encoded by the SDK's own OTLP encoder
(``encode_spans``). The protobuf body is that message serialised; the JSON body
is the same message as OTLP/JSON (hex ids, integer enums).

Cases, each turning one whole body into Python dicts:

- ``decode_otlp``                      tracerelay.server.ingest.otlp, payloads ready to store
- ``FromString + MessageToDict``       protobuf's generic route (upb parse, reflection to dicts)
- ``FromString`` alone                 the upb parse, the floor for any protobuf decoder
- ``ParseDict + MessageToDict``        json_format's route for OTLP/JSON (ids rewritten to base64)
- ``orjson.loads`` alone               the JSON parse, the floor for the JSON decoder

Each case is timed with ``time.perf_counter`` over LOOPS decodes, REPEATS times;
the table gives µs per span (best and median) and the median's ratio to
tracerelay's decoder on the same body. Run: ``python bench/otlp_decode.py``.
"""

from __future__ import annotations

import base64
import gc
import platform
import statistics
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.internal import api_implementation
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from tracerelay.server.ingest.otlp import decode_otlp

SPANS = 512
LOOPS = 5
REPEATS = 7


def record_spans() -> list[ReadableSpan]:
    """SPANS finished spans from the OpenTelemetry SDK, about eight attributes each."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": "checkout",
                "service.version": "1.4.2",
                "deployment.environment": "prod",
            }
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("checkout.api", "1.4.2")
    n = 0
    while len(exporter.get_finished_spans()) < SPANS:
        n += 1
        with tracer.start_as_current_span(
            "POST /v1/orders/{id}/refund",
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": "POST",
                "http.route": "/v1/orders/{id}/refund",
                "http.response.status_code": 200,
                "url.scheme": "https",
                "server.port": 443,
                "user.id": f"user-{n % 97}",
                "order.id": f"ord_{n:08d}",
                "feature.flags": ["fast-refund", "express-tracking"],
            },
        ) as request:
            with tracer.start_as_current_span(
                "SELECT orders",
                kind=SpanKind.CLIENT,
                attributes={
                    "db.system": "postgresql",
                    "db.namespace": "shop",
                    "db.query.text": "SELECT * FROM orders WHERE id = $1",
                    "db.response.returned_rows": 1,
                    "server.address": "db.internal",
                    "server.port": 5432,
                    "db.cached": n % 2 == 0,
                    "db.duration_budget_ms": 25.0,
                },
            ) as query:
                query.add_event("rows fetched", {"rows": 1})
            with tracer.start_as_current_span(
                "chat gpt-4o-mini",
                kind=SpanKind.CLIENT,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.system": "openai",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                    "gen_ai.request.temperature": 0.2,
                    "gen_ai.usage.input_tokens": 212,
                    "gen_ai.usage.output_tokens": 61,
                    "gen_ai.response.finish_reasons": ["stop"],
                },
            ):
                pass
            request.set_status(Status(StatusCode.OK))
    return list(exporter.get_finished_spans())[:SPANS]


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """``request`` as OTLP/JSON: protobuf's JSON mapping with the ids in hex."""
    document = json_format.MessageToDict(request, use_integers_for_enums=True)
    _rewrite_ids(document, lambda text: base64.b64decode(text).hex())
    return orjson.dumps(document)


def _rewrite_ids(document: dict[str, Any], convert: Callable[[str], str]) -> None:
    for resource_spans in document.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                for owner in (span, *span.get("links", ())):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in owner:
                            owner[key] = convert(owner[key])


def json_format_route(body: bytes) -> dict[str, Any]:
    """OTLP/JSON through protobuf's json_format: hex ids to base64, ParseDict, MessageToDict."""
    document = orjson.loads(body)
    _rewrite_ids(document, lambda text: base64.b64encode(bytes.fromhex(text)).decode())
    request = json_format.ParseDict(
        document, ExportTraceServiceRequest(), ignore_unknown_fields=True
    )
    result: dict[str, Any] = json_format.MessageToDict(request)
    return result


def measure(decode: Callable[[bytes], Any], body: bytes) -> tuple[float, float]:
    """(best, median) microseconds per span."""
    decode(body)
    samples = []
    gc.disable()
    try:
        for _ in range(REPEATS):
            start = time.perf_counter()
            for _ in range(LOOPS):
                decode(body)
            samples.append((time.perf_counter() - start) / (LOOPS * SPANS) * 1e6)
    finally:
        gc.enable()
    return min(samples), statistics.median(samples)


def main() -> None:
    spans = record_spans()
    request = encode_spans(spans)
    protobuf = request.SerializeToString()
    as_json = otlp_json(request)
    from_protobuf = decode_otlp(protobuf, "application/x-protobuf")
    from_json = decode_otlp(as_json, "application/json")
    assert len(from_protobuf.spans) == SPANS
    assert from_protobuf.rejected == 0
    assert [s.payload for s in from_json.spans] == [s.payload for s in from_protobuf.spans]

    cases: list[tuple[str, bytes, Callable[[bytes], Any]]] = [
        ("decode_otlp", protobuf, lambda b: decode_otlp(b, "application/x-protobuf")),
        (
            "FromString + MessageToDict",
            protobuf,
            lambda b: json_format.MessageToDict(ExportTraceServiceRequest.FromString(b)),
        ),
        ("FromString alone", protobuf, ExportTraceServiceRequest.FromString),
        ("decode_otlp", as_json, lambda b: decode_otlp(b, "application/json")),
        ("ParseDict + MessageToDict", as_json, json_format_route),
        ("orjson.loads alone", as_json, orjson.loads),
    ]
    print(f"Decoding one OTLP/HTTP body of {SPANS} OpenTelemetry SDK spans (~8 attributes each),")
    print(f"{LOOPS} decodes x {REPEATS} repeats per case.")
    print(
        f"Python {platform.python_version()} ({platform.machine()}), "
        f"protobuf {version('protobuf')} ({api_implementation.Type()}), "
        f"opentelemetry-proto {version('opentelemetry-proto')}, orjson {version('orjson')}"
    )
    for encoding, body in (("protobuf", protobuf), ("OTLP/JSON", as_json)):
        print()
        print(f"{encoding} body: {len(body):,} bytes ({len(body) / SPANS:.0f} per span)")
        print(f"{'case':<30}{'best µs/span':>14}{'median µs/span':>16}{'vs decode_otlp':>16}")
        baseline = None
        for name, case_body, decode in cases:
            if case_body is not body:
                continue
            best, median = measure(decode, body)
            baseline = baseline or median
            print(f"{name:<30}{best:>14.2f}{median:>16.2f}{median / baseline:>15.2f}x")


if __name__ == "__main__":
    main()

"""A real OpenTelemetry SDK exporting OTLP/HTTP to the server: its spans are stored with
their parents and attributes, and a re-export is recognised as a repeat."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.server.support import ADMIN_KEY, RunningServer, running_server
from tracerelay.server.api.otlp import event_id_of


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path) as running:
        yield running


def test_an_opentelemetry_sdk_exports_spans_that_are_queryable(server: RunningServer) -> None:
    exporter = OTLPSpanExporter(
        endpoint=f"{server.url}/v1/traces", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "otel-shop"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.otlp", "1.0")
    with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.route", "/cart")
        with tracer.start_as_current_span("load cart") as child:
            child.set_attribute("items", [1, 2, 3])
            child.add_event("cache miss", {"key": "cart:7"})
        with tracer.start_as_current_span("chat", kind=SpanKind.CLIENT) as llm:
            llm.set_attributes({"gen_ai.request.model": "gpt-x", "gen_ai.usage.input_tokens": 7,
                                "gen_ai.usage.output_tokens": 3})  # fmt: skip
            llm.set_status(Status(StatusCode.ERROR, "rate limited"))
        trace_id = format(root.get_span_context().trace_id, "032x")
        root_id = format(root.get_span_context().span_id, "016x")
    assert provider.force_flush(10_000)
    provider.shutdown()
    trace = server.trace(trace_id)
    assert trace["service"] == "otel-shop" and trace["name"] == "GET /cart"
    assert trace["span_count"] == 3 and trace["error_count"] == 1 and trace["orphans"] == []
    spans = {s["name"]: s for s in trace["spans"]}
    assert spans["GET /cart"]["parent_span_id"] is None
    assert spans["GET /cart"]["kind"] == "server"
    assert spans["GET /cart"]["attributes"]["http.route"] == "/cart"
    assert spans["load cart"]["parent_span_id"] == root_id
    assert spans["load cart"]["attributes"]["items"] == [1, 2, 3]
    assert spans["load cart"]["events"][0]["name"] == "cache miss"
    chat = spans["chat"]
    assert chat["type"] == "generation" and chat["model"] == "gpt-x"
    assert chat["usage"]["input_tokens"] == 7 and chat["status"]["code"] == "error"
    assert chat["scope"]["name"] == "tests.otlp"


def test_a_re_export_is_a_repeat_and_bad_bodies_get_an_otlp_status(
    server: RunningServer,
) -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "batch-job"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("job") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
    body = encode_spans(memory.get_finished_spans()).SerializeToString()
    headers = {"Content-Type": "application/x-protobuf"}
    with server.client() as client:
        for _ in range(2):
            response = client.post("/v1/traces", content=body, headers=headers)
            assert response.status_code == 200
            answer = ExportTraceServiceResponse.FromString(response.content)
            assert not answer.HasField("partial_success")
        bad = client.post("/v1/traces", content=b"\xff\x00garbage", headers=headers)
        assert bad.status_code == 400
        unsupported = client.post("/v1/traces", content=b"x", headers={"Content-Type": "text/xml"})
        assert unsupported.status_code == 415
        metrics = client.get("/metrics").text
    assert server.trace(trace_id)["span_count"] == 1
    assert "tracerelay_duplicate_events_total 1.0" in metrics


@settings(max_examples=300, deadline=None)
@given(
    st.text("0123456789abcdef", min_size=32, max_size=32),
    st.text("0123456789abcdef", min_size=16, max_size=16),
    st.none() | st.integers(0, 2**64 - 1),
)
def test_an_exported_span_keeps_the_event_id_it_always_had(
    trace_id: str, span_id: str, end: int | None
) -> None:
    """Repeats are recognised across server versions only if a span's derived id never
    changes: the fast formula gives the id the digit-by-digit definition gives."""
    payload = {"trace_id": trace_id, "span_id": span_id, "end_time_unix_nano": end}
    key = f"{trace_id}{span_id}{end}".encode()
    digest = int.from_bytes(hashlib.blake2b(key, digest_size=17).digest(), "big")
    crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    expected = "".join(crockford[(digest >> (5 * i)) & 31] for i in range(26))
    assert event_id_of(payload) == expected

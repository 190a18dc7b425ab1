"""A tracerelay root span started inside an active OpenTelemetry span joins its trace."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider

import tracerelay
from tracerelay.testing import capture


def test_root_span_inside_otel_span_becomes_its_child() -> None:
    otel_tracer = TracerProvider().get_tracer("app")
    with capture() as spans:
        with otel_tracer.start_as_current_span("otel request") as otel_span:
            with tracerelay.span("tracerelay step"), tracerelay.span("nested"):
                pass
        with tracerelay.span("after otel"):
            pass
    ctx = otel_span.get_span_context()
    step = spans.by_name("tracerelay step")
    assert step.trace_id == f"{ctx.trace_id:032x}"
    assert step.parent_span_id == f"{ctx.span_id:016x}"
    assert spans.by_name("nested").parent_span_id == step.span_id
    assert spans.by_name("after otel").trace_id != step.trace_id

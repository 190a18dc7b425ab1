"""The span and record API a user calls: attributes, events, status, usage, scores, events."""

from __future__ import annotations

import pytest

import tracerelay
from tracerelay.errors import TracerelayError
from tracerelay.testing import capture


def test_span_methods_record_what_they_say() -> None:
    with capture() as spans:
        with tracerelay.span("step", attributes={"k": 1}, kind="client", type="retrieval") as s:
            s.set_attribute("rows", 10)
            s.set_attributes({"table": "orders", "ids": [1, 2, 3]})
            s.add_event("cache miss", {"key": "a"})
            s.add_link("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", {"why": "batch"})
            s.update_name("step renamed")
            s.set_status("ok")
    (span,) = spans
    assert span.name == "step renamed"
    assert (span.kind, span.type) == ("client", "retrieval")
    assert span.attributes == {"k": 1, "rows": 10, "table": "orders", "ids": [1, 2, 3]}
    assert [e["name"] for e in span.events] == ["cache miss"]
    assert span.links[0]["span_id"] == "00f067aa0ba902b7"
    assert span.status == {"code": "ok", "message": ""}
    assert span.duration_ns is not None and span.duration_ns >= 0


def test_mutable_attribute_values_are_copied_when_set() -> None:
    rows = [1, 2]
    with capture() as spans, tracerelay.span("s") as s:
        s.set_attribute("rows", rows)
        rows.append(3)
    assert spans[0].attributes["rows"] == [1, 2]


def test_an_ended_span_ignores_further_changes() -> None:
    with capture() as spans:
        with tracerelay.span("done") as s:
            pass
        s.set_attribute("late", 1)
        s.add_event("late")
        s.set_status("error", "late")
        s.record_exception(ValueError("late"))
        s.end()  # a second end neither re-exports nor moves the end time
    assert len(spans) == 1
    assert spans[0].attributes == {} and spans[0].events == ()
    assert spans[0].status["code"] == "unset"


def test_exception_inside_with_block_is_recorded_and_propagates() -> None:
    with capture() as spans, pytest.raises(ZeroDivisionError):
        with tracerelay.span("divide"):
            _ = 1 / 0
    assert spans[0].status["code"] == "error"
    assert spans[0].events[0]["attributes"]["exception.type"] == "ZeroDivisionError"


def test_record_usage_makes_a_generation_with_totals() -> None:
    with capture() as spans:
        with tracerelay.span("llm"):
            tracerelay.record_usage(
                model="gpt-4o-mini", input_tokens=120, output_tokens=30, cost_usd=0.0004
            )
            tracerelay.record_usage(input_tokens=10, output_tokens=5, cost_usd=0.0001)
    span = spans[0]
    assert span.type == "generation" and span.model == "gpt-4o-mini"
    assert span.usage == {"input_tokens": 130, "output_tokens": 35, "total_tokens": 165}
    assert span.cost_usd == pytest.approx(0.0005)
    wire = span.to_wire()
    assert wire["usage"]["total_tokens"] == 165 and wire["model"] == "gpt-4o-mini"


def test_module_helpers_act_on_the_current_span() -> None:
    with capture() as spans:
        with tracerelay.span("outer"):
            tracerelay.set_attribute("a", 1)
            tracerelay.set_attributes({"b": 2})
            tracerelay.add_event("e")
            tracerelay.set_status("error", "bad input")
            tracerelay.record_exception(RuntimeError("x"))
    span = spans[0]
    assert span.attributes == {"a": 1, "b": 2}
    assert [e["name"] for e in span.events] == ["e", "exception"]
    assert span.status["code"] == "error"


def test_current_span_outside_any_span_is_a_harmless_stand_in() -> None:
    with capture():
        stand_in = tracerelay.current_span()
        assert not stand_in.is_recording()
        stand_in.set_attribute("x", 1)
        stand_in.end()


def test_score_event_metric_and_trace_update_records() -> None:
    with capture() as captured:
        with tracerelay.span("answer") as s:
            score_id = tracerelay.score("accuracy", 0.92, comment="judge")
            event_id = tracerelay.event("user_login", {"plan": "pro"})
            tracerelay.update_trace(user_id="u1", session_id="s1", tags=["beta"])
        tracerelay.score("thumbs", True, trace_id=s.trace_id)
        tracerelay.metric("queue.depth", 7, unit="items")
    kinds = [r.event_type for r in captured.records]
    assert kinds == [
        "quality_score_create",
        "event_create",
        "trace_update",
        "quality_score_create",
        "metric",
    ]
    first, event, update, thumbs, metric = captured.records
    assert first.event_id == score_id and event.event_id == event_id
    assert (first.trace_id, first.span_id, first.value) == (s.trace_id, s.span_id, 0.92)
    assert first.data_type == "numeric" and thumbs.data_type == "boolean"
    assert thumbs.span_id is None
    assert event.to_wire()["span_id"] == s.span_id
    assert update.to_wire() == {
        "trace_id": s.trace_id,
        "user_id": "u1",
        "session_id": "s1",
        "tags": ["beta"],
    }
    assert metric.to_wire()["value"] == 7
    assert len({r.event_id for r in captured.records}) == 5


def test_records_are_no_ops_without_init() -> None:
    assert tracerelay.score("a", 1.0, trace_id="4bf92f3577b34da6a3ce929d0e0e4736") is None
    assert tracerelay.event("e") is None
    assert tracerelay.metric("m", 1) is None
    assert tracerelay.update_trace(user_id="u") is None


def test_client_submit_batch_event_returns_a_fixed_ulid() -> None:
    with capture() as captured:
        client = captured.client
        assert client is not None
        event_id = client.submit_batch_event("trace_create", {"trace_id": "a" * 32, "name": "t"})
        with pytest.raises(TracerelayError) as caught:
            client.submit_batch_event("not_a_type", {})
    assert caught.value.code == "TR-EVENT-TYPE"
    (record,) = captured.records
    assert record.event_id == event_id and len(event_id) == 26
    assert record.event_type == "trace_create" and record.to_wire()["name"] == "t"


def test_every_record_gets_one_event_id_that_never_changes() -> None:
    with capture() as spans:
        for _ in range(50):
            with tracerelay.span("s"):
                pass
    ids = [s.event_id for s in spans]
    assert len(set(ids)) == 50 and all(i is not None and len(i) == 26 for i in ids)

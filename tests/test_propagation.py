"""W3C traceparent/tracestate: inject, extract, and continuing a remote trace."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tracerelay
from tracerelay.propagation import format_traceparent, parse_traceparent
from tracerelay.testing import capture

hex32 = st.text("0123456789abcdef", min_size=32, max_size=32).filter(lambda s: s != "0" * 32)
hex16 = st.text("0123456789abcdef", min_size=16, max_size=16).filter(lambda s: s != "0" * 16)


def test_inject_writes_the_current_span() -> None:
    with capture(), tracerelay.span("client call") as span:
        headers = tracerelay.inject({})
    assert headers == {"traceparent": f"00-{span.trace_id}-{span.span_id}-01"}


def test_inject_without_a_span_or_without_init_writes_nothing() -> None:
    assert tracerelay.inject({"x": "1"}) == {"x": "1"}
    with capture():
        assert tracerelay.inject({}) == {}


def test_extracted_context_continues_the_remote_trace() -> None:
    incoming = {
        "Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate": "vendor=abc,other=x",
    }
    with capture() as spans:
        with tracerelay.extract(incoming):  # type: ignore[union-attr]
            with tracerelay.span("handle request") as server:
                outgoing = tracerelay.inject({})
        remote = tracerelay.extract(incoming)
        with tracerelay.span("explicit parent", parent=remote):
            pass
    assert server.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert server.parent_span_id == "00f067aa0ba902b7"
    assert outgoing["tracestate"] == "vendor=abc,other=x"
    assert outgoing["traceparent"].split("-")[2] == server.span_id
    assert spans.by_name("explicit parent").parent_span_id == "00f067aa0ba902b7"
    assert [s.name for s in spans] == ["handle request", "explicit parent"]


def test_unsampled_remote_parent_records_nothing_but_still_propagates() -> None:
    incoming = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}
    with capture() as spans:
        with tracerelay.extract(incoming), tracerelay.span("dropped") as s:  # type: ignore[union-attr]
            outgoing = tracerelay.inject({})
    assert spans == []
    assert outgoing["traceparent"] == f"00-4bf92f3577b34da6a3ce929d0e0e4736-{s.span_id}-00"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # v00 has 4 parts
    ],
)
def test_malformed_traceparent_is_ignored(value: str) -> None:
    assert tracerelay.extract({"traceparent": value}) is None


def test_future_versions_may_carry_more_fields() -> None:
    ctx = tracerelay.extract(
        {"traceparent": "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"}
    )
    assert ctx is not None and ctx.span_id == "00f067aa0ba902b7"


def test_invalid_tracestate_is_dropped_but_traceparent_kept() -> None:
    ctx = tracerelay.extract(
        {
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "tracestate": "not a valid member",
        }
    )
    assert ctx is not None and ctx.trace_state == ""


@given(hex32, hex16, st.booleans())
def test_format_and_parse_round_trip(trace_id: str, span_id: str, sampled: bool) -> None:
    assert parse_traceparent(format_traceparent(trace_id, span_id, sampled)) == (
        trace_id,
        span_id,
        sampled,
    )


@given(st.text(max_size=80))
def test_arbitrary_header_text_never_raises(value: str) -> None:
    result = tracerelay.extract({"traceparent": value, "tracestate": value})
    assert result is None or len(result.trace_id) == 32

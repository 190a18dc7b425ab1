"""ValidationProcessor: broken records are repaired when their meaning survives, else dropped.

End-to-end tests break a live span before it ends and look at what ``capture()``
exports (and at the pipeline's drop counter); the others call the processor on
spans built directly, field by field.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tracerelay
from tests.processing.support import TRACER
from tracerelay.ids import is_valid_span_id, is_valid_trace_id, new_span_id, new_trace_id
from tracerelay.processing.limits import LimitsProcessor
from tracerelay.processing.validation import (
    CLOCK_SKEW,
    INVALID_END_TIME,
    INVALID_PARENT,
    ValidationProcessor,
)
from tracerelay.records import Event, MetricPoint, Score, TraceUpdate
from tracerelay.serialization import dumps
from tracerelay.spans import SPAN_KINDS, Span
from tracerelay.testing import CapturedSpans, capture

DROPS = "processor:ValidationProcessor"


@contextmanager
def traced() -> Iterator[CapturedSpans]:
    with capture(redact=False) as spans:
        yield spans


def drops(spans: CapturedSpans) -> int:
    assert spans.client is not None
    return int(spans.client.pipeline.stats()["dropped"].get(DROPS, 0))


def make_span(**fields: Any) -> Span:
    """An ended, valid span with ``fields`` then set as given (no checks on the way)."""
    span = Span(TRACER, "op", new_trace_id(), new_span_id(), new_span_id(), "client", "tool", {})
    span.end()
    for name, value in fields.items():
        setattr(span, name, value)
    return span


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


# -- end to end ----------------------------------------------------------------------


def test_a_valid_span_passes_unchanged() -> None:
    with traced() as spans, tracerelay.span("outer"), tracerelay.span("inner", kind="client"):
        pass
    inner, outer = spans
    assert inner.parent_span_id == outer.span_id
    assert inner.attributes == {} and inner.kind == "client"
    assert drops(spans) == 0


@pytest.mark.parametrize("field", ["trace_id", "span_id"])
@pytest.mark.parametrize("bad", ["0" * 32, "0" * 16, "XYZ", "AB" * 16, "ab" * 8 + "\n", None, 42])
def test_a_span_with_an_invalid_id_is_dropped_and_counted(field: str, bad: Any) -> None:
    with traced() as spans:
        with tracerelay.span("kept"):
            pass
        with tracerelay.span("broken") as span:
            setattr(span, field, bad)
    assert [s.name for s in spans] == ["kept"]
    assert drops(spans) == 1


def test_an_end_before_the_start_is_clock_skew() -> None:
    with traced() as spans:
        span = tracerelay.span("skewed")
        span.end(span.start_time_unix_nano - 5_000)  # type: ignore[attr-defined]
    span = spans.by_name("skewed")
    assert span.end_time_unix_nano == span.start_time_unix_nano
    assert span.attributes[CLOCK_SKEW] == 5_000


def test_an_unknown_kind_becomes_internal() -> None:
    with traced() as spans, tracerelay.span("s", kind="weird"):
        pass
    assert spans.by_name("s").kind == "internal"


def test_scores_without_a_name_or_with_a_bad_trace_are_dropped() -> None:
    trace_id, span_id = new_trace_id(), new_span_id()
    with traced() as spans:
        tracerelay.score("accuracy", 0.9, trace_id=trace_id, span_id=span_id)
        tracerelay.score("", 1.0, trace_id=trace_id)
        tracerelay.score("   ", 1.0, trace_id=trace_id)
        tracerelay.score("orphan", 1.0, trace_id="not-a-trace-id")
        tracerelay.score("orphan", 1.0, trace_id=trace_id, span_id="0" * 16)
    assert [(s.name, s.trace_id) for s in spans.scores] == [("accuracy", trace_id)]
    assert drops(spans) == 4


# -- span fields, one by one -----------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["0" * 16, "abc", "AB" * 8, 12, b"0123456789abcdef", "self"], ids=repr
)
def test_an_invalid_parent_is_cleared_and_kept_as_an_attribute(bad: Any) -> None:
    span = make_span()
    span.parent_span_id = span.span_id if bad == "self" else bad
    assert ValidationProcessor()(span) is span
    assert span.parent_span_id is None
    expected = span.span_id if bad == "self" else bad if isinstance(bad, str) else repr(bad)
    assert span.attributes[INVALID_PARENT] == expected


def test_a_cached_parent_equal_to_the_own_id_is_still_caught() -> None:
    processor = ValidationProcessor()
    parent = new_span_id()
    assert processor(make_span(parent_span_id=parent)).parent_span_id == parent
    looped = make_span(span_id=parent, parent_span_id=parent)
    assert processor(looped).parent_span_id is None
    assert looped.attributes[INVALID_PARENT] == parent


def test_a_trace_id_seen_valid_does_not_let_an_invalid_one_through() -> None:
    processor = ValidationProcessor()
    assert processor(make_span(trace_id=None)) is None  # nothing cached yet
    span = make_span()
    assert processor(span) is span
    assert processor(make_span(trace_id=span.trace_id.upper())) is None
    assert processor(make_span(trace_id=span.trace_id)) is not None


@pytest.mark.parametrize("start", [0, -1, None, 1.5e18, True, "1", 2**63])
def test_a_span_without_a_usable_start_is_dropped(start: Any) -> None:
    assert ValidationProcessor()(make_span(start_time_unix_nano=start)) is None


@pytest.mark.parametrize(
    ("end", "expected", "attribute"),
    [
        (None, 1000, (INVALID_END_TIME, "None")),
        ("soon", 1000, (INVALID_END_TIME, "'soon'")),
        (2**64, 1000, (INVALID_END_TIME, repr(2**64))),
        (float("nan"), 1000, (INVALID_END_TIME, "nan")),
        (2000.0, 2000, None),
        (400, 1000, (CLOCK_SKEW, 600)),
        (1000, 1000, None),
    ],
)
def test_the_end_is_repaired_to_an_integer_not_before_the_start(
    end: Any, expected: int, attribute: tuple[str, Any] | None
) -> None:
    span = ValidationProcessor()(make_span(start_time_unix_nano=1000, end_time_unix_nano=end))
    assert span.end_time_unix_nano == expected and type(span.end_time_unix_nano) is int
    assert span.attributes == (dict([attribute]) if attribute else {})


@pytest.mark.parametrize(
    ("name", "expected"),
    [("", "unnamed"), (None, "unnamed"), (42, "42"), (["a"], "['a']"), ("ok", "ok")],
)
def test_names_are_non_empty_text(name: Any, expected: str) -> None:
    assert ValidationProcessor()(make_span(name=name)).name == expected


def test_a_name_that_cannot_be_printed_gets_a_marker() -> None:
    span = ValidationProcessor()(make_span(name=Unprintable()))
    assert span.name == "<unrepresentable Unprintable>"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"kind": "SERVER"}, {"kind": "internal"}),
        ({"kind": ["client"]}, {"kind": "internal"}),
        ({"type": ""}, {"type": "span"}),
        ({"type": "custom"}, {"type": "custom"}),
        ({"status_code": "failed"}, {"status_code": "unset"}),
        ({"status_code": {}}, {"status_code": "unset"}),
        ({"status_code": "error", "status_message": 7}, {"status_message": "7"}),
    ],
)
def test_kind_type_and_status_take_known_values(
    fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    span = ValidationProcessor()(make_span(**fields))
    assert {name: getattr(span, name) for name in expected} == expected


def test_a_score_name_that_is_not_text_becomes_text() -> None:
    score = Score(7, 1.0, trace_id=None)  # type: ignore[arg-type]
    assert ValidationProcessor()(score) is score
    assert score.name == "7"
    assert ValidationProcessor()(Score(None, 1.0, trace_id=None)) is None  # type: ignore[arg-type]


def test_other_records_pass_through() -> None:
    processor = ValidationProcessor()
    for record in (
        Event("e", trace_id="bad"),
        MetricPoint("m", 1.0),
        TraceUpdate("bad", {"name": "x"}),
        object(),
    ):
        assert processor(record) is record


# -- properties ----------------------------------------------------------------------

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=40),
    st.text(alphabet="0123456789abcdefABCDEF", min_size=15, max_size=33),
    st.lists(st.integers(), max_size=3),
    st.builds(Unprintable),
)
ids = st.one_of(st.builds(new_trace_id), st.builds(new_span_id), anything)
times = st.one_of(st.integers(min_value=-(2**64), max_value=2**64), anything)
# Mostly valid, so that most examples get past the checks that drop.
trace_ids = st.one_of(*[st.builds(new_trace_id)] * 3, ids)
span_ids = st.one_of(*[st.builds(new_span_id)] * 3, ids)
starts = st.one_of(*[st.integers(min_value=1, max_value=2**63 - 1)] * 3, times)


@settings(max_examples=300, deadline=None)
@given(
    trace_id=trace_ids,
    span_id=span_ids,
    parent=st.one_of(st.none(), span_ids),
    start=starts,
    end=times,
    name=anything,
    kind=st.one_of(st.sampled_from(sorted(SPAN_KINDS)), anything),
    type_=anything,
    code=st.one_of(st.sampled_from(["unset", "ok", "error"]), anything),
    message=anything,
)
def test_validation_never_raises_and_what_it_keeps_is_valid(
    trace_id: Any,
    span_id: Any,
    parent: Any,
    start: Any,
    end: Any,
    name: Any,
    kind: Any,
    type_: Any,
    code: Any,
    message: Any,
) -> None:
    span = make_span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        name=name,
        kind=kind,
        type=type_,
        status_code=code,
        status_message=message,
    )
    kept = ValidationProcessor()(span)
    if kept is None:
        assert not (is_valid_trace_id(trace_id) and is_valid_span_id(span_id)) or not (
            type(start) is int and 0 < start < 2**63
        )
        return
    assert is_valid_trace_id(kept.trace_id) and is_valid_span_id(kept.span_id)
    assert type(kept.start_time_unix_nano) is int and 0 < kept.start_time_unix_nano < 2**63
    end_ns = kept.end_time_unix_nano
    assert type(end_ns) is int and kept.start_time_unix_nano <= end_ns < 2**63
    assert kept.parent_span_id is None or kept.parent_span_id != kept.span_id
    assert type(kept.name) is str and kept.name
    assert kept.kind in SPAN_KINDS
    assert type(kept.type) is str and kept.type
    assert kept.status_code in ("unset", "ok", "error")
    assert type(kept.status_message) is str
    # What validation keeps, limits makes encodable.
    LimitsProcessor(
        max_attributes=8,
        max_attribute_length=64,
        max_events=4,
        max_io_length=256,
        max_span_bytes=4096,
    )(kept)
    dumps(kept.to_wire())

"""LimitsProcessor: what a user sees of odd, huge or hostile values once a span is exported.

Most tests run the real chain through ``capture()`` (secret redaction off, so
what they assert is this processor's work alone); the property tests call the
processor directly on spans built from arbitrary nested Python values.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracerelay
from tests.processing.support import bare_span
from tracerelay.ids import new_span_id, new_trace_id
from tracerelay.jsonsafe import TRUNCATED_MARK
from tracerelay.processing.limits import (
    DROPPED_ATTRIBUTES,
    DROPPED_EVENTS,
    TRUNCATED,
    LimitsProcessor,
)
from tracerelay.records import Event, MetricPoint, RawEvent, Score
from tracerelay.serialization import dumps, loads
from tracerelay.spans import Span
from tracerelay.testing import CapturedSpans, capture

MARK = len(TRUNCATED_MARK.format(10**9))  # the longest marker a test can produce
SCALARS = (str, bool, int, float)


@contextmanager
def traced(**options: Any) -> Iterator[CapturedSpans]:
    with capture(redact=False, **options) as spans:
        yield spans


def one_span(attributes: dict[Any, Any], **options: Any) -> Span:
    with traced(**options) as spans, tracerelay.span("s", attributes=attributes):
        pass
    return spans.by_name("s")


def limits(**overrides: int) -> LimitsProcessor:
    options = {
        "max_attributes": 128,
        "max_attribute_length": 8192,
        "max_events": 128,
        "max_io_length": 32_768,
        "max_span_bytes": 1 << 20,
    }
    options.update(overrides)
    return LimitsProcessor(**options)


def size(span: Span) -> int:
    return len(dumps(span.to_wire()))


def assert_plain(attributes: dict[str, Any], limit: int) -> None:
    """Keys are text; values are scalars or lists of one scalar type; text within limit."""
    for key, value in attributes.items():
        assert type(key) is str and len(key) <= limit + MARK
        values = value if type(value) is list else [value]
        assert all(type(v) in SCALARS for v in values), (key, value)
        assert len({type(v) for v in values}) <= 1, (key, value)
        for v in values:
            if type(v) is str:
                assert len(v) <= limit + MARK
            if type(v) is int:
                assert -(2**63) <= v < 2**63
            if type(v) is float:
                assert math.isfinite(v)


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


class Color(enum.Enum):
    RED = (255, 0, 0)


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Point:
    x: int
    y: int


# -- attributes, end to end -----------------------------------------------------------


def test_plain_attributes_pass_unchanged() -> None:
    attrs = {"route": "/users/{id}", "status": 200, "ratio": 0.5, "cached": False}
    span = one_span(attrs)
    assert span.attributes == attrs


def test_first_attributes_are_kept_and_the_rest_counted() -> None:
    span = one_span({f"k{i}": i for i in range(10)}, max_attributes=3)
    assert span.attributes == {"k0": 0, "k1": 1, "k2": 2, DROPPED_ATTRIBUTES: 7}


def test_none_values_are_dropped_without_counting() -> None:
    span = one_span({"a": None, "b": 1, "c": None}, max_attributes=1)
    assert span.attributes == {"b": 1}


def test_long_text_is_cut_with_a_marker() -> None:
    span = one_span({"text": "x" * 100}, max_attribute_length=16)
    assert span.attributes["text"] == "x" * 16 + TRUNCATED_MARK.format(84)


def test_numbers_json_cannot_hold_become_text() -> None:
    span = one_span(
        {"big": 2**64, "huge": 10**5000, "nan": math.nan, "inf": -math.inf, "ok": 2**63 - 1},
        max_attribute_length=64,
    )
    attrs = span.attributes
    assert attrs["big"] == str(2**64)
    assert attrs["huge"].startswith("0x") and TRUNCATED_MARK.format(0)[:12] in attrs["huge"]
    assert (attrs["nan"], attrs["inf"], attrs["ok"]) == ("nan", "-inf", 2**63 - 1)


def test_sequences_keep_one_type_or_become_text() -> None:
    span = one_span(
        {
            "tags": ["a", "b"],
            "ids": (1, 2, 3),
            "flags": [True, False],
            "mixed": [1, "a", None, True, 2.5],
            "nested": [[1, 2], {"k": "v"}],
            "floats": [1.5, math.inf],
            "empty": [],
        }
    )
    attrs = span.attributes
    assert attrs["tags"] == ["a", "b"]
    assert attrs["ids"] == [1, 2, 3] and type(attrs["ids"]) is list
    assert attrs["flags"] == [True, False]
    assert attrs["mixed"] == ["1", "a", "null", "true", "2.5"]
    assert attrs["nested"] == ["[1,2]", '{"k":"v"}']
    assert attrs["floats"] == ["1.5", "inf"]
    assert attrs["empty"] == []


def test_objects_become_compact_json_text() -> None:
    span = one_span(
        {
            "dict": {"a": [1, 2], "b": None},
            "set": {3},
            "point": Point(1, 2),
            "bytes": b"abc",
            "color": Color.RED,
            "level": Level.HIGH,
        }
    )
    attrs = span.attributes
    assert loads(attrs["dict"]) == {"a": [1, 2], "b": None}
    assert attrs["set"] == "[3]"
    assert loads(attrs["point"]) == {"x": 1, "y": 2}
    assert attrs["bytes"] == "<3 bytes>"
    assert attrs["color"] == "[255,0,0]"
    assert attrs["level"] == 3 and type(attrs["level"]) is int


def test_hostile_values_do_not_break_anything() -> None:
    loop: list[Any] = []
    loop.append(loop)
    knot: dict[str, Any] = {}
    knot["self"] = knot
    span = one_span({"bad": Unprintable(), "loop": loop, "knot": knot, "list": [Unprintable()]})
    attrs = span.attributes
    assert attrs["bad"] == "<unrepresentable Unprintable>"
    assert attrs["loop"] == ['["<cycle>"]']
    assert loads(attrs["knot"]) == {"self": "<cycle>"}
    assert attrs["list"] == ["<unrepresentable Unprintable>"]
    dumps(span.to_wire())


def test_keys_become_text() -> None:
    span = one_span({1: "one", ("a", 2): "pair", "k" * 40: "long"}, max_attribute_length=16)
    assert span.attributes["1"] == "one"
    assert span.attributes["('a', 2)"] == "pair"
    assert span.attributes["k" * 16 + TRUNCATED_MARK.format(24)] == "long"


def test_lone_surrogates_are_escaped_so_the_span_encodes() -> None:
    name = b"caf\xe9".decode("utf-8", "surrogateescape")
    span = one_span({"file": name, name: 1})
    assert span.attributes["file"] == "caf\\udce9"
    assert span.attributes["caf\\udce9"] == 1
    dumps(span.to_wire())


# -- events, links, input and output -------------------------------------------------


def test_events_keep_the_first_and_the_exception_that_ended_the_span() -> None:
    with traced(max_events=3) as spans, pytest.raises(ValueError):  # noqa: PT012
        with tracerelay.span("s") as span:
            for i in range(10):
                span.add_event(f"e{i}", {"i": i, "obj": {"n": i}})
            raise ValueError("boom")
    span = spans.by_name("s")
    assert [e["name"] for e in span.events] == ["e0", "e1", "exception"]
    assert span.attributes[DROPPED_EVENTS] == 8
    assert span.events[0]["attributes"] == {"i": 0, "obj": '{"n":0}'}
    assert span.events[-1]["attributes"]["exception.type"] == "ValueError"


def test_one_event_allowed_keeps_the_last() -> None:
    with traced(max_events=1) as spans, tracerelay.span("s") as span:
        span.add_event("first")
        span.add_event("last")
    assert [e["name"] for e in spans.by_name("s").events] == ["last"]


def test_link_and_event_attributes_are_sanitised_too() -> None:
    with traced(max_attributes=2, max_attribute_length=16) as spans:
        with tracerelay.span("s") as span:
            span.add_link(new_trace_id(), new_span_id(), {"a": {1}, "b": "y" * 50, "c": 3})
            span.add_event("e", {"x": None, "y": math.nan})
    span = spans.by_name("s")
    assert span.links[0]["attributes"] == {
        "a": "[1]",
        "b": "y" * 16 + TRUNCATED_MARK.format(34),
        DROPPED_ATTRIBUTES: 1,
    }
    assert span.events[0]["attributes"] == {"y": "nan"}


def test_input_and_output_are_made_json_safe_within_the_io_limit() -> None:
    span = bare_span()
    span.input = {"prompt": "p" * 200, "seed": 2**80, 5: {1, 2}}
    span.output = Unprintable()
    limits(max_io_length=64)(span)
    assert span.input == {
        "prompt": "p" * 64 + TRUNCATED_MARK.format(136),
        "seed": str(2**80),
        "5": [1, 2],
    }
    assert span.output == "<unrepresentable Unprintable>"
    dumps(span.to_wire())


# -- the whole span's size -------------------------------------------------------------


def test_a_small_span_is_not_marked_truncated() -> None:
    span = one_span({"a": "x" * 100}, max_span_bytes=1024)
    assert TRUNCATED not in span.attributes


def test_the_largest_value_is_cut_first_until_the_span_fits() -> None:
    with traced(max_span_bytes=4096, capture_io=True) as spans:
        with tracerelay.span("s", attributes={"small": "s" * 200, "big": "b" * 3000}) as span:
            span.set_input("i" * 6000)
    span = spans.by_name("s")
    assert size(span) <= 4096
    assert span.attributes[TRUNCATED] is True
    assert span.attributes["small"] == "s" * 200
    assert "truncated" in span.input and "truncated" in span.attributes["big"]


def test_structured_input_keeps_its_shape_when_cut() -> None:
    span = bare_span()
    span.input = {"messages": [{"role": "user", "content": "c" * 20_000}]}
    limits(max_span_bytes=2048)(span)
    assert size(span) <= 2048
    assert span.input["messages"][0]["role"] == "user"
    assert "truncated" in span.input["messages"][0]["content"]


def test_many_small_items_are_dropped_when_cutting_values_is_not_enough() -> None:
    with traced(max_span_bytes=1024, max_attributes=500, max_events=500) as spans:
        with tracerelay.span("s", attributes={f"key{i}": i for i in range(100)}) as span:
            for i in range(100):
                span.add_event(f"event{i}")
            span.add_event("last")
    span = spans.by_name("s")
    assert size(span) <= 1024
    assert span.attributes[TRUNCATED] is True
    assert span.attributes[DROPPED_EVENTS] == 101 - len(span.events)
    kept = [k for k in span.attributes if k.startswith("key")]
    assert span.attributes[DROPPED_ATTRIBUTES] == 100 - len(kept) > 0
    assert kept == [f"key{i}" for i in range(len(kept))]  # the first attributes stay longest


def test_a_span_whose_skeleton_is_too_large_is_left_as_it_is() -> None:
    with traced(max_span_bytes=1024) as spans, tracerelay.span("n" * 5000, attributes={"a": 1}):
        pass
    span = spans[0]
    assert span.name == "n" * 5000
    assert span.attributes == {"a": 1}


# -- other records -------------------------------------------------------------------


def test_other_records_get_their_attributes_sanitised() -> None:
    with traced(max_attributes=2) as spans:
        tracerelay.event("login", {"user": {"id": 1}, "at": None, "n": 2**70, "x": 1})
        tracerelay.metric("latency", 1.5, attributes={"route": ("a", "b")})
    event, metric = spans.records
    assert event.attributes == {"user": '{"id":1}', "n": str(2**70), DROPPED_ATTRIBUTES: 1}
    assert metric.attributes == {"route": ["a", "b"]}
    raw = RawEvent("event_create", {"name": "x", "attributes": {"k": {1: 2}}})
    limits()(raw)
    assert raw.to_wire()["attributes"] == {"k": '{"1":2}'}


@pytest.mark.parametrize(
    ("value", "expected", "data_type"),
    [
        (0.5, 0.5, "numeric"),
        (True, True, "boolean"),
        ("good", "good", "categorical"),
        (math.nan, "nan", "categorical"),
        (2**70, str(2**70), "categorical"),
        (Level.HIGH, 3, "numeric"),
        (None, "None", "categorical"),
    ],
)
def test_score_values_are_finite_numbers_text_or_booleans(
    value: Any, expected: Any, data_type: str
) -> None:
    score = Score("quality", value, trace_id=new_trace_id())
    limits()(score)
    assert score.value == expected and type(score.value) is type(expected)
    assert score.data_type == data_type


def test_records_of_unknown_shape_pass_through() -> None:
    metric = MetricPoint("m", 1.0)
    assert limits()(metric) is metric
    event = Event("e", {"a": 1})
    assert limits()(event).attributes == {"a": 1}
    assert limits()(object()) is not None


# -- properties ----------------------------------------------------------------------


class Opaque:
    """An object to_jsonable can only describe by its repr."""

    def __repr__(self) -> str:
        return "Opaque()"


def _knot(items: list[Any]) -> list[Any]:
    items.append(items)  # a list that contains itself
    return items


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70) | st.just(5000).map(lambda n: 10**n),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(codec=None), max_size=80),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3),
    st.binary(max_size=10),
    st.builds(Unprintable),
    st.builds(Opaque),
    st.sampled_from([Color.RED, Level.HIGH]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=5).map(tuple),
        st.lists(inner, max_size=5).map(_knot),
        st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=4),
        st.frozensets(st.integers(), max_size=3),
        st.builds(Point, st.integers(), st.integers()),
    ),
    max_leaves=12,
)
keys = st.text(max_size=30) | st.integers() | st.builds(Opaque)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    attributes=st.dictionaries(keys, values, max_size=12),
    events=st.lists(st.dictionaries(keys, values, max_size=4), max_size=6),
    io=values,
    limit=st.integers(min_value=16, max_value=200),
    max_bytes=st.integers(min_value=1024, max_value=4096),
    max_attributes=st.integers(min_value=1, max_value=10),
    max_events=st.integers(min_value=1, max_value=5),
)
def test_any_values_end_plain_bounded_and_encodable(
    attributes: dict[Any, Any],
    events: list[dict[Any, Any]],
    io: Any,
    limit: int,
    max_bytes: int,
    max_attributes: int,
    max_events: int,
) -> None:
    span = bare_span(attributes)
    span._events = [{"name": "e", "time_unix_nano": 1, "attributes": e} for e in events] or None
    span.input, span.output = io, [io, io]
    processor = limits(
        max_attributes=max_attributes,
        max_attribute_length=limit,
        max_events=max_events,
        max_io_length=limit * 4,
        max_span_bytes=max_bytes,
    )
    processor(span)
    encoded = dumps(span.to_wire())
    assert len(encoded) <= max_bytes
    assert_plain(span.attributes, limit)
    assert len(span.events) <= max_events
    for event in span.events:
        assert_plain(event["attributes"], limit)
    user_keys = [k for k in span.attributes if not k.startswith("tracerelay.")]
    assert len(user_keys) <= max_attributes


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(min_size=1, max_size=5).map(lambda s: s * 2000),
    count=st.integers(min_value=0, max_value=40),
    max_bytes=st.integers(min_value=1024, max_value=20_000),
)
def test_big_spans_are_cut_to_the_limit(text: str, count: int, max_bytes: int) -> None:
    span = bare_span({f"a{i}": text[: i * 300] for i in range(count)})
    span.input = {"text": text, "list": [text] * 3}
    span.status_message = text
    span._events = [
        {"name": "exception", "time_unix_nano": 1, "attributes": {"exception.stacktrace": text}}
    ] * (count // 4)
    before = size(span)
    limits(max_span_bytes=max_bytes, max_io_length=1 << 20)(span)
    assert size(span) <= max_bytes
    if before <= max_bytes:
        assert TRUNCATED not in span.attributes

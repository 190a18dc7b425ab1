"""The span merge: any order and any repetition of a span's events store the same row."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tracerelay.server.ingest.events import observation_write
from tracerelay.server.storage.merge import SpanState, version_of
from tracerelay.server.storage.rows import SPAN_COLUMNS, span_row, span_state_of_row

names = st.sampled_from(["a", "b", "c"])
scalars = st.one_of(st.integers(-5, 5), st.sampled_from(["x", "y", ""]), st.booleans())
payloads = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["agent", "tool", "llm"]),
        "end_time_unix_nano": st.integers(10, 20),
        "start_time_unix_nano": st.integers(0, 9),
        "status": st.sampled_from(
            [
                {"code": "unset", "message": ""},
                {"code": "ok", "message": ""},
                {"code": "error", "message": "boom"},
            ]
        ),
        "attributes": st.dictionaries(names, scalars, max_size=3),
        "events": st.lists(
            st.fixed_dictionaries(
                {"name": names, "time_unix_nano": st.integers(0, 3), "attributes": st.just({})}
            ),
            max_size=2,
        ),
        "model": st.sampled_from(["m1", "m2"]),
        "usage": st.fixed_dictionaries({"input_tokens": st.integers(0, 9)}),
    },
)
# Distinct versions: (timestamp, event id) pairs, as events have.
events = st.lists(st.tuples(st.integers(0, 5), payloads), min_size=1, max_size=6).map(
    lambda items: [(version_of(t, f"{i:026d}"), p) for i, (t, p) in enumerate(items)]
)


def span_state(payload: dict[str, Any], version: str) -> SpanState:
    """The state one event makes, through the row the ingest path builds for it."""
    ids = {"trace_id": "a" * 32, "span_id": "b" * 16}
    return observation_write(
        "p", {**ids, **payload}, version, version[-26:], "observation_update"
    ).state()


def fold(items: list[tuple[str, dict[str, Any]]]) -> SpanState:
    state = span_state(items[0][1], items[0][0])
    for version, payload in items[1:]:
        state.merge(span_state(payload, version))
    return state


def seen(state: SpanState) -> tuple[Any, ...]:
    return (state.values, state.attributes, state.events, state.links)


@settings(max_examples=300, deadline=None)
@given(items=events, data=st.data())
def test_any_order_and_any_repeats_give_the_same_span(
    items: list[tuple[str, dict[str, Any]]], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(items))
    repeated = shuffled + data.draw(st.lists(st.sampled_from(items), max_size=4))
    assert seen(fold(list(items))) == seen(fold(list(repeated)))


@settings(max_examples=200, deadline=None)
@given(items=events)
def test_each_field_holds_the_newest_value_given_for_it(
    items: list[tuple[str, dict[str, Any]]],
) -> None:
    state = fold(items)
    attributes: dict[str, Any] = {}
    model = None
    for _version, payload in sorted(items, key=lambda item: item[0]):
        attributes.update(payload.get("attributes", {}))
        model = payload.get("model", model)
    assert state.attributes == attributes
    assert state.values["model"] == model


@settings(max_examples=100, deadline=None)
@given(items=events)
def test_a_stored_row_reads_back_as_the_same_state(
    items: list[tuple[str, dict[str, Any]]],
) -> None:
    state = fold(items)
    row = dict(zip(SPAN_COLUMNS, span_row("p", "t" * 32, "s" * 16, state), strict=True))
    again = span_state_of_row(row)
    assert seen(again) == seen(state)
    assert all(again.version(k) == state.version(k) for k in state.values if state.values[k])

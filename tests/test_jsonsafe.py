"""Any Python value becomes JSON that encodes, within its budget, without raising."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
import uuid
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tracerelay.delivery.encoding import Encoder, encode_event
from tracerelay.jsonsafe import safe_repr, to_jsonable, truncate_text
from tracerelay.serialization import dumps, loads


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Point:
    x: int
    y: list[int]


class Unreprable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class HostileAttributes:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name}")


class Model:
    def model_dump(self) -> dict[str, Any]:
        return {"field": 1}


# Built lazily: Hypothesis takes the repr of sampled values, and some of these have none.
odd_objects = st.sampled_from(
    [
        Unreprable,
        HostileAttributes,
        Model,
        lambda: Point(1, [2, 3]),
        lambda: Color.RED,
        lambda: Level.HIGH,
        lambda: datetime.datetime(2026, 1, 1, 12, 0),
        lambda: uuid.UUID(int=5),
        lambda: b"\x00\xff",
        lambda: bytearray(b"ab"),
        lambda: {1, 2},
        lambda: frozenset({"a"}),
        object,
        lambda: 2**70,
        lambda: -(2**200),
        lambda: 10**5000,
        lambda: float("nan"),
        lambda: float("inf"),
        lambda: "lone \udcff surrogate",
    ]
).map(lambda make: make())
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | odd_objects,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=5)
        | st.tuples(inner, inner)
    ),
    max_leaves=30,
)


@settings(max_examples=300)
@given(values)
def test_any_value_converts_to_encodable_json(value: Any) -> None:
    converted = to_jsonable(value, max_length=50)
    encoded = orjson.dumps(converted)  # plain orjson: no fallbacks needed
    assert loads(encoded) == converted


@settings(max_examples=200)
@given(values)
def test_dumps_never_raises(value: Any) -> None:
    assert isinstance(dumps({"v": value}), bytes)


def test_cycles_and_depth_are_cut() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    deep: Any = "bottom"
    for _ in range(20):
        deep = [deep]
    assert to_jsonable(loop) == [1, "<cycle>"]
    flat = orjson.dumps(to_jsonable(deep, max_depth=3)).decode()
    assert "bottom" in flat  # the repr of what lies below the cut keeps the content


def test_specific_conversions() -> None:
    assert to_jsonable(Point(1, [2])) == {"x": 1, "y": [2]}
    assert to_jsonable(Color.RED) == "red" and to_jsonable(Level.HIGH) == 3
    assert to_jsonable(datetime.date(2026, 1, 2)) == "2026-01-02"
    assert to_jsonable(b"abc") == "<3 bytes>"
    assert to_jsonable(Model()) == {"field": 1}
    assert to_jsonable(2**70) == str(2**70)
    assert to_jsonable(float("inf")) == "inf" and not math.isnan(to_jsonable(1.5))
    assert to_jsonable({1: "a"}) == {"1": "a"}
    assert to_jsonable(list(range(10)), max_items=3) == [0, 1, 2, "… 7 more"]
    assert safe_repr(Unreprable()) == "<unrepresentable Unreprable>"


def test_truncation_says_how_much_was_cut() -> None:
    assert truncate_text("abcdef", 4) == "abcd…[truncated 2 chars]"
    assert truncate_text("abc", 4) == "abc"


def test_batch_body_has_the_spec_envelope() -> None:
    class Record:
        event_id = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
        event_type = "event_create"
        timestamp = 1767225600.123

        def to_wire(self) -> dict[str, Any]:
            return {"name": "e"}

    encoder = Encoder(
        {"service.name": "checkout"},
        environment="production",
        deduplication={"enabled": True, "ttl": 3600},
        compression="none",
    )
    body = loads(encoder.encode([encode_event(Record())]).body)
    assert body == {
        "events": [
            {
                "event_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
                "event_type": "event_create",
                "timestamp": 1767225600.123,
                "payload": {"name": "e"},
            }
        ],
        "resource": {"service.name": "checkout"},
        "environment": "production",
        "deduplication": {"enabled": True, "ttl": 3600},
    }

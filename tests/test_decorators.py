"""``@tracerelay.trace`` on every kind of callable: structure, metadata, exceptions, generators."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Iterator

import pytest

import tracerelay
from tracerelay.testing import capture


class Boom(Exception):
    """A distinctive exception to check it passes through unchanged."""


def test_bare_and_called_forms_give_named_spans() -> None:
    @tracerelay.trace
    def plain() -> int:
        return 1

    @tracerelay.trace()
    def empty_parens() -> int:
        return 2

    @tracerelay.trace(name="custom", kind="client", type="tool", attributes={"a": 1})
    def configured() -> int:
        return 3

    with capture() as spans:
        assert (plain(), empty_parens(), configured()) == (1, 2, 3)
    assert [s.name for s in spans] == [
        plain.__qualname__,
        empty_parens.__qualname__,
        "custom",
    ]
    custom = spans.by_name("custom")
    assert (custom.kind, custom.type, custom.attributes) == ("client", "tool", {"a": 1})
    assert all(s.status == {"code": "unset", "message": ""} for s in spans)
    assert all(s.end_time_unix_nano >= s.start_time_unix_nano for s in spans)


def test_metadata_and_signature_are_preserved() -> None:
    def original(a: int, b: str = "x", *, c: float = 1.0) -> str:
        """Docstring."""
        return f"{a}{b}{c}"

    async def coroutine(x: int) -> int:
        return x

    def generator(n: int) -> Iterator[int]:
        yield from range(n)

    async def agen(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    wrapped = tracerelay.trace(original)
    assert wrapped.__name__ == "original"
    assert wrapped.__doc__ == "Docstring."
    assert wrapped.__wrapped__ is original  # type: ignore[attr-defined]
    assert inspect.signature(wrapped) == inspect.signature(original)
    assert inspect.iscoroutinefunction(tracerelay.trace(coroutine))
    assert inspect.isgeneratorfunction(tracerelay.trace(generator))
    assert inspect.isasyncgenfunction(tracerelay.trace(agen))


def test_nested_calls_link_parent_and_child() -> None:
    @tracerelay.trace
    def leaf() -> None:
        tracerelay.set_attribute("depth", 2)

    @tracerelay.trace
    def middle() -> None:
        leaf()
        leaf()

    @tracerelay.trace
    def root() -> None:
        middle()

    with capture() as spans:
        root()
    r, m = spans.by_name(root.__qualname__), spans.by_name(middle.__qualname__)
    leaves = [s for s in spans if s.name == leaf.__qualname__]
    assert r.parent_span_id is None
    assert m.parent_span_id == r.span_id
    assert [s.parent_span_id for s in leaves] == [m.span_id, m.span_id]
    assert len({s.trace_id for s in spans}) == 1
    assert leaves[0].sequence < leaves[1].sequence
    assert [s.name.rsplit(".", 1)[-1] for s in spans] == ["leaf", "leaf", "middle", "root"]


def test_methods_classmethods_staticmethods() -> None:
    class Service:
        factor = 3

        @tracerelay.trace
        def method(self, x: int) -> int:
            return x * self.factor

        @tracerelay.trace
        @classmethod
        def klass(cls, x: int) -> int:
            return x * cls.factor

        @tracerelay.trace
        @staticmethod
        def static(x: int) -> int:
            return x + 1

    with capture() as spans:
        svc = Service()
        assert svc.method(2) == 6
        assert Service.klass(2) == 6
        assert Service.static(2) == 3
    assert [s.name.rsplit(".", 1)[-1] for s in spans] == ["method", "klass", "static"]


def test_exception_is_recorded_and_reraised_unchanged() -> None:
    error = Boom("no stock")

    @tracerelay.trace
    def fails() -> None:
        raise error

    with capture() as spans, pytest.raises(Boom) as caught:
        fails()
    assert caught.value is error
    span = spans[0]
    assert span.status["code"] == "error"
    assert "no stock" in span.status["message"]
    (event,) = span.events
    assert event["name"] == "exception"
    assert event["attributes"]["exception.type"].endswith("Boom")
    assert event["attributes"]["exception.message"] == "no stock"
    assert "raise error" in event["attributes"]["exception.stacktrace"]


def test_exception_marks_every_span_it_passes_through() -> None:
    @tracerelay.trace
    def inner() -> None:
        raise KeyError("k")

    @tracerelay.trace
    def outer() -> None:
        inner()

    with capture() as spans, pytest.raises(KeyError):
        outer()
    assert [s.status["code"] for s in spans] == ["error", "error"]


async def _async_cases() -> None:
    @tracerelay.trace
    async def child(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    @tracerelay.trace
    async def parent() -> int:
        return await child(1) + await child(2)

    @tracerelay.trace
    async def fails() -> None:
        await asyncio.sleep(0)
        raise Boom("async")

    assert await parent() == 5
    with pytest.raises(Boom):
        await fails()


def test_async_functions_nest_and_record_errors() -> None:
    with capture() as spans:
        asyncio.run(_async_cases())
    parent = spans.by_name("_async_cases.<locals>.parent")
    children = spans.children(parent)
    assert [c.name.rsplit(".", 1)[-1] for c in children] == ["child", "child"]
    assert spans.by_name("_async_cases.<locals>.fails").status["code"] == "error"


def test_generator_span_covers_iteration_and_ends_when_exhausted() -> None:
    @tracerelay.trace
    def step(i: int) -> int:
        return i

    @tracerelay.trace
    def produce(n: int) -> Iterator[int]:
        for i in range(n):
            yield step(i)

    with capture() as spans:
        gen = produce(3)
        assert spans == []  # nothing runs before the first next()
        assert next(gen) == 0
        # Between yields the generator's span is not current for the consumer.
        assert tracerelay.current_span().is_recording() is False
        assert list(gen) == [1, 2]
    producer = spans.by_name(produce.__qualname__)
    assert [s.parent_span_id for s in spans if s.name == step.__qualname__] == [
        producer.span_id
    ] * 3
    assert spans[-1] is producer


def test_generator_span_ends_on_close_and_on_error() -> None:
    @tracerelay.trace
    def endless() -> Iterator[int]:
        i = 0
        while True:
            yield i
            i += 1

    @tracerelay.trace
    def broken() -> Iterator[int]:
        yield 1
        raise Boom("mid-stream")

    with capture() as spans:
        gen = endless()
        next(gen)
        next(gen)
        gen.close()
        with pytest.raises(Boom):
            list(broken())
    closed = spans.by_name(endless.__qualname__)
    assert closed.ended and closed.status["code"] == "unset"
    assert spans.by_name(broken.__qualname__).status["code"] == "error"


def test_generator_send_throw_and_return_value_pass_through() -> None:
    @tracerelay.trace
    def echo() -> Iterator[str]:
        received = yield "ready"
        while received != "stop":
            try:
                received = yield f"got {received}"
            except ValueError as exc:
                received = yield f"handled {exc}"
        return "done"

    with capture() as spans:
        gen = echo()
        assert next(gen) == "ready"
        assert gen.send("a") == "got a"
        assert gen.throw(ValueError("v")) == "handled v"
        with pytest.raises(StopIteration) as stop:
            gen.send("stop")
        assert stop.value.value == "done"
    assert spans[0].ended


def test_async_generator_span_and_children() -> None:
    @tracerelay.trace
    async def fetch(i: int) -> int:
        await asyncio.sleep(0)
        return i

    @tracerelay.trace
    async def stream(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield await fetch(i)

    async def consume() -> list[int]:
        items = [item async for item in stream(3)]
        gen = stream(10)
        await gen.__anext__()
        await gen.aclose()
        return items

    with capture() as spans:
        assert asyncio.run(consume()) == [0, 1, 2]
    streams = [s for s in spans if s.name == stream.__qualname__]
    assert len(streams) == 2 and all(s.ended for s in streams)
    fetches = [s for s in spans if s.name == fetch.__qualname__]
    assert {f.parent_span_id for f in fetches} == {s.span_id for s in streams}


def test_capture_io_records_arguments_and_results_when_enabled() -> None:
    @tracerelay.trace
    def add(self_like: object, a: int, b: int = 2) -> dict[str, int]:
        return {"sum": a + b}

    @tracerelay.trace(capture_input=False)
    def private(secret_arg: str) -> str:
        return "ok"

    with capture(capture_io=True) as spans:
        add(None, 1)
        private("x")
    assert spans[0].input == {"self_like": None, "a": 1}
    assert spans[0].output == {"sum": 3}
    assert spans[1].input is None and spans[1].output == "ok"

    with capture() as spans:
        add(None, 1)
    assert spans[0].input is None and spans[0].output is None


def test_capture_io_is_size_limited_and_snapshotted() -> None:
    @tracerelay.trace
    def take(items: list[str]) -> int:
        items.append("mutated after the call")
        return len(items)

    data = ["x" * 500]
    with capture(capture_io=True, max_io_length=64) as spans:
        take(data)
    recorded = spans[0].input["items"]
    assert len(recorded) == 1  # the snapshot predates the mutation
    assert recorded[0].startswith("x" * 64) and "truncated" in recorded[0]


def test_without_init_decorated_code_runs_unchanged() -> None:
    calls = []

    @tracerelay.trace
    def f(x: int) -> int:
        calls.append(x)
        tracerelay.set_attribute("ignored", True)
        return x * 2

    @tracerelay.trace
    def g() -> Iterator[int]:
        yield 1
        yield 2

    assert tracerelay.get_client() is None
    assert f(21) == 42
    assert list(g()) == [1, 2]
    assert calls == [21]


def test_functools_partial_and_lambda_are_traceable() -> None:
    traced = tracerelay.trace(name="partial")(functools.partial(pow, 2))
    with capture() as spans:
        assert traced(5) == 32
    assert spans[0].name == "partial"


def test_callable_without_a_name_gets_its_repr() -> None:
    traced = tracerelay.trace(functools.partial(pow, 3))
    with capture() as spans:
        assert traced(2) == 9
    assert spans[0].name.startswith("functools.partial(")


def test_async_generator_forwards_asend_and_athrow_with_and_without_tracing() -> None:
    @tracerelay.trace
    async def accumulator() -> AsyncIterator[int]:
        total = 0
        while True:
            try:
                value = yield total
            except ValueError:
                value = -total
            total += value

    async def drive() -> list[int]:
        gen = accumulator()
        seen = [await gen.asend(None), await gen.asend(5), await gen.asend(2)]
        seen.append(await gen.athrow(ValueError("reset")))
        await gen.aclose()
        return seen

    assert asyncio.run(drive()) == [0, 5, 7, 0]
    with capture() as spans:
        assert asyncio.run(drive()) == [0, 5, 7, 0]
    assert len(spans) == 1 and spans[0].ended

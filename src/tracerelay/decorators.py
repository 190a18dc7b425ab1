"""``@tracerelay.trace``: one span per call of a function, coroutine or generator.

The wrapper is chosen once, at decoration time, by the kind of function
(plain, ``async def``, generator, async generator), so a call does no
inspection. With tracing off a call costs one attribute lookup more than the
bare function. Exceptions are recorded on the span and re-raised unchanged;
the SDK's own failures are swallowed (see ``_diagnostics``) and the function
runs regardless.

Generator spans start at the first ``next()`` and end when the generator is
exhausted, closed or collected; the span is current only while the generator's
own code runs, never between two ``yield``s in the consumer's code.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from tracerelay._diagnostics import internal_error, warn_once
from tracerelay.api import STATE
from tracerelay.spans import CURRENT, SPAN_KINDS, SPAN_TYPES, NonRecordingSpan
from tracerelay.tracer import Tracer

__all__ = ["trace"]

F = TypeVar("F", bound=Callable[..., Any])
_SKIP_ARGS = frozenset({"self", "cls"})


@overload
def trace(func: F, /) -> F: ...


@overload
def trace(
    *,
    name: str | None = None,
    kind: str = "internal",
    type: str = "span",
    attributes: Mapping[str, Any] | None = None,
    capture_input: bool | None = None,
    capture_output: bool | None = None,
) -> Callable[[F], F]: ...


def trace(
    func: Any = None,
    /,
    *,
    name: str | None = None,
    kind: str = "internal",
    type: str = "span",
    attributes: Mapping[str, Any] | None = None,
    capture_input: bool | None = None,
    capture_output: bool | None = None,
) -> Any:
    """Record a span for each call: ``@trace`` or ``@trace(name=..., type="generation")``.

    Works on functions, methods, ``async def``, generators and async
    generators. ``name`` defaults to the function's qualified name.
    ``capture_input``/``capture_output`` override the ``capture_io`` option
    for this function (arguments and return value, size-limited, redacted).
    """
    if func is None:
        return lambda f: _decorate(f, name, kind, type, attributes, capture_input, capture_output)
    return _decorate(func, name, kind, type, attributes, capture_input, capture_output)


def _decorate(
    func: Any,
    name: str | None,
    kind: str,
    type: str,
    attributes: Mapping[str, Any] | None,
    capture_input: bool | None,
    capture_output: bool | None,
) -> Any:
    if isinstance(func, (classmethod, staticmethod)):
        inner = _decorate(
            func.__func__, name, kind, type, attributes, capture_input, capture_output
        )
        return func.__class__(inner)
    if kind not in SPAN_KINDS:
        warn_once(f"kind:{kind}", "tracerelay: unknown span kind %r, using 'internal'", kind)
        kind = "internal"
    if type not in SPAN_TYPES:
        warn_once(f"type:{type}", "tracerelay: span type %r is not a standard one", type)
    if name is None:
        name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    site = _Site(func, name, kind, type, attributes, capture_input, capture_output)
    if inspect.isasyncgenfunction(func):
        wrapper = _wrap_async_generator(site)
    elif inspect.isgeneratorfunction(func):
        wrapper = _wrap_generator(site)
    elif inspect.iscoroutinefunction(func):
        wrapper = _wrap_coroutine(site)
    else:
        wrapper = _wrap_function(site)
    return functools.update_wrapper(wrapper, func)


class _Site:
    """What a decorated function needs per call, computed once."""

    __slots__ = (
        "attributes",
        "capture_in",
        "capture_out",
        "func",
        "kind",
        "name",
        "signature",
        "type",
    )

    def __init__(
        self,
        func: Callable[..., Any],
        name: str,
        kind: str,
        type: str,
        attributes: Mapping[str, Any] | None,
        capture_in: bool | None,
        capture_out: bool | None,
    ) -> None:
        self.func = func
        self.name = name
        self.kind = kind
        self.type = type
        self.attributes = dict(attributes) if attributes else None
        self.capture_in = capture_in
        self.capture_out = capture_out
        self.signature: inspect.Signature | None = None

    def start(
        self, tracer: Tracer, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> NonRecordingSpan:
        span = tracer.start_span(self.name, self.kind, self.type, self.attributes)
        if self.capture_in is not False and (self.capture_in or tracer.capture_io):
            span.set_input(self.arguments(args, kwargs))
        return span

    def wants_output(self, tracer: Tracer) -> bool:
        return self.capture_out if self.capture_out is not None else tracer.capture_io

    def arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            if self.signature is None:
                self.signature = inspect.signature(self.func)
            bound = self.signature.bind_partial(*args, **kwargs).arguments
            return {k: v for k, v in bound.items() if k not in _SKIP_ARGS}
        except (TypeError, ValueError):
            return {"args": list(args), "kwargs": kwargs}


def _fail(span: NonRecordingSpan, exc: BaseException) -> None:
    """Record ``exc`` on ``span`` and end it; never raises."""
    try:
        if not isinstance(exc, GeneratorExit):
            span.record_exception(exc)
        span.end()
    except Exception as err:
        internal_error("trace.fail", err)


def _wrap_function(site: _Site) -> Callable[..., Any]:
    # The hot path: everything it reads is a local or a closure cell.
    func, name, kind, type_, attributes = (
        site.func,
        site.name,
        site.kind,
        site.type,
        site.attributes,
    )
    capture_in = site.capture_in
    set_current = CURRENT.set

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tracer = STATE.tracer
        if tracer is None:
            return func(*args, **kwargs)
        try:
            span = tracer.start_span(name, kind, type_, attributes)
            if capture_in is not False and (capture_in or tracer.capture_io):
                span.set_input(site.arguments(args, kwargs))
            token = set_current(span)
        except Exception as exc:
            internal_error("trace.start", exc)
            return func(*args, **kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            CURRENT.reset(token)
            _fail(span, exc)
            raise
        CURRENT.reset(token)
        if capture_out is not False and (capture_out or tracer.capture_io):
            span.set_output(result)
        span.end()
        return result

    capture_out = site.capture_out
    return wrapper


def _wrap_coroutine(site: _Site) -> Callable[..., Any]:
    func = site.func

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        tracer = STATE.tracer
        if tracer is None:
            return await func(*args, **kwargs)
        try:
            span = site.start(tracer, args, kwargs)
            token = CURRENT.set(span)
        except Exception as exc:
            internal_error("trace.start", exc)
            return await func(*args, **kwargs)
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            CURRENT.reset(token)
            _fail(span, exc)
            raise
        CURRENT.reset(token)
        if site.capture_out is not False and site.wants_output(tracer):
            span.set_output(result)
        span.end()
        return result

    return wrapper


def _wrap_generator(site: _Site) -> Callable[..., Any]:
    func = site.func

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tracer = STATE.tracer
        if tracer is None:
            return (yield from func(*args, **kwargs))
        gen = func(*args, **kwargs)
        try:
            span = site.start(tracer, args, kwargs)
        except Exception as exc:
            internal_error("trace.start", exc)
            return (yield from gen)
        items: list[Any] | None = [] if site.wants_output(tracer) and span.sampled else None
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            token = CURRENT.set(span)
            try:
                if to_throw is not None:
                    thrown, to_throw = to_throw, None
                    item = gen.throw(thrown)
                else:
                    item = gen.send(to_send)
            except StopIteration as stop:
                CURRENT.reset(token)
                if items is not None:
                    span.set_output(items if stop.value is None else stop.value)
                span.end()
                return stop.value
            except BaseException as exc:
                CURRENT.reset(token)
                _fail(span, exc)
                raise
            CURRENT.reset(token)
            if items is not None:
                items.append(item)
            try:
                to_send = yield item
            except GeneratorExit:
                token = CURRENT.set(span)
                try:
                    gen.close()
                except BaseException as exc:
                    CURRENT.reset(token)
                    _fail(span, exc)
                    raise
                CURRENT.reset(token)
                span.end()
                raise
            except BaseException as exc:
                to_throw = exc

    return wrapper


def _wrap_async_generator(site: _Site) -> Callable[..., Any]:
    func = site.func

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        # Async generators have no `yield from`: this loop forwards asend/athrow/aclose
        # by hand, with the span current only while the generator's own code runs.
        # With tracing off (span None) it forwards the same way and touches no context.
        tracer = STATE.tracer
        gen = func(*args, **kwargs)
        span: NonRecordingSpan | None = None
        items: list[Any] | None = None
        if tracer is not None:
            try:
                span = site.start(tracer, args, kwargs)
                if site.wants_output(tracer) and span.sampled:
                    items = []
            except Exception as exc:
                internal_error("trace.start", exc)
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            token = CURRENT.set(span) if span is not None else None
            try:
                if to_throw is not None:
                    thrown, to_throw = to_throw, None
                    item = await gen.athrow(thrown)
                else:
                    item = await gen.asend(to_send)
            except StopAsyncIteration:
                if span is not None:
                    CURRENT.reset(token)  # type: ignore[arg-type]
                    if items is not None:
                        span.set_output(items)
                    span.end()
                return
            except BaseException as exc:
                if span is not None:
                    CURRENT.reset(token)  # type: ignore[arg-type]
                    _fail(span, exc)
                raise
            if span is not None:
                CURRENT.reset(token)  # type: ignore[arg-type]
            if items is not None:
                items.append(item)
            try:
                to_send = yield item
            except GeneratorExit:
                token = CURRENT.set(span) if span is not None else None
                try:
                    await gen.aclose()
                except BaseException as exc:
                    if span is not None:
                        CURRENT.reset(token)  # type: ignore[arg-type]
                        _fail(span, exc)
                    raise
                if span is not None:
                    CURRENT.reset(token)  # type: ignore[arg-type]
                    span.end()
                raise
            except BaseException as exc:
                to_throw = exc

    return wrapper

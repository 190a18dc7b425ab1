"""tracerelay: record every step of a Python service or agent, and get it all to the server.

Quick start::

    import tracerelay

    tracerelay.init(service="checkout")

    @tracerelay.trace
    def handle(order): ...

    with tracerelay.span("step", attributes={"k": 1}) as s:
        s.set_attribute("rows", 10)

Without ``init()`` every call here is a cheap no-op. This module is the whole
public surface; the submodules are implementation. ``AsyncClient`` is imported
on first use, so that tracing a program that does not use asyncio never imports it.
"""

from typing import TYPE_CHECKING, Any

from tracerelay._version import __version__
from tracerelay.api import (
    add_event,
    current_span,
    event,
    flush,
    get_client,
    init,
    metric,
    record_exception,
    record_usage,
    score,
    set_attribute,
    set_attributes,
    set_status,
    shutdown,
    span,
    update_trace,
)
from tracerelay.client import Client
from tracerelay.config import Config
from tracerelay.context import Thread, ThreadPoolExecutor, wrap
from tracerelay.decorators import trace
from tracerelay.errors import AuthError, ConfigError, NetworkError, TracerelayError
from tracerelay.export import Exporter, ExportResult
from tracerelay.propagation import extract, inject
from tracerelay.spans import NonRecordingSpan, Span

if TYPE_CHECKING:
    from tracerelay.async_client import AsyncClient

__all__ = [
    "AsyncClient",
    "AuthError",
    "Client",
    "Config",
    "ConfigError",
    "ExportResult",
    "Exporter",
    "NetworkError",
    "NonRecordingSpan",
    "Span",
    "Thread",
    "ThreadPoolExecutor",
    "TracerelayError",
    "__version__",
    "add_event",
    "current_span",
    "event",
    "extract",
    "flush",
    "get_client",
    "init",
    "inject",
    "metric",
    "record_exception",
    "record_usage",
    "score",
    "set_attribute",
    "set_attributes",
    "set_status",
    "shutdown",
    "span",
    "trace",
    "update_trace",
    "wrap",
]


def __getattr__(name: str) -> Any:
    if name == "AsyncClient":
        from tracerelay.async_client import AsyncClient

        return AsyncClient
    raise AttributeError(f"module 'tracerelay' has no attribute {name!r}")

"""The public surface is exactly ``tracerelay.__all__``, and every name has a docstring."""

from __future__ import annotations

import inspect

import tracerelay

EXPECTED = {
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
}


def test_exported_names_are_pinned() -> None:
    assert set(tracerelay.__all__) == EXPECTED
    for name in tracerelay.__all__:
        assert hasattr(tracerelay, name), name


def test_every_public_name_is_documented() -> None:
    for name in tracerelay.__all__:
        obj = getattr(tracerelay, name)
        if name == "__version__":
            assert isinstance(obj, str)
            continue
        assert inspect.getdoc(obj), f"{name} has no docstring"


def test_spec_python_api_names_exist() -> None:
    # SPEC §3 names the user depends on.
    for name in ("init", "trace", "span", "score", "event", "flush", "shutdown", "Client"):
        assert callable(getattr(tracerelay, name))
    span = tracerelay.span("no-op")
    for attr in ("trace_id", "span_id", "parent_span_id"):
        assert hasattr(span, attr)


def test_client_metrics_has_every_spec_counter() -> None:
    spec = {
        "queue_depth", "items_created", "items_processed", "items_failed", "items_dropped",
        "items_spooled", "duplicates", "batches_processed", "avg_batch_size",
        "avg_response_ms", "processing_rate", "error_rate", "circuit_state",
    }  # fmt: skip
    client = tracerelay.Client(exporters=[], environ={})
    assert spec <= set(client.metrics())
    http = tracerelay.Client(
        exporter="http", spool_dir=None, endpoint="http://127.0.0.1:9", environ={}
    )
    try:
        assert spec <= set(http.metrics())
        assert http.metrics()["circuit_state"] == "closed"
    finally:
        http.shutdown(timeout=0.5)

"""The background pipeline: batching, flushing, overflow, failures, shutdown, concurrency."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import tracerelay
from tracerelay.export import ExportResult
from tracerelay.export.memory import InMemoryExporter
from tracerelay.pipeline import BackgroundPipeline
from tracerelay.records import Event


class Recording(InMemoryExporter):
    """Keeps the batches as they arrived, to check their sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def export(self, records: Sequence[Any]) -> ExportResult:
        self.batches.append(len(records))
        return super().export(records)


def test_flush_delivers_everything_in_batches_of_the_configured_size() -> None:
    exporter = Recording()
    tracerelay.init(exporters=[exporter], batch_max_size=10, batch_flush_interval=60, environ={})
    for i in range(95):
        with tracerelay.span(f"s{i}"):
            pass
    assert tracerelay.flush(timeout=5)
    assert [s.name for s in exporter.spans] == [f"s{i}" for i in range(95)]
    assert max(exporter.batches) <= 10
    assert tracerelay.get_client().metrics()["items_processed"] == 95  # type: ignore[union-attr]


def test_interval_flush_happens_without_an_explicit_flush() -> None:
    exporter = InMemoryExporter()
    tracerelay.init(exporters=[exporter], batch_flush_interval=0.1, environ={})
    with tracerelay.span("lonely"):
        pass
    deadline = time.monotonic() + 5
    while not exporter.spans and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [s.name for s in exporter.spans] == ["lonely"]


def test_instant_mode_exports_without_waiting_for_the_interval() -> None:
    exporter = InMemoryExporter()
    tracerelay.init(exporters=[exporter], mode="instant", batch_flush_interval=60, environ={})
    with tracerelay.span("now"):
        pass
    deadline = time.monotonic() + 5
    while not exporter.spans and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [s.name for s in exporter.spans] == ["now"]


def test_overflow_drops_the_oldest_and_counts_it() -> None:
    exporter = InMemoryExporter()
    pipeline = BackgroundPipeline(
        [], [exporter], max_queue_size=5, batch_size=100, flush_interval=60
    )
    # Hold the export lock so the worker cannot drain while we overfill the queue.
    with pipeline._export_lock:
        for i in range(12):
            pipeline.submit(Event(f"e{i}"))
        assert pipeline.stats()["dropped"] == {"queue_full": 7}
    assert pipeline.flush(timeout=5)
    assert [r.name for r in exporter.records] == [f"e{i}" for i in range(7, 12)]


def test_records_after_shutdown_are_refused_and_counted() -> None:
    exporter = InMemoryExporter()
    client = tracerelay.init(exporters=[exporter], environ={})
    span = tracerelay.span("straddles shutdown")
    tracerelay.shutdown()
    span.end()
    assert exporter.spans == []
    assert client.metrics()["dropped_by_reason"] == {"shutdown": 1}


def test_a_failing_exporter_does_not_stop_the_others(internal_errors: list[Any]) -> None:
    class Broken:
        def export(self, records: Sequence[Any]) -> ExportResult:
            raise OSError("disk full")

        def force_flush(self, timeout: float | None = None) -> bool:
            return True

        def shutdown(self) -> None:
            return None

    good = InMemoryExporter()
    client = tracerelay.init(exporters=[Broken(), good], environ={})
    with tracerelay.span("survives"):
        pass
    assert tracerelay.flush(timeout=5)
    assert [s.name for s in good.spans] == ["survives"]
    assert client.metrics()["items_failed"] == 1
    assert [where for where, _ in internal_errors] == ["exporter Broken"]


def test_a_failing_processor_keeps_the_record(internal_errors: list[Any]) -> None:
    def explode(record: Any) -> Any:
        raise RuntimeError("bug in user processor")

    def tag(record: Any) -> Any:
        record.attributes["tagged"] = True
        return record

    exporter = InMemoryExporter()
    tracerelay.init(exporters=[exporter], processors=[explode, tag], environ={})
    with tracerelay.span("kept"):
        pass
    assert tracerelay.flush(timeout=5)
    assert exporter.spans[0].attributes == {"tagged": True}
    assert len(internal_errors) == 1


def test_a_processor_may_drop_records_and_the_drop_is_counted() -> None:
    def only_slow(record: Any) -> Any:
        return record if record.name.startswith("keep") else None

    exporter = InMemoryExporter()
    client = tracerelay.init(exporters=[exporter], processors=[only_slow], environ={})
    for name in ("keep-1", "skip", "keep-2"):
        with tracerelay.span(name):
            pass
    assert tracerelay.flush(timeout=5)
    assert [s.name for s in exporter.spans] == ["keep-1", "keep-2"]
    assert client.metrics()["dropped_by_reason"] == {"processor:function": 1}


def test_flush_keeps_its_deadline_when_an_exporter_is_slow() -> None:
    class Slow(InMemoryExporter):
        def export(self, records: Sequence[Any]) -> ExportResult:
            time.sleep(0.3)
            return super().export(records)

    tracerelay.init(exporters=[Slow()], batch_max_size=1, batch_flush_interval=60, environ={})
    for i in range(20):
        with tracerelay.span(f"s{i}"):
            pass
    started = time.monotonic()
    assert tracerelay.flush(timeout=0.5) is False
    assert time.monotonic() - started < 1.5


@settings(max_examples=15, deadline=None)
@given(
    threads=st.integers(min_value=1, max_value=6),
    per_thread=st.integers(min_value=0, max_value=300),
    batch=st.integers(min_value=1, max_value=50),
)
def test_concurrent_producers_every_record_exported_exactly_once(
    threads: int, per_thread: int, batch: int
) -> None:
    exporter = InMemoryExporter()
    pipeline = BackgroundPipeline(
        [], [exporter], max_queue_size=100_000, batch_size=batch, flush_interval=0.01
    )

    def produce(t: int) -> None:
        for i in range(per_thread):
            pipeline.submit(Event(f"{t}-{i}"))

    workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert pipeline.shutdown(timeout=10)
    names = [r.name for r in exporter.records]
    assert sorted(names) == sorted(f"{t}-{i}" for t in range(threads) for i in range(per_thread))
    for t in range(threads):  # each producer's records keep their order
        mine = [n for n in names if n.startswith(f"{t}-")]
        assert mine == [f"{t}-{i}" for i in range(per_thread)]


def test_a_failing_redactor_drops_the_record_instead_of_leaking_it(
    internal_errors: list[Any],
) -> None:
    from tracerelay.processing.redaction import SecretRedactor

    class BrokenRedactor(SecretRedactor):
        def __call__(self, record: Any) -> Any:
            raise RuntimeError("regex engine exploded")

    exporter = InMemoryExporter()
    client = tracerelay.init(exporters=[exporter], processors=[BrokenRedactor()], environ={})
    with tracerelay.span("carries a secret", attributes={"password": "hunter2"}):
        pass
    assert tracerelay.flush(timeout=5)
    assert exporter.spans == []
    assert client.metrics()["dropped_by_reason"] == {"processor:BrokenRedactor": 1}
    assert len(internal_errors) == 1


def test_span_fast_path_respects_a_subclass_override() -> None:
    from tracerelay.processing.limits import LimitsProcessor

    class Tagging(LimitsProcessor):
        def __call__(self, record: Any) -> Any:
            record = super().__call__(record)
            record.attributes["tagged"] = True
            return record

    exporter = InMemoryExporter()
    tracerelay.init(
        exporters=[exporter],
        processors=[
            Tagging(
                max_attributes=8,
                max_attribute_length=64,
                max_events=8,
                max_io_length=64,
                max_span_bytes=4096,
            )
        ],
        environ={},
    )
    with tracerelay.span("s"):
        pass
    assert tracerelay.flush(timeout=5)
    assert exporter.spans[0].attributes == {"tagged": True}


def test_records_the_exit_deadline_cannot_reach_are_counted() -> None:
    class Slow(InMemoryExporter):
        def export(self, records: Sequence[Any]) -> ExportResult:
            time.sleep(0.2)
            return super().export(records)

    exporter = Slow()
    client = tracerelay.init(
        exporters=[exporter], batch_max_size=1, batch_flush_interval=60, environ={}
    )
    for i in range(30):
        with tracerelay.span(f"s{i}"):
            pass
    assert tracerelay.shutdown(timeout=0.5) is False
    metrics = client.metrics()
    exported = len(exporter.spans)
    assert 0 < exported < 30
    assert (
        metrics["dropped_by_reason"]["shutdown_deadline"] == 30 - exported - metrics["queue_depth"]
    )
    assert metrics["items_created"] == 30

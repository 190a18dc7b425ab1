"""The overflow file: records parked raw on disk and read back, oldest first, intact."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tracerelay
from tracerelay.export import ExportResult
from tracerelay.export.memory import InMemoryExporter
from tracerelay.overflow import Overflow
from tracerelay.pipeline import BackgroundPipeline
from tracerelay.records import Score
from tracerelay.spans import Span
from tracerelay.testing import capture


def _spans(n: int, **attributes: Any) -> list[Span]:
    with capture() as spans:
        for i in range(n):
            with tracerelay.span(f"s{i}", attributes={"i": i, **attributes}) as span:
                span.add_event("tick", {"n": i})
                span.record_usage(model="m", input_tokens=i, output_tokens=1)
    return list(spans)


@pytest.fixture
def overflow(tmp_path: Path) -> Iterator[Overflow]:
    parked = Overflow(str(tmp_path), max_bytes=1 << 26)
    yield parked
    parked.close()


def test_parked_spans_come_back_whole_and_in_order(overflow: Overflow) -> None:
    spans = _spans(50)
    assert overflow.park(spans) == []
    assert len(overflow) == 50 and overflow.size > 0
    back = overflow.take(30) + overflow.take(100)
    assert [type(s) for s in back] == [Span] * 50
    assert [s.to_wire() for s in back] == [s.to_wire() for s in spans]
    assert [s.event_id for s in back] == [s.event_id for s in spans]
    assert len(overflow) == 0 and overflow.size == 0  # space given back once drained
    assert overflow.take(10) == []


def test_other_records_are_parked_too(overflow: Overflow) -> None:
    score = Score("accuracy", 0.9, trace_id="a" * 32, comment="fine")
    assert overflow.park([score]) == []
    (back,) = overflow.take(5)
    assert isinstance(back, Score) and back.to_wire() == score.to_wire()


def test_records_that_cannot_be_pickled_or_do_not_fit_are_handed_back(tmp_path: Path) -> None:
    small = Overflow(str(tmp_path), max_bytes=2_000)
    try:
        (locked,) = _spans(1)
        locked.attributes["lock"] = threading.Lock()  # as it was before processing
        fine = _spans(40)
        refused = small.park([locked, *fine])
        assert refused[0] is locked  # unpicklable: stays in memory, is not lost
        assert 1 < len(refused) < 41  # the rest beyond 2,000 bytes
        assert len(small) == 41 - len(refused) and small.size <= 2_000
    finally:
        small.close()


def test_the_file_is_anonymous(tmp_path: Path, overflow: Overflow) -> None:
    overflow.park(_spans(5, password="hunter2"))
    # Unprocessed records (redaction has not run yet) never show up in the directory.
    assert os.listdir(tmp_path) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 40), st.just(-1)), max_size=30))
def test_any_mix_of_park_and_take_returns_each_record_once_in_order(
    tmp_path_factory: pytest.TempPathFactory, steps: list[int]
) -> None:
    parked = Overflow(str(tmp_path_factory.mktemp("overflow")), max_bytes=1 << 26)
    pool = _spans(40)
    sent: list[str] = []
    got: list[str] = []
    try:
        for step in steps:
            if step < 0:  # take a few
                got += [s.span_id for s in parked.take(7)]
            else:
                batch = pool[:step]
                assert parked.park(batch) == []
                sent += [s.span_id for s in batch]
        got += [s.span_id for s in parked.take(10_000)]
    finally:
        parked.close()
    assert got == sent


class SlowExporter(InMemoryExporter):
    """Takes a while per batch, so records arrive faster than they are processed."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def export(self, records: Sequence[Any]) -> ExportResult:
        time.sleep(self.delay)
        return super().export(records)


def test_a_pipeline_behind_parks_records_instead_of_dropping_them(tmp_path: Path) -> None:
    exporter = SlowExporter(0.002)
    overflow = Overflow(str(tmp_path), max_bytes=1 << 28)
    pipeline = BackgroundPipeline(
        [], [exporter], max_queue_size=500, batch_size=50, flush_interval=0.05, overflow=overflow
    )
    spans = _spans(20_000)
    longest = 0
    for start in range(0, len(spans), 100):
        for span in spans[start : start + 100]:  # ~10 µs a span: faster than it is exported
            pipeline.submit(span)
        longest = max(longest, pipeline.queued() - len(overflow))
        time.sleep(0.001)
    assert pipeline.flush(timeout=60)
    stats = pipeline.stats()
    assert stats["dropped"] == {} and stats["processed"] == 20_000
    assert stats["overflowed"] > 0  # some were parked...
    assert longest <= 4 * 500  # ...so the memory queue stayed within its hard cap
    assert sorted(s.span_id for s in exporter.spans) == sorted(s.span_id for s in spans)
    pipeline.shutdown(timeout=1)


def test_without_an_overflow_the_oldest_are_dropped_and_counted() -> None:
    exporter = SlowExporter(0.01)
    pipeline = BackgroundPipeline(
        [], [exporter], max_queue_size=100, batch_size=50, flush_interval=0.05
    )
    for span in _spans(3_000):
        pipeline.submit(span)
    assert pipeline.flush(timeout=60)
    stats = pipeline.stats()
    assert stats["dropped"]["queue_full"] > 0
    assert stats["processed"] + stats["dropped"]["queue_full"] == 3_000
    pipeline.shutdown(timeout=1)


class Backlogged(InMemoryExporter):
    """Says it is backlogged until released, as the HTTP exporter does when its sender
    holds more than it should."""

    def __init__(self) -> None:
        super().__init__()
        self.full = threading.Event()
        self.full.set()

    def backlogged(self) -> bool:
        return self.full.is_set()


def test_the_pipeline_waits_for_a_backlogged_exporter_and_parks_meanwhile(
    tmp_path: Path,
) -> None:
    exporter = Backlogged()
    overflow = Overflow(str(tmp_path), max_bytes=1 << 28)
    pipeline = BackgroundPipeline(
        [], [exporter], max_queue_size=200, batch_size=50, flush_interval=0.05, overflow=overflow
    )
    spans = _spans(2_000)
    for start in range(0, len(spans), 100):
        for span in spans[start : start + 100]:
            pipeline.submit(span)
        time.sleep(0.01)
    time.sleep(0.2)
    assert exporter.spans == []  # nothing exported while the exporter is backlogged
    assert pipeline.stats()["overflowed"] > 0 and pipeline.queued() == 2_000
    exporter.full.clear()
    assert pipeline.flush(timeout=30)
    assert len(exporter.spans) == 2_000
    pipeline.shutdown(timeout=1)


def test_at_its_hard_cap_the_queue_is_parked_by_the_caller_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    exporter = Backlogged()
    overflow = Overflow(str(tmp_path), max_bytes=1 << 28)
    pipeline = BackgroundPipeline(
        [], [exporter], max_queue_size=300, batch_size=50, flush_interval=0.05, overflow=overflow
    )
    spans = _spans(10_000)
    longest = 0
    for span in spans:  # all at once: far faster than the thread can park them
        pipeline.submit(span)
        longest = max(longest, len(pipeline._queue))
    assert longest <= 2 * 300
    assert pipeline.stats()["dropped"] == {}
    exporter.full.clear()
    assert pipeline.flush(timeout=30)
    assert sorted(s.span_id for s in exporter.spans) == sorted(s.span_id for s in spans)
    pipeline.shutdown(timeout=1)

"""Announcing long spans (instant mode): the decisions on the pipeline thread, and what they
give the exporters. End to end over HTTP: tests/delivery/test_instant.py."""

from __future__ import annotations

import io
import random
import threading
import time
from collections import defaultdict
from typing import Any

import tracerelay
from tracerelay.announce import Announcer, SpanCompletion, SpanStart
from tracerelay.export.console import ConsoleExporter
from tracerelay.export.memory import InMemoryExporter
from tracerelay.pipeline import SyncPipeline
from tracerelay.processing import build_processors
from tracerelay.processing.validation import INVALID_END_TIME
from tracerelay.spans import Span
from tracerelay.tracer import AnnouncingTracer, Tracer


def setup(after: float = 0.0) -> tuple[Announcer, AnnouncingTracer, list[Any]]:
    ended: list[Any] = []
    announcer = Announcer(after)
    return announcer, AnnouncingTracer(ended.append, announcer), ended


def start(tracer: Tracer, name: str = "work", **attributes: Any) -> Span:
    span = tracer.start_span(name, attributes=attributes)
    assert isinstance(span, Span)
    return span


def test_a_running_span_is_announced_then_completed() -> None:
    announcer, tracer, ended = setup()
    span = start(tracer, k=1)
    span.add_event("begun", {"step": 1})
    (announce,) = announcer.step([])
    assert type(announce) is SpanStart and announce.event_type == "observation_create"
    assert (announce.span_id, announce.trace_id) == (span.span_id, span.trace_id)
    assert announce.end_time_unix_nano is None and announce.status_code == "unset"
    assert announce.attributes == {"k": 1} and announce.events[0]["name"] == "begun"
    assert announce.event_id is None  # drawn by the pipeline, like any record's
    span.set_status("ok")
    span.end()
    (done,) = announcer.step(ended)
    assert type(done) is SpanCompletion and done.event_type == "observation_complete"
    assert done.span_id == span.span_id and done.end_time_unix_nano == span.end_time_unix_nano
    assert done.status_code == "ok" and done.event_id is None
    assert announcer.step([]) == []  # nothing more to say about it


def test_the_snapshot_is_the_announces_own_the_running_span_goes_on_unchanged() -> None:
    announcer, tracer, _ = setup()
    span = start(tracer, k=1)
    span.add_event("e", {"a": 1})
    span.add_link("ab" * 16, "cd" * 8, {"l": 1})
    (announce,) = announcer.step([])
    announce.attributes["k"] = 2
    announce.events[0]["attributes"]["a"] = 2
    announce.links[0]["attributes"]["l"] = 2
    span.set_attribute("later", True)
    assert span.attributes == {"k": 1, "later": True}
    assert span.events[0]["attributes"] == {"a": 1}
    assert span.links[0]["attributes"] == {"l": 1}
    assert "later" not in announce.attributes


def test_a_span_that_ends_before_it_is_due_is_sent_once_as_it_is() -> None:
    announcer, tracer, ended = setup(after=60)
    span = start(tracer)
    assert announcer.step([]) == []
    span.end()
    assert announcer.step(ended) == [span]
    assert announcer._pending == {}


def test_a_span_ended_but_not_yet_in_a_batch_is_not_announced() -> None:
    # The race: the pipeline looks after the end was stamped, before the span reached
    # its queue. It must not announce a span whose end it will process as a plain one.
    announcer, tracer, ended = setup()
    span = start(tracer)
    span.end()
    assert announcer.step([]) == []
    assert announcer.step(ended) == [span]


def test_a_span_started_and_ended_within_one_step_is_sent_once() -> None:
    announcer, tracer, ended = setup()
    start(tracer).end()
    assert announcer.step(ended) == ended
    assert announcer.step([]) == []


def test_an_announce_is_taken_while_the_span_is_ending_it_still_completes() -> None:
    # The span ends after the pipeline decided to announce it: its end is then
    # always processed later, on the same thread, and finds it announced.
    announcer, tracer, ended = setup()
    span = start(tracer)
    assert list(announcer.starts) == [span]  # the start marker, all traced code added
    (announce,) = announcer.step([])
    span.set_status("error", "late")
    span.end()
    assert announce.end_time_unix_nano is None and announce.status_code == "unset"
    (done,) = announcer.step(ended)
    assert isinstance(done, SpanCompletion) and done.status_code == "error"


def test_only_recording_spans_are_noted_and_a_plain_tracer_notes_nothing() -> None:
    announcer, tracer, _ = setup()
    sampled_out = AnnouncingTracer(lambda span: None, announcer, sample_rate=0.0)
    sampled_out.start_span("dropped")
    assert list(announcer.starts) == []
    start(tracer)
    assert len(announcer.starts) == 1
    plain = Tracer(lambda span: None)
    assert type(plain.start_span("x")) is Span


def test_after_close_starts_are_dropped_as_they_come() -> None:
    announcer, tracer, _ = setup()
    announcer.close()
    for _ in range(10):
        start(tracer)
    assert len(announcer.starts) == 0 and announcer.step([]) == []


def test_starts_are_bounded_the_oldest_forgotten() -> None:
    announcer = Announcer(0.0, max_starts=3)
    tracer = AnnouncingTracer(lambda span: None, announcer)
    spans = [start(tracer, f"s{i}") for i in range(5)]
    assert [a.name for a in announcer.step([])] == [s.name for s in spans[2:]]


def test_processors_run_on_the_announce_and_keep_its_missing_end() -> None:
    announcer, tracer, _ = setup()
    span = start(tracer, password="hunter2", text="x" * 50)
    exporter = InMemoryExporter()
    config = tracerelay.Config(max_attribute_length=16, environ={})
    pipeline = SyncPipeline(build_processors(config), [exporter])
    pipeline._export(announcer.step([]))
    (record,) = exporter.records
    assert record.end_time_unix_nano is None
    assert INVALID_END_TIME not in record.attributes
    assert record.attributes["password"] == "[REDACTED]"
    assert record.attributes["text"].startswith("x" * 16 + "…[truncated")
    assert span.attributes["password"] == "hunter2" and span.end_time_unix_nano is None
    assert exporter.spans == []  # an announce is a record, not a finished span


def test_the_console_tree_leaves_announces_out() -> None:
    announcer, tracer, ended = setup()
    span = start(tracer, "root")
    out = io.StringIO()
    console = ConsoleExporter(stream=out, color=False)
    console.export(announcer.step([]))
    assert out.getvalue() == ""
    span.end()
    console.export(announcer.step(ended))
    assert "root" in out.getvalue()


def test_instant_mode_without_a_background_thread_announces_nothing() -> None:
    exporter = InMemoryExporter()
    client = tracerelay.Client(
        exporters=[exporter], synchronous=True, mode="instant", announce_after=0, environ={}
    )
    with client.tracer.start_span("s"):
        time.sleep(0.01)
    assert [type(r) for r in exporter.records] == [Span]
    assert type(client.tracer) is Tracer


def test_deferred_mode_uses_the_plain_tracer() -> None:
    client = tracerelay.Client(exporters=[], announce_after=0, environ={})
    assert type(client.tracer) is Tracer
    client.shutdown()


def test_ends_racing_announces_always_give_one_shape_or_the_other() -> None:
    # Many threads end spans around the moment they fall due, while the pipeline
    # thread decides: each span must come out once, or announced then completed,
    # in that order, never both nor half.
    exporter = InMemoryExporter()
    client = tracerelay.Client(
        exporters=[exporter], mode="instant", announce_after=0.002, environ={}
    )

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(150):
            with client.tracer.start_span("raced"):
                if rng.random() < 0.6:
                    time.sleep(rng.random() * 0.006)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.flush(timeout=10)
    client.shutdown()
    kinds: dict[str, list[type]] = defaultdict(list)
    for record in exporter.records:
        kinds[record.span_id].append(type(record))
    assert len(kinds) == 8 * 150
    shapes = {tuple(found) for found in kinds.values()}
    assert shapes <= {(Span,), (SpanStart, SpanCompletion)}
    assert (SpanStart, SpanCompletion) in shapes  # the race was actually run
    assert len({record.event_id for record in exporter.records}) == len(exporter.records)
    metrics = client.metrics()
    assert metrics["items_created"] == metrics["items_processed"] == len(exporter.records)

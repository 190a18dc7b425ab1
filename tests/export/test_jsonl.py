"""The JSON Lines exporter: one SPEC §2 event per line, with the resource, appended safely."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

import tracerelay
from tracerelay.export import ExportResult
from tracerelay.export import jsonl as jsonl_module
from tracerelay.export.jsonl import JsonLinesExporter
from tracerelay.testing import CapturedSpans, capture


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def recorded() -> CapturedSpans:
    with capture() as spans, tracerelay.span("root"), tracerelay.span("child"):
        tracerelay.score("quality", 1.0)
    return spans


def test_each_record_is_one_envelope_line_with_the_resource(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "spans.jsonl"
    tracerelay.init(exporter="jsonl", export_file=path, service="checkout", environ={})
    with tracerelay.span("checkout", type="agent") as root:
        with tracerelay.span("charge", type="tool") as child:
            child.set_attribute("amount", 12.5)
            with tracerelay.span("call bank", kind="client"):
                pass
        tracerelay.score("accuracy", 0.9)
    assert tracerelay.flush()
    events = read(path)
    assert [e["event_type"] for e in events] == [
        "observation_create",
        "observation_create",
        "quality_score_create",
        "observation_create",
    ]
    for event in events:
        assert set(event) == {"event_id", "event_type", "timestamp", "payload", "resource"}
        assert len(event["event_id"]) == 26
        assert isinstance(event["timestamp"], float)
        assert event["resource"]["service.name"] == "checkout"
    assert len({e["event_id"] for e in events}) == len(events)
    spans = {e["payload"]["name"]: e["payload"] for e in events if "span_id" in e["payload"]}
    assert spans["checkout"]["parent_span_id"] is None
    assert spans["checkout"]["span_id"] == root.span_id
    assert spans["charge"]["parent_span_id"] == root.span_id
    assert spans["call bank"]["parent_span_id"] == child.span_id
    assert spans["charge"]["attributes"] == {"amount": 12.5}
    assert {s["trace_id"] for s in spans.values()} == {root.trace_id}
    score = next(e for e in events if e["event_type"] == "quality_score_create")
    assert score["payload"]["trace_id"] == root.trace_id


def test_background_batches_all_land_in_order(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    tracerelay.init(exporter="jsonl", export_file=str(path), batch_max_size=3, environ={})
    for i in range(10):
        with tracerelay.span(f"step-{i}"):
            pass
    assert tracerelay.flush(timeout=5)
    assert [e["payload"]["name"] for e in read(path)] == [f"step-{i}" for i in range(10)]


def test_a_batch_is_one_write_and_appends_to_what_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "spans.jsonl"
    path.write_text('{"kept": true}\n')
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: Any) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(jsonl_module.os, "write", counting_write)
    exporter = JsonLinesExporter(path, resource={"service.name": "a"})
    spans = recorded()
    assert exporter.export([*spans, *spans.records]) is ExportResult.SUCCESS
    monkeypatch.undo()
    assert len(writes) == 1
    lines = read(path)
    assert lines[0] == {"kept": True}
    assert len(lines) == 4
    exporter.shutdown()


def test_after_shutdown_exports_fail_and_the_file_is_not_reopened(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = JsonLinesExporter(path)
    spans = recorded()
    assert exporter.export(spans[:1]) is ExportResult.SUCCESS
    exporter.shutdown()
    before = path.read_bytes()
    assert exporter.export(spans[1:]) is ExportResult.FAILURE
    assert exporter.force_flush() is True
    assert path.read_bytes() == before
    exporter.shutdown()  # twice is harmless


def test_a_new_process_id_makes_it_reopen_the_file(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = JsonLinesExporter(path)
    spans = recorded()
    exporter.export(spans[:1])
    exporter._pid = -1  # as if this were a forked child holding its parent's descriptor
    exporter.export(spans[1:])
    assert exporter._pid == os.getpid()
    assert len(read(path)) == len(spans)
    exporter.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_appends_through_its_own_descriptor(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = JsonLinesExporter(path)
    spans = recorded()
    exporter.export(spans[:1])
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a process that has threads (pytest's own).
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code only
        ok = exporter.export(spans[1:2]) is ExportResult.SUCCESS and exporter._pid == os.getpid()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    exporter.export(spans[2:])
    assert [e["payload"]["name"] for e in read(path)] == [s.name for s in spans]
    exporter.shutdown()


def test_concurrent_exports_never_split_a_line(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = JsonLinesExporter(path, resource={"r": "x" * 1000})
    spans = recorded()

    def send() -> None:
        for _ in range(50):
            exporter.export(list(spans))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    exporter.shutdown()
    assert len(read(path)) == 4 * 50 * len(spans)


def test_an_unwritable_path_fails_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = JsonLinesExporter(tmp_path)  # a folder, not a file
    spans = recorded()
    with caplog.at_level(logging.WARNING, logger="tracerelay"):
        assert exporter.export(spans) is ExportResult.FAILURE
        assert exporter.export(spans) is ExportResult.FAILURE
    [warning] = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert warning.startswith(f"tracerelay: cannot write to {tmp_path}: ")
    exporter.shutdown()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_the_file_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = JsonLinesExporter(path)
    exporter.export(recorded())
    exporter.shutdown()
    assert path.stat().st_mode & 0o777 == 0o600

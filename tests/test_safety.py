"""Tracing must never hurt the traced program: no init, broken internals, forks."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import tracerelay
from tracerelay.export import ExportResult
from tracerelay.tracer import Tracer


def test_every_api_call_is_a_harmless_no_op_without_init() -> None:
    assert tracerelay.get_client() is None

    @tracerelay.trace
    async def coro() -> int:
        return 1

    with tracerelay.span("x", attributes={"a": 1}) as s:
        s.set_attribute("k", "v")
        s.record_usage(model="m", input_tokens=1)
        tracerelay.set_attribute("k", 1)
        tracerelay.add_event("e")
        tracerelay.record_usage(input_tokens=3)
        assert tracerelay.current_span() is s
        assert not s.is_recording()
    assert asyncio.run(coro()) == 1
    assert tracerelay.inject({}) == {}
    assert tracerelay.flush() is True
    assert tracerelay.shutdown() is True


def test_enabled_false_turns_everything_off() -> None:
    seen: list[Any] = []

    class Keep:
        def export(self, records: Sequence[Any]) -> ExportResult:
            seen.extend(records)
            return ExportResult.SUCCESS

        def force_flush(self, timeout: float | None = None) -> bool:
            return True

        def shutdown(self) -> None:
            return None

    tracerelay.init(exporters=[Keep()], environ={"TRACERELAY_ENABLED": "false"})
    with tracerelay.span("off"):
        tracerelay.score("s", 1.0)
    tracerelay.flush()
    assert seen == []


def test_a_failure_inside_the_sdk_never_reaches_the_traced_function(
    monkeypatch: pytest.MonkeyPatch, internal_errors: list[Any]
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("sdk bug")

    tracerelay.init(exporters=[], environ={})
    monkeypatch.setattr(Tracer, "start_span", broken)

    @tracerelay.trace
    def work(x: int) -> int:
        return x + 1

    @tracerelay.trace
    async def awork(x: int) -> int:
        return x + 2

    @tracerelay.trace
    def gen() -> Any:
        yield 1

    assert work(1) == 2
    assert asyncio.run(awork(1)) == 3
    assert list(gen()) == [1]
    with tracerelay.span("still fine") as s:
        s.set_attribute("a", 1)
    assert len(internal_errors) == 4
    assert {where for where, _ in internal_errors} == {"trace.start", "span"}


def test_a_failing_finish_hook_is_swallowed(
    monkeypatch: pytest.MonkeyPatch, internal_errors: list[Any]
) -> None:
    client = tracerelay.init(exporters=[], environ={})

    def broken(record: Any) -> None:
        raise MemoryError("queue exploded")

    monkeypatch.setattr(client.tracer, "finish", broken)
    with tracerelay.span("ends badly"):
        pass
    assert [where for where, _ in internal_errors] == ["span.end"]


def test_exceptions_that_cannot_be_printed_are_still_recorded() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise ValueError("no")

    from tracerelay.testing import capture

    with capture() as spans, pytest.raises(Unprintable), tracerelay.span("x"):
        raise Unprintable
    attrs = spans[0].events[0]["attributes"]
    assert attrs["exception.message"] == "<unprintable Unprintable>"
    assert spans[0].status["code"] == "error"


class PidFile:
    """An exporter that appends ``pid name span_id parent`` lines to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def export(self, records: Sequence[Any]) -> ExportResult:
        lines = "".join(
            json.dumps([os.getpid(), r.name, r.span_id, r.parent_span_id]) + "\n" for r in records
        )
        with self.path.open("a") as f:
            f.write(lines)
        return ExportResult.SUCCESS

    def force_flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self) -> None:
        return None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
@pytest.mark.parametrize("use_asyncio", [False, True], ids=["Client", "AsyncClient"])
def test_forked_child_starts_clean(tmp_path: Path, use_asyncio: bool) -> None:
    out = tmp_path / "spans.jsonl"
    tracerelay.init(
        asyncio=use_asyncio, exporters=[PidFile(out)], batch_flush_interval=60, environ={}
    )
    with tracerelay.span("queued before fork"):
        pass
    open_span = tracerelay.span("open across fork")
    open_span.__enter__()
    pid = os.fork()
    if pid == 0:  # child: must exit without running the parent's test machinery
        code = 0
        try:
            with tracerelay.span("made in child"):
                pass
            open_span.__exit__(None, None, None)  # the parent's span: not the child's to send
            tracerelay.flush(timeout=5)
            client = tracerelay.get_client()
            assert client is not None
            dropped = client.metrics()["dropped_by_reason"]
            with (tmp_path / "child-metrics.json").open("w") as f:
                json.dump(dropped, f)
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    open_span.__exit__(None, None, None)
    tracerelay.flush(timeout=5)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_name: dict[str, list[Any]] = {}
    for row in rows:
        by_name.setdefault(row[1], []).append(row)
    assert sorted(by_name) == ["made in child", "open across fork", "queued before fork"]
    assert all(len(v) == 1 for v in by_name.values()), rows
    assert by_name["queued before fork"][0][0] == os.getpid()
    assert by_name["open across fork"][0][0] == os.getpid()
    child_row = by_name["made in child"][0]
    assert child_row[0] == pid
    # The child's work is still part of the trace it was forked inside.
    assert child_row[3] == by_name["open across fork"][0][2]
    # The child's client is new: it has nothing of the parent's to drop or send.
    assert json.loads((tmp_path / "child-metrics.json").read_text()) == {}

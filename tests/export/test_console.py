"""The console exporter: the tree a person reads, whatever order and batches the spans come in."""

from __future__ import annotations

import io
import random
import re
import threading
from collections.abc import Callable

import pytest

import tracerelay
from tracerelay.export import ExportResult
from tracerelay.export.console import ConsoleExporter
from tracerelay.testing import CapturedSpans, capture

_SPAN_LINE = re.compile(r"^((?:│  |   )*)(?:├─ |└─ )(.+?)  \[")


def tree(text: str) -> list[tuple[int, str]]:
    """``(depth, name)`` of every span line, read off the indentation of the connectors."""
    out = []
    for line in text.splitlines():
        match = _SPAN_LINE.match(line)
        if match:
            out.append((len(match.group(1)) // 3, match.group(2)))
    return out


def headers(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("trace ")]


@pytest.fixture(autouse=True)
def _no_color_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)


@pytest.fixture
def printed() -> io.StringIO:
    """Tracing installed with a console exporter writing into the yielded buffer."""
    buffer = io.StringIO()
    tracerelay.init(exporters=[ConsoleExporter(stream=buffer)], synchronous=True, environ={})
    return buffer


def nested() -> None:
    with tracerelay.span("root", type="agent"):
        with tracerelay.span("a"):
            with tracerelay.span("a1", type="tool"):
                pass
            with tracerelay.span("a2", type="tool"):
                pass
        with tracerelay.span("b", type="retrieval"):
            pass


EXPECTED = [(0, "root"), (1, "a"), (2, "a1"), (2, "a2"), (1, "b")]


def recorded(work: Callable[[], None] = nested) -> CapturedSpans:
    with capture() as spans:
        work()
    return spans


def test_a_nested_trace_prints_once_its_root_ends(printed: io.StringIO) -> None:
    with tracerelay.span("root", type="agent") as root:
        with tracerelay.span("a"), tracerelay.span("a1", type="tool"):
            pass
        assert printed.getvalue() == "", "nothing may print before the root ends"
        with tracerelay.span("a2", type="tool"):
            pass
        with tracerelay.span("b", type="retrieval"):
            pass
    text = printed.getvalue()
    lines = text.splitlines()
    assert lines[0].startswith(f"trace {root.trace_id}  root  ")
    assert lines[0].endswith("  ok  5 spans")
    assert tree(text) == [(0, "root"), (1, "a"), (2, "a1"), (1, "a2"), (1, "b")]
    assert lines[1].startswith("└─ root  [agent]  ")
    assert any(line.startswith("   ├─ a  [span]  ") for line in lines)
    assert any(line.startswith("   │  └─ a1  [tool]  ") for line in lines)
    assert any(line.startswith("   └─ b  [retrieval]  ") for line in lines)


@pytest.mark.parametrize("seed", range(5))
def test_arrival_order_and_batching_do_not_change_the_tree(seed: int) -> None:
    spans = recorded()
    rng = random.Random(seed)
    root = next(s for s in spans if s.parent_span_id is None)
    rest = [s for s in spans if s is not root]
    rng.shuffle(rest)
    cut = sorted(rng.sample(range(1, len(rest)), 2))
    batches = [rest[: cut[0]], rest[cut[0] : cut[1]], [*rest[cut[1] :], root]]
    buffer = io.StringIO()
    exporter = ConsoleExporter(stream=buffer)
    for batch in batches[:-1]:
        assert exporter.export(batch) is ExportResult.SUCCESS
        assert buffer.getvalue() == ""
    rng.shuffle(batches[-1])
    exporter.export(batches[-1])
    assert tree(buffer.getvalue()) == EXPECTED
    assert len(headers(buffer.getvalue())) == 1


def test_children_with_the_same_start_time_keep_their_start_order() -> None:
    spans = recorded()
    for span in spans:
        span.start_time_unix_nano = 1_700_000_000_000_000_000  # one clock tick for all
    buffer = io.StringIO()
    ConsoleExporter(stream=buffer).export(list(reversed(spans)))
    assert tree(buffer.getvalue()) == EXPECTED


def test_attributes_can_be_left_out() -> None:
    def work() -> None:
        with tracerelay.span("root", attributes={"region": "eu-west-1"}):
            pass

    with_attributes, without = io.StringIO(), io.StringIO()
    ConsoleExporter(stream=with_attributes).export(recorded(work))
    ConsoleExporter(stream=without, show_attributes=False).export(recorded(work))
    assert "region=eu-west-1" in with_attributes.getvalue()
    assert len(without.getvalue().splitlines()) == 2


def test_a_span_whose_parent_never_arrived_is_an_orphan_at_the_top() -> None:
    spans = recorded()
    lost = spans.by_name("a")
    buffer = io.StringIO()
    ConsoleExporter(stream=buffer).export([s for s in spans if s is not lost])
    text = buffer.getvalue()
    assert tree(text) == [(0, "root"), (1, "b"), (0, "a1"), (0, "a2")]
    orphan_lines = [line for line in text.splitlines() if "orphan" in line]
    assert len(orphan_lines) == 2
    assert all(f"orphan: parent {lost.span_id} not seen" in line for line in orphan_lines)
    assert "(orphan" not in text.splitlines()[1], "the real root carries no note"


def test_a_span_ending_after_its_root_is_shown_as_late() -> None:
    spans = recorded()
    late = spans.by_name("a2")
    buffer = io.StringIO()
    exporter = ConsoleExporter(stream=buffer)
    exporter.export([s for s in spans if s is not late])
    exporter.export([late])
    text = buffer.getvalue()
    first, second = text.split("[late", 1)
    assert tree(first) == [(0, "root"), (1, "a"), (2, "a1"), (1, "b")]
    assert tree(second) == [(0, "a2")]
    assert f"(parent {spans.by_name('a').span_id})" in second


def test_errors_exceptions_and_generations_are_shown(printed: io.StringIO) -> None:
    with tracerelay.span("run", type="agent"):
        with tracerelay.span("llm", attributes={"temperature": 0.2}) as llm:
            llm.record_usage(
                model="gpt-4o-mini", input_tokens=120, output_tokens=30, cost_usd=0.0004
            )
        with pytest.raises(TimeoutError), tracerelay.span("fetch", type="tool"):
            raise TimeoutError("upstream timed out")
        with tracerelay.span("manual") as manual:
            manual.set_status("error", "quota exceeded")
    text = printed.getvalue()
    lines = text.splitlines()
    assert "✗ 2 errors" in lines[0]
    llm_line = next(line for line in lines if "llm  [" in line)
    assert "[generation]" in llm_line
    assert "gpt-4o-mini 120→30 tok $0.0004" in llm_line
    fetch_line = next(line for line in lines if "fetch  [tool]" in line)
    assert fetch_line.endswith("✗ TimeoutError: upstream timed out")
    assert "✗ quota exceeded" in next(line for line in lines if "manual  [span]" in line)
    assert any("temperature=0.2" in line and "·" in line for line in lines)
    assert tree(text) == [(0, "run"), (1, "llm"), (1, "fetch"), (1, "manual")]


def test_an_exception_unlike_the_status_gets_its_own_line(printed: io.StringIO) -> None:
    with tracerelay.span("job") as job:
        job.record_exception(KeyError("missing"))
        job.set_status("error", "gave up after retries")
    text = printed.getvalue()
    assert "✗ gave up after retries" in text
    assert "! KeyError: 'missing'" in text


def test_trace_fields_scores_events_and_metrics(printed: io.StringIO) -> None:
    with tracerelay.span("chat"):
        tracerelay.update_trace(user_id="u-7", session_id="s-1")
        tracerelay.score("helpful", 0.75, comment="thumbs up")
        tracerelay.event("clicked", {"button": "retry"})
    tracerelay.metric("queue.depth", 4, unit="items")
    lines = printed.getvalue().splitlines()
    assert "user_id=u-7 session_id=s-1" in lines[0]
    assert any(line.startswith("• score helpful = 0.75") and "thumbs up" in line for line in lines)
    assert any(line.startswith("• event clicked") and "button=retry" in line for line in lines)
    assert lines[-1] == "metric queue.depth = 4 items"


def test_a_score_for_a_trace_never_seen_here_stands_alone(printed: io.StringIO) -> None:
    tracerelay.score("accuracy", 1.0, trace_id="ab" * 16)
    assert printed.getvalue() == "", "held: the trace's spans may still come"
    tracerelay.flush()
    assert printed.getvalue() == f"score accuracy = 1  trace {'ab' * 16}\n"


def test_flush_and_shutdown_print_what_is_held_marked_incomplete() -> None:
    spans = recorded()
    buffer = io.StringIO()
    exporter = ConsoleExporter(stream=buffer)
    exporter.export([s for s in spans if s.name in ("a", "a1", "a2")])
    assert exporter.force_flush() is True
    text = buffer.getvalue()
    assert "[incomplete: flushed before its root ended]" in headers(text)[0]
    assert tree(text) == [(0, "a"), (1, "a1"), (1, "a2")]
    exporter.export([spans.by_name("b")])
    assert "[late: ended after its trace was printed]" in buffer.getvalue()
    other = recorded()
    exporter.export([other.by_name("a1")])
    exporter.shutdown()
    assert "[incomplete: shut down before its root ended]" in headers(buffer.getvalue())[-1]
    assert exporter.export([other.by_name("root")]) is ExportResult.FAILURE


def test_memory_is_bounded_by_printing_the_oldest_trace_early() -> None:
    buffer = io.StringIO()
    exporter = ConsoleExporter(stream=buffer, max_traces=2)
    children = [recorded().by_name("a1") for _ in range(3)]
    for child in children:
        exporter.export([child])
    [header] = headers(buffer.getvalue())
    assert header.startswith(f"trace {children[0].trace_id}  a1  ")
    assert header.endswith("[incomplete: too many traces held]")


def test_a_trace_whose_root_never_comes_is_printed_at_a_later_batch() -> None:
    buffer = io.StringIO()
    exporter = ConsoleExporter(stream=buffer, wait_for_root=0)
    exporter.export([recorded().by_name("a1")])
    assert "[incomplete: no root within 0 s]" in buffer.getvalue()


def test_a_server_span_with_a_remote_parent_is_a_root(printed: io.StringIO) -> None:
    remote = tracerelay.extract({"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"})
    with tracerelay.span("GET /orders", kind="server", parent=remote), tracerelay.span("query"):
        pass
    text = printed.getvalue()
    assert tree(text) == [(0, "GET /orders"), (1, "query")]
    assert "[span, server]" in text
    assert "orphan" not in text


def test_control_characters_are_escaped_and_attributes_fit_the_width() -> None:
    def work() -> None:
        attributes = {f"key{i}": "x" * 50 for i in range(10)}
        with tracerelay.span("evil\nname\x1b[31m", attributes=attributes):
            pass

    buffer = io.StringIO()
    ConsoleExporter(stream=buffer, width=80).export(recorded(work))
    lines = buffer.getvalue().splitlines()
    assert "evil\\nname\\x1b[31m" in lines[1]
    assert "\x1b" not in buffer.getvalue()
    assert all(len(line) <= 80 for line in lines[2:])


def test_color_only_on_request_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    spans = recorded()
    plain, colored = io.StringIO(), io.StringIO()
    ConsoleExporter(stream=plain).export(spans)
    ConsoleExporter(stream=colored, color=True).export(spans)
    assert "\x1b[" not in plain.getvalue()
    assert "\x1b[" in colored.getvalue()
    assert tree(re.sub(r"\x1b\[[0-9;]*m", "", colored.getvalue())) == EXPECTED
    monkeypatch.setenv("NO_COLOR", "1")
    forced = io.StringIO()
    ConsoleExporter(stream=forced, color=True).export(spans)
    assert forced.getvalue() == plain.getvalue()


def test_a_stream_that_cannot_encode_the_glyphs_gets_ascii() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    ConsoleExporter(stream=stream).export(recorded())
    text = raw.getvalue().decode("ascii")
    assert "`- root  [agent]" in text
    assert "   |- a  [span]" in text


def test_concurrent_exports_never_interleave_a_trace() -> None:
    traces = [recorded() for _ in range(8)]
    buffer = io.StringIO()
    exporter = ConsoleExporter(stream=buffer)
    barrier = threading.Barrier(len(traces))

    def send(spans: CapturedSpans) -> None:
        barrier.wait()
        for span in spans:
            exporter.export([span])

    threads = [threading.Thread(target=send, args=(spans,)) for spans in traces]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    blocks = buffer.getvalue().split("trace ")[1:]
    assert sorted(block.split()[0] for block in blocks) == sorted(s[0].trace_id for s in traces)
    assert all(tree("\n".join(block.splitlines()[1:])) == EXPECTED for block in blocks)


def test_a_failing_stream_reports_failure() -> None:
    stream = io.StringIO()
    stream.close()
    assert ConsoleExporter(stream=stream).export(recorded()) is ExportResult.FAILURE

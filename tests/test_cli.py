"""The ``tracerelay`` command line: the demo end to end, version, usage and configuration errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from tracerelay import __version__, cli

SCRIPT = Path(sys.executable).with_name("tracerelay")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI reads TRACERELAY_* like any application; the developer's own must not leak in.
    for name in list(os.environ):
        if name.startswith("TRACERELAY_") or name == "NO_COLOR":
            monkeypatch.delenv(name)


def run_script(cwd: Path, *args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``tracerelay`` console script, as a user's shell would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACERELAY_")}
    env.update(environment, PYTHONIOENCODING="utf-8")
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        env=env,
        cwd=cwd,
        check=False,
    )


def test_demo_prints_a_tree_per_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--traces", "2"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len([line for line in lines if line.startswith("trace ")]) == 2
    assert lines.count("") == 0
    tops = [line for line in lines if line.startswith("└─ answer_question  [agent]")]
    assert len(tops) == 2
    for needed in (
        "├─ plan  [generation]",
        "├─ retrieve_documents  [retrieval]",
        "├─ lookup_order  [tool]",
        "│  ├─ fetch_profile  [tool]",
    ):
        assert sum(needed in line for line in lines) == 2, needed
    assert sum("demo-model" in line and "tok $" in line for line in lines) == 4
    errors = [line for line in lines if "check_inventory  [tool]" in line]
    assert len(errors) == 2
    assert all("✗ " in line and "inventory service unavailable" in line for line in errors)
    assert "• score answer_relevance = 0.9" in out
    assert "metric demo.traces = 2 traces" in out


def test_demo_to_jsonl_writes_complete_trees(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "out" / "demo.jsonl"
    assert cli.main(["demo", "--traces", "3", "--exporter", "jsonl", "--output", str(path)]) == 0
    out = capsys.readouterr().out
    assert str(path) in out
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert f"wrote {len(events)} records (3 traces)" in out
    assert all(e["resource"]["service.name"] == "tracerelay-demo" for e in events)
    spans = [e["payload"] for e in events if e["event_type"] == "observation_create"]
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        by_trace[span["trace_id"]].append(span)
    assert len(by_trace) == 3
    for trace in by_trace.values():
        ids = {s["span_id"] for s in trace}
        assert [s["name"] for s in trace if s["parent_span_id"] is None] == ["answer_question"]
        assert all(s["parent_span_id"] in ids for s in trace if s["parent_span_id"] is not None)
        types = Counter(s["type"] for s in trace)
        assert types["agent"] == 1
        assert types["generation"] == 2
        assert types["retrieval"] == 1
        assert types["tool"] >= 5
        failed = [s for s in trace if s["status"]["code"] == "error"]
        assert [s["name"] for s in failed] == ["check_inventory"]
    kinds = Counter(e["event_type"] for e in events)
    assert kinds["quality_score_create"] == 3
    assert kinds["trace_update"] == 3


def test_a_bad_setting_exits_2_with_its_code_and_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRACERELAY_BATCH_MAX_SIZE", "0")
    assert cli.main(["demo"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "TR-CONFIG-RANGE" in captured.err
    assert "TRACERELAY_BATCH_MAX_SIZE" in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bogus"], "invalid choice: 'bogus'"),
        ([], "required: COMMAND"),
        (["demo", "--traces", "0"], "must be from 1 to 1000"),
        (["demo", "--exporter", "xml"], "invalid choice: 'xml'"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_output_without_jsonl_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--output", "x.jsonl"]) == 2
    assert "--output needs --exporter jsonl" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"tracerelay {__version__}"


@pytest.mark.skipif(not SCRIPT.exists(), reason="console script not installed in this environment")
def test_the_console_script_runs_the_demo(tmp_path: Path) -> None:
    done = run_script(tmp_path, "demo", "--traces", "1")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "└─ answer_question  [agent]" in done.stdout
    assert "├─ plan  [generation]" in done.stdout
    assert "check_inventory  [tool]" in done.stdout
    assert list(tmp_path.iterdir()) == [], "the console demo writes no file"


@pytest.mark.skipif(not SCRIPT.exists(), reason="console script not installed in this environment")
def test_the_console_script_reports_bad_config_without_traceback(tmp_path: Path) -> None:
    done = run_script(tmp_path, "demo", TRACERELAY_MODE="sometimes")
    assert done.returncode == 2
    assert "TR-CONFIG-CHOICE" in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_sends_to_a_server_with_the_http_exporter(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tracerelay.mock import MockServer

    with MockServer(seed=1) as server:
        argv = ["demo", "--traces", "2", "--exporter", "http", "--endpoint", server.url]
        assert cli.main(argv) == 0
        received = len(server.received)
    out = capsys.readouterr().out
    assert received > 20  # two agent runs: a dozen spans each, plus scores, events, metrics
    assert f"sent {received} records (2 traces) to {server.url}; 0 waiting" in out

"""Services, the dependency graph, RED metrics and token usage, over a time window."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.server.support import RunningServer, running_server
from tracerelay.ids import new_event_id

NOW_NS = time.time_ns()


def span(
    trace: int, span_id: int, parent: int | None, name: str, duration_ms: float, **more: Any
) -> dict[str, Any]:
    start = NOW_NS - 3_600 * 10**9 + span_id * 1000
    return {
        "event_id": new_event_id(),
        "event_type": "observation_create",
        "timestamp": time.time(),
        "payload": {
            "trace_id": f"{trace:032x}", "span_id": f"{span_id:016x}",
            "parent_span_id": None if parent is None else f"{parent:016x}", "name": name,
            "start_time_unix_nano": start, "end_time_unix_nano": start + int(duration_ms * 1e6),
            **more,
        },
    }  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[RunningServer]:
    api, db = [], []
    for t in range(1, 11):  # ten requests: api "GET /" → db "query"
        root = t * 100
        api.append(span(t, root, None, "GET /", 10 * t))
        failed = {"status": {"code": "error", "message": "timeout"}} if t == 10 else {}
        db.append(span(t, root + 1, root, "query", t, **failed))
        api.append(span(t, root + 2, root, "llm", 5, type="generation", model="gpt-x",
                        usage={"input_tokens": 10, "output_tokens": 2, "total_tokens": 12},
                        cost_usd=0.001))  # fmt: skip
    with running_server(tmp_path_factory.mktemp("analytics"), database_url=database_url) as running:
        with running.client() as client:
            for service, events in (("api", api), ("db", db)):
                response = client.post(
                    "/v1/telemetry/batch",
                    json={"events": events, "resource": {"service.name": service}},
                )
                assert response.status_code == 200, response.text
        yield running


def get(server: RunningServer, path: str, **params: Any) -> Any:
    with server.client() as client:
        response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_services_with_their_spans_and_errors(server: RunningServer) -> None:
    rows = get(server, "/v1/services")["services"]
    assert [(r["service"], r["spans"], r["errors"]) for r in rows] == [
        ("api", 20, 0),
        ("db", 10, 1),
    ]


def test_dependencies_follow_parent_child_edges_across_services(server: RunningServer) -> None:
    assert get(server, "/v1/dependencies")["dependencies"] == [
        {"parent": "api", "child": "db", "calls": 10, "errors": 1}
    ]


def test_red_metrics_per_service_and_operation(server: RunningServer) -> None:
    rows = {(r["service"], r["operation"]): r for r in get(server, "/v1/metrics/red")["operations"]}
    root = rows[("api", "GET /")]
    assert root["count"] == 10 and root["errors"] == 0
    assert (root["p50_ms"], root["p95_ms"], root["p99_ms"]) == (50, 100, 100)
    query = rows[("db", "query")]
    assert query["error_rate"] == 0.1 and query["p50_ms"] == 5
    assert query["rate_per_s"] == pytest.approx(10 / 86_400)
    only_db = get(server, "/v1/metrics/red", service="db")["operations"]
    assert [r["operation"] for r in only_db] == ["query"]


def test_usage_per_model(server: RunningServer) -> None:
    (model,) = get(server, "/v1/usage")["models"]
    assert model["model"] == "gpt-x" and model["generations"] == 10
    assert (model["input_tokens"], model["output_tokens"], model["total_tokens"]) == (100, 20, 120)
    assert model["cost_usd"] == pytest.approx(0.01)


def test_the_window_excludes_what_is_outside_it(server: RunningServer) -> None:
    recent = get(server, "/v1/services", since=time.time() - 60)
    assert recent["services"] == []
    with server.client() as client:
        bad = client.get("/v1/usage", params={"since": "last week"})
    assert bad.status_code == 400 and bad.json()["code"] == "TR-QUERY-FILTER"

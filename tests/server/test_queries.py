"""``GET /v1/traces``: SPEC §2's filters, newest first, and cursor paging that neither
skips nor repeats a trace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server.support import RunningServer, running_server
from tracerelay.ids import new_event_id
from tracerelay.server.ingest.events import observation_write
from tracerelay.server.storage.base import TraceQuery
from tracerelay.server.storage.merge import version_of
from tracerelay.server.storage.rows import WriteBatch
from tracerelay.server.storage.sqlite import SqliteStore

BASE = 1_700_000_000_000_000_000


def root(trace: int, *, start_s: float, duration_ms: float, **more: Any) -> dict[str, Any]:
    start = BASE + int(start_s * 1e9)
    return {
        "event_id": new_event_id(),
        "event_type": "observation_create",
        "timestamp": 1_700_000_000.0,
        "payload": {
            "trace_id": f"{trace:032x}",
            "span_id": f"{trace:016x}",
            "parent_span_id": None,
            "name": more.pop("name", "handle"),
            "start_time_unix_nano": start,
            "end_time_unix_nano": start + int(duration_ms * 1e6),
            **more,
        },
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("queries"), database_url=database_url) as running:
        api = [
            root(1, start_s=1, duration_ms=5, attributes={"plan": "pro", "n": 3}),
            root(2, start_s=2, duration_ms=500, status={"code": "error"}),
        ]
        worker = [
            root(3, start_s=3, duration_ms=50, attributes={"plan": "free"}),
            root(4, start_s=4, duration_ms=5000, name="nightly"),
        ]
        users = [
            {"event_id": new_event_id(), "event_type": "trace_update", "timestamp": 1.0,
             "payload": {"trace_id": f"{t:032x}", "user_id": u, "session_id": "s1"}}
            for t, u in ((1, "ann"), (3, "bob"))
        ]  # fmt: skip
        with running.client() as client:
            for service, events in (("api", api), ("worker", worker + users)):
                response = client.post(
                    "/v1/telemetry/batch",
                    json={"events": events, "resource": {"service.name": service}},
                )
                assert response.status_code == 200, response.text
        yield running


def ids(server: RunningServer, **params: Any) -> list[int]:
    with server.client() as client:
        response = client.get("/v1/traces", params=params)
    assert response.status_code == 200, response.text
    return [int(t["trace_id"], 16) for t in response.json()["traces"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [4, 3, 2, 1]),
        ({"service": "worker"}, [4, 3]),
        ({"name": "nightly"}, [4]),
        ({"status": "error"}, [2]),
        ({"status": "ok", "service": "api"}, [1]),
        ({"min_duration_ms": 50}, [4, 3, 2]),
        ({"since": (BASE + 2_000_000_000) / 1e9}, [4, 3, 2]),
        ({"until": "2023-11-14T22:13:23Z"}, [2, 1]),
        ({"user_id": "bob"}, [3]),
        ({"session_id": "s1"}, [3, 1]),
        ({"attr.plan": "pro"}, [1]),
        ({"attr.n": "3"}, [1]),
        ({"attr.plan": "gold"}, []),
    ],
)
def test_each_filter_selects_its_traces_newest_first(
    server: RunningServer, params: dict[str, Any], expected: list[int]
) -> None:
    assert ids(server, **params) == expected


def test_a_trace_summary_says_what_a_list_shows(server: RunningServer) -> None:
    with server.client() as client:
        (trace,) = client.get("/v1/traces", params={"user_id": "ann"}).json()["traces"]
    assert trace["name"] == "handle" and trace["service"] == "api"
    assert trace["duration_ms"] == 5 and trace["span_count"] == 1 and trace["error_count"] == 0


@pytest.mark.parametrize(
    "params",
    [{"status": "broken"}, {"limit": 0}, {"since": "yesterday"}, {"cursor": "%%%"},
     {"colour": "red"}, {"attr.bad key": "x"}],
)  # fmt: skip
def test_bad_filters_get_a_coded_400(server: RunningServer, params: dict[str, Any]) -> None:
    with server.client() as client:
        response = client.get("/v1/traces", params=params)
    assert response.status_code == 400 and response.json()["code"] == "TR-QUERY-FILTER"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    starts=st.lists(st.integers(0, 5), min_size=1, max_size=30),
    limit=st.integers(1, 7),
)
def test_pages_cover_every_trace_once_in_order(
    tmp_path_factory: pytest.TempPathFactory, starts: list[int], limit: int
) -> None:
    # Start times collide on purpose: the cursor must break ties by trace id.
    store = SqliteStore(str(tmp_path_factory.mktemp("paging") / "db.sqlite"))
    try:
        batch = WriteBatch("p")
        for n, start in enumerate(starts, start=1):
            payload = {"trace_id": f"{n:032x}", "span_id": f"{n:016x}", "name": "x",
                       "start_time_unix_nano": start, "end_time_unix_nano": start + 1}  # fmt: skip
            event_id = f"{n:026d}"
            batch.spans.append(observation_write("p", payload, version_of(1.0, event_id), event_id))
        store.write([batch])
        seen: list[tuple[int, str]] = []
        before = None
        while True:
            page = store.search_traces("p", TraceQuery(limit=limit, before=before))
            seen += [(row["start_ns"], row["trace_id"]) for row in page]
            if len(page) < limit:
                break
            before = seen[-1]
        expected = sorted(((s, f"{n:032x}") for n, s in enumerate(starts, 1)), reverse=True)
        assert seen == expected
    finally:
        store.close()


def test_the_api_cursor_walks_all_pages(server: RunningServer) -> None:
    walked: list[int] = []
    cursor = None
    with server.client() as client:
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            body = client.get("/v1/traces", params=params).json()
            walked += [int(t["trace_id"], 16) for t in body["traces"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
    assert walked == [4, 3, 2, 1]


def test_another_projects_traces_are_not_listed(server: RunningServer, tmp_path: Path) -> None:
    from tracerelay.server.app import open_store
    from tracerelay.server.keys import make_key

    store = open_store(server.settings)
    try:
        other, _ = make_key(store, "other", frozenset({"read"}))
    finally:
        store.close()
    with server.client(other) as client:
        assert client.get("/v1/traces").json() == {"traces": [], "next_cursor": None}


def test_one_trace_is_read_by_its_key_not_by_scanning_the_project(tmp_path: Path) -> None:
    # At millions of spans a plan walking the project's (project, start) index would take
    # seconds; the primary key reads just the trace, whatever the statistics say.
    import sqlite3

    from tracerelay.server.storage.sqlite import TRACE_SPANS

    store = SqliteStore(str(tmp_path / "db.sqlite"))
    store.close()
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        db.execute("ANALYZE")
        plan = " ".join(
            row[3] for row in db.execute("EXPLAIN QUERY PLAN " + TRACE_SPANS, ("p", "t"))
        )
    assert "(project_id=? AND trace_id=?)" in plan, plan

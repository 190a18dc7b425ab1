"""Migrations keep what was stored: spans written under an older schema read back the
same after the server upgrades the database, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from tracerelay.server.storage.migrate import upgrade
from tracerelay.server.storage.postgres import PostgresStore
from tracerelay.server.storage.sqlite import SqliteStore

TRACE = "ab" * 16
# Two spans as revision 0002 stored them: 21 columns, versions inside the body.
OLD_SPANS: list[dict[str, Any]] = [
    {
        "project_id": "p", "trace_id": TRACE, "span_id": "01" * 8, "parent_span_id": None,
        "name": "agent", "kind": "server", "type": "agent", "service": "svc",
        "environment": "prod", "start_ns": 1_000, "end_ns": 5_000, "duration_ns": 4_000,
        "status_code": "error", "status_message": "boom", "model": None,
        "input_tokens": None, "output_tokens": None, "total_tokens": None, "cost_usd": None,
        "sequence": 1,
        "body": {"attributes": {"user": "u1"}, "v": "00000000000000000001:A",
                 "o": {"attr:user": "00000000000000000002:B"},
                 "events": [{"name": "e", "time_unix_nano": 2_000}], "input": {"q": "hi"}},
    },
    {
        "project_id": "p", "trace_id": TRACE, "span_id": "02" * 8, "parent_span_id": "01" * 8,
        "name": "llm", "kind": "client", "type": "generation", "service": "svc",
        "environment": None, "start_ns": 2_000, "end_ns": 3_000, "duration_ns": 1_000,
        "status_code": "unset", "status_message": "", "model": "gpt",
        "input_tokens": 3, "output_tokens": 4, "total_tokens": 7, "cost_usd": 0.25,
        "sequence": 2,
        "body": {"attributes": {}, "v": "00000000000000000001:C",
                 "usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}},
    },
]  # fmt: skip


def _store_old_spans(url: str) -> None:
    upgrade(url, "0002")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as db:
            columns = list(OLD_SPANS[0])
            db.execute(
                sa.text(
                    f"INSERT INTO spans ({', '.join(columns)}) "
                    f"VALUES ({', '.join(':' + c for c in columns)})"
                ),
                [{**span, "body": json.dumps(span["body"])} for span in OLD_SPANS],
            )
            db.execute(
                sa.text(
                    "INSERT INTO traces (project_id, trace_id, start_ns, end_ns, span_count) "
                    "VALUES ('p', :t, 1000, 5000, 2)"
                ),
                {"t": TRACE},
            )
    finally:
        engine.dispose()


def _check(store: Any, url: str) -> None:
    found = store.get_trace("p", TRACE)
    assert found is not None
    agent, llm = (orjson.loads(span[3]) for span in found["spans"])
    assert agent == {
        "span_id": "01" * 8, "parent_span_id": None, "name": "agent", "service": "svc",
        "start_time_unix_nano": 1_000, "end_time_unix_nano": 5_000, "duration_ms": 0.004,
        "sequence": 1, "model": None, "kind": "server", "type": "agent",
        "status": {"code": "error", "message": "boom"}, "attributes": {"user": "u1"},
        "events": [{"name": "e", "time_unix_nano": 2_000}], "links": [],
        "input": {"q": "hi"}, "environment": "prod",
    }  # fmt: skip
    assert llm["model"] == "gpt" and llm["cost_usd"] == 0.25
    assert llm["status"] == {"code": "unset", "message": ""}
    assert llm["usage"] == {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    assert "environment" not in llm
    # The merge's versions moved to their own column, unchanged.
    engine = sa.create_engine(url)
    try:
        with engine.connect() as db:
            versions = db.execute(
                sa.text("SELECT versions FROM spans WHERE span_id = :s"), {"s": "01" * 8}
            ).scalar_one()
    finally:
        engine.dispose()
    assert orjson.loads(versions) == {
        "v": "00000000000000000001:A", "o": {"attr:user": "00000000000000000002:B"}
    }  # fmt: skip
    assert store.usage("p", 0, 10_000) == [
        {"model": "gpt", "generations": 1, "input_tokens": 3, "output_tokens": 4,
         "total_tokens": 7, "cost_usd": 0.25}
    ]  # fmt: skip
    (red,) = [r for r in store.red("p", 0, 10_000, "svc") if r["operation"] == "agent"]
    assert (red["count"], red["errors"], red["p50"]) == (1, 1, 4_000)


def test_sqlite_spans_survive_the_narrowing_of_the_spans_table(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    _store_old_spans(f"sqlite:///{path}")
    store = SqliteStore(str(path))
    try:
        _check(store, f"sqlite:///{path}")
    finally:
        store.close()


def test_postgresql_spans_survive_the_narrowing_of_the_spans_table(postgres_url: str) -> None:
    url = postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)
    _store_old_spans(url)
    store = PostgresStore(postgres_url)
    try:
        _check(store, url)
    finally:
        store.close()


@pytest.mark.parametrize("revision", ["0001", "0002"])
def test_an_older_empty_database_upgrades_to_the_current_schema(
    tmp_path: Path, revision: str
) -> None:
    path = tmp_path / "db.sqlite"
    upgrade(f"sqlite:///{path}", revision)
    store = SqliteStore(str(path))
    try:
        assert store.get_trace("p", TRACE) is None
        assert store.usage("p", 0, 10) == []
    finally:
        store.close()


def test_postgresql_finds_spans_of_a_time_window_through_a_brin_index(
    postgres_url: str,
) -> None:
    store = PostgresStore(postgres_url)
    store.close()
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as db:
            kinds = dict(db.execute(sa.text(
                "SELECT i.relname, am.amname FROM pg_index x "
                "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
                "JOIN pg_am am ON am.oid = i.relam WHERE t.relname = 'spans'"
            )).all())  # fmt: skip
            assert kinds.get("spans_by_start_brin") == "brin"
            assert "spans_by_start" not in kinds
            # 100,000 spans arriving in start order, then an hour's window of them.
            db.execute(sa.text(
                "INSERT INTO spans (project_id, trace_id, span_id, name, service, start_ns, "
                "end_ns, versions, body) SELECT 'p', lpad(to_hex(n / 100), 32, '0'), "
                "lpad(to_hex(n), 16, '0'), 'op', 'svc', n::bigint * 1000000000, "
                "n::bigint * 1000000000 + 5, '{}', '{}' FROM generate_series(1, 100000) AS n"
            ))  # fmt: skip
            db.execute(sa.text("ANALYZE spans"))
            plan = "\n".join(row[0] for row in db.execute(sa.text(
                "EXPLAIN SELECT service, count(*) FROM spans WHERE project_id = 'p' "
                "AND start_ns >= 50000000000000 AND start_ns < 53600000000000 GROUP BY service"
            )))  # fmt: skip
            assert "spans_by_start_brin" in plan, plan
    finally:
        engine.dispose()

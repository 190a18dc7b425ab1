"""Spans in fewer columns: what queries filter, group or join on; the rest in the body.

The ``spans`` table had 21 columns, and SQLite pays about a microsecond a
column for every row it inserts. Kind, type, environment, the status message,
cost and token counts move into the JSON body (SPEC §1's names); duration is
computed from start and end; the merge's versions get a column of their own, and
the body becomes the span as ``GET /v1/traces/{id}`` returns it (but for its trace
id), sent as stored. The (project, service, start) index
goes too: per-service questions are asked over a time window, which the
(project, start) index already narrows.

Existing rows are rewritten in pages, in Python, by this file's own code
(it must not change when the store's code does).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_PAGE = 2000
_OLD = (
    "project_id", "trace_id", "span_id", "parent_span_id", "name", "kind", "type", "service",
    "environment", "start_ns", "end_ns", "duration_ns", "status_code", "status_message",
    "model", "input_tokens", "output_tokens", "total_tokens", "cost_usd", "sequence", "body",
)  # fmt: skip
_FROM_OLD_BODY = ("input", "output", "usage", "trace_state", "scope")


def upgrade() -> None:
    new = op.create_table(
        "spans_v3",
        sa.Column("project_id", sa.Text, nullable=False),
        sa.Column("trace_id", sa.Text, nullable=False),
        sa.Column("span_id", sa.Text, nullable=False),
        sa.Column("parent_span_id", sa.Text),
        sa.Column("name", sa.Text),
        sa.Column("service", sa.Text),
        sa.Column("start_ns", sa.BigInteger),
        sa.Column("end_ns", sa.BigInteger),
        sa.Column("sequence", sa.BigInteger),
        sa.Column("status_code", sa.Text),
        sa.Column("model", sa.Text),
        sa.Column("versions", sa.Text, nullable=False),
        sa.Column("body", JSON, nullable=False),
        sa.PrimaryKeyConstraint("project_id", "trace_id", "span_id"),
    )
    bind = op.get_bind()
    old = sa.table("spans", *(sa.column(name) for name in _OLD))
    key = (old.c.project_id, old.c.trace_id, old.c.span_id)
    after: tuple[Any, ...] | None = None
    while True:
        query = sa.select(old).order_by(*key).limit(_PAGE)
        if after is not None:
            query = query.where(sa.tuple_(*key) > sa.tuple_(*after))
        rows = [dict(row._mapping) for row in bind.execute(query)]
        if not rows:
            break
        bind.execute(new.insert(), [_narrow(row) for row in rows])
        last = rows[-1]
        after = (last["project_id"], last["trace_id"], last["span_id"])
    op.drop_table("spans")
    op.rename_table("spans_v3", "spans")
    op.create_index("spans_by_start", "spans", ["project_id", "start_ns"])


def _narrow(row: dict[str, Any]) -> dict[str, Any]:
    old = row["body"]
    old = json.loads(old) if isinstance(old, (str, bytes)) else old
    code = row["status_code"] or "unset"
    start, end = row["start_ns"], row["end_ns"]
    body: dict[str, Any] = {
        "span_id": row["span_id"],
        "parent_span_id": row["parent_span_id"],
        "name": row["name"],
        "service": row["service"],
        "start_time_unix_nano": start,
        "end_time_unix_nano": end,
        "duration_ms": (end - start) / 1e6 if start is not None and end is not None else None,
        "sequence": row["sequence"],
        "model": row["model"],
        "kind": row["kind"],
        "type": row["type"],
        "status": {"code": code, "message": row["status_message"] or ""},
        "attributes": old.get("attributes") or {},
        "events": old.get("events") or [],
        "links": old.get("links") or [],
    }
    for name in _FROM_OLD_BODY:
        if old.get(name) is not None:
            body[name] = old[name]
    if row["cost_usd"] is not None:
        body["cost_usd"] = row["cost_usd"]
    if row["environment"] is not None:
        body["environment"] = row["environment"]
    versions: dict[str, Any] = {"v": old["v"]}
    if old.get("o"):
        versions["o"] = old["o"]
    return {
        "project_id": row["project_id"],
        "trace_id": row["trace_id"],
        "span_id": row["span_id"],
        "parent_span_id": row["parent_span_id"],
        "name": row["name"],
        "service": row["service"],
        "start_ns": row["start_ns"],
        "end_ns": row["end_ns"],
        "sequence": row["sequence"],
        "status_code": code,
        "model": row["model"],
        "versions": json.dumps(versions, separators=(",", ":")),
        "body": body,
    }

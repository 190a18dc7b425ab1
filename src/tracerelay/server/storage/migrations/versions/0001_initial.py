"""The initial schema: projects, keys, spans, traces, scores, records.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_hash", sa.Text, primary_key=True),
        sa.Column("key_id", sa.Text, nullable=False, unique=True),
        sa.Column("project_id", sa.Text, sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float),
    )
    op.create_table(
        "spans",
        sa.Column("project_id", sa.Text, nullable=False),
        sa.Column("trace_id", sa.Text, nullable=False),
        sa.Column("span_id", sa.Text, nullable=False),
        sa.Column("parent_span_id", sa.Text),
        sa.Column("name", sa.Text),
        sa.Column("kind", sa.Text),
        sa.Column("type", sa.Text),
        sa.Column("service", sa.Text),
        sa.Column("environment", sa.Text),
        sa.Column("start_ns", sa.BigInteger),
        sa.Column("end_ns", sa.BigInteger),
        sa.Column("duration_ns", sa.BigInteger),
        sa.Column("status_code", sa.Text),
        sa.Column("status_message", sa.Text),
        sa.Column("model", sa.Text),
        sa.Column("input_tokens", sa.BigInteger),
        sa.Column("output_tokens", sa.BigInteger),
        sa.Column("total_tokens", sa.BigInteger),
        sa.Column("cost_usd", sa.Float),
        sa.Column("sequence", sa.BigInteger),
        # Everything else of the span, and the versions of its fields (storage/merge.py).
        sa.Column("body", JSON, nullable=False),
        sa.PrimaryKeyConstraint("project_id", "trace_id", "span_id"),
    )
    op.create_index("spans_by_start", "spans", ["project_id", "start_ns"])
    op.create_index("spans_by_service", "spans", ["project_id", "service", "start_ns"])
    op.create_table(
        "traces",
        sa.Column("project_id", sa.Text, nullable=False),
        sa.Column("trace_id", sa.Text, nullable=False),
        # Derived from the trace's spans on every write that touches them.
        sa.Column("root_name", sa.Text),
        sa.Column("service", sa.Text),
        sa.Column("start_ns", sa.BigInteger),
        sa.Column("end_ns", sa.BigInteger),
        sa.Column("span_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error_count", sa.Integer, nullable=False, server_default="0"),
        # Set by trace_create / trace_update events (merged as registers).
        sa.Column("name", sa.Text),
        sa.Column("user_id", sa.Text),
        sa.Column("session_id", sa.Text),
        sa.Column("body", JSON),
        sa.PrimaryKeyConstraint("project_id", "trace_id"),
    )
    op.create_index("traces_by_start", "traces", ["project_id", "start_ns"])
    op.create_index("traces_by_service", "traces", ["project_id", "service", "start_ns"])
    op.create_index("traces_by_user", "traces", ["project_id", "user_id"])
    op.create_index("traces_by_session", "traces", ["project_id", "session_id"])
    op.create_table(
        "records",
        # Scores, metrics and generic events: one row per event, keyed by its id.
        sa.Column("project_id", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("trace_id", sa.Text),
        sa.Column("span_id", sa.Text),
        sa.Column("name", sa.Text),
        sa.Column("time_ns", sa.BigInteger, nullable=False),
        sa.Column("body", JSON, nullable=False),
        sa.PrimaryKeyConstraint("project_id", "event_id"),
    )
    op.create_index("records_by_trace", "records", ["project_id", "trace_id"])
    op.create_index("records_by_time", "records", ["project_id", "event_type", "time_ns"])

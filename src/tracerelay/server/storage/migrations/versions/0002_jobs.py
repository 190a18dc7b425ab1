"""Jobs: batches sent with async_mode, kept until processed.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.Text, primary_key=True),
        sa.Column("project_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),  # queued, done
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("body", sa.LargeBinary),  # the batch as received (JSON), until processed
        sa.Column("result", sa.Text),  # the answer a synchronous request would have had
    )
    op.create_index("jobs_queued", "jobs", ["status", "created_at"])

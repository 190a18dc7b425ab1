"""PostgreSQL: spans found by time through a BRIN index instead of a B-tree.

Spans arrive roughly in the order they start, so the table's pages are ordered
by start time too, and a block-range index (BRIN: each 32 pages' least and
greatest start) narrows a time window to the pages that hold it. It is a few
kilobytes where the (project, start) B-tree grew with every span, and it costs
next to nothing to keep up on insert. Per-project questions over a window read
the window's pages and keep their project's rows. SQLite has no BRIN and keeps
its B-tree.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("spans_by_start", table_name="spans")
    op.execute(
        "CREATE INDEX spans_by_start_brin ON spans USING brin (start_ns) "
        "WITH (pages_per_range = 32)"
    )

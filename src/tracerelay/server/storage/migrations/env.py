"""Alembic environment: runs the package's migrations on the connection the server gives.

The server calls ``tracerelay.server.storage.migrate.upgrade`` at start; there is
no ``alembic.ini`` to keep in step.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

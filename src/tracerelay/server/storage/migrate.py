"""Apply the package's Alembic migrations to a database, at server start."""

from __future__ import annotations

import os

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

__all__ = ["upgrade"]

_SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")


def upgrade(sqlalchemy_url: str, revision: str = "head") -> None:
    """Bring the database at ``sqlalchemy_url`` to the newest schema, or to ``revision``
    (idempotent)."""
    engine = create_engine(sqlalchemy_url)
    try:
        with engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", _SCRIPTS)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()

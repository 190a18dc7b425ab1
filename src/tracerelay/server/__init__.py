"""The tracerelay server (``tracerelay serve``), installed with the ``server`` extra.

Data flows one way and the folders show it::

    api/       HTTP: auth, ingest, OTLP, queries, health (one router per resource)
    ingest/    body limits and decompression, validation, events → rows
    storage/   one narrow Store interface; SQLite (default) and PostgreSQL
    dedup.py   event ids seen recently (in-process, or Redis)
    keys.py    projects' API keys: made, hashed, checked

Nothing here is imported by the SDK: ``import tracerelay`` never loads FastAPI.
"""

from __future__ import annotations

__all__ = ["create_app"]


def __getattr__(name: str) -> object:
    if name == "create_app":
        from tracerelay.server.app import create_app

        return create_app
    raise AttributeError(name)

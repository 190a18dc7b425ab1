"""API keys: made with a secret, stored as a hash, checked on every request.

A key reads ``tr_<40 url-safe characters>``; only its SHA-256 is stored (a key
is 240 random bits, so a slow hash would add nothing). Its public id,
``key_id``, is a prefix of that hash: what ``tracerelay keys list`` shows and
``revoke`` takes. Scopes: ``ingest`` (write), ``read`` (queries), ``admin``.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from tracerelay.server.storage.base import ApiKey, Store

__all__ = ["SCOPES", "hash_key", "make_key"]

SCOPES = frozenset({"ingest", "read", "admin"})


def hash_key(key: str) -> str:
    """The stored form of ``key``."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def make_key(
    store: Store,
    project: str,
    scopes: frozenset[str],
    *,
    name: str | None = None,
    key: str | None = None,
) -> tuple[str, ApiKey]:
    """Make (or, given ``key``, register) a key for ``project``, creating the project
    if needed; returns the key, shown once, and what was stored."""
    unknown = scopes - SCOPES
    if unknown or not scopes:
        raise ValueError(
            f"scopes must be some of {', '.join(sorted(SCOPES))}, not {sorted(scopes)}"
        )
    key = key or "tr_" + secrets.token_urlsafe(30)
    digest = hash_key(key)
    project_id = store.ensure_project(project)
    stored = ApiKey(
        "k_" + digest[:12], digest, project_id, project, frozenset(scopes), name, time.time(), None
    )
    store.add_key(stored)
    return key, stored

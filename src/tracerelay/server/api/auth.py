"""Who is calling: a Bearer key → its project and scopes, or a coded 401/403.

Keys are looked up by their hash; a found key is cached for a few seconds so a
busy ingest does not read the keys table per request (a revoked key stops
working within that time).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from tracerelay.server.keys import hash_key
from tracerelay.server.storage.base import ApiKey, Store

__all__ = ["Ingesting", "KeyCache", "Principal", "Reading", "require"]

_CACHE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: its key's project and scopes."""

    project_id: str
    scopes: frozenset[str]
    key_id: str


class KeyCache:
    """Key hash → stored key, remembered for a few seconds."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, tuple[ApiKey | None, float]] = {}

    async def lookup(self, key: str) -> ApiKey | None:
        digest = hash_key(key)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is not None and now - hit[1] < _CACHE_SECONDS:
            return hit[0]
        found = await run_in_threadpool(self.store.key_by_hash, digest)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (found, now)
        return found


def _deny(status: int, code: str, message: str, fix: str) -> HTTPException:
    return HTTPException(status, {"code": code, "message": message, "fix": fix})


def require(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency admitting callers whose key has ``scope`` (``admin`` has all)."""

    async def dependency(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise _deny(
                401,
                "TR-AUTH-MISSING",
                "no API key: send Authorization: Bearer <key>",
                "set TRACERELAY_API_KEY (or api_key=) to a key from `tracerelay keys create`.",
            )
        found = await request.app.state.server.keys.lookup(key.strip())
        if found is None or found.revoked_at is not None:
            raise _deny(
                401,
                "TR-AUTH-INVALID",
                "the API key is unknown or revoked",
                "check the key; `tracerelay keys list` shows the active ones.",
            )
        if scope not in found.scopes and "admin" not in found.scopes:
            raise _deny(
                403,
                "TR-AUTH-SCOPE",
                f"the API key lacks the {scope!r} scope",
                f"use a key made with --scopes {scope}.",
            )
        return Principal(found.project_id, found.scopes, found.key_id)

    return dependency


Ingesting = Annotated[Principal, Depends(require("ingest"))]
"""A caller allowed to write (``ingest`` scope)."""
Reading = Annotated[Principal, Depends(require("read"))]
"""A caller allowed to query (``read`` scope)."""

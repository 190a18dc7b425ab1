"""``create_app``: the FastAPI application, its lifespan and the state its routers share.

At start (the lifespan): open the store (migrations applied), make the first
project and admin key on an empty store, start the writer (a thread grouping
batches, writing them through a child process, storage/process.py). At stop:
write what is queued, close the store. Every router reads the shared state
from ``app.state.server``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tracerelay._version import __version__
from tracerelay.server import jobs
from tracerelay.server.api import analytics, ingest, ops, otlp, traces
from tracerelay.server.api.auth import KeyCache
from tracerelay.server.api.ingest import error_response
from tracerelay.server.dedup import SeenIds
from tracerelay.server.jobs import run_jobs
from tracerelay.server.keys import make_key
from tracerelay.server.metrics import ServerMetrics
from tracerelay.server.ratelimit import RateLimiter
from tracerelay.server.settings import ServerSettings
from tracerelay.server.storage.base import Store
from tracerelay.server.storage.process import WriterProcess, open_database
from tracerelay.server.storage.writer import Writer

__all__ = ["ServerState", "create_app", "open_store"]

logger = logging.getLogger("tracerelay.server")


@dataclass
class ServerState:
    """What the routers share: settings, store, writer, dedup, key cache, metrics."""

    settings: ServerSettings
    store: Store
    writer: Writer
    seen: Any  # SeenIds, or RedisSeen (tracerelay.server.shared) with --redis-url
    keys: KeyCache
    metrics: ServerMetrics
    retention_runs: int = 0
    jobs_waiting: asyncio.Event = field(default_factory=asyncio.Event)
    limiter: RateLimiter | None = None


def open_store(settings: ServerSettings) -> Store:
    """The store ``settings.database_url`` names, migrated to the newest schema."""
    return open_database(settings.sqlite_path, settings.database_url)


def bootstrap(store: Store, settings: ServerSettings) -> str | None:
    """On an empty store, make project ``default`` and an admin key: the given bootstrap
    key, or a new one, printed once and written to a 0600 file beside the database.
    Returns the key made, if any."""
    if store.project_count():
        return None
    key, _ = make_key(
        store, "default", frozenset({"ingest", "read", "admin"}), name="bootstrap",
        key=settings.bootstrap_key,
    )  # fmt: skip
    if settings.bootstrap_key is None:
        path = settings.sqlite_path
        folder = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
        key_file = os.path.join(folder, "tracerelay-admin-key")
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(key + "\n")
        print(
            f"tracerelay: created project 'default' and its admin key (shown once, also in "
            f"{key_file}):\n{key}",
            file=sys.stderr,
            flush=True,
        )
    return key


async def enforce_retention(state: ServerState) -> None:
    """Delete data older than ``retention_days`` now and every ``retention_check_seconds``,
    through the writer (it owns the write connection), a bounded number of traces a turn."""
    days = state.settings.retention_days
    assert days is not None
    while True:
        cutoff = int((time.time() - days * 86400) * 1e9)
        deleted = 0
        try:
            while True:
                done = await asyncio.wrap_future(
                    state.writer.call(partial(state.store.delete_before, cutoff))
                )
                deleted += done
                if done < 5000:
                    break
        except Exception as exc:
            logger.warning("tracerelay: retention failed: %s", exc)
        if deleted:
            logger.info("tracerelay: retention deleted %d traces older than %g days", deleted, days)
        state.retention_runs += 1
        await asyncio.sleep(state.settings.retention_check_seconds)


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """The server application for ``settings`` (default: from the environment)."""
    settings = settings or ServerSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await run_in_threadpool(open_store, settings)
        await run_in_threadpool(bootstrap, store, settings)
        process = None
        if settings.writer_process:
            process = await run_in_threadpool(
                WriterProcess, settings.sqlite_path, settings.database_url
            )
        writer = Writer(process or store, max_queued=settings.max_queued_events)
        app.state.server = ServerState(
            settings, store, writer, SeenIds(ttl=settings.dedup_ttl), KeyCache(store),
            ServerMetrics(),
        )  # fmt: skip
        closers: list[Callable[[], None]] = []
        rate = settings.rate_limit_events_per_s
        burst = settings.rate_limit_burst or max(1, int(10 * (rate or 1)))
        if settings.redis_url is not None:
            from tracerelay.server.shared import RedisRateLimiter, RedisSeen, connect

            client = connect(settings.redis_url)
            closers.append(client.close)
            app.state.server.seen = RedisSeen(
                client, ttl=settings.dedup_ttl, local=app.state.server.seen
            )
            if rate is not None:
                app.state.server.limiter = RedisRateLimiter(client, rate, burst)
        elif rate is not None:
            app.state.server.limiter = RateLimiter(rate, burst)
        tasks = [asyncio.create_task(run_jobs(app.state.server))]
        if settings.retention_days is not None:
            tasks.append(asyncio.create_task(enforce_retention(app.state.server)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for close in closers:
                close()
            await run_in_threadpool(writer.close)
            if process is not None:
                await run_in_threadpool(process.close)
            store.close()

    app = FastAPI(
        title="tracerelay",
        version=__version__,
        description="Ingest, deduplicate, store and query traces (SPEC §2).",
        lifespan=lifespan,
    )
    app.include_router(ingest.router)
    app.include_router(traces.router)
    app.include_router(analytics.router)
    app.include_router(otlp.router)
    app.include_router(jobs.router)
    app.include_router(ops.router)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        raw: object = exc.detail
        detail = raw if isinstance(raw, dict) else {"message": str(raw)}
        return error_response(
            exc.status_code,
            str(detail.get("code", f"TR-HTTP-{exc.status_code}")),
            str(detail.get("message", "")),
            str(detail.get("fix", "")),
            dict(exc.headers or {}),
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return error_response(400, "TR-REQUEST", f"{where}: {first.get('msg', 'invalid')}")

    return app

"""Aggregates over a time window (default: the last 24 hours): ``GET /v1/services``,
``/v1/dependencies``, ``/v1/metrics/red``, ``/v1/usage``. All scoped to the caller's project."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tracerelay.server.api.auth import Reading
from tracerelay.server.api.ingest import error_response
from tracerelay.server.api.traces import time_ns

__all__ = ["router"]

router = APIRouter(tags=["analytics"])
_DAY_NS = 86_400 * 10**9


def _window(request: Request) -> tuple[int, int]:
    params = request.query_params
    until = time_ns(params["until"], "until") if "until" in params else time.time_ns()
    since = time_ns(params["since"], "since") if "since" in params else until - _DAY_NS
    return since, until


async def _answer(
    request: Request, key: str, query: Callable[[int, int], list[dict[str, Any]]]
) -> Response:
    try:
        since, until = _window(request)
    except ValueError as exc:
        return error_response(400, "TR-QUERY-FILTER", str(exc), "fix that query parameter")
    rows = await run_in_threadpool(query, since, until)
    body = {key: rows, "since_unix_nano": since, "until_unix_nano": until}
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/v1/services")
async def services(request: Request, principal: Reading) -> Response:
    """Services seen in the window: spans, errors, first and last seen."""
    store = request.app.state.server.store
    return await _answer(
        request, "services", lambda s, u: store.services(principal.project_id, s, u)
    )


@router.get("/v1/dependencies")
async def dependencies(request: Request, principal: Reading) -> Response:
    """The service call graph: parent service → child service, calls and errors."""
    store = request.app.state.server.store
    return await _answer(
        request, "dependencies", lambda s, u: store.dependencies(principal.project_id, s, u)
    )


@router.get("/v1/metrics/red")
async def red(request: Request, principal: Reading) -> Response:
    """Rate, errors and duration percentiles per service and operation."""
    store = request.app.state.server.store
    service = request.query_params.get("service")

    def query(since: int, until: int) -> list[dict[str, Any]]:
        seconds = max((until - since) / 1e9, 1e-9)
        rows: list[dict[str, Any]] = store.red(principal.project_id, since, until, service)
        for row in rows:
            row["rate_per_s"] = row["count"] / seconds
            row["error_rate"] = row["errors"] / row["count"] if row["count"] else 0.0
            for p in ("p50", "p95", "p99"):
                row[f"{p}_ms"] = row.pop(p) / 1e6 if row[p] is not None else None
        return rows

    return await _answer(request, "operations", query)


@router.get("/v1/usage")
async def usage(request: Request, principal: Reading) -> Response:
    """Tokens and cost per model."""
    store = request.app.state.server.store
    return await _answer(request, "models", lambda s, u: store.usage(principal.project_id, s, u))

"""``/health`` (the process answers), ``/ready`` (storage answers), ``/metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Alive: answers while the process runs."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> Response:
    """Ready: 200 while the database answers, else 503."""
    ok = await run_in_threadpool(request.app.state.server.store.ping)
    body = b'{"status":"ready"}' if ok else b'{"status":"storage unreachable"}'
    return Response(body, 200 if ok else 503, media_type="application/json")


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """The server's metrics in the Prometheus text format."""
    server = request.app.state.server
    server.metrics.queue_depth.set(server.writer.queued)
    return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

"""The jobs worker: processes batches accepted with ``async_mode`` (answered 202).

    POST /v1/telemetry/batch {"async_mode": true} ─► jobs row committed ─► 202 job_id
    worker task: oldest queued job ─► the same checks, dedup and writer as a
        synchronous batch ─► the answer it would have had stored as the job's result
    GET /v1/jobs/{job_id} ─► queued, or done with that result (per-event errors included)

Jobs are rows, so a restart resumes the queued ones. A job interrupted after its
events were written is processed again: its events are then repeats.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tracerelay.server.api.auth import Ingesting
from tracerelay.server.api.ingest import batch_answer, error_response, store_parsed
from tracerelay.server.ingest.body import BodyError
from tracerelay.server.ingest.events import EnvelopeError, read_batch

__all__ = ["router", "run_jobs"]

logger = logging.getLogger("tracerelay.server")
router = APIRouter(tags=["jobs"])
_IDLE_S = 1.0
_BACKOFF_S = 1.0


async def _process(server: Any, job: dict[str, Any]) -> None:
    started = time.perf_counter()
    try:
        read = await run_in_threadpool(
            partial(read_batch, job["body"], job["project_id"], defer_async=False)
        )
        parsed, dedup = read.parsed, read.dedup
        assert parsed is not None  # defer_async=False: always read
    except (EnvelopeError, BodyError) as exc:
        result: dict[str, Any] = {"error": "invalid_batch", "details": str(exc)}
    else:
        duplicates, failure = await store_parsed(server, job["project_id"], parsed, dedup)
        if failure is not None:
            raise RuntimeError("the store cannot take the job's events now")
        result = batch_answer(parsed, duplicates, started)
        result["job_id"] = job["job_id"]
    await asyncio.wrap_future(
        server.writer.call(
            partial(server.store.finish_job, job["job_id"], orjson.dumps(result).decode())
        )
    )


async def run_jobs(server: Any) -> None:
    """Process queued jobs, oldest first, until cancelled."""
    while True:
        try:
            job = await run_in_threadpool(server.store.next_job)
            if job is None:
                server.jobs_waiting.clear()
                try:
                    await asyncio.wait_for(server.jobs_waiting.wait(), _IDLE_S)
                except asyncio.TimeoutError:
                    pass
                continue
            await _process(server, job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("tracerelay: an async job could not be processed yet: %s", exc)
            await asyncio.sleep(_BACKOFF_S)


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, request: Request, principal: Ingesting) -> Response:
    """An async batch: ``queued``, or ``done`` with the answer a synchronous request gets."""
    store = request.app.state.server.store
    job = await run_in_threadpool(store.get_job, principal.project_id, job_id)
    if job is None:
        return error_response(404, "TR-QUERY-NOT-FOUND", f"no job {job_id} in this project")
    answer = {
        "job_id": job["job_id"],
        "status": job["status"],
        "events": job["events"],
        "created_at": job["created_at"],
        "finished_at": job["finished_at"],
        "result": orjson.loads(job["result"]) if job["result"] else None,
    }
    return Response(orjson.dumps(answer), media_type="application/json")

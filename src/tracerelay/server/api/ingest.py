"""``POST /v1/telemetry/batch`` and ``POST /v1/uploads/stream`` (SPEC §2).

    body (≤ max_body_bytes) ─► worker thread: decompress (≤ max_decompressed_bytes),
        parse JSON, check each event ─► drop ids seen recently ─► writer (group commit)
        ─► answer once committed: 200 · 207 (some events refused, with paths) ·
        409 (duplicates, fail_on_duplicate) · 503 + Retry-After (queue full, storage down)

Bad input is answered 4xx with a code and the path to the bad field; only the
server's own trouble is 503, which the SDK retries.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tracerelay.ids import new_event_id
from tracerelay.server.api.auth import Ingesting, Principal
from tracerelay.server.api.schemas import BATCH_BODY, STREAM_BODY, json_body
from tracerelay.server.ingest.body import BodyError, decode_body, load_json
from tracerelay.server.ingest.events import (
    BatchBody,
    EnvelopeError,
    Parsed,
    parse_events,
    read_batch,
)
from tracerelay.server.storage.base import StorageError
from tracerelay.server.storage.rows import WriteBatch
from tracerelay.server.storage.writer import QueueFull

__all__ = ["batch_answer", "error_response", "read_body", "router", "store_parsed"]

router = APIRouter(tags=["ingest"])
_RETRY_AFTER_S = "1"


def error_response(
    status: int, code: str, message: str, fix: str = "", headers: dict[str, str] | None = None
) -> Response:
    """A coded JSON error, as every endpoint answers one."""
    body = {"code": code, "message": message, "fix": fix}
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def _storage_down(exc: StorageError) -> Response:
    """503 with Retry-After: the database failed; the client retries."""
    return error_response(
        503, "TR-STORAGE", str(exc), "retry; the operator should check the database",
        {"Retry-After": _RETRY_AFTER_S},
    )  # fmt: skip


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused (``BodyError`` 413) past ``limit`` bytes without reading on."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyError(413, "TR-INGEST-TOO-LARGE", f"the body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyError(413, "TR-INGEST-TOO-LARGE", f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _read_batch(
    body: bytes, encoding: str | None, limit: int, project_id: str
) -> tuple[bytes, BatchBody]:
    """The body decompressed (what an async batch keeps), and read."""
    raw = decode_body(body, encoding, max_decompressed=limit)
    return raw, read_batch(raw, project_id)


def batch_answer(parsed: Parsed, duplicates: set[str], started: float) -> dict[str, Any]:
    """The SPEC §2 answer to a batch once stored."""
    return {
        "batch_id": new_event_id(),
        "processed_events": len([i for i in parsed.event_ids if i not in duplicates]),
        "duplicate_events": len(duplicates),
        "failed_events": len(parsed.errors),
        "processing_time_ms": round(1000 * (time.perf_counter() - started)),
        "errors": parsed.errors,
        "duplicate_event_ids": sorted(duplicates),
        "job_id": None,
    }


async def call(owner: Any, function: Any, *args: Any) -> Any:
    """``function(*args)``, in a worker thread when ``owner`` blocks on the network (Redis)."""
    if getattr(owner, "blocking", False):
        return await run_in_threadpool(function, *args)
    return function(*args)


async def over_limit(request: Request, principal: Principal, events: int) -> Response | None:
    """429 with Retry-After when the key has sent more than its rate, else None."""
    server = request.app.state.server
    limiter = server.limiter
    if limiter is None:
        return None
    wait = await call(limiter, limiter.admit, principal.key_id, events)
    if wait == 0.0:
        return None
    server.metrics.shed.inc()
    return error_response(
        429, "TR-INGEST-RATE", f"this key is over its rate of {limiter.rate:g} events/s",
        "send less often or in smaller bursts; retry after Retry-After seconds",
        {"Retry-After": limiter.retry_after(wait)},
    )  # fmt: skip


async def store_parsed(
    server: Any, project: str, parsed: Parsed, dedup: dict[str, Any]
) -> tuple[set[str], Response | None]:
    """Write what is new; returns (duplicate ids, error response or None)."""
    seen: set[str] = set()
    if dedup.get("enabled", True) is not False and parsed.event_ids:
        seen = await call(server.seen, server.seen.seen, project, parsed.event_ids)
    batch = parsed.batch
    if seen:
        batch = WriteBatch(
            project,
            [w for w in batch.spans if w.event_id not in seen],
            [w for w in batch.traces if w.event_id not in seen],
            [r for r in batch.records if r.event_id not in seen],
        )
    duplicates = set(seen)
    if len(batch):
        try:
            result = await server.writer.submit(batch)
        except QueueFull as exc:
            server.metrics.shed.inc()
            return duplicates, error_response(
                503, "TR-INGEST-BUSY", f"the server is behind ({exc})", "retry after a second",
                {"Retry-After": _RETRY_AFTER_S},
            )  # fmt: skip
        except StorageError as exc:
            server.metrics.storage_errors.inc()
            return duplicates, _storage_down(exc)
        fresh = [i for i in parsed.event_ids if i not in seen]
        await call(server.seen, server.seen.remember, project, fresh)
        duplicates |= result.duplicates
    return duplicates, None


async def _decode(request: Request, principal: Principal, parse: Any, kind: str) -> Any:
    """The body read within its limits and ``parse(body, encoding, limit, project)``'s
    result, computed in a worker thread — or the coded 4xx answer to a body that
    cannot be read (``kind``: which SPEC §2 body was expected)."""
    settings = request.app.state.server.settings
    try:
        body = await read_body(request, settings.max_body_bytes)
        return await run_in_threadpool(
            parse, body, request.headers.get("content-encoding"),
            settings.max_decompressed_bytes, principal.project_id,
        )  # fmt: skip
    except BodyError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except EnvelopeError as exc:
        return error_response(400, "TR-INGEST-ENVELOPE", str(exc), f"send SPEC §2's {kind} body")


@router.post("/v1/telemetry/batch", openapi_extra=json_body(BATCH_BODY))
async def ingest_batch(request: Request, principal: Ingesting) -> Response:
    """Store a batch of events; see SPEC §2 for the body and the answer."""
    started = time.perf_counter()
    decoded = await _decode(request, principal, _read_batch, "batch")
    if isinstance(decoded, Response):
        return decoded
    raw, read = decoded
    refused = await over_limit(request, principal, max(1, read.events))
    if refused is not None:
        return refused
    parsed, dedup = read.parsed, read.dedup
    if parsed is None:
        return await _accept_job(request, principal, raw, read.events)
    duplicates, failure = await store_parsed(
        request.app.state.server, principal.project_id, parsed, dedup
    )
    if failure is not None:
        return failure
    metrics = request.app.state.server.metrics
    stored = [i for i in parsed.event_ids if i not in duplicates]
    metrics.events.labels("batch").inc(len(stored))
    metrics.duplicates.inc(len(duplicates))
    metrics.batch_size.observe(len(parsed.event_ids) + len(parsed.errors))
    status = 200
    if parsed.errors:
        status = 207
    elif duplicates and dedup.get("fail_on_duplicate") is True:
        status = 409
    answer = batch_answer(parsed, duplicates, started)
    metrics.latency.labels("batch").observe(time.perf_counter() - started)
    return Response(orjson.dumps(answer), status, media_type="application/json")


async def _accept_job(request: Request, principal: Principal, raw: bytes, events: int) -> Response:
    """``async_mode``: the batch is committed to the jobs table, then answered 202; the
    jobs worker (``server/jobs.py``) processes it as a synchronous request would."""
    server = request.app.state.server
    job_id = new_event_id()
    try:
        await asyncio.wrap_future(
            server.writer.call(partial(server.store.add_job, job_id, principal.project_id,
                                       events, raw))
        )  # fmt: skip
    except StorageError as exc:
        server.metrics.storage_errors.inc()
        return _storage_down(exc)
    server.jobs_waiting.set()
    answer = {"batch_id": job_id, "job_id": job_id, "status": "queued"}
    return Response(orjson.dumps(answer), 202, media_type="application/json")


def _parse_stream(body: bytes, encoding: str | None, limit: int, project_id: str) -> Any:
    data = load_json(decode_body(body, encoding, max_decompressed=limit))
    if not isinstance(data, dict) or not isinstance(data.get("event"), dict):
        raise EnvelopeError('the body must be {"event": {...}, "system_info": {...}}')
    info = data.get("system_info")
    info = info if isinstance(info, dict) else {}
    resource = {
        "service.name": info.get("system_name"),
        "service.namespace": info.get("system_id"),
        "service.instance.id": info.get("system_instance_id"),
    }
    return parse_events([data["event"]], project_id, resource, None), data["event"]


@router.post("/v1/uploads/stream", openapi_extra=json_body(STREAM_BODY))
async def ingest_stream(request: Request, principal: Ingesting) -> Response:
    """Store one event sent the moment its step ended."""
    started = time.perf_counter()
    decoded = await _decode(request, principal, _parse_stream, "stream")
    if isinstance(decoded, Response):
        return decoded
    parsed, event = decoded
    if parsed.errors:
        error = parsed.errors[0]
        return error_response(
            400, "TR-INGEST-EVENT", error["details"], "fix the event; it cannot be stored as sent"
        )
    refused = await over_limit(request, principal, 1)
    if refused is not None:
        return refused
    duplicates, failure = await store_parsed(
        request.app.state.server, principal.project_id, parsed, {}
    )
    if failure is not None:
        return failure
    metrics = request.app.state.server.metrics
    metrics.events.labels("stream").inc(0 if duplicates else 1)
    metrics.duplicates.inc(len(duplicates))
    metrics.latency.labels("stream").observe(time.perf_counter() - started)
    answer = {
        "event_id": event.get("event_id"),
        "status": "duplicate" if duplicates else "processed",
    }
    return Response(orjson.dumps(answer), 200, media_type="application/json")

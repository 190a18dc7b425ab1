"""``POST /v1/traces``: OpenTelemetry's OTLP/HTTP trace export, protobuf or JSON.

    body ─► worker thread: decompress within limits, ``ingest/otlp.py`` decodes the
        ExportTraceServiceRequest into SDK-shaped span payloads (bad spans counted
        as rejected), then their rows ─► the same WriteBatch and writer as SDK
        events ─► answered
        after the commit with an ExportTraceServiceResponse, ``partial_success``
        set only when spans were rejected (OTLP spec), in the request's encoding

OTLP spans carry no event id, so each gets one derived from its trace id, span
id and end time: an exporter retrying a request sends repeats, which the
merge recognises, and the same span ended later (a different end) is a newer
version of it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tracerelay.server.api.auth import Ingesting
from tracerelay.server.api.ingest import call, read_body
from tracerelay.server.ingest.body import BodyError, decode_body
from tracerelay.server.ingest.otlp import OtlpDecoded, OtlpError, decode_otlp
from tracerelay.server.ingest.schema import Observation
from tracerelay.server.storage.base import StorageError
from tracerelay.server.storage.merge import version_of
from tracerelay.server.storage.rows import SpanWrite, WriteBatch, observation_row
from tracerelay.server.storage.writer import QueueFull

__all__ = ["router"]

router = APIRouter(tags=["otlp"])
_PROTOBUF = "application/x-protobuf"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Ten bits → their two digits, the lower first.
_DIGIT_PAIRS = [_CROCKFORD[v & 31] + _CROCKFORD[v >> 5] for v in range(1024)]
_LOW_60 = (1 << 60) - 1


def event_id_of(payload: dict[str, Any]) -> str:
    """A ULID-shaped id that is the same whenever the same span (same end) is exported:
    the 26 Crockford base-32 digits of a hash's low 130 bits, least significant first.

    Written out two digits (ten bits) a lookup, on 60-bit pieces of the hash: ~5 µs
    a span where a digit-by-digit loop over the whole number took ~9."""
    key = f"{payload['trace_id']}{payload['span_id']}{payload.get('end_time_unix_nano')}"
    d = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=17).digest(), "big")
    a, b, t = d & _LOW_60, d >> 60 & _LOW_60, _DIGIT_PAIRS
    return (
        t[a & 1023] + t[a >> 10 & 1023] + t[a >> 20 & 1023] + t[a >> 30 & 1023]
        + t[a >> 40 & 1023] + t[a >> 50] + t[b & 1023] + t[b >> 10 & 1023]
        + t[b >> 20 & 1023] + t[b >> 30 & 1023] + t[b >> 40 & 1023] + t[b >> 50]
        + t[d >> 120 & 1023]
    )  # fmt: skip


def _decode(
    body: bytes, encoding: str | None, content_type: str, limit: int, project_id: str
) -> tuple[OtlpDecoded, WriteBatch]:
    decoded = decode_otlp(decode_body(body, encoding, max_decompressed=limit), content_type)
    return decoded, _batch(project_id, decoded)


def _batch(project_id: str, decoded: OtlpDecoded) -> WriteBatch:
    batch = WriteBatch(project_id)
    for span in decoded.spans:
        payload = span.payload
        event_id = event_id_of(payload)
        end = payload.get("end_time_unix_nano") or payload.get("start_time_unix_nano") or 0
        resource = span.resource
        row = observation_row(
            project_id,
            Observation(**payload),  # the decoder's own payloads: their shape is known
            version_of(end / 1e9, event_id),
            resource.get("service.name"),
            resource.get("deployment.environment.name") or resource.get("deployment.environment"),
        )
        batch.spans.append(SpanWrite(payload["trace_id"], payload["span_id"], row, event_id))
    return batch


def _status(code: int, message: str, protobuf: bool) -> Response:
    """An OTLP error answer: a ``google.rpc.Status`` in the request's encoding."""
    if protobuf:
        from google.rpc import status_pb2

        content = status_pb2.Status(code=code, message=message).SerializeToString()
        return Response(content, code, media_type=_PROTOBUF)
    return Response(orjson.dumps({"code": code, "message": message}), code,
                    media_type="application/json")  # fmt: skip


@router.post("/v1/traces")
async def export_traces(request: Request, principal: Ingesting) -> Response:
    """Store the spans of an OTLP/HTTP trace export."""
    content_type = request.headers.get("content-type", _PROTOBUF).split(";")[0].strip().lower()
    protobuf = content_type != "application/json"
    server = request.app.state.server
    settings = server.settings
    try:
        body = await read_body(request, settings.max_body_bytes)
        decoded, batch = await run_in_threadpool(
            _decode, body, request.headers.get("content-encoding"), content_type,
            settings.max_decompressed_bytes, principal.project_id,
        )  # fmt: skip
    except BodyError as exc:
        return _status(exc.status, f"[{exc.code}] {exc.message}", protobuf)
    except OtlpError as exc:
        return _status(exc.status, str(exc), protobuf)
    if server.limiter is not None:
        wait = await call(
            server.limiter, server.limiter.admit, principal.key_id, max(1, len(batch))
        )
        if wait:
            response = _status(429, "this key is over its rate; retry later", protobuf)
            response.headers["Retry-After"] = server.limiter.retry_after(wait)
            return response
    if len(batch):
        try:
            result = await server.writer.submit(batch)
        except (QueueFull, StorageError) as exc:
            response = _status(503, f"the server cannot store spans now ({exc})", protobuf)
            response.headers["Retry-After"] = "1"
            return response
        server.metrics.events.labels("otlp").inc(len(batch) - len(result.duplicates))
        server.metrics.duplicates.inc(len(result.duplicates))
    if protobuf:
        return Response(decoded.response_bytes(_PROTOBUF), media_type=_PROTOBUF)
    return Response(decoded.response_bytes("application/json"), media_type="application/json")

"""``GET /v1/traces/{trace_id}``: one trace, its spans flat and as a tree, and its orphans."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime, timezone
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tracerelay.server.api.auth import Reading
from tracerelay.server.api.ingest import error_response
from tracerelay.server.ingest.events import TRACE_ID
from tracerelay.server.storage.base import TraceQuery, TraceSpan

__all__ = ["router", "time_ns"]

router = APIRouter(tags=["traces"])


def _tree(spans: list[TraceSpan]) -> tuple[list[dict[str, Any]], list[str]]:
    """Roots with nested children (in start order), and the ids of spans whose parent has
    not arrived (or whose parents form a cycle): those are shown as roots, not dropped.
    Built breadth first without recursion, so a chain thousands deep is fine."""
    ids = {span[0] for span in spans}
    children: dict[str, list[TraceSpan]] = {}
    starts, orphans = [], []
    for span in spans:
        span_id, parent = span[0], span[1]
        if parent is None:
            starts.append(span)
        elif parent in ids and parent != span_id:
            if parent in children:
                children[parent].append(span)
            else:
                children[parent] = [span]
        else:
            orphans.append(span_id)
            starts.append(span)
    visited: set[str] = set()
    roots: list[dict[str, Any]] = []

    def grow(span: TraceSpan) -> None:
        root: dict[str, Any] = {"span_id": span[0], "name": span[2], "children": []}
        visited.add(span[0])
        roots.append(root)
        queue = [(span[0], root["children"])]
        while queue:
            span_id, siblings = queue.pop()
            for child in children.get(span_id, ()):
                child_id = child[0]
                if child_id not in visited:
                    visited.add(child_id)
                    kids: list[dict[str, Any]] = []
                    siblings.append({"span_id": child_id, "name": child[2], "children": kids})
                    queue.append((child_id, kids))

    for span in starts:
        grow(span)
    for span in spans:  # only spans in a parent cycle are left
        if span[0] not in visited:
            orphans.append(span[0])
            grow(span)
    return roots, orphans


_ATTRIBUTE_KEY = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")
_PARAMS = frozenset(
    {"service", "name", "status", "min_duration_ms", "since", "until", "user_id", "session_id",
     "cursor", "limit"}
)  # fmt: skip


class _BadQuery(ValueError):
    pass


def time_ns(value: str, name: str) -> int:
    """Unix seconds, or an ISO 8601 / RFC 3339 date-time, as nanoseconds."""
    try:
        return int(float(value) * 1e9)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _BadQuery(f"{name}: expected Unix seconds or an RFC 3339 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1e9)


def _query(params: Any) -> TraceQuery:
    unknown = [k for k in params if k not in _PARAMS and not k.startswith("attr.")]
    if unknown:
        raise _BadQuery(
            f"{unknown[0]}: not a filter; see SPEC §2 (attr.<key>=<value> for attributes)"
        )
    attributes = []
    for key, value in params.multi_items():
        if key.startswith("attr."):
            name = key[5:]
            if not _ATTRIBUTE_KEY.fullmatch(name):
                raise _BadQuery(f"{key}: an attribute key is 1-128 letters, digits or _.:/-")
            attributes.append((name, value))
    status = params.get("status")
    if status not in (None, "ok", "error"):
        raise _BadQuery("status: expected ok or error")
    try:
        limit = int(params.get("limit", 50))
        min_duration = params.get("min_duration_ms")
        min_duration_ns = None if min_duration is None else int(float(min_duration) * 1e6)
    except ValueError:
        raise _BadQuery("limit and min_duration_ms are numbers") from None
    if not 1 <= limit <= 1000:
        raise _BadQuery("limit: expected 1 to 1000")
    before = None
    if params.get("cursor"):
        try:
            start, _, trace_id = base64.urlsafe_b64decode(params["cursor"]).decode().partition(":")
            before = (int(start), trace_id)
        except (ValueError, UnicodeDecodeError, binascii.Error):
            raise _BadQuery("cursor: not a cursor this server gave") from None
    since, until = params.get("since"), params.get("until")
    return TraceQuery(
        service=params.get("service"),
        name=params.get("name"),
        status=status,
        min_duration_ns=min_duration_ns,
        since_ns=None if since is None else time_ns(since, "since"),
        until_ns=None if until is None else time_ns(until, "until"),
        user_id=params.get("user_id"),
        session_id=params.get("session_id"),
        attributes=tuple(attributes),
        before=before,
        limit=limit,
    )


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    start, end = row["start_ns"], row["end_ns"]
    return {
        "trace_id": row["trace_id"],
        "name": row["name"] or row["root_name"],
        "service": row["service"],
        "start_time_unix_nano": start,
        "end_time_unix_nano": end,
        "duration_ms": (end - start) / 1e6 if start is not None and end is not None else None,
        "span_count": row["span_count"],
        "error_count": row["error_count"],
        "user_id": row["user_id"],
        "session_id": row["session_id"],
    }


@router.get("/v1/traces")
async def search_traces(request: Request, principal: Reading) -> Response:
    """Traces of the caller's project, newest first, filtered (SPEC §2), a page at a time:
    pass ``next_cursor`` back as ``cursor`` for the next page."""
    try:
        query = _query(request.query_params)
    except _BadQuery as exc:
        return error_response(400, "TR-QUERY-FILTER", str(exc), "fix that query parameter")
    store = request.app.state.server.store
    rows = await run_in_threadpool(store.search_traces, principal.project_id, query)
    cursor = None
    if len(rows) == query.limit:
        last = rows[-1]
        cursor = base64.urlsafe_b64encode(
            f"{last['start_ns']}:{last['trace_id']}".encode()
        ).decode()
    answer = {"traces": [_summary(row) for row in rows], "next_cursor": cursor}
    return Response(orjson.dumps(answer), media_type="application/json")


@router.get("/v1/traces/{trace_id}")
async def get_trace(trace_id: str, request: Request, principal: Reading) -> Response:
    """The trace with all its spans (flat, with parent ids), its tree and its orphans."""
    if not TRACE_ID.fullmatch(trace_id):
        return error_response(
            400, "TR-QUERY-TRACE-ID", "a trace id is 32 lowercase hex characters", ""
        )
    store = request.app.state.server.store
    found = await run_in_threadpool(store.get_trace, principal.project_id, trace_id)
    if found is None:
        return error_response(404, "TR-QUERY-NOT-FOUND", f"no trace {trace_id} in this project")
    rows = found["spans"]
    # Each body is the span's JSON but for its trace id (storage/rows.py): sent as stored.
    head = b'{"trace_id":"' + trace_id.encode() + b'",'
    spans = [orjson.Fragment(head + row[3].encode()[1:]) for row in rows]
    tree, orphans = _tree(rows)
    trace = found["trace"]
    body = orjson.loads(trace["body"]) if trace.get("body") else {}
    answer = {
        "trace_id": trace_id,
        "name": trace["name"] or trace["root_name"],
        "service": trace["service"],
        "start_time_unix_nano": trace["start_ns"],
        "end_time_unix_nano": trace["end_ns"],
        "span_count": trace["span_count"],
        "error_count": trace["error_count"],
        "user_id": trace["user_id"],
        "session_id": trace["session_id"],
        "tags": body.get("tags"),
        "metadata": body.get("metadata"),
        "spans": spans,
        "tree": tree,
        "orphans": orphans,
        "scores": [orjson.loads(r["body"]) | {"event_id": r["event_id"]}
                   for r in found["records"] if r["event_type"].startswith("quality_score")],
    }  # fmt: skip
    return Response(orjson.dumps(answer), media_type="application/json")

"""``GET /v1/traces/{trace_id}``: one trace, its spans flat and as a tree, and its orphans."""

from __future__ import annotations

import re
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tracerelay.server.api.auth import Reading
from tracerelay.server.api.ingest import error_response

__all__ = ["router", "span_view"]

router = APIRouter(tags=["traces"])
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


def span_view(row: dict[str, Any]) -> dict[str, Any]:
    """A stored span in SPEC §1's shape."""
    body = row["body"]
    body = orjson.loads(body) if isinstance(body, (str, bytes)) else body
    span: dict[str, Any] = {
        "trace_id": row["trace_id"],
        "span_id": row["span_id"],
        "parent_span_id": row["parent_span_id"],
        "name": row["name"],
        "kind": row["kind"],
        "type": row["type"],
        "service": row["service"],
        "start_time_unix_nano": row["start_ns"],
        "end_time_unix_nano": row["end_ns"],
        "duration_ms": row["duration_ns"] / 1e6 if row["duration_ns"] is not None else None,
        "status": {"code": row["status_code"] or "unset", "message": row["status_message"] or ""},
        "attributes": body.get("attributes") or {},
        "events": body.get("events") or [],
        "links": body.get("links") or [],
        "sequence": row["sequence"],
    }
    for key in ("input", "output", "usage", "trace_state", "scope"):
        if body.get(key) is not None:
            span[key] = body[key]
    if row["model"] is not None:
        span["model"] = row["model"]
    if row["cost_usd"] is not None:
        span["cost_usd"] = row["cost_usd"]
    return span


def _tree(spans: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Roots with nested children (in start order), and the ids of spans whose parent has
    not arrived (or whose parents form a cycle): those are shown as roots, not dropped.
    Built breadth first without recursion, so a chain thousands deep is fine."""
    ids = {s["span_id"] for s in spans}
    children: dict[str, list[dict[str, Any]]] = {}
    starts, orphans = [], []
    for span in spans:
        parent = span["parent_span_id"]
        if parent is None:
            starts.append(span)
        elif parent in ids and parent != span["span_id"]:
            children.setdefault(parent, []).append(span)
        else:
            orphans.append(span["span_id"])
            starts.append(span)
    visited: set[str] = set()
    roots: list[dict[str, Any]] = []

    def grow(span: dict[str, Any]) -> None:
        root = {"span_id": span["span_id"], "name": span["name"], "children": []}
        visited.add(span["span_id"])
        roots.append(root)
        queue = [(span, root)]
        while queue:
            current, node = queue.pop()
            for child in children.get(current["span_id"], ()):
                if child["span_id"] not in visited:
                    visited.add(child["span_id"])
                    kid = {"span_id": child["span_id"], "name": child["name"], "children": []}
                    node["children"].append(kid)
                    queue.append((child, kid))

    for span in starts:
        grow(span)
    for span in spans:  # only spans in a parent cycle are left
        if span["span_id"] not in visited:
            orphans.append(span["span_id"])
            grow(span)
    return roots, orphans


@router.get("/v1/traces/{trace_id}")
async def get_trace(trace_id: str, request: Request, principal: Reading) -> Response:
    """The trace with all its spans (flat, with parent ids), its tree and its orphans."""
    if not _TRACE_ID.fullmatch(trace_id):
        return error_response(
            400, "TR-QUERY-TRACE-ID", "a trace id is 32 lowercase hex characters", ""
        )
    store = request.app.state.server.store
    found = await run_in_threadpool(store.get_trace, principal.project_id, trace_id)
    if found is None:
        return error_response(404, "TR-QUERY-NOT-FOUND", f"no trace {trace_id} in this project")
    spans = [span_view(row) for row in found["spans"]]
    tree, orphans = _tree(spans)
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

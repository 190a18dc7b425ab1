"""JSON Schemas of the ingest bodies (SPEC §2), for a true OpenAPI document.

The routes read their bodies themselves (size limits and decompression come
first), so FastAPI cannot infer these: they are declared here and attached to
the routes with ``openapi_extra``. The server's own checks (``ingest/events.py``)
are the authority; these describe the same shapes for clients and fuzzers.
"""

from __future__ import annotations

from typing import Any

from tracerelay.records import EVENT_TYPES

__all__ = ["BATCH_BODY", "STREAM_BODY", "json_body"]

_HEX32 = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
_HEX16 = {"type": "string", "pattern": "^[0-9a-f]{16}$"}
EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event_id", "event_type", "timestamp", "payload"],
    "properties": {
        "event_id": {"type": "string", "description": "ULID, fixed when the record was made"},
        "event_type": {
            "type": "string",
            "enum": sorted(EVENT_TYPES),
        },
        "timestamp": {"type": "number", "description": "Unix seconds"},
        "payload": {
            "type": "object",
            "properties": {
                "trace_id": _HEX32,
                "span_id": _HEX16,
                "parent_span_id": {"anyOf": [_HEX16, {"type": "null"}]},
                "name": {"type": "string"},
                "kind": {"type": "string"},
                "type": {"type": "string"},
                "start_time_unix_nano": {"type": "integer"},
                "end_time_unix_nano": {"type": ["integer", "null"]},
                "status": {"type": "object"},
                "attributes": {"type": "object"},
                "events": {"type": "array"},
                "links": {"type": "array"},
            },
        },
    },
}
BATCH_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["events"],
    "properties": {
        "events": {"type": "array", "items": EVENT},
        "resource": {"type": "object"},
        "environment": {"type": "string"},
        "deduplication": {
            "type": "object",
            "properties": {
                "enabled": {"type": "boolean"},
                "ttl": {"type": "integer"},
                "fail_on_duplicate": {"type": "boolean"},
            },
        },
        "async_mode": {"type": "boolean"},
    },
}
STREAM_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["event"],
    "properties": {
        "event": EVENT,
        "system_info": {
            "type": "object",
            "properties": {
                "system_name": {"type": "string"},
                "system_id": {"type": "string"},
                "system_instance_id": {"type": "string"},
            },
        },
    },
}


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` declaring a required JSON request body of ``schema``."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}

"""What an OTLP span becomes in tracerelay's data model: the parts both OTLP encodings share.

``_otlp_protobuf`` and ``_otlp_json`` walk their encoding and hand the values they
read to these helpers, so the two cannot drift apart: the payload's shape, the
enum names, attribute-value flattening, the GenAI fields, and the report of
rejected spans and dropped links. The rules are listed in ``otlp``'s docstring.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

import orjson

from tracerelay.errors import TracerelayError

__all__ = [
    "DEPTH_MARKER",
    "KINDS",
    "MAX_VALUE_DEPTH",
    "STATUS_CODES",
    "OtlpError",
    "OtlpSpan",
    "Report",
    "b64",
    "finite",
    "flatten",
    "llm_fields",
    "scalar",
    "span_payload",
]

MAX_VALUE_DEPTH = 16
"""Containers (arrays, key-value lists) kept nested in one attribute value."""

DEPTH_MARKER = "<nested too deep>"
"""What replaces a container nested deeper than ``MAX_VALUE_DEPTH``."""

KINDS = {0: "internal", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
"""OTLP ``Span.SpanKind`` numbers → span kind (unknown numbers mean ``internal``)."""

STATUS_CODES = {0: "unset", 1: "ok", 2: "error"}
"""OTLP ``Status.StatusCode`` numbers → status code (unknown numbers mean ``unset``)."""

_GENAI_OPERATION_TYPES = {"execute_tool": "tool", "invoke_agent": "agent", "create_agent": "agent"}
_GENAI_GENERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})


class OtlpError(TracerelayError):
    """A body that cannot be decoded (``status`` 400) or comes in an encoding this
    endpoint does not take (``status`` 415); ``message`` says which, for the response."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class OtlpSpan:
    """One decoded span: ``payload`` shaped as an ``observation_create`` payload, and
    the attributes of the resource that emitted it. Spans of the same ``ResourceSpans``
    share one ``resource`` dict: treat it as read-only."""

    resource: dict[str, Any]
    payload: dict[str, Any]


class Report:
    """Spans rejected and links dropped in one request, by reason, for partial success."""

    __slots__ = ("links", "rejected", "spans")

    def __init__(self) -> None:
        self.rejected = 0
        self.spans: dict[str, list[Any]] = {}
        self.links: dict[str, list[Any]] = {}

    def reject(self, reason: str, name: str) -> None:
        """Count one span not kept, because of ``reason``."""
        self.rejected += 1
        _note(self.spans, reason, name)

    def drop_link(self, reason: str, name: str) -> None:
        """Count one link left out of span ``name``, because of ``reason``."""
        _note(self.links, reason, name)

    def message(self) -> str:
        """What was rejected or dropped and why, in English; empty when nothing was."""
        parts = []
        if self.spans:
            parts.append(f"rejected {_count(self.rejected, 'span')}: {_reasons(self.spans)}")
        if self.links:
            dropped = sum(count for count, _ in self.links.values())
            parts.append(f"dropped {_count(dropped, 'link')}: {_reasons(self.links)}")
        return "; ".join(parts)


def _note(reasons: dict[str, list[Any]], reason: str, name: str) -> None:
    entry = reasons.get(reason)
    if entry is None:
        reasons[reason] = [1, name if len(name) <= 64 else name[:64] + "…"]
    else:
        entry[0] += 1


def _reasons(reasons: dict[str, list[Any]]) -> str:
    return ", ".join(
        f"{reason} ({_count(count, 'time')}, first in span {name!r})"
        for reason, (count, name) in reasons.items()
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def finite(value: float) -> float | str:
    """``value``, or its text (``"nan"``, ``"inf"``, ``"-inf"``) where JSON has no number."""
    return value if math.isfinite(value) else str(value)


def b64(data: bytes) -> str:
    """Bytes as standard base64 text, the form a bytes attribute value is stored in."""
    return base64.b64encode(data).decode("ascii")


def flatten(plain: Any) -> Any:
    """An attribute value from its plain nested form: scalar, or list of scalars.

    A key-value list becomes its JSON text, and so does a container inside an array.
    """
    if type(plain) is list:
        return [scalar(item) for item in plain]
    if type(plain) is dict:
        return orjson.dumps(plain).decode()
    return plain


def scalar(plain: Any) -> Any:
    """A plain value as one scalar: a container becomes its JSON text."""
    if type(plain) is list or type(plain) is dict:
        return orjson.dumps(plain).decode()
    return plain


def span_payload(
    trace_id: str,
    span_id: str,
    parent: str | None,
    name: str,
    kind: str,
    start: int,
    end: int,
    status: dict[str, str],
    attributes: dict[str, Any],
) -> dict[str, Any]:
    """The core of an ``observation_create`` payload (an ``end`` of 0 means not known)."""
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "kind": kind,
        "type": "span",
        "start_time_unix_nano": start,
        "end_time_unix_nano": end or None,
        "status": status,
        "attributes": attributes,
    }


def llm_fields(payload: dict[str, Any], attributes: dict[str, Any]) -> None:
    """Set ``model``, ``usage`` and ``type`` from GenAI attributes or ``tracerelay.type``."""
    model = attributes.get("gen_ai.response.model") or attributes.get("gen_ai.request.model")
    input_tokens = _tokens(attributes, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
    output_tokens = _tokens(
        attributes, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"
    )
    operation = attributes.get("gen_ai.operation.name")
    if type(operation) is not str:
        operation = ""
    kind = _GENAI_OPERATION_TYPES.get(operation)
    if type(model) is str and model:
        payload["model"] = model
        kind = kind or "generation"
    if input_tokens is not None or output_tokens is not None:
        usage: dict[str, int] = {}
        if input_tokens is not None:
            usage["input_tokens"] = input_tokens
        if output_tokens is not None:
            usage["output_tokens"] = output_tokens
        usage["total_tokens"] = (input_tokens or 0) + (output_tokens or 0)
        payload["usage"] = usage
        kind = kind or "generation"
    if kind is None and operation in _GENAI_GENERATIONS:
        kind = "generation"
    explicit = attributes.get("tracerelay.type")
    if type(explicit) is str and explicit:
        kind = explicit
    if kind is not None:
        payload["type"] = kind


def _tokens(attributes: dict[str, Any], key: str, older: str) -> int | None:
    value = attributes.get(key)
    if value is None:
        value = attributes.get(older)
    if type(value) is int:
        return value if value >= 0 else None
    if type(value) is float and value.is_integer() and value >= 0:
        return int(value)
    if type(value) is str and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return None

"""OTLP/HTTP trace exports turned into tracerelay spans: the decoding step of ``POST /v1/traces``.

Where it sits::

    POST /v1/traces body (decompressed and size-bounded by the caller)
      → decode_otlp(body, content_type)        this module: pure, synchronous, no I/O
      → OtlpSpan(resource, payload) per span   payload shaped as an ``observation_create``
      → stored like the SDK's events            (SPEC §1 data model, §2 wire protocol)

Both OTLP/HTTP encodings are read: binary protobuf (``application/x-protobuf``,
``application/protobuf``) by ``_otlp_protobuf``, parsed by protobuf's C
implementation (upb), and OTLP/JSON (``application/json``) by ``_otlp_json``,
parsed by orjson. Each walks its encoding with straight-line code and hands the
values to ``_otlp_mapping``, so the same request gives the same payloads either way.

Mapping choices, where OTLP can say more than the data model holds:

- Attribute values become ``str``/``bool``/``int``/``float`` or a list of those.
  A key-value list becomes its JSON text (``'{"a": 1}'``), and so does an array or
  key-value list found inside an array, so attributes stay "scalar or list of
  scalars" and queries on them stay simple. Bytes become standard base64 text.
  A non-finite double becomes ``"nan"``/``"inf"``/``"-inf"`` as in the SDK. An
  empty value (or a profiles-only string-table reference) becomes ``None``.
  Nesting deeper than ``MAX_VALUE_DEPTH`` containers becomes ``DEPTH_MARKER``.
- A span whose trace_id or span_id is missing, of the wrong length, not hex or
  all zeros is rejected and counted (OTLP partial success) with the reason; the
  rest of the request is kept. An empty or all-zero parent_span_id means a root.
  A malformed parent, or one equal to the span's own id, makes the span a root
  with the value kept in ``tracerelay.invalid_parent_span_id``, as the SDK's
  validation does. A link with invalid ids is dropped, and said so in the
  response's message without counting as a rejected span.
- OpenTelemetry GenAI attributes fill ``model`` (``gen_ai.response.model``, else
  ``gen_ai.request.model``) and ``usage`` (``gen_ai.usage.input_tokens`` /
  ``output_tokens``, or the older ``prompt_tokens`` / ``completion_tokens``; the
  total is their sum), and make the span a ``generation``; ``gen_ai.operation.name``
  ``execute_tool`` and ``invoke_agent``/``create_agent`` make it a ``tool`` or an
  ``agent``; an explicit ``tracerelay.type`` attribute wins over all of them.
  The attributes themselves are kept as sent.
- OTLP/JSON follows the OTLP spec (lowerCamelCase keys, hex ids, 64-bit integers as
  strings or numbers, enums as integers) and is lenient where no meaning is lost:
  original snake_case keys, enum names and base64 ids (protobuf's own JSON
  mapping) are read too, and unknown fields are ignored.

A body that cannot be decoded raises ``OtlpError`` with status 400, an encoding
this endpoint does not take status 415; nothing else is raised for any input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tracerelay.server.ingest._otlp_json import decode_json
from tracerelay.server.ingest._otlp_mapping import (
    DEPTH_MARKER,
    MAX_VALUE_DEPTH,
    OtlpError,
    OtlpSpan,
)
from tracerelay.server.ingest._otlp_protobuf import decode_protobuf

__all__ = [
    "DEPTH_MARKER",
    "JSON_MEDIA_TYPE",
    "MAX_VALUE_DEPTH",
    "PROTOBUF_MEDIA_TYPES",
    "OtlpDecoded",
    "OtlpError",
    "OtlpSpan",
    "decode_otlp",
]

PROTOBUF_MEDIA_TYPES = frozenset({"application/x-protobuf", "application/protobuf"})
"""Content types read as binary protobuf."""

JSON_MEDIA_TYPE = "application/json"
"""The content type read as OTLP/JSON."""


@dataclass(frozen=True)
class OtlpDecoded:
    """The spans of one export request, and what was rejected or dropped and why."""

    spans: list[OtlpSpan]
    rejected: int
    error_message: str

    def response_bytes(self, content_type: str) -> bytes:
        """The ``ExportTraceServiceResponse`` body in the request's encoding.

        ``partial_success`` is set when spans were rejected, or, with
        ``rejected_spans`` 0, to carry a warning (links dropped); otherwise left
        unset, as the OTLP spec asks of a full success.
        """
        if _media_type(content_type) == JSON_MEDIA_TYPE:
            return self.response_json()
        response = ExportTraceServiceResponse()
        if self.rejected or self.error_message:
            response.partial_success.rejected_spans = self.rejected
            response.partial_success.error_message = self.error_message
        data: bytes = response.SerializeToString()
        return data

    def response_json(self) -> bytes:
        """The ``ExportTraceServiceResponse`` as OTLP/JSON bytes (``{}`` on full success)."""
        if not (self.rejected or self.error_message):
            return b"{}"
        partial: dict[str, Any] = {"rejectedSpans": str(self.rejected)}
        if self.error_message:
            partial["errorMessage"] = self.error_message
        return orjson.dumps({"partialSuccess": partial})


def decode_otlp(body: bytes, content_type: str) -> OtlpDecoded:
    """Decode an OTLP/HTTP ``ExportTraceServiceRequest`` body into spans.

    ``content_type`` is the request's ``Content-Type`` header (parameters such as
    ``charset`` are ignored). Raises ``OtlpError`` (415) for another media type
    and ``OtlpError`` (400) for a body that is not a readable request.
    """
    media = _media_type(content_type)
    if media in PROTOBUF_MEDIA_TYPES:
        spans, report = decode_protobuf(body)
    elif media == JSON_MEDIA_TYPE:
        spans, report = decode_json(body)
    else:
        raise OtlpError(
            415,
            f"unsupported Content-Type {content_type!r}: OTLP/HTTP traces are accepted as "
            "application/x-protobuf or application/json",
        )
    return OtlpDecoded(spans, report.rejected, report.message())


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()

"""A request body within its limits: compressed size, then decompressed size.

``Content-Encoding: gzip`` (and ``zstd``) bodies are inflated in bounded
steps that stop at ``max_decompressed`` bytes, so a compression bomb — a few
kilobytes that would inflate to gigabytes — costs at most that much memory
and one 413 answer. Runs in a worker thread (inflating is CPU work).
"""

from __future__ import annotations

import io
import zlib
from typing import Any

import orjson

__all__ = ["BodyError", "decode_body", "load_json"]

_STEP = 1 << 20


class BodyError(Exception):
    """A body the server will not read: ``status`` (400, 413, 415), code and fix."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def load_json(raw: bytes) -> Any:
    """``raw`` parsed as JSON, or ``BodyError`` 400 ``TR-INGEST-JSON``."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BodyError(400, "TR-INGEST-JSON", f"the body is not JSON ({exc})") from exc


def decode_body(body: bytes, encoding: str | None, *, max_decompressed: int) -> bytes:
    """``body`` decompressed per ``encoding`` (``gzip``, ``zstd``, identity)."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("identity", ""):
        if len(body) > max_decompressed:
            raise _too_large(max_decompressed)
        return body
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _inflate(body, max_decompressed, 16 + zlib.MAX_WBITS if encoding != "deflate" else 0)
    if encoding == "zstd":
        return _unzstd(body, max_decompressed)
    raise BodyError(
        415,
        "TR-INGEST-ENCODING",
        f"Content-Encoding {encoding!r} is not supported; send gzip, zstd or none",
    )


def _too_large(limit: int) -> BodyError:
    return BodyError(
        413,
        "TR-INGEST-TOO-LARGE",
        f"the body decompresses to more than {limit} bytes; send smaller batches",
    )


def _inflate(body: bytes, limit: int, wbits: int) -> bytes:
    inflater = zlib.decompressobj(wbits or zlib.MAX_WBITS | 32)
    out: list[bytes] = []
    size = 0
    data = body
    try:
        while data:
            chunk = inflater.decompress(data, _STEP)
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            out.append(chunk)
            data = inflater.unconsumed_tail
            if inflater.eof:
                break
        if not inflater.eof:
            raise BodyError(400, "TR-INGEST-BODY", "the gzip body is cut short")
    except zlib.error as exc:
        raise BodyError(400, "TR-INGEST-BODY", f"the gzip body is damaged ({exc})") from exc
    return b"".join(out)


def _unzstd(body: bytes, limit: int) -> bytes:
    import zstandard

    out: list[bytes] = []
    size = 0
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)) as reader:
            while chunk := reader.read(_STEP):
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                out.append(chunk)
    except zstandard.ZstdError as exc:
        raise BodyError(400, "TR-INGEST-BODY", f"the zstd body is damaged ({exc})") from exc
    return b"".join(out)

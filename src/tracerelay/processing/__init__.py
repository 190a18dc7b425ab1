"""What happens to a record between its end and its export.

A processor is a small object configured once in its constructor that does its
work in ``__call__(record) -> record | None``: it may change the record in
place and return it, or return ``None`` to drop it. One that raises is
reported and skipped — unless it has ``fail_closed = True`` (both redactors
do), in which case the record is dropped, counted, rather than sent with what
the processor should have removed. Processors run in the pipeline's thread,
never in traced code, in this order:

    validation → limits (sanitise, cut to size) → secret redaction → PII redaction → yours

Head sampling is not in this chain: it is decided once per trace when its root
span starts (``TraceIdRatioSampler``), so an unsampled trace costs nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from tracerelay.processing.limits import LimitsProcessor
from tracerelay.processing.pii import PiiRedactor
from tracerelay.processing.redaction import SecretRedactor
from tracerelay.processing.sampling import TraceIdRatioSampler
from tracerelay.processing.validation import ValidationProcessor

if TYPE_CHECKING:
    from tracerelay.config import Config

__all__ = [
    "LimitsProcessor",
    "PiiRedactor",
    "Processor",
    "SecretRedactor",
    "TraceIdRatioSampler",
    "ValidationProcessor",
    "build_processors",
]

Processor = Callable[[Any], Any]
"""``processor(record)`` returns the (possibly changed) record, or None to drop it."""


def build_processors(config: Config, extra: Iterable[Processor] = ()) -> list[Processor]:
    """The built-in chain the configuration asks for, followed by the user's own."""
    chain: list[Processor] = [
        ValidationProcessor(),
        LimitsProcessor(
            max_attributes=config.max_attributes,
            max_attribute_length=config.max_attribute_length,
            max_events=config.max_events,
            max_io_length=config.max_io_length,
            max_span_bytes=config.max_span_bytes,
        ),
    ]
    if config.redact:
        chain.append(SecretRedactor())
    if config.redact_pii:
        chain.append(PiiRedactor(mode=config.pii_mode, salt=config.pii_salt or ""))
    chain.extend(extra)
    return chain

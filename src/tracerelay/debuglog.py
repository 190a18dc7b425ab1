"""The SDK's own log output: ``debug`` turns it on, ``log_format`` shapes it, secrets stay out.

tracerelay logs its work and its swallowed failures on the ``tracerelay``
logger (see ``_diagnostics``) and prints nothing itself, unless ``debug`` is
on. Every ``Client`` calls ``configure_logging(config)``; with ``debug`` on,
that puts one ``StderrHandler`` on the ``tracerelay`` logger and lowers the
logger to DEBUG; with it off, it takes that handler away and puts the level
back. The last client built decides. Nothing else is touched: not the root
logger, not handlers the application put anywhere, not ``propagate``.

The handler writes one line per record to ``sys.stderr``: a ``text`` line, or
with ``log_format="json"`` one object per line (``JsonFormatter``). Before a
record is written, the handler's ``SecretFilter`` rewrites it: the configured
secret values (``api_key``, ``pii_salt``) wherever they appear, then whatever
the span redactor's value rule catches (``Authorization`` credentials, JWTs,
API keys of known formats, ``password=…`` pairs, passwords in URLs). Records
are rewritten in place, so the application's handlers further up the logger
tree receive them already scrubbed. Without the handler there is no filter
and no cost: a DEBUG call stops at the logger's level check, as before.
"""

from __future__ import annotations

import datetime
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import orjson

from tracerelay._diagnostics import internal_error, logger
from tracerelay.config import Config, options
from tracerelay.jsonsafe import safe_repr, to_jsonable
from tracerelay.processing.redaction import SecretRedactor

__all__ = ["MARKER", "JsonFormatter", "SecretFilter", "StderrHandler", "configure_logging"]

MARKER = "[REDACTED]"
"""What a secret becomes in the log, the same marker the span redactor uses."""

# No logger name: every message of the SDK already starts with "tracerelay".
_TEXT_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(message)s"
_TEXT_DATE = "%Y-%m-%dT%H:%M:%S"
_REPR_LIMIT = 4096  # characters kept of an argument or extra shown by its repr
_TEXT_LIMIT = 100_000  # characters kept of a field when the JSON fast path fails
# Attributes every LogRecord has (on this Python), plus the two Formatter.format adds:
# anything else on a record came from ``extra=`` and goes into the JSON object.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}
# Where the filter leaves the scrubbed exception message for the JSON formatter.
_EXC_MESSAGE = "_tracerelay_exc_message"
# "[TR-AUTH-REJECTED] …" in a message: the code the SDK's coded warnings carry.
_CODE = re.compile(r"\[(TR-[A-Z]+(?:-[A-Z]+)*)\]")
_PLAIN = logging.Formatter()
_UNENCODABLE = "tracerelay: this log record could not be encoded"

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _message(record: logging.LogRecord) -> str:
    """``record.getMessage()``, or the template and its arguments shown by repr if they clash."""
    try:
        return record.getMessage()
    except Exception:
        args = record.args
        shown = (
            ", ".join(safe_repr(arg, _REPR_LIMIT) for arg in args)
            if isinstance(args, tuple)
            else safe_repr(args, _REPR_LIMIT)
        )
        return f"{safe_repr(record.msg, _REPR_LIMIT)} % ({shown})"


def _exc_info(record: logging.LogRecord) -> ExcInfo | None:
    info = record.exc_info
    if isinstance(info, tuple) and len(info) == 3 and isinstance(info[1], BaseException):
        return info
    return None


def _exc_text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return safe_repr(exc, _REPR_LIMIT)


def _type_name(kind: type) -> str:
    module = getattr(kind, "__module__", "")
    name = getattr(kind, "__qualname__", "") or safe_repr(kind)
    return name if module in ("builtins", "") else f"{module}.{name}"


def _extras(record: logging.LogRecord) -> list[str]:
    return [key for key in vars(record) if key not in _STANDARD and not key.startswith("_")]


class SecretFilter(logging.Filter):
    """Rewrites each record so that no secret reaches the output; never raises.

    ``secrets`` are exact values (the configured api key) replaced by ``MARKER``
    wherever they appear; the span redactor's value scrubber
    (``SecretRedactor.scrub_text``) then masks secret-shaped text. The message
    is formatted once and stored scrubbed in ``msg`` with ``args`` emptied; the
    exception becomes scrubbed ``exc_text`` (which formatters print instead of
    formatting ``exc_info`` again); the stack and extras are scrubbed too, an
    extra that is not a plain value by its repr. A record that cannot be
    scrubbed is dropped and the failure reported as an internal error.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self._redactor = SecretRedactor(marker=MARKER)
        self.secrets: tuple[str, ...] = ()
        self.add_secrets(secrets)

    def add_secrets(self, secrets: Iterable[str | None]) -> None:
        """Also replace these exact values; blank ones are ignored, as they would match anywhere."""
        known = set(self.secrets)
        known.update(s for s in secrets if isinstance(s, str) and s.strip())
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = tuple(sorted(known, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        """``text`` with the exact secrets, then secret-shaped values, replaced by ``MARKER``."""
        # Exact values first: the redactor could mask part of a key and leave the rest.
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MARKER)
        return self._redactor.scrub_text(text)

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub ``record`` in place; False (drop it) only if that failed."""
        try:
            self._scrub(record)
        except Exception as exc:
            # Fail closed, like the redactors in the pipeline: better no line than a leak.
            internal_error("debug log secret filter", exc)
            return False
        return True

    def _scrub(self, record: logging.LogRecord) -> None:
        scrub = self.scrub
        record.msg = scrub(_message(record))
        record.args = ()
        info = _exc_info(record)
        if info is not None:
            record.exc_text = scrub(_PLAIN.formatException(info))
            setattr(record, _EXC_MESSAGE, scrub(_exc_text(info[1])))
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        for key in _extras(record):
            value = getattr(record, key)
            if value is None or isinstance(value, (bool, int, float)):
                continue
            text = value if isinstance(value, str) else safe_repr(value, _REPR_LIMIT)
            setattr(record, key, scrub(text))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line; never raises.

    Always ``ts`` (ISO 8601, UTC), ``level``, ``logger`` and ``message`` (with
    its arguments filled in; shown by repr if they do not fit the template).
    Then, when present: the record's ``extra=`` fields; ``exc_type``,
    ``exc_message`` and ``traceback`` for an exception; ``stack`` for
    ``stack_info``; and ``code``, from an ``extra``, the exception's ``code``
    or a ``[TR-…]`` code in the message. Values JSON cannot hold are written
    by their repr.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (without the newline)."""
        try:
            return _encode(self._fields(record))
        except Exception:
            return _encode({"ts": _iso_utc(time.time()), "level": "ERROR", "message": _UNENCODABLE})

    def _fields(self, record: logging.LogRecord) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "ts": _iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        for key in _extras(record):
            fields.setdefault(key, getattr(record, key))
        info = _exc_info(record)
        if info is not None:
            kind, exc, _ = info
            scrubbed = vars(record).get(_EXC_MESSAGE)
            fields.setdefault("exc_type", _type_name(kind))
            fields.setdefault("exc_message", _exc_text(exc) if scrubbed is None else scrubbed)
            fields["traceback"] = record.exc_text or self.formatException(info)
            code = getattr(exc, "code", None)
            if isinstance(code, str):
                fields.setdefault("code", code)
        elif record.exc_text:
            fields["traceback"] = record.exc_text
        if record.stack_info:
            fields["stack"] = record.stack_info
        if "code" not in fields:
            match = _CODE.search(fields["message"])
            if match:
                fields["code"] = match.group(1)
        return fields


def _iso_utc(created: float) -> str:
    stamp = datetime.datetime.fromtimestamp(created, tz=datetime.timezone.utc)
    return stamp.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _repr_default(value: object) -> str:
    return safe_repr(value, _REPR_LIMIT)


def _encode(fields: dict[str, Any]) -> str:
    try:
        return orjson.dumps(fields, default=_repr_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except Exception:
        # What orjson refuses even with a default (lone surrogates, integers past 64
        # bits, cycles) is made JSON-safe first, at the cost of a slower second pass.
        safe = to_jsonable(fields, max_length=_TEXT_LIMIT, max_depth=4)
        return orjson.dumps(safe, default=_repr_default).decode()


class StderrHandler(logging.Handler):
    """tracerelay's handler: one line per record to whatever ``sys.stderr`` is when it is written.

    Looking ``sys.stderr`` up per record (as the stdlib's last-resort handler
    does) follows later redirections, test capture included. It carries its
    ``SecretFilter`` as ``secret_filter`` and remembers the logger level it
    replaced in ``previous_level``.
    """

    def __init__(self, previous_level: int = logging.NOTSET) -> None:
        super().__init__(logging.DEBUG)
        self.previous_level = previous_level
        self.secret_filter = SecretFilter()
        self.addFilter(self.secret_filter)

    def emit(self, record: logging.LogRecord) -> None:
        """Write the formatted record and a newline to ``sys.stderr``, if there is one."""
        try:
            stream = sys.stderr
            if stream is None:  # pythonw, some daemons: nowhere to write
                return
            stream.write(self.format(record) + "\n")
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


_lock = threading.Lock()


def configure_logging(config: Config) -> None:
    """Install, update or remove tracerelay's stderr handler to match ``config``; never raises.

    ``debug`` on: one ``StderrHandler`` on the ``tracerelay`` logger (added
    only if tracerelay has none there yet), the logger at DEBUG, the handler's
    format set from ``log_format``, and ``config``'s secret values added to the
    ones its filter already replaces. ``debug`` off: that handler removed and
    the logger's previous level restored (unless someone changed it since).
    """
    try:
        with _lock:
            handler = next((h for h in logger.handlers if isinstance(h, StderrHandler)), None)
            if not config.debug:
                if handler is not None:
                    logger.removeHandler(handler)
                    if logger.level == logging.DEBUG:
                        logger.setLevel(handler.previous_level)
                return
            if handler is None:
                handler = StderrHandler(previous_level=logger.level)
                logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
            handler.setFormatter(_formatter(config.log_format))
            handler.secret_filter.add_secrets(
                getattr(config, opt.name) for opt in options() if opt.kind == "secret"
            )
        # The repr leaves the secret options out, and the filter scrubs the rest.
        logger.debug("tracerelay: debug log on (%s); %r", config.log_format, config)
    except Exception as exc:
        internal_error("debug logging setup", exc)


def _formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    formatter = logging.Formatter(_TEXT_FORMAT, _TEXT_DATE)
    formatter.converter = time.gmtime  # the same clock as the JSON format's ts
    return formatter

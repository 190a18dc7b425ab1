"""Every option of the SDK: its keyword, environment variable, type, range and default.

``Config`` is one keyword-only object, resolved once at ``init()``/``Client()``:
a keyword argument wins over the ``TRACERELAY_<NAME>`` environment variable,
which wins over the default. A value of the wrong type or outside its range
fails right there with a ``ConfigError`` that names the option, the value, where
it came from, the allowed range and a fix. ``docs/configuration.md`` documents
the same table; a test keeps the two from drifting apart.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tracerelay.errors import ConfigError

__all__ = ["FALSE_WORDS", "TRUE_WORDS", "Config", "Option", "make_config", "options"]

_UNSET: Any = object()
_ENV_PREFIX = "TRACERELAY_"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
"""How a boolean is spelled in the environment, wherever tracerelay reads one."""
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)

Kind = Literal["bool", "int", "float", "str", "choice", "bytes", "url", "secret"]


@dataclass(frozen=True)
class Option:
    """The description of one option, kept in the metadata of a ``Config`` field."""

    name: str
    kind: Kind
    default: Any
    doc: str
    group: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def env(self) -> str:
        """The environment variable that sets this option."""
        return _ENV_PREFIX + self.name.upper()

    def allowed(self) -> str:
        """The allowed values, as a person would write them."""
        if self.choices:
            return " | ".join(self.choices)
        if self.kind == "bool":
            return "true | false"
        if self.lo is not None and self.hi is not None:
            return f"{_fmt(self.lo)} – {_fmt(self.hi)}"
        if self.kind == "url":
            return "http:// or https:// URL"
        return "any text"

    def _wanted(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.lo is not None and self.hi is not None:
            unit = " (bytes; suffixes like 64MiB work)" if self.kind == "bytes" else ""
            return f"a number from {_fmt(self.lo)} to {_fmt(self.hi)}{unit}"
        if self.kind == "url":
            return "a URL such as http://127.0.0.1:4319"
        return "a non-empty text value" if self.default is not None else "a text value"

    def parse(self, value: Any, source: str) -> Any:
        """Convert and check one value; ``source`` says where it came from, for the message."""
        try:
            converted = _CONVERT[self.kind](self, value)
        except (TypeError, ValueError):
            converted = _UNSET
        if converted is _UNSET:
            # Raised outside the except block so no chained exception keeps the raw
            # value (an api_key, say) reachable through __context__.
            raise self._error("TR-CONFIG-TYPE", value, source, "has the wrong type or form")
        if converted is None:
            return None
        if self.choices and converted not in self.choices:
            raise self._error("TR-CONFIG-CHOICE", value, source, "is not one of the choices")
        if self.lo is not None and self.hi is not None and not self.lo <= converted <= self.hi:
            raise self._error("TR-CONFIG-RANGE", value, source, "is out of range")
        return converted

    def _error(self, code: str, value: Any, source: str, what: str) -> ConfigError:
        shown = "<hidden>" if self.kind == "secret" else repr(value)
        where = (
            f"keyword {self.name}=" if source == "argument" else f"environment variable {self.env}="
        )
        fix = (
            f"pass {self.name}= {self._wanted()}"
            if source == "argument"
            else f"set {self.env} to {self._wanted()}, or unset it"
        )
        return ConfigError(
            f"option {self.name!r} {what}: {where}{shown}. Allowed: {self.allowed()}; "
            f"default: {_fmt(self.default)}.",
            code=code,
            fix=fix + ".",
        )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _to_bool(opt: Option, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in TRUE_WORDS:
            return True
        if text in FALSE_WORDS:
            return False
    raise ValueError(value)


def _to_int(opt: Option, value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip().replace("_", ""))
    raise TypeError(value)


def _to_float(opt: Option, value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise TypeError(value)


def _to_bytes(opt: Option, value: Any) -> int:
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise ValueError(value)
        number, unit = match.group(1), (match.group(2) or "").lower()
        base = 1024 if "i" in unit else 1000
        scale = 1 if unit in ("", "b") else base ** ("kmgt".index(unit[0]) + 1)
        return int(float(number) * scale)
    return _to_int(opt, value)


def _to_str(opt: Option, value: Any) -> str | None:
    if value is None and opt.default is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise TypeError(value)
    if not value.strip() and opt.default is not None:
        raise ValueError(value)  # an option with a default cannot be blank
    return value


def _to_url(opt: Option, value: Any) -> str:
    text = (_to_str(opt, value) or "").strip()
    # The whole value must be a URL: a space inside would only fail later, on every send.
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
        raise ValueError(value)
    return text.rstrip("/")


_CONVERT: dict[str, Any] = {
    "bool": _to_bool,
    "int": _to_int,
    "float": _to_float,
    "bytes": _to_bytes,
    "str": _to_str,
    "secret": _to_str,
    "choice": lambda opt, value: _to_str(opt, value.strip() if isinstance(value, str) else value),
    "url": _to_url,
}


def _opt(
    kind: Kind,
    default: Any,
    doc: str,
    group: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] = (),
) -> Any:
    # The option's name is filled in from the field name once the class exists.
    spec = Option("", kind, default, doc, group, lo, hi, choices)
    return field(default=_UNSET, metadata={"option": spec}, repr=kind != "secret")


_KB, _MB, _GB = 1024, 1024**2, 1024**3


@dataclass(kw_only=True)
class Config:
    """All SDK options, resolved as argument > ``TRACERELAY_<NAME>`` > default.

    Build one with ``make_config(**options)`` (which also rejects unknown
    names with a suggestion) or ``Config(...)`` directly. ``environ`` replaces
    ``os.environ`` for the lookup, which tests use.
    """

    # identity
    api_key: str | None = _opt("secret", None, "Key sent as `Authorization: Bearer`.", "identity")
    endpoint: str = _opt(
        "url", "http://127.0.0.1:4319", "Base URL of the tracerelay server.", "identity"
    )
    service: str = _opt("str", "unknown_service", "`service.name` of this process.", "identity")
    service_version: str | None = _opt(
        "str", None, "`service.version` of this process.", "identity"
    )
    environment: str = _opt("str", "production", "`deployment.environment`.", "identity")
    enabled: bool = _opt("bool", True, "`false` turns tracing into a no-op everywhere.", "identity")

    # delivery
    mode: str = _opt(
        "choice",
        "deferred",
        "`deferred` batches; `instant` sends each span as it ends.",
        "delivery",
        choices=("deferred", "instant"),
    )
    instant_endpoint: str = _opt(
        "choice",
        "stream",
        "In `instant` mode, where a request of one event goes: `stream` "
        "(`/v1/uploads/stream`) or `batch`.",
        "delivery",
        choices=("stream", "batch"),
    )
    announce_after: float = _opt(
        "float",
        1.0,
        "In `instant` mode, seconds after which a span still running is announced "
        "(`observation_create` without end, then `observation_complete`).",
        "delivery",
        lo=0,
        hi=3600,
    )
    exporter: str = _opt(
        "choice",
        "http",
        "Built-in exporter: `http` to the server, `console` tree, `jsonl` file, or `none`.",
        "delivery",
        choices=("none", "http", "console", "jsonl"),
    )
    export_file: str = _opt(
        "str", "tracerelay-spans.jsonl", "File the `jsonl` exporter appends to.", "delivery"
    )
    batch_max_size: int = _opt("int", 100, "Records per batch.", "delivery", lo=1, hi=1000)
    batch_flush_interval: float = _opt(
        "float", 5.0, "Seconds before a partial batch leaves.", "delivery", lo=0.1, hi=60
    )
    batch_enable_deduplication: bool = _opt(
        "bool", True, "Ask the server to drop repeated event ids.", "delivery"
    )
    batch_deduplication_ttl: int = _opt(
        "int", 3600, "Seconds the server remembers event ids.", "delivery", lo=60, hi=86400
    )
    batch_fail_on_duplicate: bool = _opt(
        "bool", False, "Server answers 409 on duplicates.", "delivery"
    )
    adaptive_batching: bool = _opt(
        "bool", True, "Grow and shrink batches from round-trip times.", "delivery"
    )
    min_batch_size: int = _opt("int", 10, "Smallest adaptive batch.", "delivery", lo=1, hi=1000)
    max_batch_size: int = _opt("int", 500, "Largest adaptive batch.", "delivery", lo=1, hi=1000)
    max_queue_size: int = _opt(
        "int", 10_000, "Records held in memory before overflow.", "delivery", lo=1, hi=10_000_000
    )
    max_queue_bytes: int = _opt(
        "bytes",
        8 * _MB,
        "Encoded bytes waiting for the network.",
        "delivery",
        lo=_MB,
        hi=16 * _GB,
    )
    shutdown_timeout: float = _opt(
        "float", 3.0, "Seconds the exit flush may take.", "delivery", lo=0, hi=600
    )

    # network
    max_retries: int = _opt(
        "int", 5, "Retries per batch before it is spooled.", "network", lo=0, hi=100
    )
    retry_backoff: float = _opt(
        "float",
        0.5,
        "Base of the jittered exponential backoff, seconds.",
        "network",
        lo=0.01,
        hi=60,
    )
    timeout: float = _opt("float", 10.0, "Seconds per HTTP request.", "network", lo=0.1, hi=300)
    compression: str = _opt(
        "choice", "gzip", "Request body compression.", "network", choices=("gzip", "zstd", "none")
    )
    compression_threshold: float = _opt(
        "float", 0.8, "Compress only if compressed/raw is below this.", "network", lo=0.1, hi=1.0
    )
    compression_min_size: int = _opt(
        "bytes", 1024, "Bodies smaller than this are sent raw.", "network", lo=0, hi=16 * _MB
    )
    circuit_breaker_enabled: bool = _opt(
        "bool", True, "Stop sending while the server is failing.", "network"
    )
    failure_threshold: int = _opt(
        "int", 5, "Consecutive failures that open the breaker.", "network", lo=1, hi=1000
    )
    recovery_timeout: float = _opt(
        "float", 60.0, "Seconds the breaker stays open before probing.", "network", lo=0.5, hi=3600
    )
    connection_pool_size: int = _opt(
        "int",
        10,
        "HTTP connections kept: the most requests in flight at once. The SDK starts "
        "with one and adds more only while the server is slow to answer; see Tuning.",
        "network",
        lo=1,
        hi=100,
    )
    keep_alive: bool = _opt("bool", True, "Reuse HTTP connections.", "network")

    # spool
    spool_dir: str | None = _opt(
        "str", None, "Disk spool folder; unset: `$XDG_CACHE_HOME/tracerelay/spool`.", "spool"
    )
    spool_max_bytes: int = _opt(
        "bytes", 256 * _MB, "Spool size before the oldest files go.", "spool", lo=_MB, hi=1024 * _GB
    )
    durability: str = _opt(
        "choice",
        "memory",
        "`disk` writes each batch to the spool before sending.",
        "spool",
        choices=("memory", "disk"),
    )

    # processing
    sample_rate: float = _opt(
        "float", 1.0, "Share of traces kept, decided once per trace.", "processing", lo=0.0, hi=1.0
    )
    redact: bool = _opt("bool", True, "Mask secrets (passwords, tokens, keys).", "processing")
    redact_pii: bool = _opt(
        "bool", False, "Mask emails, phones, cards, IP addresses.", "processing"
    )
    pii_mode: str = _opt(
        "choice",
        "mask",
        "`mask` replaces PII; `hash` replaces it with a stable digest.",
        "processing",
        choices=("mask", "hash"),
    )
    pii_salt: str | None = _opt(
        "secret",
        None,
        "Key of the HMAC in `hash` mode; set it so digests cannot be guessed back.",
        "processing",
    )
    capture_io: bool = _opt(
        "bool", False, "Record traced functions' arguments and results.", "processing"
    )
    max_io_length: int = _opt(
        "int", 32_768, "Characters kept of captured input/output.", "processing", lo=64, hi=16 * _MB
    )
    max_attribute_length: int = _opt(
        "int", 8192, "Characters kept of a string attribute.", "processing", lo=16, hi=16 * _MB
    )
    max_attributes: int = _opt(
        "int", 128, "Attributes kept per record.", "processing", lo=1, hi=10_000
    )
    max_events: int = _opt("int", 128, "Events kept per span.", "processing", lo=1, hi=10_000)
    max_span_bytes: int = _opt(
        "bytes", 1 * _MB, "Encoded size a span is cut down to.", "processing", lo=_KB, hi=64 * _MB
    )
    debug: bool = _opt("bool", False, "Log the SDK's own work to stderr.", "processing")
    log_format: str = _opt(
        "choice",
        "text",
        "Format of the `debug` log: `text` lines or `json`, one object per line.",
        "processing",
        choices=("text", "json"),
    )

    environ: Mapping[str, str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        env = os.environ if self.environ is None else self.environ
        for f in _FIELDS:
            opt: Option = f.metadata["option"]
            given = getattr(self, f.name)
            if given is not _UNSET:
                value = opt.parse(given, "argument")
            elif opt.env in env and env[opt.env].strip() != "":
                value = opt.parse(env[opt.env], "environment")
            else:
                value = opt.default
            object.__setattr__(self, f.name, value)
        self.environ = None
        if self.min_batch_size > self.max_batch_size:
            raise ConfigError(
                f"min_batch_size={self.min_batch_size} is larger than "
                f"max_batch_size={self.max_batch_size}.",
                code="TR-CONFIG-CONFLICT",
                fix="make min_batch_size at most max_batch_size.",
            )


_FIELDS = [f for f in dataclasses.fields(Config) if "option" in f.metadata]
for _f in _FIELDS:
    object.__setattr__(_f.metadata["option"], "name", _f.name)


def options() -> list[Option]:
    """Every option in declaration order (the order ``docs/configuration.md`` uses)."""
    return [f.metadata["option"] for f in _FIELDS]


_NAMES = frozenset(f.name for f in _FIELDS)


def make_config(**kwargs: Any) -> Config:
    """Build a ``Config``, turning an unknown keyword into a ``ConfigError`` with a suggestion."""
    for name in kwargs:
        if name not in _NAMES and name != "environ":
            close = difflib.get_close_matches(name, _NAMES, n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else "see docs/configuration.md for the list."
            )
            raise ConfigError(f"unknown option {name!r}.", code="TR-CONFIG-UNKNOWN", fix=hint)
    return Config(**kwargs)

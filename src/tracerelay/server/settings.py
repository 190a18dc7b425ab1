"""The server's settings: keyword-only, validated when made, from the CLI or the environment.

Precedence as in the SDK: argument > ``TRACERELAY_*`` variable > default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

from tracerelay.config import FALSE_WORDS, TRUE_WORDS
from tracerelay.errors import ConfigError

__all__ = ["ServerSettings"]

_MB = 1 << 20


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """What ``tracerelay serve`` runs with; see docs/server.md."""

    host: str = "127.0.0.1"
    port: int = 4319
    database_url: str = "sqlite:///tracerelay.db"
    redis_url: str | None = None
    max_body_bytes: int = 16 * _MB
    max_decompressed_bytes: int = 64 * _MB
    max_queued_events: int = 200_000
    dedup_ttl: float = 3600.0
    bootstrap_key: str | None = None
    retention_days: float | None = None
    retention_check_seconds: float = 3600.0
    rate_limit_events_per_s: float | None = None
    rate_limit_burst: int | None = None
    writer_process: bool = True
    """Write from a child process (``storage/process.py``) rather than a thread of this
    one (``TRACERELAY_WRITER_PROCESS=false``: where starting a process is not allowed)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(
                f"port {self.port} is out of range.",
                code="TR-CONFIG-RANGE",
                fix="use a port from 0 to 65535.",
            )
        scheme = urlparse(self.database_url).scheme
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ConfigError(
                f"database_url {self.database_url!r} is not a SQLite or PostgreSQL URL.",
                code="TR-CONFIG-DATABASE",
                fix="use sqlite:///path/to/file.db or postgresql://user@host:port/db.",
            )
        for name in ("max_body_bytes", "max_decompressed_bytes", "max_queued_events"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"{name} must be positive.",
                    code="TR-CONFIG-RANGE",
                    fix="give a positive number.",
                )
        if self.retention_days is not None and not 0 < self.retention_days <= 36500:
            raise ConfigError(
                f"retention_days {self.retention_days} is out of range.",
                code="TR-CONFIG-RANGE",
                fix="keep data between a fraction of a day and 36,500 days.",
            )
        if self.rate_limit_events_per_s is not None and self.rate_limit_events_per_s <= 0:
            raise ConfigError(
                "rate_limit_events_per_s must be positive.",
                code="TR-CONFIG-RANGE",
                fix="give events per second per key, or leave it unset for no limit.",
            )
        if self.bootstrap_key is not None and len(self.bootstrap_key) < 16:
            raise ConfigError(
                "the bootstrap key is shorter than 16 characters.",
                code="TR-CONFIG-BOOTSTRAP-KEY",
                fix="give TRACERELAY_BOOTSTRAP_KEY a long random value.",
            )

    @property
    def sqlite_path(self) -> str | None:
        """The database file, for a SQLite URL (``sqlite:///rel`` or ``sqlite:////abs``)."""
        if not self.database_url.startswith("sqlite:"):
            return None
        return self.database_url.split("sqlite:///", 1)[1] or "tracerelay.db"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **given: object) -> ServerSettings:
        """Settings from ``given`` (None values ignored), else ``TRACERELAY_*``, else defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name, variable in (
            ("database_url", "TRACERELAY_DATABASE_URL"),
            ("redis_url", "TRACERELAY_REDIS_URL"),
            ("bootstrap_key", "TRACERELAY_BOOTSTRAP_KEY"),
        ):
            if env.get(variable):
                values[name] = env[variable]
        flag = env.get("TRACERELAY_WRITER_PROCESS", "").strip().lower()
        if flag:
            if flag not in TRUE_WORDS | FALSE_WORDS:
                raise ConfigError(
                    f"TRACERELAY_WRITER_PROCESS={env['TRACERELAY_WRITER_PROCESS']!r} is not "
                    "a boolean.",
                    code="TR-CONFIG-TYPE",
                    fix="set it to true or false (1/0, yes/no, on/off), or unset it.",
                )
            values["writer_process"] = flag in TRUE_WORDS
        values.update({k: v for k, v in given.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

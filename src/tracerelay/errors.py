"""Errors raised by tracerelay, all under one root, each with a stable code.

Hierarchy::

    TracerelayError            every error tracerelay raises; has .code and .fix
    ├── ConfigError            TR-CONFIG-*  a bad option value, raised at init()/Client()
    ├── AuthError              TR-AUTH-*    the server refused the api key or its scope
    └── NetworkError           TR-NET-*     the server could not be reached or answered badly

Only configuration errors ever reach the application, and only from ``init()``
or a client constructor, where failing fast is what the user asked for. Once
tracing runs, the SDK's own failures are counted and logged, never raised into
traced code (see ``tracerelay._diagnostics``).

Every code is documented in ``docs/troubleshooting.md``.
"""

from __future__ import annotations

__all__ = ["AuthError", "ConfigError", "NetworkError", "TracerelayError"]


class TracerelayError(Exception):
    """Root of every tracerelay error.

    ``code`` is stable and searchable (``TR-CONFIG-RANGE``); ``fix`` says what to
    do about it. ``str(error)`` gives both.
    """

    code: str = "TR-ERROR"

    def __init__(self, message: str, *, code: str | None = None, fix: str | None = None) -> None:
        if code is not None:
            self.code = code
        self.message = message
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"[{self.code}] {self.message}"
        if self.fix:
            text += f" Fix: {self.fix}"
        return text


class ConfigError(TracerelayError, ValueError):
    """An option has a value outside its type, range or choices."""

    code = "TR-CONFIG-INVALID"


class AuthError(TracerelayError):
    """The server rejected the api key (401) or the key lacks a scope (403)."""

    code = "TR-AUTH-REJECTED"


class NetworkError(TracerelayError):
    """The server could not be reached, or answered in a way that cannot be retried."""

    code = "TR-NET-UNREACHABLE"

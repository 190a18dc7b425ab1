"""The resource: who emits the records (service, deployment, host, runtime, process).

Collected once per ``Client`` and sent once per batch, never per span. Keys
follow OpenTelemetry's semantic conventions. ``TRACERELAY_RESOURCE_ATTRIBUTES``
(or, failing that, ``OTEL_RESOURCE_ATTRIBUTES``) adds ``key=value,key=value``
pairs, which give way to a configured service, version or environment;
``OTEL_SERVICE_NAME`` is honoured when no service was configured.

``system_info`` gives the three attributes the stream endpoint carries instead
of the whole resource (SPEC §1).
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from tracerelay._version import __version__

__all__ = ["SYSTEM_INFO", "detect_resource", "system_info"]

# The defaults of the ``service`` and ``environment`` options: they mean "not configured".
_DEFAULT_SERVICE = "unknown_service"
_DEFAULT_ENVIRONMENT = "production"

SYSTEM_INFO = {
    "system_name": "service.name",
    "system_id": "service.namespace",
    "system_instance_id": "service.instance.id",
}
"""Each ``system_info`` key of ``POST /v1/uploads/stream`` → the resource attribute it maps onto."""


def _parse_pairs(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            pairs[key.strip()] = unquote(value.strip())
    return pairs


def detect_resource(
    service: str,
    *,
    service_version: str | None = None,
    environment: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The resource attributes of this process."""
    env = os.environ if environ is None else environ
    extra = _parse_pairs(
        env.get("TRACERELAY_RESOURCE_ATTRIBUTES") or env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    )
    if service == _DEFAULT_SERVICE:
        # OpenTelemetry's order: OTEL_SERVICE_NAME, then service.name among the pairs.
        service = env.get("OTEL_SERVICE_NAME") or extra.get("service.name") or service
    if environment == _DEFAULT_ENVIRONMENT:
        environment = extra.get("deployment.environment") or environment
    resource: dict[str, Any] = {
        "service.name": service,
        "telemetry.sdk.name": "tracerelay",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": __version__,
        "host.name": socket.gethostname(),
        "host.arch": platform.machine(),
        "os.type": sys.platform,
        "os.version": platform.release(),
        "process.pid": os.getpid(),
        "process.executable.path": sys.executable,
        "process.runtime.name": sys.implementation.name,
        "process.runtime.version": platform.python_version(),
    }
    resource.update(extra)
    # What was configured wins over the pairs; only a default gives way to them (above).
    resource["service.name"] = service
    if service_version:
        resource["service.version"] = service_version
    if environment:
        resource["deployment.environment"] = environment
    return resource


def system_info(resource: Mapping[str, Any]) -> dict[str, str]:
    """The stream endpoint's ``system_info`` for ``resource`` (SPEC §1).

    A key whose attribute the resource lacks is left out rather than sent empty:
    ``service.namespace`` and ``service.instance.id`` are there only when
    ``TRACERELAY_RESOURCE_ATTRIBUTES`` (or ``OTEL_RESOURCE_ATTRIBUTES``) sets them.
    """
    return {
        key: str(resource[name])
        for key, name in SYSTEM_INFO.items()
        if resource.get(name) not in (None, "")
    }

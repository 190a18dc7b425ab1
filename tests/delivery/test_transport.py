"""The HTTP transport: what goes on the wire, and how failures surface."""

from __future__ import annotations

import gzip
import socket

import httpx
import orjson
import pytest

import tracerelay
from tracerelay.delivery.encoding import EncodedEvent, Encoder
from tracerelay.delivery.transport import HttpTransport


def recording_transport(seen: list[httpx.Request], status: int = 200) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return httpx.Response(status, json={"status": "ok"})

    return httpx.MockTransport(handle)


def test_batch_post_carries_auth_agent_and_encoding() -> None:
    seen: list[httpx.Request] = []
    transport = HttpTransport(
        "http://127.0.0.1:4319", api_key="tr_secret", transport=recording_transport(seen)
    )
    events = [
        EncodedEvent(f"{i:026d}", orjson.dumps({"event_id": f"{i:026d}"})) for i in range(300)
    ]
    batch = Encoder({"service.name": "s"}).encode(events)
    assert transport.post_batch(batch).status_code == 200
    (request,) = seen
    assert request.url.path == "/v1/telemetry/batch"
    assert request.headers["authorization"] == "Bearer tr_secret"
    assert request.headers["user-agent"] == f"tracerelay-python/{tracerelay.__version__}"
    assert request.headers["content-encoding"] == "gzip"
    assert len(orjson.loads(gzip.decompress(request.content))["events"]) == 300
    transport.close()


def test_stream_post_wraps_one_event_with_system_info() -> None:
    seen: list[httpx.Request] = []
    transport = HttpTransport("http://127.0.0.1:4319", transport=recording_transport(seen))
    data = orjson.dumps({"event_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "event_type": "metric"})
    upload = Encoder({"service.name": "checkout"}).encode_stream(EncodedEvent("x" * 26, data))
    transport.post(upload)
    body = orjson.loads(seen[0].content)
    assert seen[0].url.path == "/v1/uploads/stream"
    assert "authorization" not in seen[0].headers  # no key configured, none sent
    assert body == {
        "event": {"event_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "event_type": "metric"},
        "system_info": {"system_name": "checkout"},
    }
    transport.post(Encoder({}).encode([EncodedEvent("x" * 26, data)]))
    assert seen[1].url.path == "/v1/telemetry/batch"


def test_health_is_true_only_for_200() -> None:
    assert HttpTransport("http://h", transport=recording_transport([], 200)).health()
    assert not HttpTransport("http://h", transport=recording_transport([], 503)).health()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_refused_connection_raises_a_transport_error_and_health_is_false() -> None:
    transport = HttpTransport(f"http://127.0.0.1:{_closed_port()}", timeout=1.0)
    batch = Encoder({}).encode([EncodedEvent("x" * 26, b"{}")])
    with pytest.raises(httpx.TransportError):
        transport.post_batch(batch)
    assert transport.health() is False
    transport.close()


def test_requests_carry_separate_timeouts_and_honour_the_endpoint_path() -> None:
    seen: list[httpx.Request] = []
    transport = HttpTransport(
        "http://127.0.0.1:4319/tracerelay/", timeout=30.0, transport=recording_transport(seen)
    )
    transport.post_batch(Encoder({}).encode([EncodedEvent("x" * 26, b"{}")]))
    (request,) = seen
    assert request.url.path == "/tracerelay/v1/telemetry/batch"
    timeouts = request.extensions["timeout"]
    assert timeouts == {"connect": 5.0, "read": 30.0, "write": 30.0, "pool": 30.0}


def test_proxy_variables_are_honoured_and_no_proxy_bypasses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tracerelay.delivery.transport import _proxy_for

    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert _proxy_for("http://collector.internal:4319") is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    assert _proxy_for("http://collector.internal:4319") == "http://proxy.internal:3128"
    assert _proxy_for("https://collector.internal") is None  # no proxy for https set
    monkeypatch.setenv("NO_PROXY", "collector.internal")
    assert _proxy_for("http://collector.internal:4319") is None

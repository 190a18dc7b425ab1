"""The mock ingest server (``tracerelay.mock``, ``tracerelay mock``), over real HTTP on 127.0.0.1.

Every server a test starts is stopped by the test (context managers and
fixtures). Timings are short: slow replies take half a second at most.
"""

from __future__ import annotations

import email.utils
import gzip
import json
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracerelay import cli
from tracerelay.ids import new_event_id
from tracerelay.mock import FAULT_KINDS, Faults, MockServer

SCRIPT = Path(sys.executable).with_name("tracerelay")
BATCH = "/v1/telemetry/batch"
STREAM = "/v1/uploads/stream"
RESPONSE_KEYS = {
    "batch_id",
    "processed_events",
    "duplicate_events",
    "failed_events",
    "processing_time_ms",
    "errors",
    "duplicate_event_ids",
    "job_id",
}
# What a client sees when the server resets the connection (or closes it before replying).
CUT_OFF = (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError, httpx.ConnectError)


def make_event(event_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """A valid batch event; ``fields`` override or add keys."""
    event = {
        "event_id": event_id or new_event_id(),
        "event_type": "observation_create",
        "timestamp": time.time(),
        "payload": {"name": "step", "trace_id": "ab" * 16},
    }
    event.update(fields)
    return event


def make_batch(*events: Any, **fields: Any) -> dict[str, Any]:
    """A batch envelope around ``events`` (one fresh event when none are given)."""
    body: dict[str, Any] = {
        "events": list(events) or [make_event()],
        "resource": {"service.name": "mock-tests"},
        "environment": "test",
    }
    body.update(fields)
    return body


def assert_error_body(response: httpx.Response, code: str | None = None) -> None:
    body = response.json()
    assert set(body) == {"error", "message", "fix"}
    assert all(isinstance(body[key], str) and body[key] for key in body)
    if code is not None:
        assert body["error"] == code


@pytest.fixture
def server() -> Iterator[MockServer]:
    with MockServer(seed=7) as running:
        yield running


@pytest.fixture
def client(server: MockServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5.0) as http:
        yield http


def faulty(**rates: Any) -> MockServer:
    return MockServer(faults=Faults(**rates), seed=1)


# -- settings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings_", "message"),
    [
        ({"rate_429": 1.5}, "rate_429 must be from 0 to 1"),
        ({"rate_500": -0.1}, "rate_500 must be from 0 to 1"),
        ({"rate_reset": float("nan")}, "rate_reset must be from 0 to 1"),
        ({"rate_413": True}, "rate_413 must be a number"),
        ({"rate_503": "0.5"}, "rate_503 must be a number"),
        ({"slow_seconds": -1}, "slow_seconds must be from 0 to 300"),
        ({"retry_after": float("inf")}, "retry_after must be from 0"),
        ({"retry_after_http_date": 1}, "retry_after_http_date must be true or false"),
        ({"latency": 301}, "latency must be from 0 to 300 seconds"),
        ({"rate_429": 0.6, "rate_503": 0.5}, "add up to 1.1"),
    ],
)
def test_faults_reject_bad_values_by_name(settings_: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Faults(**settings_)


def test_faults_are_keyword_only_and_round_trip() -> None:
    with pytest.raises(TypeError):
        Faults(0.5)  # type: ignore[call-arg]
    faults = Faults(rate_429=0.25, rate_lost_reply=0.75, retry_after=2.5)
    assert Faults.from_mapping(faults.as_dict()) == faults
    assert sum(faults.rates().values()) == 1.0
    assert faults.describe() == "429 25% · lost_reply 75% (Retry-After 2.5 s as seconds)"
    assert Faults().describe().startswith("none")
    with pytest.raises(ValueError, match="unknown fault setting 'rate_418'"):
        Faults.from_mapping({"rate_418": 0.1})


def test_server_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="port"):
        MockServer(port=70000)
    with pytest.raises(ValueError, match="max_body_bytes"):
        MockServer(max_body_bytes=0)
    with pytest.raises(ValueError, match="api_key"):
        MockServer(api_key="")
    idle = MockServer()
    with pytest.raises(RuntimeError, match="start"):
        _ = idle.url
    idle.stop()  # stopping a server that never started does nothing


# -- the batch endpoint -------------------------------------------------------------


def test_a_batch_is_recorded_and_answered_per_spec(
    server: MockServer, client: httpx.Client
) -> None:
    events = [make_event() for _ in range(3)]
    response = client.post(BATCH, json=make_batch(*events))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == RESPONSE_KEYS
    assert len(body["batch_id"]) == 26
    assert body["processed_events"] == 3
    assert (body["duplicate_events"], body["failed_events"]) == (0, 0)
    assert body["errors"] == body["duplicate_event_ids"] == []
    assert body["job_id"] is None
    assert isinstance(body["processing_time_ms"], int)
    assert server.received == {e["event_id"]: 1 for e in events}
    assert server.events[events[0]["event_id"]] == events[0]["payload"]
    assert client.get("/mock/events").json() == server.received
    assert client.get("/health").json() == {"status": "ok"}


def test_duplicates_are_counted_and_reported(server: MockServer, client: httpx.Client) -> None:
    first, second, third = (make_event() for _ in range(3))
    assert client.post(BATCH, json=make_batch(first, second)).status_code == 200
    again = client.post(BATCH, json=make_batch(first, second, third, first))
    assert again.status_code == 200, "duplicates count as accepted"
    body = again.json()
    assert body["processed_events"] == 1
    assert body["duplicate_events"] == 3
    assert body["duplicate_event_ids"] == [first["event_id"], second["event_id"]]
    assert server.received == {first["event_id"]: 3, second["event_id"]: 2, third["event_id"]: 1}
    stats = client.get("/mock/stats").json()
    assert stats == server.stats()
    assert stats["events_received"] == 3
    assert stats["duplicates_received"] == 3
    assert stats["event_deliveries"] == 6
    assert stats["requests_by_status"] == {"200": 2}


def test_fail_on_duplicate_answers_409_and_disabled_dedup_reports_none(
    client: httpx.Client,
) -> None:
    event = make_event()
    client.post(BATCH, json=make_batch(event))
    strict = make_batch(event, make_event(), deduplication={"fail_on_duplicate": True})
    response = client.post(BATCH, json=strict)
    assert response.status_code == 409
    assert response.json()["processed_events"] == 1, "the new event is kept"
    lax = client.post(BATCH, json=make_batch(event, deduplication={"enabled": False}))
    assert lax.status_code == 200
    assert (lax.json()["processed_events"], lax.json()["duplicate_events"]) == (1, 0)


def test_invalid_events_answer_207_with_errors(server: MockServer, client: httpx.Client) -> None:
    good = make_event()
    response = client.post(
        BATCH,
        json=make_batch(
            good,
            make_event("not-a-ulid"),
            make_event(event_type="span_made_up"),
            make_event(payload=["not", "an", "object"]),
            make_event(timestamp="yesterday"),
            "not an event",
        ),
    )
    assert response.status_code == 207
    body = response.json()
    assert (body["processed_events"], body["failed_events"]) == (1, 5)
    codes = [error["error"] for error in body["errors"]]
    assert codes == [
        "invalid_event_id",
        "invalid_event_type",
        "invalid_payload",
        "invalid_timestamp",
        "invalid_event",
    ]
    assert all(error["retryable"] is False for error in body["errors"])
    assert body["errors"][0]["event_id"] == "not-a-ulid"
    assert body["errors"][4]["event_id"] is None
    assert server.received == {good["event_id"]: 1}


def test_lowercase_ulids_are_recorded_uppercased(server: MockServer, client: httpx.Client) -> None:
    event_id = new_event_id()
    assert client.post(BATCH, json=make_batch(make_event(event_id.lower()))).status_code == 200
    assert server.received == {event_id: 1}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"[]",
        b'"events"',
        b'{"events": 1}',
        b'{"resource": {}}',
        b"\xff\xfe{}",
        b"[" * 100_000,
        b'{"events": [], "x": NaN}',
        b'{"events": [], "resource": 3}',
        b'{"events": [], "deduplication": {"enabled": "yes"}}',
        b'{"events": [], "deduplication": []}',
        b'{"events": [' + b"9" * 5000 + b"]}",
    ],
)
def test_an_unreadable_envelope_is_400_never_5xx(
    body: bytes, server: MockServer, client: httpx.Client
) -> None:
    response = client.post(BATCH, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert_error_body(response)
    assert server.received == {}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=30),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.sampled_from(["events", "payload", "event_id", "x"]), inner)
            ),
            max_leaves=20,
        ).map(lambda value: json.dumps(value).encode()),
    ),
    gzipped=st.booleans(),
    stream=st.booleans(),
)
def test_arbitrary_input_never_gets_a_5xx(
    client: httpx.Client, body: bytes, gzipped: bool, stream: bool
) -> None:
    headers = {"Content-Encoding": "gzip"} if gzipped else {}
    response = client.post(STREAM if stream else BATCH, content=body, headers=headers)
    assert response.status_code < 500
    assert response.headers["Content-Type"] == "application/json"


def send_raw(server: MockServer, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request)
        return sock.recv(65536)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"GET /health HTTP/2.0\r\n\r\n", b"400"),
        (b"PUT /v1/telemetry/batch HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
        (b"POST /v1/telemetry/batch HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"400"),
    ],
)
def test_malformed_http_is_answered_4xx_in_json(
    server: MockServer, request_bytes: bytes, status: bytes
) -> None:
    reply = send_raw(server, request_bytes)
    assert reply.split(b" ", 2)[1] == status
    assert b"application/json" in reply


def test_unknown_paths_and_methods(client: httpx.Client) -> None:
    missing = client.get("/v2/anything")
    assert missing.status_code == 404
    assert_error_body(missing, "not_found")
    wrong = client.get(BATCH)
    assert wrong.status_code == 405
    assert_error_body(wrong, "method_not_allowed")
    chunked = client.post(BATCH, content=iter([b'{"events": []}']))
    assert chunked.status_code == 411
    assert_error_body(chunked, "length_required")


# -- encodings and sizes ------------------------------------------------------------


def test_gzip_bodies_are_accepted(server: MockServer, client: httpx.Client) -> None:
    event = make_event()
    body = gzip.compress(json.dumps(make_batch(event)).encode())
    response = client.post(BATCH, content=body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200
    # Two gzip members in a row are still one gzip body.
    other = make_event()
    raw = json.dumps(make_batch(other)).encode()
    split = gzip.compress(raw[:10]) + gzip.compress(raw[10:])
    assert client.post(BATCH, content=split, headers={"Content-Encoding": "gzip"}).is_success
    assert server.received == {event["event_id"]: 1, other["event_id"]: 1}


def test_decompression_is_bounded_and_bad_encodings_refused() -> None:
    with (
        MockServer(max_decompressed_bytes=100_000) as server,
        httpx.Client(base_url=server.url, timeout=5.0) as client,
    ):
        bomb = gzip.compress(b'{"events": [' + b" " * 5_000_000 + b"]}")
        assert len(bomb) < 10_000
        response = client.post(BATCH, content=bomb, headers={"Content-Encoding": "gzip"})
        assert response.status_code == 413
        assert_error_body(response, "payload_too_large")
        corrupt = gzip.compress(b'{"events": []}')[:-6]
        truncated = client.post(BATCH, content=corrupt, headers={"Content-Encoding": "gzip"})
        assert truncated.status_code == 400
        garbage = client.post(BATCH, content=b"not gzip", headers={"Content-Encoding": "gzip"})
        assert garbage.status_code == 400
        brotli = client.post(BATCH, content=b"{}", headers={"Content-Encoding": "br"})
        assert brotli.status_code == 415
        plain = client.post(BATCH, content=b" " * 100_001, headers={"Content-Encoding": "identity"})
        assert plain.status_code == 413
        assert server.stats()["faults_injected"] == dict.fromkeys(FAULT_KINDS, 0)


def test_a_body_over_the_limit_is_413_and_the_connection_stays_usable() -> None:
    with (
        MockServer(max_body_bytes=2_000) as server,
        httpx.Client(base_url=server.url, timeout=5.0) as client,
    ):
        big = make_batch(*(make_event() for _ in range(40)))
        response = client.post(BATCH, json=big)
        assert response.status_code == 413
        assert_error_body(response, "payload_too_large")
        assert server.received == {}
        assert client.post(BATCH, json=make_batch()).status_code == 200
        assert server.stats()["requests_by_status"] == {"200": 1, "413": 1}


# -- the stream endpoint and auth ---------------------------------------------------


def test_the_stream_endpoint_answers_processed_then_duplicate(
    server: MockServer, client: httpx.Client
) -> None:
    event = make_event()
    upload = {"event": event, "system_info": {"system_name": "checkout"}}
    first = client.post(STREAM, json=upload)
    assert first.json() == {"event_id": event["event_id"], "status": "processed"}
    again = client.post(STREAM, json=upload)
    assert again.json() == {"event_id": event["event_id"], "status": "duplicate"}
    bad = client.post(STREAM, json={"event": make_event(event_type="nope")})
    assert bad.status_code == 400
    assert_error_body(bad, "invalid_event_type")
    assert client.post(STREAM, json={"events": []}).status_code == 400
    assert server.received == {event["event_id"]: 2}


def test_stream_and_batch_record_alike_and_the_stats_tell_them_apart(
    server: MockServer, client: httpx.Client
) -> None:
    first, second = make_event(), make_event()
    info = {"system_name": "checkout", "system_instance_id": "i-1"}
    assert client.post(STREAM, json={"event": first, "system_info": info}).status_code == 200
    batch = client.post(BATCH, json=make_batch(first, second)).json()
    assert (batch["processed_events"], batch["duplicate_event_ids"]) == (1, [first["event_id"]])
    again = client.post(STREAM, json={"event": second, "system_info": info})
    assert again.json() == {"event_id": second["event_id"], "status": "duplicate"}
    assert server.received == {first["event_id"]: 2, second["event_id"]: 2}
    assert server.events[second["event_id"]] == second["payload"]
    assert server.arrivals == {
        first["event_id"]: {"path": BATCH, "resource": {"service.name": "mock-tests"}},
        second["event_id"]: {"path": STREAM, "system_info": info},
    }
    stats = server.stats()
    assert stats["requests_by_path"] == {BATCH: 1, STREAM: 2}
    assert stats["event_deliveries_by_path"] == {BATCH: 2, STREAM: 2}
    assert (stats["events_received"], stats["duplicates_received"]) == (2, 2)
    server.reset()
    assert server.arrivals == {} and server.stats()["requests_by_path"] == {}


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_faults_hit_stream_uploads_as_they_hit_batches(kind: str) -> None:
    event = make_event()
    upload = {"event": event, "system_info": {"system_name": "s"}}
    with (
        faulty(**{f"rate_{kind}": 1.0}, slow_seconds=0.2, retry_after=0) as server,
        httpx.Client(base_url=server.url, timeout=5.0) as client,
    ):
        try:
            status: int | str = client.post(STREAM, json=upload).status_code
        except CUT_OFF:
            status = "reset"
        recorded = kind in ("slow", "lost_reply")
        assert server.received == ({event["event_id"]: 1} if recorded else {})
        assert server.stats()["faults_injected"][kind] == 1
        assert server.stats()["requests_by_path"] == {STREAM: 1}
        expected = {"413": 413, "429": 429, "500": 500, "503": 503, "slow": 200}
        assert status == expected.get(kind, "reset")


def test_an_api_key_is_required_on_ingest_endpoints_only() -> None:
    with (
        MockServer(api_key="s3cret") as server,
        httpx.Client(base_url=server.url, timeout=5.0) as client,
    ):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            for path in (BATCH, STREAM):
                refused = client.post(path, json=make_batch(), headers=headers)
                assert refused.status_code == 401
                assert_error_body(refused, "unauthorized")
        accepted = client.post(BATCH, json=make_batch(), headers={"Authorization": "Bearer s3cret"})
        assert accepted.status_code == 200
        assert client.get("/health").status_code == 200
        assert client.get("/mock/stats").json()["requests_by_status"] == {"200": 1, "401": 6}


# -- faults -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [413, 429, 500, 503])
def test_status_faults_answer_json_and_record_nothing(status: int) -> None:
    with (
        faulty(**{f"rate_{status}": 1.0}, retry_after=2) as server,
        httpx.Client(base_url=server.url, timeout=5.0) as client,
    ):
        response = client.post(BATCH, json=make_batch())
        assert response.status_code == status
        assert_error_body(response)
        assert response.headers["X-Tracerelay-Mock-Fault"] == str(status)
        if status in (429, 503):
            assert response.headers["Retry-After"] == "2"
        else:
            assert "Retry-After" not in response.headers
        assert server.received == {}
        assert server.stats()["faults_injected"][str(status)] == 1


def test_retry_after_can_be_an_http_date() -> None:
    with (
        faulty(rate_429=0.5, rate_503=0.5, retry_after=30, retry_after_http_date=True) as server,
        httpx.Client(base_url=server.url, timeout=5.0) as client,
    ):
        for _ in range(4):
            response = client.post(BATCH, json=make_batch())
            assert response.status_code in (429, 503)
            when = email.utils.parsedate_to_datetime(response.headers["Retry-After"])
            assert when.tzinfo is not None
            assert 29.0 <= when.timestamp() - time.time() <= 31.5


def test_a_slow_reply_outlasts_a_short_read_timeout_but_the_events_arrive() -> None:
    event = make_event()
    with faulty(rate_slow=1.0, slow_seconds=0.5) as server:
        timeout = httpx.Timeout(5.0, read=0.1)
        with httpx.Client(base_url=server.url, timeout=timeout) as client:
            with pytest.raises(httpx.ReadTimeout):
                client.post(BATCH, json=make_batch(event))
        assert server.received == {event["event_id"]: 1}
        with httpx.Client(base_url=server.url, timeout=5.0) as patient:
            started = time.monotonic()
            assert patient.post(BATCH, json=make_batch(event)).json()["duplicate_events"] == 1
            assert time.monotonic() - started >= 0.45


def test_latency_holds_every_answer_and_the_stats_see_requests_in_flight_together() -> None:
    assert Faults(latency=0.3).describe() == "every answer after 0.3 s"
    assert (
        Faults(rate_429=0.5, latency=0.3)
        .describe()
        .endswith("(every answer after 0.3 s; Retry-After 1 s as seconds)")
    )
    with faulty(latency=0.3, rate_429=0.5, retry_after=0) as server:
        limits = httpx.Limits(max_connections=4)
        with (
            httpx.Client(base_url=server.url, timeout=5.0, limits=limits) as client,
            ThreadPoolExecutor(max_workers=4) as pool,
        ):
            statuses = list(
                pool.map(lambda _: client.post(BATCH, json=make_batch()).status_code, range(4))
            )
        assert server.stats()["concurrent_requests_max"] == 4
        log = server.requests
        assert sorted(int(entry["outcome"]) for entry in log) == sorted(statuses)
        assert {entry["path"] for entry in log} == {BATCH}
        # Every answer, a fault's too, came no sooner than the latency after its request.
        assert all(entry["answered"] - entry["arrived"] >= 0.29 for entry in log)
        server.reset()
        assert server.requests == [] and server.stats()["concurrent_requests_max"] == 0


def test_stop_cuts_off_a_slow_reply_instead_of_waiting_for_it() -> None:
    server = faulty(rate_slow=1.0, slow_seconds=30).start()
    errors: list[BaseException] = []

    def post() -> None:
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            try:
                client.post(BATCH, json=make_batch())
            except httpx.HTTPError as exc:
                errors.append(exc)

    caller = threading.Thread(target=post)
    caller.start()
    deadline = time.monotonic() + 5
    while server.stats()["faults_injected"]["slow"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    caller.join(5)
    assert time.monotonic() - started < 2
    assert not caller.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], CUT_OFF)


def test_a_reset_reaches_the_client_and_records_nothing() -> None:
    with (
        faulty(rate_reset=1.0) as server,
        httpx.Client(base_url=server.url, timeout=5.0) as client,
    ):
        with pytest.raises(CUT_OFF) as raised:
            client.post(BATCH, json=make_batch())
        assert isinstance(raised.value, httpx.ReadError), "SO_LINGER 0: a reset, not a clean close"
        assert server.received == {}
        assert server.stats()["requests_by_status"] == {"reset": 1}


def test_a_lost_reply_is_an_error_for_the_client_but_the_events_are_recorded() -> None:
    event = make_event()
    with (
        faulty(rate_lost_reply=1.0) as server,
        httpx.Client(base_url=server.url, timeout=5.0) as client,
    ):
        with pytest.raises(CUT_OFF):
            client.post(BATCH, json=make_batch(event))
        with pytest.raises(CUT_OFF):
            client.post(STREAM, json={"event": make_event()})
        assert server.received[event["event_id"]] == 1
        assert len(server.received) == 2
        assert server.stats()["faults_injected"]["lost_reply"] == 2


def outcomes(client: httpx.Client, count: int) -> list[str]:
    """Post ``count`` one-event batches; the status code, or "cut" when the connection dropped."""
    seen = []
    for _ in range(count):
        try:
            seen.append(str(client.post(BATCH, json=make_batch()).status_code))
        except CUT_OFF:
            seen.append("cut")
    return seen


def test_seeded_rates_give_the_expected_mix_reproducibly() -> None:
    rates: dict[str, Any] = {"rate_413": 0.1, "rate_429": 0.1, "rate_500": 0.1, "rate_503": 0.1}
    rates |= {"rate_reset": 0.05, "rate_lost_reply": 0.05}
    with (
        MockServer(faults=Faults(**rates), seed=42) as server,
        httpx.Client(base_url=server.url, timeout=5.0) as client,
    ):
        seen = Counter(outcomes(client, 400))
        faults = server.stats()["faults_injected"]
        for status in ("413", "429", "500", "503"):
            assert 16 <= seen[status] <= 64, seen
            assert faults[status] == seen[status]
        assert faults["reset"] + faults["lost_reply"] == seen["cut"]
        assert 5 <= faults["reset"] <= 38
        assert 5 <= faults["lost_reply"] <= 38
        assert 130 <= seen["200"] <= 270
        assert len(server.received) == seen["200"] + faults["lost_reply"]
        first_run = outcomes(client, 50)
        server.reset()
        assert server.stats()["requests_total"] == 0
        assert outcomes(client, 450)[400:] == first_run, "reset() replays the seed's sequence"


def test_health_and_control_endpoints_are_never_faulted() -> None:
    with (
        faulty(rate_500=1.0) as server,
        httpx.Client(base_url=server.url, timeout=5.0) as client,
    ):
        for _ in range(20):
            assert client.get("/health").status_code == 200
            assert client.get("/mock/stats").status_code == 200
        assert client.get("/mock/events").json() == {}
        assert client.post(BATCH, json=make_batch()).status_code == 500
        assert server.stats()["requests_total"] == 1


def test_faults_change_at_runtime(server: MockServer, client: httpx.Client) -> None:
    assert client.get("/mock/faults").json() == Faults().as_dict()
    changed = client.post("/mock/faults", json={"rate_503": 1, "retry_after": 3})
    assert changed.status_code == 200
    assert changed.json()["rate_503"] == 1
    assert server.faults == Faults(rate_503=1.0, retry_after=3)
    unavailable = client.post(BATCH, json=make_batch())
    assert unavailable.status_code == 503
    assert unavailable.headers["Retry-After"] == "3"
    for bad in ({"rate_503": 5}, {"rate_418": 1}, [1], {"rate_429": 0.7, "rate_500": 0.7}):
        refused = client.post("/mock/faults", json=bad)
        assert refused.status_code == 400
        assert_error_body(refused)
    assert client.post("/mock/faults", content=b"{").status_code == 400
    assert server.faults.rate_503 == 1, "a refused change leaves the faults as they were"
    assert client.post("/mock/faults", json={}).status_code == 200
    assert client.post(BATCH, json=make_batch()).status_code == 200
    server.set_faults(Faults(rate_500=1.0))
    assert client.post(BATCH, json=make_batch()).status_code == 500


def test_reset_forgets_everything(server: MockServer, client: httpx.Client) -> None:
    client.post(BATCH, json=make_batch())
    assert client.post("/mock/reset").json() == {"status": "reset"}
    assert server.received == {}
    assert server.events == {}
    stats = client.get("/mock/stats").json()
    assert stats["requests_total"] == stats["event_deliveries"] == 0


# -- lifecycle and concurrency ------------------------------------------------------


def test_restart_on_the_same_port_keeps_what_was_received() -> None:
    server = MockServer().start()
    try:
        port = server.port
        before, after = make_event(), make_event()
        with httpx.Client(base_url=server.url, timeout=2.0) as client:
            assert client.post(BATCH, json=make_batch(before)).status_code == 200
            server.stop()
            assert not server.running
            with pytest.raises(httpx.ConnectError):
                client.post(BATCH, json=make_batch(after))
            server.start()
            assert server.port == port
            # The same client, whose pooled connection the stop closed, reconnects.
            assert client.post(BATCH, json=make_batch(after)).status_code == 200
            assert client.post(BATCH, json=make_batch(before)).json()["duplicate_events"] == 1
        assert server.received == {before["event_id"]: 2, after["event_id"]: 1}
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
        with pytest.raises(OSError):
            MockServer(port=port).start()
    finally:
        server.stop()
    server.stop()


def test_concurrent_clients_are_all_recorded_exactly(
    server: MockServer, client: httpx.Client
) -> None:
    def worker(_: int) -> list[str]:
        ids = []
        for _ in range(50):
            events = [make_event(), make_event()]
            response = client.post(BATCH, json=make_batch(*events))
            assert response.status_code == 200
            ids += [e["event_id"] for e in events]
        return ids

    with ThreadPoolExecutor(max_workers=8) as pool:
        sent = [event_id for ids in pool.map(worker, range(8)) for event_id in ids]
    assert len(set(sent)) == 800
    assert server.received == dict.fromkeys(sent, 1)
    stats = server.stats()
    assert stats["requests_by_status"] == {"200": 400}
    assert (stats["event_deliveries"], stats["duplicates_received"]) == (800, 0)


def test_connections_beyond_the_cap_wait_their_turn() -> None:
    with MockServer(max_connections=2) as server:
        name = f"tracerelay-mock-connection:{server.port}"
        most = 0
        done = threading.Event()

        def watch() -> None:
            nonlocal most
            while not done.is_set():
                most = max(most, sum(t.name == name for t in threading.enumerate()))
                time.sleep(0.002)

        watcher = threading.Thread(target=watch)
        watcher.start()
        limits = httpx.Limits(max_connections=6)
        try:
            with (
                httpx.Client(base_url=server.url, timeout=5.0, limits=limits) as client,
                ThreadPoolExecutor(max_workers=6) as pool,
            ):

                def post(_: int) -> int:
                    return client.post(BATCH, json=make_batch()).status_code

                statuses = list(pool.map(post, range(30)))
        finally:
            done.set()
            watcher.join()
        assert statuses == [200] * 30
        assert most == 2, "at most max_connections threads, and idle ones make way"


# -- the command line ---------------------------------------------------------------


def test_cli_serves_for_a_duration_then_prints_stats(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["mock", "--port", "0", "--duration", "0.2", "--rate-429", "0.5", "--seed", "1"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "tracerelay mock: listening on http://127.0.0.1:" in out
    assert "faults: 429 50% (Retry-After 1 s as seconds)" in out
    assert "requests: 0" in out
    assert "events: 0 unique" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate-500", "1.5"], "--rate-500 must be from 0 to 1"),
        (["--rate-429", "0.7", "--rate-503", "0.7"], "add up to 1.4"),
        (["--slow-seconds", "-1"], "--slow-seconds must be from 0 to 300"),
        (["--latency", "-0.5"], "--latency must be from 0 to 300"),
        (["--duration", "0"], "--duration must be a positive number"),
    ],
)
def test_cli_bad_settings_exit_2_without_traceback(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["mock", "--port", "0", *argv]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_cli_non_numbers_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["mock", "--rate-429", "often"])
    assert exited.value.code == 2
    assert "invalid float value: 'often'" in capsys.readouterr().err


def test_cli_reports_a_busy_port(server: MockServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["mock", "--port", str(server.port), "--duration", "0.1"]) == 1
    assert f"cannot listen on 127.0.0.1 port {server.port}" in capsys.readouterr().err


@pytest.mark.skipif(not SCRIPT.exists(), reason="console script not installed in this environment")
def test_the_console_script_injects_faults_and_stops_on_sigterm() -> None:
    command = [str(SCRIPT), "mock", "--port", "0", "--rate-503", "1", "--duration", "30"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        try:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 15)
            assert ready, "the mock server printed nothing"
            first = process.stdout.readline().decode()
            url = first.rsplit(" ", 1)[-1].strip()
            assert url.startswith("http://127.0.0.1:")
            with httpx.Client(base_url=url, timeout=5.0) as client:
                for _ in range(3):
                    response = client.post(BATCH, json=make_batch())
                    assert response.status_code == 503
                    assert response.headers["Retry-After"] == "1"
                assert client.get("/health").status_code == 200
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)
            # The summary is a few lines: it fits the pipe, so reading after exit is safe.
            out = process.stdout.read().decode()
            err = process.stderr.read().decode() if process.stderr else ""
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, err
    text = first + out
    assert "faults: 503 100%" in text
    assert "requests: 3 (503 ×3)" in text
    assert "faults injected: 503 ×3" in text

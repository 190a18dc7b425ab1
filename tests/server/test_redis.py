"""Replicas sharing Redis: a repeat is found by whichever replica gets it, a key's rate holds
across replicas, and while Redis is away each replica carries on alone."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from tests.server.conftest import RedisServer
from tests.server.support import running_server
from tests.server.test_ingest import span_event


def test_a_batch_stored_by_one_replica_is_a_repeat_at_the_other(
    tmp_path: Path, postgres_url: str, redis_server: RedisServer
) -> None:
    events = [span_event("a7" * 16, f"{i:016x}") for i in range(1, 21)]
    shared = {"database_url": postgres_url, "redis_url": redis_server.url}
    with (
        running_server(tmp_path / "a", **shared) as a,
        running_server(tmp_path / "b", **shared) as b,
    ):
        with a.client() as client:
            assert (
                client.post("/v1/telemetry/batch", json={"events": events}).json()[
                    "processed_events"
                ]
                == 20
            )
        with redis.Redis.from_url(redis_server.url) as shared_redis:
            assert len(shared_redis.keys("tr:seen:*")) == 20
        with b.client() as client:
            answer = client.post("/v1/telemetry/batch", json={"events": events}).json()
        assert answer["duplicate_events"] == 20 and answer["processed_events"] == 0
        assert b.trace("a7" * 16)["span_count"] == 20


def test_a_keys_rate_holds_across_replicas(
    tmp_path: Path, postgres_url: str, redis_server: RedisServer
) -> None:
    shared = {"database_url": postgres_url, "redis_url": redis_server.url,
              "rate_limit_events_per_s": 5.0, "rate_limit_burst": 30}  # fmt: skip
    with (
        running_server(tmp_path / "a", **shared) as a,
        running_server(tmp_path / "b", **shared) as b,
    ):
        first = [span_event("b8" * 16, f"{i:016x}") for i in range(1, 26)]
        second = [span_event("b8" * 16, f"{i:016x}") for i in range(26, 46)]
        with a.client() as client:
            assert client.post("/v1/telemetry/batch", json={"events": first}).status_code == 200
        with b.client() as client:
            refused = client.post("/v1/telemetry/batch", json={"events": second})
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1


def test_without_redis_a_replica_carries_on_and_returns_to_it(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with (
        running_server(tmp_path, redis_url=redis_server.url) as server,
        server.client() as http,
        redis.Redis.from_url(redis_server.url) as client_redis,
    ):

        def send(n: int) -> int:
            events = [span_event(f"{n:032x}", f"{i:016x}") for i in range(1, 6)]
            response = http.post("/v1/telemetry/batch", json={"events": events})
            assert response.status_code == 200, response.text
            return int(response.json()["processed_events"])

        assert send(1) == 5 and len(client_redis.keys("tr:seen:*")) == 5
        redis_server.stop()
        assert send(2) == 5  # stored; the repeat check runs in-process meanwhile
        redis_server.start()  # empty: no persistence
        deadline = time.monotonic() + 10
        while not client_redis.keys("tr:seen:*"):
            assert time.monotonic() < deadline, "never returned to Redis"
            send(3 + int(time.monotonic() * 1000) % 1_000_000)
            time.sleep(0.5)
        assert server.trace(f"{2:032x}")["span_count"] == 5

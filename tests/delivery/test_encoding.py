"""Batch bodies: SPEC §2 shape, events encoded once, gzip only when it pays."""

from __future__ import annotations

import gzip
import os

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

import tracerelay
from tracerelay.delivery.encoding import EncodedEvent, Encoder, encode_event
from tracerelay.delivery.policy import split_in_halves
from tracerelay.testing import capture

RESOURCE = {"service.name": "checkout", "host.name": "h1"}


def finished_spans(n: int) -> list[EncodedEvent]:
    with capture() as spans:
        for i in range(n):
            with tracerelay.span("handle", attributes={"i": i, "route": "/api/orders/{id}"}):
                pass
    return [encode_event(s) for s in spans]


def test_body_is_the_spec_envelope_with_the_resource_once() -> None:
    events = finished_spans(3)
    batch = Encoder(
        RESOURCE,
        environment="staging",
        deduplication={"enabled": True, "ttl": 3600},
        min_size=10**9,
    ).encode(events)
    body = orjson.loads(batch.body)
    assert body["resource"] == RESOURCE
    assert body["environment"] == "staging"
    assert body["deduplication"] == {"enabled": True, "ttl": 3600}
    assert [e["event_id"] for e in body["events"]] == [e.event_id for e in events]
    assert all(e["event_type"] == "observation_create" for e in body["events"])
    assert body["events"][0]["payload"]["attributes"] == {"i": 0, "route": "/api/orders/{id}"}
    assert batch.headers == {"Content-Type": "application/json"}
    assert batch.body.count(b"checkout") == 1


def test_large_compressible_bodies_are_gzipped_and_decode_to_the_raw_body() -> None:
    events = finished_spans(200)
    encoder = Encoder(RESOURCE)
    batch = encoder.encode(events)
    assert batch.compressed and batch.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(batch.body) == encoder.body(events)
    assert batch.raw_size / len(batch.body) >= 5  # spans compress well


def test_small_or_incompressible_bodies_go_raw() -> None:
    small = Encoder(RESOURCE).encode(finished_spans(1))
    assert not small.compressed
    noise = [EncodedEvent(f"{i:026d}", orjson.dumps(os.urandom(600).hex())) for i in range(20)]
    noisy = Encoder(RESOURCE, threshold=0.5).encode(noise)
    assert not noisy.compressed  # hex noise compresses to ~55 %: not below half
    off = Encoder(RESOURCE, compression="none").encode(finished_spans(200))
    assert not off.compressed


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=40))
def test_split_batches_reuse_the_same_event_bytes(n: int) -> None:
    events = finished_spans(n)
    encoder = Encoder(RESOURCE, min_size=10**9)
    left, right = split_in_halves(events)
    halves = [orjson.loads(encoder.encode(part).body)["events"] for part in (left, right)]
    whole = orjson.loads(encoder.encode(events).body)["events"]
    assert halves[0] + halves[1] == whole
    assert all(a is b for a, b in zip(list(left) + list(right), events, strict=True))


def test_a_stream_upload_is_one_event_beside_system_info_mapped_from_the_resource() -> None:
    (event,) = finished_spans(1)
    resource = {
        **RESOURCE,
        "service.namespace": "shop",
        "service.instance.id": "pod-7",
        "deployment.environment": "staging",
    }
    upload = Encoder(resource, environment="staging", min_size=10**9).encode_stream(event)
    assert upload.stream and list(upload.events) == [event]
    assert orjson.loads(upload.body) == {
        "event": orjson.loads(event.data),
        "system_info": {
            "system_name": "checkout",
            "system_id": "shop",
            "system_instance_id": "pod-7",
        },
    }
    assert not Encoder(RESOURCE).encode([event]).stream


def test_a_large_stream_upload_is_gzipped_like_a_batch() -> None:
    with capture() as spans:
        with tracerelay.span("big", attributes={"text": "lorem ipsum " * 400}):
            pass
    upload = Encoder(RESOURCE).encode_stream(encode_event(spans[0]))
    assert upload.compressed and upload.raw_size > len(upload.body)
    assert orjson.loads(gzip.decompress(upload.body))["event"]["payload"]["name"] == "big"

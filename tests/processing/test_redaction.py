"""SecretRedactor: no password, token or key reaches an exported record, and nothing else is lost.

Most tests run the real chain through ``capture()`` and look at what an
exporter would send (the SPEC §2 envelope, encoded); the others call the
processor directly on records, for what the chain would hide (tuples, cycles,
the caller's own containers). Fake secrets are assembled from pieces so that
no scanner mistakes this file for a leak.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tracerelay
from tests.processing.support import bare_span, same_shape
from tracerelay.errors import ConfigError
from tracerelay.ids import new_span_id, new_trace_id
from tracerelay.processing.redaction import SecretRedactor
from tracerelay.records import Event, RawEvent, Score, TraceUpdate
from tracerelay.serialization import dumps, envelope
from tracerelay.spans import Span
from tracerelay.testing import CapturedSpans, capture

MARK = "[REDACTED]"
ALNUM = "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0"

SHAPED = {
    "jwt": "eyJhbGciOiJIUzI1NiJ9" + ".eyJzdWIiOiIxMjM0NTY3ODkwIn0" + ".dozjgNryP4J3jVmN",
    "openai": "sk-" + ALNUM[:32],
    "openai project": "sk-" + "proj-" + ALNUM[:36],
    "anthropic": "sk-" + "ant-api03-" + ALNUM,
    "aws access key id": "AKIA" + "IOSFODNN7EXAMPLE",
    "github personal": "ghp_" + ALNUM[:36],
    "github oauth": "gho_" + ALNUM[:36],
    "github app": "ghs_" + ALNUM[:36],
    "github fine-grained": "github_pat_" + "11ABCDEFG0" + "_" + ALNUM,
    "slack bot": "xoxb-" + "1234567890-0987654321-" + ALNUM[:24],
    "slack user": "xoxp-" + "1234567890-" + ALNUM[:20],
    "stripe live": "sk_" + "live_" + ALNUM[:24],
    "stripe restricted": "rk_" + "live_" + ALNUM[:24],
    "stripe test": "sk_" + "test_" + ALNUM[:24],
    "google": "AIza" + "Sy" + ALNUM[:33],
}
PEM = (
    "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq9XkOp\nQ2x8YzL4mN0vR5t\n"
    "-----END RSA " + "PRIVATE KEY-----"
)
SECRET_KEYS = [
    *("password", "passwd", "pwd", "secret", "client_secret", "token", "access_token"),
    *("refresh_token", "authorization", "proxy-authorization", "api_key", "apikey"),
    *("api-key", "x-api-key", "cookie", "set-cookie", "private_key", "credential"),
    *("credentials", "session_token", "auth", "Authorization", "X-Api-Key", "apiKey"),
    *("openaiApiKey", "DB_PASSWORD", "dbPassword", "http.request.header.authorization"),
    *("csrf_token", "basic_auth", "aws_secret_access_key", "password_confirmation"),
]
HARMLESS_KEYS = [
    *("session_id", "token_count", "input_tokens", "output_tokens", "total_tokens"),
    *("max_tokens", "author", "authority", "keyboard", "tokenizer", "sessionId"),
    *("llm.token_count.prompt", "gen_ai.usage.input_tokens", "tokenCount", "auth_type"),
    *("cache_key", "primary_key", "key", "secretary", "http.url", "user.id"),
]


@contextmanager
def traced(**options: Any) -> Iterator[CapturedSpans]:
    with capture(**options) as spans:
        yield spans


def exported(record: Any) -> str:
    """The record as an exporter encodes it."""
    return dumps(envelope(record)).decode()


def one_span(attributes: dict[str, Any], **options: Any) -> Span:
    with traced(**options) as spans, tracerelay.span("s", attributes=attributes):
        pass
    return spans.by_name("s")


# -- secret-shaped text, whatever its key ---------------------------------------------------


@pytest.mark.parametrize("secret", SHAPED.values(), ids=SHAPED.keys())
def test_secret_shaped_text_is_masked_and_the_text_around_it_kept(secret: str) -> None:
    span = one_span({"note": f"deploying with {secret} today", "count": 3})

    assert span.attributes["note"] == f"deploying with {MARK} today"
    assert span.attributes["count"] == 3
    assert secret not in exported(span)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc123DEF456ghi789", f"Authorization: Bearer {MARK}"),
        ("proxy said BASIC dXNlcjpwYXNzd29yZA== then", f"proxy said BASIC {MARK} then"),
        ("bearer " + SHAPED["jwt"], f"bearer {MARK}"),
        (f"key:\n{PEM}\nend", f"key:\n{MARK}\nend"),
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAA (cut)", MARK),
        (
            "postgres://app:hunter2@db.internal:5432/orders",
            f"postgres://app:{MARK}@db.internal:5432/orders",
        ),
        ("redis://:s3cr3t@cache:6379/0 ok", f"redis://:{MARK}@cache:6379/0 ok"),
    ],
)
def test_credentials_lose_only_their_secret_part(text: str, expected: str) -> None:
    assert one_span({"log": text}).attributes["log"] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /v1/x?access_token=abc123&page=2", f"GET /v1/x?access_token={MARK}&page=2"),
        ("Server=db;User Id=sa;Password=Pa55word;", f"Server=db;User Id=sa;Password={MARK};"),
        ('{"api_key": "abc123", "user": "bob"}', f'{{"api_key": "{MARK}", "user": "bob"}}'),
        ("run --password=hunter2 --user=bob", f"run --password={MARK} --user=bob"),
        ("retry=3 timeout=10 model=gpt-4o", "retry=3 timeout=10 model=gpt-4o"),
        ("input_tokens=512 max_tokens=1024", "input_tokens=512 max_tokens=1024"),
    ],
)
def test_name_value_pairs_inside_text_follow_the_key_rule(text: str, expected: str) -> None:
    assert one_span({"line": text}).attributes["line"] == expected


@pytest.mark.parametrize(
    "text",
    [
        "Basic authentication is fine for internal tools.",
        "Send bearer tokens over TLS only; the basic idea is simple.",
        "The token count was 1523 and the api key rotation is monthly.",
        "http://localhost:8080/path?email=a@b.example",
        "task-management-system-for-everyone-everywhere",
        "",
        "short",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert one_span({"text": text}).attributes["text"] == text


# -- the key rule ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_values_of_keys_that_name_secrets_are_masked(key: str) -> None:
    span = one_span({key: "plain-looking value 42"})

    assert span.attributes[key] == MARK
    assert "plain-looking" not in exported(span)


@pytest.mark.parametrize("key", HARMLESS_KEYS)
def test_keys_that_merely_look_alike_are_untouched(key: str) -> None:
    span = one_span({key: "value-7", f"{key}.n": 1234})

    assert span.attributes[key] == "value-7"
    assert span.attributes[f"{key}.n"] == 1234


def test_booleans_and_none_under_secret_keys_stay_readable() -> None:
    redactor = SecretRedactor()
    span = bare_span({"password_set": True, "token": None, "cookie": ["a=1", None, False]})

    redactor(span)

    assert span.attributes == {"password_set": True, "token": None, "cookie": [MARK, None, False]}


# -- every place a record holds user data ------------------------------------------------------


def test_input_and_output_are_walked_with_both_rules() -> None:
    secret = SHAPED["openai"]
    with traced() as spans, tracerelay.span("llm") as span:
        span.set_input(
            {
                "messages": [{"role": "user", "content": f"my key is {secret}, help"}],
                "headers": {"Authorization": "Bearer abc123DEF456", "X-Trace": "t-1"},
                "max_tokens": 256,
            }
        )
        span.set_output(["ok", {"token": "t0k3n-value", "tokens": 12}])

    llm = spans.by_name("llm")
    assert llm.input == {
        "messages": [{"role": "user", "content": f"my key is {MARK}, help"}],
        "headers": {"Authorization": MARK, "X-Trace": "t-1"},
        "max_tokens": 256,
    }
    assert llm.output == ["ok", {"token": MARK, "tokens": 12}]
    assert secret not in exported(llm)


def test_events_links_status_and_exceptions_are_redacted() -> None:
    token = "Bearer " + ALNUM[:20]

    def call_upstream() -> None:
        with tracerelay.span("call") as span:
            span.add_event("retry", {"api_key": "k-123", "attempt": 2})
            span.add_link(new_trace_id(), new_span_id(), {"session_token": "s-1", "kind": "x"})
            raise RuntimeError(f"upstream refused {token}")

    with traced() as spans, pytest.raises(RuntimeError):
        call_upstream()

    call = spans.by_name("call")
    retry, error = call.events
    assert retry["attributes"] == {"api_key": MARK, "attempt": 2}
    assert call.links[0]["attributes"] == {"session_token": MARK, "kind": "x"}
    assert call.status_message == f"RuntimeError: upstream refused Bearer {MARK}"
    assert error["attributes"]["exception.message"] == f"upstream refused Bearer {MARK}"
    assert ALNUM[:20] not in exported(call)


def test_scores_events_trace_updates_and_raw_events_are_redacted() -> None:
    secret = SHAPED["stripe live"]
    with traced() as spans:
        with tracerelay.span("root"):
            tracerelay.score("quality", 0.9, attributes={"password": "x", "note": secret})
            tracerelay.event("login", {"cookie": "sid=1", "user": "bob"})
            tracerelay.update_trace(
                user_id="u-1",
                metadata={"tenant": "acme", "creds": {"client_secret": "cs"}, "ref": secret},
            )
        assert spans.client is not None
        spans.client.submit_batch_event(
            "event_create", {"name": "raw", "detail": {"auth": "a", "text": f"k {secret}"}}
        )

    score = spans.scores[0]
    assert score.attributes == {"password": MARK, "note": MARK}
    login = next(r for r in spans.events if r.attributes.get("user") == "bob")
    assert login.attributes == {"cookie": MARK, "user": "bob"}
    update = next(r for r in spans.records if isinstance(r, TraceUpdate))
    assert update.fields["metadata"] == {
        "tenant": "acme",
        "creds": {"client_secret": MARK},
        "ref": MARK,
    }
    raw = next(r for r in spans.records if isinstance(r, RawEvent))
    assert raw.payload["detail"] == {"auth": MARK, "text": f"k {MARK}"}
    for record in spans.records:
        assert secret not in exported(record)


def test_a_dict_attribute_flattened_to_json_text_is_still_redacted() -> None:
    span = one_span({"config": {"password": "hunter2", "retries": 3, "region": "eu"}})

    text = span.attributes["config"]
    assert isinstance(text, str)
    assert "hunter2" not in text
    assert f'"password":"{MARK}"' in text
    assert '"retries":3' in text


def test_turning_redaction_off_keeps_secrets() -> None:
    span = one_span({"password": "hunter2", "note": SHAPED["aws access key id"]}, redact=False)

    assert span.attributes == {"password": "hunter2", "note": SHAPED["aws access key id"]}


# -- direct calls: what the chain would hide ---------------------------------------------------


def test_tuples_stay_tuples_and_lists_stay_lists() -> None:
    secret = SHAPED["github personal"]
    span = bare_span(
        {"tags": ("a", f"b {secret}"), "cookie": ("c=1", "d=2"), "ids": [1, 2], "plain": ("x",)}
    )

    assert SecretRedactor()(span) is span

    assert span.attributes == {
        "tags": ("a", f"b {MARK}"),
        "cookie": (MARK, MARK),
        "ids": [1, 2],
        "plain": ("x",),
    }


def test_the_callers_own_containers_are_never_edited() -> None:
    inner = {"password": "hunter2", "notes": [f"key {SHAPED['openai']}"]}
    given_value = {"outer": [inner], "n": 1}
    span = bare_span({"settings": given_value})
    span.input = given_value

    SecretRedactor()(span)

    assert inner == {"password": "hunter2", "notes": [f"key {SHAPED['openai']}"]}
    assert span.input == {"outer": [{"password": MARK, "notes": [f"key {MARK}"]}], "n": 1}
    assert span.attributes["settings"] == span.input


def test_records_without_events_links_or_metadata_pass_through() -> None:
    redactor = SecretRedactor()
    span = bare_span({"a": "b"})
    span._events = [{"name": "no attributes"}, {"name": "none", "attributes": None}]
    update = TraceUpdate(new_trace_id(), {"name": "t"})
    event = Event("e")
    raw = RawEvent("metric", {"name": "m", "value": 1})

    for record in (span, update, event, raw, Score("s", 1.0, trace_id=None)):
        assert redactor(record) is record
    assert span._events == [{"name": "no attributes"}, {"name": "none", "attributes": None}]
    assert raw.payload == {"name": "m", "value": 1}


def test_cycles_and_deep_nesting_end() -> None:
    loop: list[Any] = ["sk-" + ALNUM[:24]]
    loop.append(loop)
    deep: Any = "password=hunter2"
    for _ in range(100):
        deep = [deep]
    span = bare_span({"loop": loop, "deep": deep})

    SecretRedactor()(span)

    assert span.attributes["loop"][0] == MARK


def test_extra_keys_and_a_custom_marker() -> None:
    redactor = SecretRedactor(extra_keys=["ssn", "x-internal-sig"], marker="***")
    span = bare_span(
        {"user.ssn": "123", "customerSsn": "456", "X-Internal-Sig": "s", "ssn_count": 2}
    )

    redactor(span)

    assert span.attributes == {
        "user.ssn": "***",
        "customerSsn": "***",
        "X-Internal-Sig": "***",
        "ssn_count": 2,
    }
    assert redactor.scrub_text("q?ssn=078-05-1120&x=1") == "q?ssn=***&x=1"


def test_a_marker_with_backslashes_is_written_as_given() -> None:
    redactor = SecretRedactor(marker=r"\1<gone>\g<0>")

    assert redactor.scrub_text("k " + SHAPED["aws access key id"]) == r"k \1<gone>\g<0>"


@pytest.mark.parametrize(
    "options",
    [{"marker": ""}, {"extra_keys": "ssn"}, {"extra_keys": ["--"]}, {"cache_size": 0}],
)
def test_bad_options_fail_fast_with_a_fix(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        SecretRedactor(**options)

    assert caught.value.fix


def test_the_key_cache_stays_bounded() -> None:
    redactor = SecretRedactor(cache_size=8)

    results = [redactor.masks_key(f"field_{i}_token") for i in range(100)]

    assert all(results)
    assert len(redactor.key_cache) <= 8
    assert not redactor.masks_key("field_1_token_count")


# -- properties ----------------------------------------------------------------------------


REDACTOR = SecretRedactor()
PIECES = st.one_of(
    st.text(max_size=12),
    st.sampled_from([*SHAPED.values(), PEM, "Bearer abc123XYZ789", "x://u:p4ss@h"]),
    st.sampled_from(["password=", "token=", '"api_key": "', "?access_token=", "=", ":", "@"]),
)
TEXTS = st.lists(PIECES, max_size=8).map("".join)
KEYS = st.one_of(st.text(max_size=8), st.sampled_from(SECRET_KEYS + HARMLESS_KEYS))
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXTS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_redacting_twice_changes_nothing_more(text: str) -> None:
    once = REDACTOR.scrub_text(text)

    assert REDACTOR.scrub_text(once) == once


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_any_json_keeps_its_structure_and_redacts_idempotently(value: Any) -> None:
    once = REDACTOR.scrub(value)

    same_shape(value, once, hidden=REDACTOR.masks_key, marker=MARK)
    assert REDACTOR.scrub(once) == once


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet="abcdefghij klmnop,.!?", max_size=30),
    st.sampled_from(list(SHAPED.values())),
    st.text(alphabet="abcdefghij klmnop,.!?", max_size=30),
)
def test_a_secret_anywhere_in_prose_goes_and_the_prose_stays(
    before: str, secret: str, after: str
) -> None:
    assert REDACTOR.scrub_text(f"{before} {secret} {after}") == f"{before} {MARK} {after}"


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_arbitrary_text_never_raises(text: str) -> None:
    assert isinstance(REDACTOR.scrub_text(text), str)

"""PiiRedactor: emails, phones, cards and IP addresses leave exported records; look-alikes stay.

End-to-end tests turn ``redact_pii`` on in ``capture()`` and read what an
exporter would send; the rest call the redactor directly. Property tests
generate card numbers with and without a valid Luhn digit, and check that
masking is idempotent, keeps any JSON's structure and that digests are stable.
"""

from __future__ import annotations

import hashlib
import hmac
import re
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
from tracerelay.processing.pii import PiiRedactor, luhn_valid
from tracerelay.records import RawEvent, TraceUpdate
from tracerelay.serialization import dumps, envelope
from tracerelay.spans import Span
from tracerelay.testing import CapturedSpans, capture

FOUND = [
    *[
        (email, "EMAIL")
        for email in ("bob@example.com", "jane.doe+ai@mail.example.co.uk", "X_1%y@sub.dom.io")
    ],
    *[
        (phone, "PHONE")
        for phone in (
            *("+1 415 555 2671", "+14155552671", "+1 (415) 555-2671", "+44 20 7946 0958"),
            *("+33 1 23 45 67 89", "+49-30-123456", "+91 98765 43210", "(415) 555-2671"),
            *("415-555-2671", "415.555.2671", "1-415-555-2671", "020 7946 0958"),
            *("07700 900123", "01 23 45 67 89", "(020) 7946 0958"),
        )
    ],
    *[
        (card, "CARD")
        for card in (
            *("4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111"),
            *("5555555555554444", "378282246310005", "3782 822463 10005", "6011111111111117"),
            "4222222222222",
        )
    ],
    *[(ip, "IP") for ip in ("192.168.1.100", "10.0.0.1", "255.255.255.255", "8.8.8.8")],
    *[
        (ip, "IP")
        for ip in ("2001:db8::8a2e:370:7334", "fe80::1", "2001:0db8:0000:0000:0000:ff00:0042:8329")
    ],
    ("::ffff:192.0.2.1", "IP"),
]
LOOKALIKES = [
    *("1234567890", "4155552671", "20240115", "1700000000", "1700000000000"),
    *("1700000000123456789", "2024-01-15", "2024-01-15T10:30:00Z", "15/01/2024"),
    *("01.02.2024", "05-10-2024", "10:30:00", "12:30:45.123", "version 1.2.3"),
    *("10.0.19041.1", "v2.31.0", "550e8400-e29b-41d4-a716-446655440000"),
    *("12345678-1234-1234-1234-123456789012", "deadbeef12345678", "0x4111111111111111"),
    *("6f1e2d3c4b5a69788796a5b4c3d2e1f0", "4111 1111 1111 1112", "4532 0151 1283 0367"),
    *("4111111111111111x", "10.0.0.256", "1.2.3", "std::vector<int>", "arr[1::2]", "::1"),
    *("$4,111.11", "3.14159265358979", "user@localhost", "amount 123456789", "@mention"),
]


@contextmanager
def traced(**options: Any) -> Iterator[CapturedSpans]:
    options.setdefault("redact_pii", True)
    with capture(**options) as spans:
        yield spans


def exported(record: Any) -> str:
    return dumps(envelope(record)).decode()


def one_span(attributes: dict[str, Any], **options: Any) -> Span:
    with traced(**options) as spans, tracerelay.span("s", attributes=attributes):
        pass
    return spans.by_name("s")


# -- what is found, what is not ------------------------------------------------------------------


@pytest.mark.parametrize(("value", "label"), FOUND, ids=[value for value, _ in FOUND])
def test_pii_is_masked_and_the_text_around_it_kept(value: str, label: str) -> None:
    span = one_span({"note": f"contact {value} today", "n": 7})

    assert span.attributes == {"note": f"contact [{label}] today", "n": 7}
    assert value not in exported(span)


@pytest.mark.parametrize("text", LOOKALIKES)
def test_lookalikes_are_left_alone(text: str) -> None:
    sentence = f"seen {text} here"

    assert one_span({"note": sentence}).attributes["note"] == sentence


def test_several_kinds_in_one_text() -> None:
    text = "Bob <bob@example.com>, +1 415 555 2671, card 4111 1111 1111 1111, from 10.1.2.3."

    assert PiiRedactor().scrub_text(text) == "Bob <[EMAIL]>, [PHONE], card [CARD], from [IP]."


def test_pii_redaction_is_off_unless_asked_for() -> None:
    span = one_span({"email": "bob@example.com"}, redact_pii=False)

    assert span.attributes["email"] == "bob@example.com"


def test_every_place_a_record_holds_text_is_covered() -> None:
    def work() -> None:
        with tracerelay.span("call") as span:
            span.set_input({"messages": [{"role": "user", "content": "I am bob@example.com"}]})
            span.set_output(["call me on 415-555-2671", 42])
            span.add_event("lookup", {"ip": "192.168.0.7"})
            span.add_link(new_trace_id(), new_span_id(), {"owner": "jane@example.org"})
            tracerelay.score("csat", 5, attributes={"by": "amy@example.net"})
            tracerelay.update_trace(metadata={"contact": {"phone": "+44 20 7946 0958"}})
            raise LookupError("no account for amy@example.net")

    with traced() as spans:
        with pytest.raises(LookupError):
            work()
        assert spans.client is not None
        spans.client.submit_batch_event("event_create", {"name": "raw", "from": "10.9.8.7"})

    call = spans.by_name("call")
    assert call.input == {"messages": [{"role": "user", "content": "I am [EMAIL]"}]}
    assert call.output == ["call me on [PHONE]", 42]
    assert call.events[0]["attributes"] == {"ip": "[IP]"}
    assert call.links[0]["attributes"] == {"owner": "[EMAIL]"}
    assert call.status_message == "LookupError: no account for [EMAIL]"
    assert spans.scores[0].attributes == {"by": "[EMAIL]"}
    update = next(r for r in spans.records if isinstance(r, TraceUpdate))
    assert update.fields["metadata"] == {"contact": {"phone": "[PHONE]"}}
    raw = next(r for r in spans.records if isinstance(r, RawEvent))
    assert raw.payload["from"] == "[IP]"
    for text in ("bob@", "amy@", "jane@", "555-2671", "7946", "192.168", "10.9.8.7"):
        assert text not in exported(call)
        assert all(text not in exported(record) for record in spans.records)


def test_secret_redaction_runs_first_and_both_apply() -> None:
    span = one_span({"dsn": "postgres://bob:hunter2@10.0.0.5:5432/app"})

    assert span.attributes["dsn"] == "postgres://bob:[REDACTED]@[IP]:5432/app"


def test_tuples_stay_tuples() -> None:
    span = bare_span({"to": ("bob@example.com", "ops"), "n": (1, 2)})

    PiiRedactor()(span)

    assert span.attributes == {"to": ("[EMAIL]", "ops"), "n": (1, 2)}


# -- hash mode ------------------------------------------------------------------------------------

DIGEST = re.compile(r"\[(EMAIL|PHONE|CARD|IP):([0-9a-f]{12})\]")


def test_hash_mode_gives_stable_correlatable_digests() -> None:
    with traced(pii_mode="hash") as spans:
        for i, who in enumerate(("bob@example.com", "Bob@Example.COM", "amy@example.com")):
            with tracerelay.span(f"s{i}", attributes={"who": who, "tel": "(415) 555-2671"}):
                pass

    bob, bob_again, amy = (spans.by_name(f"s{i}").attributes for i in range(3))
    assert DIGEST.fullmatch(bob["who"])
    assert bob["who"] == bob_again["who"] != amy["who"]
    assert bob["tel"].startswith("[PHONE:")
    assert bob["tel"] == PiiRedactor("hash").scrub_text("415-555-2671")


def test_the_digest_is_a_truncated_hmac_keyed_with_the_salt() -> None:
    expected = hmac.new(b"pepper", b"bob@example.com", hashlib.sha256).hexdigest()[:12]

    assert PiiRedactor("hash", salt="pepper").scrub_text("x bob@example.com") == (
        f"x [EMAIL:{expected}]"
    )
    assert PiiRedactor("hash", salt="other").scrub_text("bob@example.com") != f"[EMAIL:{expected}]"


@pytest.mark.parametrize("mode", ["encrypt", "MASK", ""])
def test_an_unknown_mode_fails_fast(mode: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PiiRedactor(mode)

    assert "mask" in str(caught.value.fix)


def test_the_configured_mode_is_validated() -> None:
    with pytest.raises(ConfigError), capture(redact_pii=True, pii_mode="scramble"):
        pass


# -- Luhn -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        ("4111111111111111", True),
        ("378282246310005", True),
        ("79927398713", True),
        ("0", True),
        ("4111111111111112", False),
        ("79927398710", False),
        ("", False),
        ("4111 1111 1111 1111", False),
        ("٤١١١١١١١١١١١١١١١", False),
    ],
)
def test_luhn_valid(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


def luhn_digit(body: str) -> str:
    """The check digit that makes ``body + digit`` pass Luhn, computed the textbook way."""
    total = 0
    for i, char in enumerate(reversed(body)):
        digit = int(char)
        if i % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


@st.composite
def card_numbers(draw: st.DrawFn, *, valid: bool) -> str:
    prefix = draw(st.sampled_from(["4", "51", "55", "2221", "2720", "34", "37", "6011", "65"]))
    length = draw(st.integers(min_value=13, max_value=19))
    body = prefix + "".join(
        draw(
            st.lists(
                st.sampled_from("0123456789"),
                min_size=length - 1 - len(prefix),
                max_size=length - 1 - len(prefix),
            )
        )
    )
    check = luhn_digit(body)
    if not valid:
        check = str((int(check) + draw(st.integers(min_value=1, max_value=9))) % 10)
    digits = body + check
    if length in (15, 16, 19) and draw(st.booleans()):
        separator = draw(st.sampled_from([" ", "-"]))
        return separator.join(digits[i : i + 4] for i in range(0, length, 4))
    return digits


@settings(max_examples=300, deadline=None)
@given(card_numbers(valid=True))
def test_luhn_valid_card_numbers_are_masked(card: str) -> None:
    assert luhn_valid(card.replace(" ", "").replace("-", ""))
    assert PiiRedactor().scrub_text(f"paid with {card}, thanks") == "paid with [CARD], thanks"


@settings(max_examples=300, deadline=None)
@given(card_numbers(valid=False))
def test_luhn_invalid_card_numbers_are_not(card: str) -> None:
    assert not luhn_valid(card.replace(" ", "").replace("-", ""))
    text = f"paid with {card}, thanks"

    assert PiiRedactor().scrub_text(text) == text


# -- properties -----------------------------------------------------------------------------------

MASK = PiiRedactor()
HASH = PiiRedactor("hash", salt="s3cret")
PIECES = st.one_of(
    st.text(max_size=10),
    st.sampled_from([value for value, _ in FOUND] + LOOKALIKES),
    st.sampled_from([" ", "-", ".", ":", "+", "(", ")", "@", "0", "4"]),
)
TEXTS = st.lists(PIECES, max_size=8).map("".join)
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXTS),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
EMAILS = st.tuples(
    st.from_regex(r"[a-z][a-z0-9._]{0,10}[a-z0-9]", fullmatch=True),
    st.from_regex(r"[a-z]{1,10}\.(com|org|io)", fullmatch=True),
).map("@".join)


@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_masking_twice_changes_nothing_more(text: str) -> None:
    for redactor in (MASK, HASH):
        once = redactor.scrub_text(text)
        assert redactor.scrub_text(once) == once


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_any_json_keeps_its_structure(value: Any) -> None:
    once = MASK.scrub(value)

    same_shape(value, once)
    assert MASK.scrub(once) == once


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_arbitrary_text_never_raises(text: str) -> None:
    assert isinstance(HASH.scrub_text(text), str)


@settings(max_examples=200, deadline=None)
@given(EMAILS, EMAILS)
def test_hash_digests_are_stable_and_tell_values_apart(first: str, second: str) -> None:
    digest = HASH.scrub_text(first)

    assert DIGEST.fullmatch(digest)
    assert PiiRedactor("hash", salt="s3cret").scrub_text(f"to: {first}") == f"to: {digest}"
    assert (HASH.scrub_text(second) == digest) == (first == second)


def test_pii_salt_option_changes_the_digests() -> None:
    digests = []
    for salt in ("one", "two"):
        with capture(redact_pii=True, pii_mode="hash", pii_salt=salt) as spans:
            with tracerelay.span("s", attributes={"contact": "ada@example.com"}):
                pass
        digests.append(spans[0].attributes["contact"])
    assert digests[0].startswith("[EMAIL:") and digests[1].startswith("[EMAIL:")
    assert digests[0] != digests[1]
    assert "ada@example.com" not in digests[0]

"""PII redaction: hides emails, phone numbers, payment cards and IP addresses in text.

``PiiRedactor`` is opt-in (option ``redact_pii``) and runs in the pipeline's
thread right after secret redaction, so it sees text that is already cut to
size and free of credentials::

    validation → limits → secret redaction → PII redaction → yours

It rewrites every string in the places ``SecretRedactor`` walks (span
attributes, input, output, event and link attributes, status message; other
records' attributes, a trace update's ``metadata``, a raw event's payload).
Keys play no part: what counts is what the text looks like.

``mode="mask"`` replaces each finding with ``[EMAIL]``, ``[PHONE]``, ``[CARD]``
or ``[IP]``. ``mode="hash"`` adds a digest — ``[EMAIL:1a2b3c4d5e6f]``, the
first 12 hex digits of HMAC-SHA256 keyed with ``salt`` over the normalised
value (lower-cased email, digits of a phone or card, canonical IP) — so the
same person stays recognisable across traces without being readable. Set a
secret ``salt``: without one, a digest of a guessable value can be guessed.

What is detected, and what is deliberately not:

- emails: ``local@domain.tld`` with a letters-only top-level domain;
- payment cards: 13–19 digits, optionally grouped by spaces or dashes (one
  kind, groups of 3+), starting 2–6 as card networks do, and passing the Luhn
  check — so millisecond timestamps and snowflake ids, which start with 1, stay;
- phones: ``+`` and a country code followed by 8–15 digits in all, or national
  numbers with separators: ``(415) 555-2671``, ``415-555-2671``,
  ``020 7946 0958``. A bare digit run without ``+`` is never a phone, nor are
  dates, times, versions, UUIDs or hex ids;
- IPv4 addresses with valid octets, and IPv6 addresses that ``ipaddress``
  accepts and that have some substance (``fe80::1``, not ``1::2``, which is
  more likely a slice).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable

from tracerelay.errors import ConfigError
from tracerelay.processing.redaction import RecordScrubber

__all__ = ["PII_MODES", "PiiRedactor", "luhn_valid"]

PII_MODES = ("mask", "hash")
"""The values ``PiiRedactor`` accepts for ``mode``."""
_DIGEST_HEX = 12
_SHORTEST_PII = 6  # "a@b.co"; every address, phone and card takes more

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}"
    r"(?![A-Za-z0-9\-])"
)
# A digit glued to a word, a dot, a dash or a plus is part of something else (an id, a
# version, a date, a longer number), so no detector may start or end there. Patterns
# open with a single character class and check the character before it with a two-wide
# lookbehind: that lets the regex engine skip ahead to the next candidate in C.
_CARD = re.compile(
    r"[2-6](?<![\w.\-+].)(?:[0-9]{12,18}"
    # Grouped: one kind of separator throughout, groups of three or more digits.
    r"|[0-9]{2,5}(?P<sep>[ \-])[0-9]{3,6}(?:(?P=sep)[0-9]{3,6}){1,4})"
    r"(?![\w]|[.\-][0-9])",
    re.ASCII,
)
# Candidates only: the octets are checked in code, which is simpler than in the pattern.
_IPV4 = re.compile(r"[0-9](?<![\w.].)[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?![\w]|\.[0-9])", re.ASCII)
# Candidates only: ``ipaddress`` decides, so times like 10:30:00 pass through.
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:[0-9A-Fa-f]{1,4}|(?:[0-9]{1,3}\.){3}[0-9]{1,3})?(?![\w:]|\.[0-9])",
    re.ASCII,
)
_PHONE_END = r"(?![\w]|[.\-:/][0-9])"
_PHONE_INTL = re.compile(
    r"\+(?<![A-Za-z_+].)[1-9][0-9]{0,3}(?:[ .\-]?\([0-9]{1,5}\))?"
    r"[ .\-]?[0-9]{1,10}(?:[ .\-][0-9]{1,6}){0,5}" + _PHONE_END,
    re.ASCII,
)
# National forms, each branch picking up after the first character, which the
# lookbehind at its head re-reads. Never the later groups of a longer digit sequence
# (a card failing its checksum is no phone).
_PHONE_NATIONAL = re.compile(
    r"[(0-9](?<![\w.\-+/:(].)(?<![0-9][ .\-].)(?:"
    # (415) 555-2671, (020) 7946 0958
    r"(?<=\()(?:[0-9]{3}\)[ .\-]?[0-9]{3}[ .\-][0-9]{4}"
    r"|0[0-9]{1,4}\)[ .\-]?[0-9]{2,8}(?:[ .\-][0-9]{2,4}){0,3})"
    # 020 7946 0958, 01 23 45 67 89: a trunk zero, as most of the world writes them
    r"|(?<=0)[0-9]{1,4}[ .\-][0-9]{2,8}(?:[ .\-][0-9]{2,4}){0,3}"
    # 1-415-555-2671, 1 (415) 555-2671
    r"|(?<=1)[ .\-](?:\([0-9]{3}\)[ .\-]?|[0-9]{3}[ .\-])[0-9]{3}[ .\-][0-9]{4}"
    # 415-555-2671, 415.555.2671, 415 555 2671
    r"|(?<=[0-9])[0-9]{2}[ .\-][0-9]{3}[ .\-][0-9]{4}"
    r")" + _PHONE_END,
    re.ASCII,
)
# Cards and phones hold at least eight digits; most text has fewer, and this finds out
# in one quick scan (the two classes are disjoint, so it never backtracks).
_EIGHT_DIGITS = re.compile(r"[0-9](?:[^0-9]*[0-9]){7}")
_NOT_DIGIT = re.compile(r"[^0-9]")
# Doubling a digit and adding the digits of the result, precomputed for 0–9.
_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (ASCII digits only) passes the Luhn checksum of card numbers."""
    if not digits or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        total += _LUHN_DOUBLE[digit] if position % 2 else digit
    return total % 10 == 0


def _card_digits(text: str) -> str | None:
    digits = _NOT_DIGIT.sub("", text)
    return digits if 13 <= len(digits) <= 19 and luhn_valid(digits) else None


def _ipv4(text: str) -> str | None:
    for octet in text.split("."):
        if int(octet) > 255 or (octet[0] == "0" and len(octet) > 1):
            return None
    return text


def _ipv6(text: str) -> str | None:
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    groups = [group for group in text.split(":") if group]
    if len(groups) < 3 and max((len(group) for group in groups), default=0) < 3:
        return None
    return address.compressed


def _phone_digits(text: str) -> str | None:
    digits = _NOT_DIGIT.sub("", text)
    if text.startswith("+"):
        return "+" + digits if 8 <= len(digits) <= 15 else None
    return digits if 9 <= len(digits) <= 12 else None


class PiiRedactor(RecordScrubber):
    """Replace emails, phone numbers, card numbers and IP addresses found in text.

    ``mode="mask"`` writes ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IP]``;
    ``mode="hash"`` writes ``[EMAIL:<12 hex digits>]``, a truncated HMAC-SHA256
    of the normalised value keyed with ``salt``, equal for equal values.
    """

    def __init__(self, mode: str = "mask", *, salt: str = "") -> None:
        if mode not in PII_MODES:
            raise ConfigError(
                f"PII mode must be one of {', '.join(PII_MODES)}, got {mode!r}.",
                code="TR-CONFIG-CHOICE",
                fix='pass mode="mask" to replace PII, or mode="hash" for stable digests.',
            )
        if not isinstance(salt, str):
            raise ConfigError(
                f"salt must be a string, got {type(salt).__name__}.",
                code="TR-CONFIG-INVALID",
                fix='pass salt="<a secret string of your own>".',
            )
        self.mode = mode
        # Copying a keyed HMAC is cheaper than keying a new one for every finding.
        self._keyed = hmac.new(salt.encode("utf-8"), digestmod=hashlib.sha256)
        self._email = self._replacer("EMAIL", lambda text: text.lower())
        self._card = self._replacer("CARD", _card_digits)
        self._ip4 = self._replacer("IP", _ipv4)
        self._ip6 = self._replacer("IP", _ipv6)
        self._phone = self._replacer("PHONE", _phone_digits)

    def __repr__(self) -> str:
        return f"PiiRedactor(mode={self.mode!r})"

    def digest(self, value: str) -> str:
        """The first 12 hex digits of HMAC-SHA256(``salt``, ``value``)."""
        keyed = self._keyed.copy()
        keyed.update(value.encode("utf-8"))
        return keyed.hexdigest()[:_DIGEST_HEX]

    def rewrite(self, text: str) -> str:
        """``text`` with each email, phone, card and IP address replaced; same object if none."""
        if len(text) < _SHORTEST_PII:
            return text
        out = text
        # Emails first: their local part may hold digits a phone or card rule would take.
        if "@" in out:
            out = _EMAIL.sub(self._email, out)
        # An IPv6 address has "::" or eight groups; clock times and URLs have fewer colons.
        if "::" in out or out.count(":") >= 7:
            out = _IPV6.sub(self._ip6, out)
        if out.count(".") >= 3:
            out = _IPV4.sub(self._ip4, out)
        if _EIGHT_DIGITS.search(out) is not None:
            out = _CARD.sub(self._card, out)
            if "+" in out:
                out = _PHONE_INTL.sub(self._phone, out)
            out = _PHONE_NATIONAL.sub(self._phone, out)
        return text if out == text else out

    def _replacer(
        self, label: str, normalise: Callable[[str], str | None]
    ) -> Callable[[re.Match[str]], str]:
        # ``normalise`` returns the value the digest is taken over, or None when the
        # candidate is not what it looked like (bad checksum, not an address).
        masked = f"[{label}]"
        hashing = self.mode == "hash"

        def replace(match: re.Match[str]) -> str:
            found = match.group(0)
            value = normalise(found)
            if value is None:
                return found
            return f"[{label}:{self.digest(value)}]" if hashing else masked

        return replace

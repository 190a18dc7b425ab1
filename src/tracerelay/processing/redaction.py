"""Secret redaction: keeps passwords, tokens and keys out of every exported record.

``SecretRedactor`` is on by default (option ``redact``) and runs in the
pipeline's thread, after limits have cut text to size and before PII redaction
and the user's own processors::

    validation → limits → secret redaction → PII redaction → yours

It rewrites everywhere a record holds user data: a span's attributes, input,
output, event and link attributes and status message; the attributes of other
records, a trace update's ``metadata`` and a raw event's whole payload —
recursing through dicts, lists and tuples (a tuple stays a tuple). Nested
containers are copied before they change, never edited, because they may still
belong to the traced code. Two rules apply:

**Key rule.** The value of a key that names a secret becomes the marker,
whatever it holds (a list or tuple keeps its length, each item masked; None and
booleans stay, as they cannot carry a secret). The key is split into lower-case
words at separators and camelCase humps (``X-Api-Key``, ``apiKey`` → ``api
key``), and names a secret when:

1. a word contains ``password``, ``passwd`` or ``passphrase``, or is ``pwd``,
   ``secret`` or ``secrets`` — anywhere (``password_confirmation``,
   ``client_secret``, ``dbPassword``);
2. its head — the last word, skipping digits and generic suffixes such as
   ``value``, ``header``, ``string`` — is a credential noun: ``token``,
   ``auth``, ``authorization``, ``cookie(s)``, ``credential(s)``, ``bearer``,
   ``otp``, ``cvv``, ``cvc``, or a fused form like ``accesstoken``, ``apikey``,
   ``setcookie``;
3. its head is ``key`` right after a qualifier: ``api``, ``private``,
   ``secret``, ``access``, ``signing``, ``encryption``, ``master``, ``client``,
   ``account``, ``subscription`` (``x-api-key``, ``private_key``); or
4. its last words are one of ``extra_keys``, split the same way.

Matching whole words at the head is what spares the names LLM apps use all the
time: ``input_tokens``, ``max_tokens`` and ``token_count`` end in ``tokens`` or
``count``, ``session_id`` in ``id``; ``author``, ``authority``, ``keyboard``
and ``tokenizer`` are words of their own. The same rule applies inside text to
``name=value`` pairs (query strings, connection strings, log lines) and quoted
``"name": "value"`` pairs (JSON held in a string).

**Value rule.** In every string, whatever its key, secret-shaped substrings
become the marker and the text around them is kept: ``Bearer``/``Basic``
credentials (the scheme word stays), JWTs, OpenAI and Anthropic ``sk-`` keys,
AWS access key ids, GitHub, Slack, Stripe and Google API keys, PEM private-key
blocks, and the password of ``scheme://user:password@host``.

``RecordScrubber``, the walk itself, is shared with ``PiiRedactor``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from tracerelay.errors import ConfigError
from tracerelay.records import RawEvent, TraceUpdate
from tracerelay.spans import Span

__all__ = ["RecordScrubber", "SecretRedactor"]

# Words of a key: runs of capitals not followed by lower case (the "API" of "APIKey"),
# capitalised or lower-case words, digit runs. Everything else separates.
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_PASSWORD_PARTS = ("password", "passwd", "passphrase")
_ANYWHERE_WORDS = frozenset({"pwd", "secret", "secrets"})
_HEADS = frozenset(
    (
        *("token", "auth", "authorization", "cookie", "cookies", "credential", "credentials"),
        *("bearer", "otp", "cvv", "cvc", "accesstoken", "refreshtoken", "idtoken", "authtoken"),
        *("sessiontoken", "apitoken", "apikey", "xapikey", "privatekey", "secretkey"),
        *("setcookie", "clientsecret"),
    )
)
_KEY_QUALIFIERS = frozenset(
    (
        *("api", "private", "secret", "access", "signing", "encryption", "master", "client"),
        *("account", "subscription"),
    )
)
_SUFFIXES = frozenset({"value", "header", "string", "str", "raw", "b64", "base64", "encoded"})

# Each shape has its own pattern, run only when a literal it cannot match without is in
# the text: a few substring tests reject ordinary text far faster than any regex scan.
_PEM = re.compile(
    # A block cut short by the length limit is redacted to the end of the text.
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\Z)"
)
# Opening on one character class (the two-wide lookbehind then checks the word starts
# there) lets the engine skip to each B or b in C: "basic" is common in prose.
_AUTH = re.compile(
    r"[Bb](?<!\w.)(?:earer|asic|EARER|ASIC)\s+(?P<credential>[A-Za-z0-9\-._~+/]{8,}=*)"
)
# The lookbehind starts a match only at the head of a token: without it, a long run
# of "eyJeyJ…" would be rescanned from every "eyJ" in it (quadratic time).
_JWT = re.compile(
    r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"
)
_SK = re.compile(r"\bsk-[A-Za-z0-9_\-]{20,}")  # OpenAI sk-, sk-proj-; Anthropic sk-ant-
_STRIPE = re.compile(r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{10,}")
_AWS = re.compile(r"\bA(?:KIA|SIA)[0-9A-Z]{16}\b")
_GITHUB = re.compile(r"g(?:h[pousr]_[A-Za-z0-9]{20,}|ithub_pat_[A-Za-z0-9_]{20,})")
_SLACK = re.compile(r"xox[abprs]-[A-Za-z0-9\-]{10,}")
_GOOGLE = re.compile(r"AIza[0-9A-Za-z_\-]{35,}")
# Only the password goes: user, host and path still say where the call went.
_URL_PASSWORD = re.compile(r"(?<=://)(?P<user>[^\s:/@?#]*:)[^\s:/@?#]+(?=@)")
# ``name=value`` anywhere, ``"name": "value"`` only with a quoted value: an unquoted
# "Token: …" is as likely prose as a credential.
_PAIRS = re.compile(
    r"""(?<![\w.])(?P<quote>["']?)(?P<name>[A-Za-z_][\w.\-]{0,63})(?P=quote)"""
    r"""(?:\s*=\s*|\s*:\s*(?=["']))"""
    r"""(?:"(?P<dq>[^"\\\n]*)"|'(?P<sq>[^'\\\n]*)'"""
    r"""|(?P<bare>(?:(?i:bearer|basic)\s+)?[^\s&;,"'<>]+))"""
)
# Every key the key rule accepts contains one of these, so a text without any of them
# needs no search for pairs.
_PAIR_HINTS = (
    *("pass", "pwd", "secret", "token", "auth", "cookie", "credential", "bearer"),
    *("otp", "cvv", "cvc", "key"),
)
_SHORTEST_SECRET = 5  # "pwd=x"; nothing shorter can hold a match
_SHORTEST_SHAPED = 14  # "xoxb-" and ten more, "Basic " and eight more
_MAX_DEPTH = 32
_MAX_ROUNDS = 3


def _invalid(message: str, example: str) -> ConfigError:
    return ConfigError(message, code="TR-CONFIG-INVALID", fix=f"pass {example}.")


def _key_words(key: str) -> list[str]:
    return [word.lower() for word in _WORD.findall(key)]


def _looks_like_prose(credential: str) -> bool:
    # "Basic authentication", "bearer tokens": one plain word after the scheme is text,
    # while real credentials mix case or carry digits.
    core = credential.replace("-", "").replace(".", "").replace("_", "").replace("~", "")
    return core.isalpha() and (core.islower() or core.isupper() or core.istitle())


class RecordScrubber:
    """Walks everything a record holds and rewrites its text: the base of both redactors.

    A subclass supplies ``rewrite`` (one pass over a string) and, to hide whole
    values by their key, a ``key_cache`` dict, ``masks_key`` and ``mask_value``.
    ``__call__`` changes the record in place, in the places the module docstring
    lists, and returns it; nested containers are replaced by changed copies,
    never edited, since they may still be the caller's.
    """

    key_cache: dict[str, bool] | None = None
    """Key → ``masks_key(key)``, filled by ``masks_key``; None when no key is ever masked."""

    fail_closed = True
    """If scrubbing raises, the pipeline drops the record rather than send it unscrubbed."""

    def rewrite(self, text: str) -> str:
        """One pass of replacements over ``text``; the same object if nothing changed."""
        raise NotImplementedError

    def scrub_text(self, text: str) -> str:
        """``text`` rewritten until stable; the same object if nothing changed."""
        out = self.rewrite(text)
        if out is text:
            return text
        # A replacement can open a boundary a pattern was waiting for (two secrets glued
        # together), so rewrite again until nothing changes: that also makes the result
        # the same however many times it is redacted. Only text that changed pays for it.
        for _ in range(_MAX_ROUNDS):
            again = self.rewrite(out)
            if again is out:
                break
            out = again
        return out

    def masks_key(self, key: str) -> bool:
        """True when the value under ``key`` is to be hidden whole."""
        return False

    def mask_value(self, value: Any) -> Any:
        """What a value under a masked key becomes."""
        return value

    def process_span(self, span: Span) -> Span:
        """Rewrite a span in place and return it: the pipeline calls this for spans directly."""
        attributes = span.attributes
        if attributes and type(attributes) is dict:
            self._scrub_in_place(attributes)
        self._scrub_span(span)
        return span

    def __call__(self, record: Any) -> Any:
        """Rewrite ``record`` in place and return it."""
        attributes = getattr(record, "attributes", None)
        if attributes and isinstance(attributes, dict):
            self._scrub_in_place(attributes)
        if isinstance(record, Span):
            self._scrub_span(record)
        elif isinstance(record, TraceUpdate):
            metadata = record.fields.get("metadata")
            if metadata is not None:
                record.fields["metadata"] = self.scrub(metadata)
        elif isinstance(record, RawEvent):
            record.payload = self.scrub(record.payload)
        return record

    def scrub(self, value: Any) -> Any:
        """``value`` (any JSON-like structure) with its text rewritten; unchanged parts shared."""
        return self._value(value, 0, None)

    def _scrub_span(self, span: Span) -> None:
        if span.input is not None:
            span.input = self._value(span.input, 0, None)
        if span.output is not None:
            span.output = self._value(span.output, 0, None)
        for items in (span._events, span._links):
            for item in items or ():
                attributes = item.get("attributes")
                if attributes and isinstance(attributes, dict):
                    self._scrub_in_place(attributes)
        if span.status_message:
            span.status_message = self.scrub_text(span.status_message)

    def _scrub_in_place(self, mapping: dict[Any, Any]) -> None:
        # The top-level dicts belong to the record, so they may be edited directly.
        changed = self._changed_items(mapping, 0, None)
        if changed:
            mapping.update(changed)

    def _changed_items(
        self, mapping: dict[Any, Any], depth: int, active: set[int] | None
    ) -> dict[Any, Any] | None:
        # The hot loop of the processor: most items are short strings and numbers under
        # keys seen before, so those paths avoid any call they can.
        changed: dict[Any, Any] | None = None
        cache = self.key_cache
        scrub_text = self.scrub_text
        for key, item in mapping.items():
            hit: bool | None = False
            if cache is not None and type(key) is str:
                hit = cache.get(key)
                if hit is None:
                    hit = self.masks_key(key)
            kind = type(item)
            if hit:
                new = self.mask_value(item)
            elif kind is str:
                new = scrub_text(item)
            elif kind is int or kind is float or kind is bool or item is None:
                continue
            else:
                new = self._value(item, depth + 1, active)
            if new is not item:
                changed = changed or {}
                changed[key] = new
        return changed

    def _value(self, value: Any, depth: int, active: set[int] | None) -> Any:
        kind = type(value)
        if kind is str:
            return self.scrub_text(value)
        if kind is not dict and kind is not list and kind is not tuple:
            # A str subclass (an enum member, say) is scanned as the plain text it holds.
            return self.scrub_text(str(value)) if isinstance(value, str) else value
        if active is None:
            active = set()
        ident = id(value)
        if depth >= _MAX_DEPTH or ident in active:
            return value
        active.add(ident)
        try:
            if kind is dict:
                changed = self._changed_items(value, depth, active)
                return value if changed is None else {**value, **changed}
            items = [self._value(item, depth + 1, active) for item in value]
            if all(new is old for new, old in zip(items, value, strict=True)):
                return value
            return items if kind is list else tuple(items)
        finally:
            active.discard(ident)


class SecretRedactor(RecordScrubber):
    """Replace secrets with ``marker``: values under secret-naming keys, secret-shaped text.

    ``extra_keys`` adds key names to treat as secrets (matched case-insensitively
    as the last words of a key, so ``"ssn"`` covers ``user.ssn`` and
    ``customerSsn``); ``cache_size`` bounds the memo of decisions per key. The
    rules are described in this module's docstring.
    """

    def __init__(
        self,
        *,
        extra_keys: Iterable[str] = (),
        marker: str = "[REDACTED]",
        cache_size: int = 4096,
    ) -> None:
        if not isinstance(marker, str) or not marker:
            raise _invalid(f"marker must be a non-empty string, got {marker!r}.", 'marker="***"')
        if isinstance(extra_keys, str):
            raise _invalid(
                f"extra_keys is the string {extra_keys!r}.", f"extra_keys=[{extra_keys!r}]"
            )
        extra = [tuple(_key_words(name)) if isinstance(name, str) else () for name in extra_keys]
        if not all(extra):
            raise _invalid(
                f"extra_keys holds a name with no letters or digits to match: {extra_keys!r}.",
                'extra_keys=["ssn", "x-internal-signature"]',
            )
        if cache_size < 1:
            raise _invalid(f"cache_size must be at least 1, got {cache_size!r}.", "cache_size=4096")
        self.marker = marker
        self.extra_keys: tuple[tuple[str, ...], ...] = tuple(extra)
        self._cache_size = cache_size
        # Keys repeat endlessly across records, so each is classified once. Plain dict
        # operations are atomic under the GIL, so several pipelines may share one redactor.
        self.key_cache: dict[str, bool] = {}
        # The marker goes into re.sub as a template: escape it, so a backslash stays one.
        self._template = marker.replace("\\", "\\\\")
        self._url_template = r"\g<user>" + self._template
        self._pair_hints = _PAIR_HINTS + tuple(words[-1] for words in extra)

    def __repr__(self) -> str:
        return f"SecretRedactor(extra_keys={self.extra_keys!r}, marker={self.marker!r})"

    def masks_key(self, key: str) -> bool:
        """True when ``key`` names a secret (see the module docstring for the rule)."""
        cache = self.key_cache
        hit = cache.get(key)
        if hit is None:
            hit = self._classify(key)
            if len(cache) >= self._cache_size:
                cache.clear()
            cache[key] = hit
        return hit

    def mask_value(self, value: Any) -> Any:
        """The marker in place of ``value``; a list or tuple keeps its length."""
        if value is None or isinstance(value, bool):
            return value
        kind = type(value)
        if kind is list or kind is tuple:
            items = [
                item if item is None or isinstance(item, bool) else self.marker for item in value
            ]
            return items if kind is list else tuple(items)
        return self.marker

    def rewrite(self, text: str) -> str:
        """``text`` with secret-shaped parts and ``name=secret`` values replaced by the marker."""
        if len(text) < _SHORTEST_SECRET:
            return text
        out = self._shaped(text) if len(text) >= _SHORTEST_SHAPED else text
        if "@" in out and "://" in out:
            out = _URL_PASSWORD.sub(self._url_template, out)
        if "=" in out or '":' in out or "':" in out:
            lowered = out.lower()
            if any(hint in lowered for hint in self._pair_hints):
                out = _PAIRS.sub(self._replace_pair, out)
        return text if out == text else out

    def _shaped(self, text: str) -> str:
        template = self._template
        if "-----BEGIN" in text:
            text = _PEM.sub(template, text)
        if "earer" in text or "asic" in text or "EARER" in text or "ASIC" in text:
            text = _AUTH.sub(self._replace_auth, text)
        if "eyJ" in text:
            text = _JWT.sub(template, text)
        if "sk-" in text:
            text = _SK.sub(template, text)
        if "k_live_" in text or "k_test_" in text:
            text = _STRIPE.sub(template, text)
        if "AKIA" in text or "ASIA" in text:
            text = _AWS.sub(template, text)
        if "gh" in text or "github_pat_" in text:
            text = _GITHUB.sub(template, text)
        if "xox" in text:
            text = _SLACK.sub(template, text)
        if "AIza" in text:
            text = _GOOGLE.sub(template, text)
        return text

    def _classify(self, key: str) -> bool:
        words = _key_words(key)
        if not words:
            return False
        for word in words:
            if word in _ANYWHERE_WORDS or any(part in word for part in _PASSWORD_PARTS):
                return True
        end = len(words)
        while end > 1 and (words[end - 1] in _SUFFIXES or words[end - 1].isdigit()):
            end -= 1
        head = words[end - 1]
        if head in _HEADS or (head == "key" and end > 1 and words[end - 2] in _KEY_QUALIFIERS):
            return True
        full, trimmed = tuple(words), tuple(words[:end])
        return any(full[-len(x) :] == x or trimmed[-len(x) :] == x for x in self.extra_keys)

    def _replace_auth(self, match: re.Match[str]) -> str:
        whole = match.group(0)
        if _looks_like_prose(match.group("credential")):
            return whole
        return whole[: match.start("credential") - match.start()] + self.marker

    def _replace_pair(self, match: re.Match[str]) -> str:
        whole = match.group(0)
        group = "dq" if match.group("dq") is not None else "sq"
        if match.group(group) is None:
            group = "bare"
        value = match.group(group)
        # An empty value hides nothing; one holding the marker was redacted already.
        if not value or self.marker in value or not self.masks_key(match.group("name")):
            return whole
        start, end = match.span(group)
        offset = match.start()
        return whole[: start - offset] + self.marker + whole[end - offset :]

"""docs/troubleshooting.md has a section for every error code the source can raise.

Codes are found by reading ``src/tracerelay`` for quoted ``TR-…`` literals
(``code="TR-…"`` arguments and class-level ``code = "TR-…"``), so a new code
fails here until it is documented, and a documented code that no longer exists
fails too. Where the message can be produced today, the example shown is the
one the code prints.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

import tracerelay
from tracerelay import TracerelayError

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "tracerelay"
DOC = ROOT / "docs" / "troubleshooting.md"
_CODE_LITERAL = re.compile(r"""["'](TR-[A-Z]+(?:-[A-Z]+)*)["']""")


def codes_in_source() -> set[str]:
    """Every ``TR-…`` code written as a string literal anywhere under src/tracerelay."""
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        found.update(_CODE_LITERAL.findall(path.read_text(encoding="utf-8")))
    return found


def sections(text: str) -> dict[str, str]:
    """``### TR-…`` heading → the text up to the next heading of any level."""
    out: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            match = re.fullmatch(r"### (TR-[A-Z-]+)\s*", line)
            current = match.group(1) if match else None
            if current is not None:
                out[current] = ""
            continue
        if current is not None:
            out[current] += line + "\n"
    return out


def test_the_scan_finds_the_codes_raised_today() -> None:
    # If the regex or the source layout broke, the real check below would pass on nothing.
    assert {
        "TR-CONFIG-TYPE",
        "TR-CONFIG-RANGE",
        "TR-CONFIG-CHOICE",
        "TR-CONFIG-UNKNOWN",
        "TR-CONFIG-CONFLICT",
        "TR-CONFIG-INVALID",
        "TR-EVENT-TYPE",
        "TR-AUTH-REJECTED",
        "TR-NET-UNREACHABLE",
    } <= codes_in_source()


def test_every_code_in_the_source_has_a_section() -> None:
    documented = sections(DOC.read_text(encoding="utf-8"))
    missing = sorted(codes_in_source() - documented.keys())
    assert not missing, f"codes raised in src/ without a section in troubleshooting.md: {missing}"


def test_every_documented_code_still_exists() -> None:
    documented = sections(DOC.read_text(encoding="utf-8"))
    stale = sorted(documented.keys() - codes_in_source())
    assert not stale, f"troubleshooting.md documents codes nothing raises any more: {stale}"


def test_every_section_explains_shows_and_fixes() -> None:
    for code, body in sections(DOC.read_text(encoding="utf-8")).items():
        assert "**Meaning.**" in body, code
        assert f"[{code}] " in body, f"{code}: no example message"
        assert "**Fix.**" in body, code


def _bad_type() -> None:
    tracerelay.Client(environ={"TRACERELAY_SAMPLE_RATE": "half"})


def _bad_range() -> None:
    tracerelay.init(batch_max_size=5000, environ={})


def _bad_choice() -> None:
    tracerelay.Client(environ={"TRACERELAY_DURABILITY": "Disk"})


def _unknown() -> None:
    tracerelay.init(batch_max_sise=5, environ={})


def _conflict() -> None:
    tracerelay.init(min_batch_size=600, environ={})


def _event_type() -> None:
    client = tracerelay.Client(synchronous=True, environ={})
    try:
        client.submit_batch_event("span_create", {})
    finally:
        client.shutdown()


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        ("TR-CONFIG-TYPE", _bad_type),
        ("TR-CONFIG-RANGE", _bad_range),
        ("TR-CONFIG-CHOICE", _bad_choice),
        ("TR-CONFIG-UNKNOWN", _unknown),
        ("TR-CONFIG-CONFLICT", _conflict),
        ("TR-EVENT-TYPE", _event_type),
    ],
)
def test_example_is_the_message_the_code_prints(code: str, cause: Callable[[], None]) -> None:
    with pytest.raises(TracerelayError) as raised:
        cause()
    assert raised.value.code == code
    body = sections(DOC.read_text(encoding="utf-8"))[code]
    assert f"```text\n{raised.value}\n```" in body


def test_the_problem_sections_exist() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert "\n## Spans are missing\n" in text
    assert "\n## Internal errors\n" in text
    missing = text.split("\n## Spans are missing\n")[1].split("\n## ")[0]
    for cause in ("tracerelay.init(", "sample_rate", "`none`", "tracerelay.flush()", "wrap("):
        assert cause in missing, cause

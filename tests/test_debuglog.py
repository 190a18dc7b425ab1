"""The SDK's own log: ``debug`` puts it on stderr, ``log_format`` shapes it, no secret gets out.

Everything goes through real ``logging``: records are logged on the
``tracerelay`` logger (the way the SDK's modules do) and read back from stderr
as pytest captures it. Fake secrets are assembled from pieces so that no
scanner mistakes this file for a leak.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tracerelay
from tracerelay import Config, ConfigError, NetworkError
from tracerelay._diagnostics import internal_error, logger, warn_once
from tracerelay.debuglog import MARKER, JsonFormatter, StderrHandler, configure_logging

API_KEY = "trk_" + "live_" + "Zq8Xw2Lr5Ty9Vb3N7c"
# (what is logged, the secret in it that must not come out)
SECRETS = {
    "api key": (f"key={API_KEY!r}", API_KEY),
    "bearer": ("Authorization: Bearer " + "tok_" + "8fJ2kL9qR4sT7vW1", "tok_" + "8fJ2kL9qR4sT7vW1"),
    "basic": ("Authorization: Basic " + "dXNlcjpw" + "YXNzd29yZA==", "dXNlcjpw" + "YXNzd29yZA=="),
    "openai": ("using sk-" + "proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2", "A1b2C3d4E5f6G7h8I9j0K1l2"),
    "jwt": (
        "cookie eyJhbGciOiJIUzI1NiJ9" + ".eyJzdWIiOiIxMjM0NTY3ODkwIn0" + ".dozjgNryP4J3jVmN",
        "eyJzdWIiOiIxMjM0NTY3ODkwIn0",
    ),
    "aws": ("aws id AKIA" + "IOSFODNN7EXAMPLE in use", "AKIA" + "IOSFODNN7EXAMPLE"),
}


@pytest.fixture(autouse=True)
def _debug_off_around() -> Iterator[None]:
    """Each test starts and ends with tracerelay's handler gone and the level restored."""
    configure_logging(Config(environ={}))
    yield
    configure_logging(Config(environ={}))


def debug_on(**options: Any) -> Config:
    """Configure the debug log as ``Client(debug=True, **options)`` would."""
    config = Config(debug=True, environ={}, **options)
    configure_logging(config)
    return config


def ours() -> list[logging.Handler]:
    return [h for h in logger.handlers if isinstance(h, StderrHandler)]


def json_lines(text: str) -> list[dict[str, Any]]:
    # Split on "\n" only, as JSON-lines readers do: str.splitlines() would also break
    # on U+0085 or U+2028 inside a message, which JSON does not escape.
    return [json.loads(line) for line in text.split("\n") if line]


def last_json(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    return json_lines(capsys.readouterr().err)[-1]


# --- turning it on and off --------------------------------------------------------------


def test_debug_sends_the_sdk_debug_lines_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    client = tracerelay.Client(debug=True, exporters=[], synchronous=True, environ={})
    client.shutdown()
    logger.debug("tracerelay: probe %d", 42)
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].endswith("Z DEBUG tracerelay: probe 42")
    assert "debug log on (text)" in lines[0]


def test_the_environment_variables_turn_it_on(capsys: pytest.CaptureFixture[str]) -> None:
    env = {"TRACERELAY_DEBUG": "true", "TRACERELAY_LOG_FORMAT": "json"}
    tracerelay.Client(exporters=[], synchronous=True, environ=env).shutdown()
    logger.debug("tracerelay: probe")
    assert last_json(capsys)["message"] == "tracerelay: probe"


def test_off_by_default_nothing_is_installed_or_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    level = logger.level
    tracerelay.Client(exporters=[], synchronous=True, environ={}).shutdown()
    logger.debug("tracerelay: probe")
    assert capsys.readouterr().err == ""
    # Without the handler there is no filter anywhere: the logger costs what it did.
    assert ours() == []
    assert logger.filters == []
    assert logger.level == level


def test_two_inits_add_one_handler(capsys: pytest.CaptureFixture[str]) -> None:
    tracerelay.init(debug=True, exporters=[], synchronous=True, environ={})
    tracerelay.init(debug=True, exporters=[], synchronous=True, environ={})
    assert len(ours()) == 1
    logger.debug("tracerelay: once")
    assert capsys.readouterr().err.count("tracerelay: once") == 1


def test_a_later_client_without_debug_removes_the_handler_and_restores_the_level(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = logger.level
    debug_on()
    assert logger.level == logging.DEBUG
    tracerelay.Client(exporters=[], synchronous=True, environ={}).shutdown()
    assert ours() == []
    assert logger.level == before
    logger.debug("tracerelay: logged after debug went off")
    assert "logged after debug went off" not in capsys.readouterr().err


def test_a_level_set_meanwhile_is_left_alone() -> None:
    debug_on()
    logger.setLevel(logging.INFO)
    try:
        configure_logging(Config(environ={}))
        assert logger.level == logging.INFO
    finally:
        logger.setLevel(logging.NOTSET)


def test_a_failed_client_leaves_the_log_as_it_was() -> None:
    debug_on()
    with pytest.raises(ConfigError):
        tracerelay.Client(debug=False, log_format="yaml", environ={})
    assert len(ours()) == 1


def test_the_root_logger_and_the_applications_handlers_are_untouched() -> None:
    root = logging.getLogger()
    seen: list[logging.LogRecord] = []
    app_handler = logging.Handler()
    app_handler.emit = seen.append  # type: ignore[method-assign]
    logger.addHandler(app_handler)
    before = (list(root.handlers), root.level, list(root.filters), logger.propagate)
    try:
        debug_on()
        debug_on(log_format="json")
        assert (list(root.handlers), root.level, list(root.filters), logger.propagate) == before
        assert app_handler in logger.handlers
        configure_logging(Config(environ={}))
        assert (list(root.handlers), root.level, list(root.filters), logger.propagate) == before
        assert logger.handlers == [app_handler]
    finally:
        logger.removeHandler(app_handler)


def test_a_later_init_switches_the_format_of_the_same_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    debug_on()
    logger.debug("tracerelay: as text")
    debug_on(log_format="json")
    logger.debug("tracerelay: as json")
    assert len(ours()) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[1].endswith("DEBUG tracerelay: as text")
    assert json.loads(lines[-1])["message"] == "tracerelay: as json"


def test_writes_to_stderr_as_it_is_at_each_record(monkeypatch: pytest.MonkeyPatch) -> None:
    debug_on()
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    logger.debug("tracerelay: redirected")
    assert later.getvalue().endswith("DEBUG tracerelay: redirected\n")
    monkeypatch.setattr(sys, "stderr", None)  # pythonw: nowhere to write, and no error
    logger.debug("tracerelay: lost")


# --- JSON -------------------------------------------------------------------------------


def test_json_lines_carry_ts_level_logger_message(capsys: pytest.CaptureFixture[str]) -> None:
    debug_on(log_format="json")
    logger.debug("tracerelay: %d of %s", 3, "these")
    logger.warning("tracerelay: plain")
    lines = json_lines(capsys.readouterr().err)
    first, second = lines[-2:]
    assert set(first) == {"ts", "level", "logger", "message"}
    assert (first["level"], first["logger"], first["message"]) == (
        "DEBUG",
        "tracerelay",
        "tracerelay: 3 of these",
    )
    assert second["level"] == "WARNING"
    ts = datetime.datetime.fromisoformat(first["ts"].replace("Z", "+00:00"))
    assert ts.utcoffset() == datetime.timedelta(0)
    assert abs(ts - datetime.datetime.now(datetime.timezone.utc)) < datetime.timedelta(minutes=1)


def test_a_coded_warning_gives_its_code(capsys: pytest.CaptureFixture[str]) -> None:
    debug_on(log_format="json")
    # The form the sender's warnings take.
    warn_once(f"test-code:{id(capsys)}", "tracerelay: [%s] %s.", "TR-AUTH-REJECTED", "refused")
    assert last_json(capsys)["code"] == "TR-AUTH-REJECTED"
    logger.debug("tracerelay: coded by hand", extra={"code": "TR-NET-REJECTED"})
    assert last_json(capsys)["code"] == "TR-NET-REJECTED"


def test_an_internal_error_gives_the_exception_fields(
    capsys: pytest.CaptureFixture[str], internal_errors: list[Any]
) -> None:
    debug_on(log_format="json")
    try:
        {}["missing"]
    except KeyError as exc:
        internal_error(f"test json exc {id(exc)}", exc)
    line = last_json(capsys)
    assert line["level"] == "WARNING"
    assert line["exc_type"] == "KeyError"
    assert line["exc_message"] == "'missing'"
    assert line["traceback"].startswith("Traceback (most recent call last):")
    assert line["traceback"].endswith("KeyError: 'missing'")
    assert "code" not in line

    error = NetworkError("the server is gone")
    internal_error(f"test json coded exc {id(error)}", error)
    line = last_json(capsys)
    assert line["exc_type"] == "tracerelay.errors.NetworkError"
    assert line["code"] == "TR-NET-UNREACHABLE"
    assert len(internal_errors) == 2


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize(
    ("message", "args", "extra", "shown"),
    [
        ("%d items", ("many",), None, "'%d items' % ('many')"),
        ("%r", (Unprintable(),), None, "<unrepresentable Unprintable>"),
        ("%s and %s", ("one",), None, "'%s and %s' % ('one')"),
        ("lone \ud800 surrogate", (), None, "lone"),
        ("plain", (), {"big": 1 << 80, "thing": object(), "odd": Unprintable()}, "plain"),
    ],
)
def test_odd_records_still_give_one_json_line(
    capsys: pytest.CaptureFixture[str],
    message: str,
    args: tuple[Any, ...],
    extra: dict[str, Any] | None,
    shown: str,
) -> None:
    debug_on(log_format="json")
    logger.debug(message, *args, extra=extra)
    err = capsys.readouterr().err
    assert "Logging error" not in err
    line = json_lines(err)[-1]
    assert shown in line["message"]
    for key in extra or {}:
        assert key in line


def test_the_json_formatter_alone_never_raises() -> None:
    # Without the filter in front of it, as someone might use it on their own handler.
    record = logging.LogRecord("tracerelay", logging.INFO, __file__, 1, "%d", ("x",), None)
    record.thing = Unprintable()
    record.huge = 1 << 80
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "'%d' % ('x')"
    assert line["thing"] == "<unrepresentable Unprintable>"
    assert line["huge"] == str(1 << 80)


# --- secrets ----------------------------------------------------------------------------


def _log_each_way(text: str) -> None:
    logger.debug(f"tracerelay: in the message {text}")
    logger.debug("tracerelay: in an argument %s", text)
    logger.debug("tracerelay: in a repr %r", {"headers": text})
    logger.debug("tracerelay: in an extra", extra={"detail": text})
    try:
        raise RuntimeError("request failed: " + text)
    except RuntimeError as exc:
        logger.warning("tracerelay: in an exception", exc_info=exc)
    logger.debug("tracerelay: in a stack", stack_info=True, extra={"where": text})


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("case", list(SECRETS))
def test_secrets_never_reach_the_output(
    capsys: pytest.CaptureFixture[str], case: str, log_format: str
) -> None:
    text, secret = SECRETS[case]
    debug_on(api_key=API_KEY, log_format=log_format)
    _log_each_way(text)
    err = capsys.readouterr().err
    assert secret not in err
    if log_format == "text":
        # The message, the argument, the repr and the exception's last line.
        assert err.count(MARKER) >= 4
    else:
        # The same, and the two extras and exc_message, which text lines leave out.
        assert err.count(MARKER) >= 7
        exception = json_lines(err)[-2]
        assert exception["exc_message"].startswith("request failed: ")
        assert MARKER in exception["exc_message"]
        assert MARKER in exception["traceback"]


def test_an_internal_errors_exception_text_is_scrubbed(
    capsys: pytest.CaptureFixture[str], internal_errors: list[Any]
) -> None:
    debug_on(api_key=API_KEY, log_format="json")
    error = NetworkError("cannot send with key " + API_KEY)
    internal_error(f"test secret exc {id(error)}", error)
    err = capsys.readouterr().err
    assert API_KEY not in err
    line = json_lines(err)[-1]
    assert line["exc_message"] == f"[TR-NET-UNREACHABLE] cannot send with key {MARKER}"
    assert len(internal_errors) == 1


def test_the_applications_handlers_receive_the_records_scrubbed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    debug_on(api_key=API_KEY)
    logger.debug("tracerelay: sending with %s", API_KEY)
    assert caplog.records[-1].getMessage() == f"tracerelay: sending with {MARKER}"
    assert API_KEY not in caplog.text


def test_every_configured_secret_is_replaced(capsys: pytest.CaptureFixture[str]) -> None:
    other = "second" + "-key-" + "0c1d2e3f4a5b"
    salt = "pepper" + "-salt-" + "9a8b7c6d"
    debug_on(api_key=API_KEY)
    debug_on(api_key=other, pii_salt=salt)  # the first key may still be in flight
    logger.debug("tracerelay: %s %s %s", API_KEY, other, salt)
    err = capsys.readouterr().err
    assert err.splitlines()[-1].endswith(f"tracerelay: {MARKER} {MARKER} {MARKER}")


class Hostile(str):
    """A string that breaks the filter's substring test."""

    __slots__ = ()

    def __contains__(self, item: object) -> bool:
        raise RuntimeError("hostile")


def test_a_record_that_cannot_be_scrubbed_is_dropped(
    capsys: pytest.CaptureFixture[str], internal_errors: list[Any]
) -> None:
    debug_on(api_key=API_KEY)
    logger.debug("tracerelay: must not appear", extra={"field": Hostile("x")})
    assert "must not appear" not in capsys.readouterr().err
    assert [where for where, _ in internal_errors] == ["debug log secret filter"]


KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


@settings(max_examples=200, deadline=None)
@given(
    key=st.text(alphabet=KEY_ALPHABET, min_size=12, max_size=48),
    before=st.text(max_size=40),
    after=st.text(max_size=40),
    how=st.sampled_from(["message", "argument", "exception"]),
    log_format=st.sampled_from(["text", "json"]),
)
def test_an_embedded_api_key_never_survives(
    key: str, before: str, after: str, how: str, log_format: str
) -> None:
    text = before + key + after
    out = io.StringIO()
    try:
        with contextlib.redirect_stderr(out):
            debug_on(api_key=key, log_format=log_format)
            if how == "message":
                logger.debug(text)
            elif how == "argument":
                logger.debug("tracerelay: %s", text)
            else:
                logger.debug("tracerelay: failed", exc_info=ValueError(text))
    finally:
        configure_logging(Config(environ={}))
    written = out.getvalue()
    assert MARKER in written
    if log_format == "text":
        assert key not in written
    else:
        # Decoded: JSON escapes ("\n" → "\\n") could otherwise spell a key by accident.
        for line in json_lines(written):
            assert not any(key in str(value) for value in line.values())


# --- configuration ----------------------------------------------------------------------


def test_log_format_defaults_to_text_and_accepts_json() -> None:
    assert Config(environ={}).log_format == "text"
    assert Config(log_format="json", environ={}).log_format == "json"
    assert Config(environ={"TRACERELAY_LOG_FORMAT": "json"}).log_format == "json"


def test_a_bad_log_format_keyword_names_the_option() -> None:
    with pytest.raises(ConfigError) as raised:
        tracerelay.Client(log_format="yaml", environ={})
    error = raised.value
    assert error.code == "TR-CONFIG-CHOICE"
    assert "option 'log_format'" in str(error)
    assert "keyword log_format='yaml'" in str(error)
    assert "Allowed: text | json;" in str(error)
    assert error.fix == "pass log_format= one of text, json."


def test_a_bad_log_format_variable_names_the_variable() -> None:
    with pytest.raises(ConfigError) as raised:
        Config(environ={"TRACERELAY_LOG_FORMAT": "JSON"})
    error = raised.value
    assert error.code == "TR-CONFIG-CHOICE"
    assert "environment variable TRACERELAY_LOG_FORMAT='JSON'" in str(error)
    assert error.fix == "set TRACERELAY_LOG_FORMAT to one of text, json, or unset it."

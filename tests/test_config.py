"""Configuration as users meet it: ``tracerelay.Config``, ``init()`` and ``Client()``.

A keyword argument beats ``TRACERELAY_<NAME>``, which beats the default; every
kind of value is read the documented way; and a bad value fails at once with a
code and a message that names the option, the value, where it came from, what
is allowed and how to fix it, without ever showing the api key.
"""

from __future__ import annotations

import math
import os
import re
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracerelay
from tracerelay import Config, ConfigError, TracerelayError
from tracerelay.config import Option, options

OPTIONS = {opt.name: opt for opt in options()}
RANGED = [opt.name for opt in options() if opt.lo is not None and opt.hi is not None]
# Options whose random values would otherwise collide with the min ≤ max batch rule.
COMPANIONS: dict[str, dict[str, int]] = {
    "min_batch_size": {"max_batch_size": 1000},
    "max_batch_size": {"min_batch_size": 1},
}
SECRET = "sk-live-5f3a9c1e7d2b4a60"

Build = Callable[..., Config]


def _via_config(environ: Mapping[str, str], **kwargs: Any) -> Config:
    return tracerelay.Config(environ=environ, **kwargs)


def _via_init(environ: Mapping[str, str], **kwargs: Any) -> Config:
    return tracerelay.init(environ=environ, **kwargs).config


def _via_client(environ: Mapping[str, str], **kwargs: Any) -> Config:
    client = tracerelay.Client(environ=environ, **kwargs)
    client.shutdown()
    return client.config


@pytest.fixture(params=[_via_config, _via_init, _via_client], ids=["Config", "init", "Client"])
def build(request: pytest.FixtureRequest) -> Build:
    builder: Build = request.param
    return builder


def config(**kwargs: Any) -> Config:
    """A Config that sees only the given environment (none by default)."""
    environ = kwargs.pop("environ", {})
    return tracerelay.Config(environ=environ, **kwargs)


def config_error(**kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        config(**kwargs)
    return raised.value


# --- precedence -------------------------------------------------------------------------


def test_keyword_beats_environment_beats_default(build: Build) -> None:
    env = {"TRACERELAY_BATCH_MAX_SIZE": "250", "TRACERELAY_SERVICE": "from-env"}
    both = build(env, batch_max_size=7, service="from-keyword")
    assert (both.batch_max_size, both.service) == (7, "from-keyword")
    env_only = build(env)
    assert (env_only.batch_max_size, env_only.service) == (250, "from-env")
    neither = build({})
    assert (neither.batch_max_size, neither.service) == (100, "unknown_service")


def test_a_keyword_hides_a_broken_environment_variable(build: Build) -> None:
    assert build({"TRACERELAY_BATCH_MAX_SIZE": "lots"}, batch_max_size=5).batch_max_size == 5


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_an_empty_environment_variable_means_unset(build: Build, blank: str) -> None:
    resolved = build({"TRACERELAY_SAMPLE_RATE": blank, "TRACERELAY_ENDPOINT": blank})
    assert resolved.sample_rate == 1.0
    assert resolved.endpoint == "http://127.0.0.1:4319"


def test_only_the_tracerelay_prefix_is_read() -> None:
    resolved = config(environ={"BATCH_MAX_SIZE": "5", "tracerelay_batch_max_size": "6"})
    assert resolved.batch_max_size == 100


def test_misspelt_environment_variables_are_ignored() -> None:
    # Documented in troubleshooting.md: only keywords are checked for typos.
    assert config(environ={"TRACERELAY_BATCH_MAX_SISE": "5"}).batch_max_size == 100


def test_environ_replaces_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACERELAY_BATCH_MAX_SIZE", "42")
    assert tracerelay.Config().batch_max_size == 42
    assert tracerelay.Config(environ={}).batch_max_size == 100


def test_the_environment_is_read_once_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACERELAY_SERVICE", "before")
    resolved = tracerelay.Config()
    monkeypatch.setenv("TRACERELAY_SERVICE", "after")
    assert resolved.service == "before"


def test_a_failed_init_keeps_the_previous_client() -> None:
    first = tracerelay.init(service="first", environ={})
    with pytest.raises(ConfigError):
        tracerelay.init(sample_rate=2, environ={})
    assert tracerelay.get_client() is first


# --- every option -----------------------------------------------------------------------


def _other_valid(opt: Option) -> tuple[str, Any]:
    """A valid value for ``opt`` that is not its default: (as an env text, as resolved)."""
    if opt.kind == "bool":
        return str(not opt.default).lower(), not opt.default
    if opt.choices:
        choice = next(c for c in opt.choices if c != opt.default)
        return choice, choice
    if opt.kind in ("int", "bytes"):
        assert opt.hi is not None
        value = opt.default + 1 if opt.default < opt.hi else opt.default - 1
        return str(value), value
    if opt.kind == "float":
        assert opt.lo is not None
        assert opt.hi is not None
        value = (opt.default + opt.hi) / 2 if opt.default < opt.hi else (opt.lo + opt.default) / 2
        return repr(value), value
    if opt.kind == "url":
        return "https://traces.example.com:8443", "https://traces.example.com:8443"
    return f"value-of-{opt.name}", f"value-of-{opt.name}"


@pytest.mark.parametrize("name", list(OPTIONS))
def test_each_option_has_its_environment_variable(name: str) -> None:
    opt = OPTIONS[name]
    assert opt.env == "TRACERELAY_" + name.upper()
    assert re.fullmatch(r"TRACERELAY_[A-Z][A-Z0-9_]*", opt.env)
    text, expected = _other_valid(opt)
    assert expected != opt.default
    assert getattr(config(environ={opt.env: text}), name) == expected
    assert getattr(config(**{name: expected}), name) == expected


def test_environment_variable_names_are_unique() -> None:
    names = [opt.env for opt in options()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", list(OPTIONS))
def test_each_default_is_valid_for_its_own_option(name: str) -> None:
    opt = OPTIONS[name]
    if opt.lo is not None and opt.hi is not None:
        assert opt.lo <= opt.default <= opt.hi
    if opt.choices:
        assert opt.default in opt.choices
    # The default survives its own validation, given back as a keyword.
    assert getattr(config(**{name: opt.default}), name) == opt.default
    assert getattr(config(), name) == opt.default


def test_every_option_belongs_to_a_known_group() -> None:
    assert {opt.group for opt in options()} == {
        "identity",
        "delivery",
        "network",
        "spool",
        "processing",
    }


def test_defaults_match_the_spec() -> None:
    resolved = config()
    assert resolved.endpoint == "http://127.0.0.1:4319"
    assert resolved.batch_max_size == 100
    assert resolved.batch_flush_interval == 5.0
    assert resolved.compression_threshold == 0.8
    assert resolved.compression_min_size == 1024
    assert resolved.failure_threshold == 5
    assert resolved.recovery_timeout == 60.0
    assert resolved.durability == "memory"
    assert resolved.redact is True
    assert resolved.api_key is None


# --- parsing each kind ------------------------------------------------------------------

TRUE_SPELLINGS = ["true", "1", "yes", "on", "TRUE", "Yes", " on ", "True\n"]
FALSE_SPELLINGS = ["false", "0", "no", "off", "FALSE", "No", " off ", "Off\n"]


@pytest.mark.parametrize("text", TRUE_SPELLINGS)
def test_true_spellings(text: str) -> None:
    assert config(environ={"TRACERELAY_CAPTURE_IO": text}).capture_io is True
    assert config(capture_io=text).capture_io is True


@pytest.mark.parametrize("text", FALSE_SPELLINGS)
def test_false_spellings(text: str) -> None:
    assert config(environ={"TRACERELAY_ENABLED": text}).enabled is False
    assert config(enabled=text).enabled is False


def test_booleans_from_python_values() -> None:
    assert config(redact_pii=True).redact_pii is True
    assert config(redact=False).redact is False
    assert config(redact_pii=1).redact_pii is True
    assert config(redact=0).redact is False


@pytest.mark.parametrize("bad", ["maybe", "2", "t", "enabled", 2, 1.0, None, []])
def test_other_boolean_values_are_rejected(bad: Any) -> None:
    assert config_error(enabled=bad).code == "TR-CONFIG-TYPE"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("250_000", 250_000), ("  42 ", 42), ("1000000", 1_000_000), ("+7", 7)],
)
def test_integers_from_text(text: str, expected: int) -> None:
    assert config(environ={"TRACERELAY_MAX_QUEUE_SIZE": text}).max_queue_size == expected
    assert config(max_queue_size=text).max_queue_size == expected


def test_integers_from_python_values() -> None:
    resolved = config(batch_max_size=5.0)
    assert resolved.batch_max_size == 5
    assert type(resolved.batch_max_size) is int


@pytest.mark.parametrize("bad", ["5.5", "1e3", "ten", "", 5.5, True, None, math.nan, math.inf])
def test_non_integers_are_rejected(bad: Any) -> None:
    assert config_error(batch_max_size=bad).code == "TR-CONFIG-TYPE"


@pytest.mark.parametrize(
    ("text", "expected"), [("0.25", 0.25), (".5", 0.5), ("1e-1", 0.1), (" 1 ", 1.0)]
)
def test_floats_from_text(text: str, expected: float) -> None:
    assert config(environ={"TRACERELAY_SAMPLE_RATE": text}).sample_rate == expected


def test_floats_from_python_values() -> None:
    resolved = config(timeout=30)
    assert resolved.timeout == 30.0
    assert type(resolved.timeout) is float


@pytest.mark.parametrize("bad", ["half", "", "0,5", True, None, "1/2"])
def test_non_floats_are_rejected(bad: Any) -> None:
    assert config_error(sample_rate=bad).code == "TR-CONFIG-TYPE"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("max_queue_bytes", "64MiB", 64 * 2**20),
        ("max_queue_bytes", "64 mib", 64 * 2**20),
        ("max_queue_bytes", "1GB", 10**9),
        ("max_queue_bytes", "1GiB", 2**30),
        ("max_queue_bytes", "2M", 2_000_000),
        ("max_queue_bytes", "1.5MiB", 3 * 2**19),
        ("compression_min_size", "512", 512),
        ("compression_min_size", "512B", 512),
        ("compression_min_size", "2KiB", 2048),
        ("compression_min_size", "2kb", 2000),
        ("compression_min_size", "0", 0),
        ("spool_max_bytes", "1TiB", 2**40),
        ("spool_max_bytes", "1TB", 10**12),
        ("max_span_bytes", "4096", 4096),
    ],
)
def test_byte_sizes(name: str, text: str, expected: int) -> None:
    assert getattr(config(environ={OPTIONS[name].env: text}), name) == expected
    assert getattr(config(**{name: text}), name) == expected


def test_byte_sizes_from_python_integers() -> None:
    assert config(max_queue_bytes=8 * 2**20).max_queue_bytes == 8 * 2**20


@pytest.mark.parametrize("bad", ["64XB", "MiB", "-1", "64 MiB extra", "1e6", "", True, 1.5])
def test_unreadable_byte_sizes_are_rejected(bad: Any) -> None:
    assert config_error(max_queue_bytes=bad).code == "TR-CONFIG-TYPE"


def test_byte_sizes_outside_the_range_are_rejected() -> None:
    error = config_error(environ={"TRACERELAY_MAX_QUEUE_BYTES": "64KiB"})
    assert error.code == "TR-CONFIG-RANGE"
    assert "(bytes; suffixes like 64MiB work)" in str(error)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:4319", "http://127.0.0.1:4319"),
        ("https://traces.example.com/", "https://traces.example.com"),
        ("https://traces.example.com/relay//", "https://traces.example.com/relay"),
        ("http://localhost:4319/ ", "http://localhost:4319"),
        (" http://[::1]:4319", "http://[::1]:4319"),
    ],
)
def test_urls(given: str, expected: str) -> None:
    assert config(endpoint=given).endpoint == expected
    assert config(environ={"TRACERELAY_ENDPOINT": given}).endpoint == expected


@pytest.mark.parametrize(
    "bad",
    ["localhost:4319", "ftp://example.com", "http://", "http:///path", "http://a b", "", None, 80],
)
def test_urls_must_be_http_or_https(bad: Any) -> None:
    error = config_error(endpoint=bad)
    assert error.code == "TR-CONFIG-TYPE"
    assert "http:// or https://" in str(error)


def test_text_options() -> None:
    resolved = config(spool_dir=Path("/var/spool/tr"), service_version=None, service="svc")
    assert resolved.spool_dir == "/var/spool/tr"
    assert resolved.service_version is None
    assert resolved.service == "svc"
    assert config_error(service=42).code == "TR-CONFIG-TYPE"
    assert config_error(service=None).code == "TR-CONFIG-TYPE"


@pytest.mark.parametrize("name", [n for n, o in OPTIONS.items() if o.choices])
def test_every_choice_is_accepted(name: str) -> None:
    for choice in OPTIONS[name].choices:
        assert getattr(config(**{name: choice}), name) == choice
        assert getattr(config(environ={OPTIONS[name].env: choice}), name) == choice


# --- errors -----------------------------------------------------------------------------


def test_config_errors_are_value_errors_under_the_root() -> None:
    error = config_error(batch_max_size=0)
    assert isinstance(error, ValueError)
    assert isinstance(error, TracerelayError)
    assert str(error).startswith(f"[{error.code}] ")
    assert error.fix
    assert str(error).endswith(f"Fix: {error.fix}")


@pytest.mark.parametrize(
    ("code", "name", "value", "allowed", "wanted"),
    [
        ("TR-CONFIG-RANGE", "batch_max_size", 5000, "1 – 1000", "a number from 1 to 1000"),
        ("TR-CONFIG-RANGE", "sample_rate", 1.5, "0 – 1", "a number from 0 to 1"),
        ("TR-CONFIG-TYPE", "timeout", "soon", "0.1 – 300", "a number from 0.1 to 300"),
        ("TR-CONFIG-TYPE", "keep_alive", "sometimes", "true | false", "true or false"),
        ("TR-CONFIG-CHOICE", "mode", "batch", "deferred | instant", "one of deferred, instant"),
        ("TR-CONFIG-CHOICE", "durability", "Disk", "memory | disk", "one of memory, disk"),
    ],
)
def test_a_bad_keyword_names_option_value_source_range_and_fix(
    code: str, name: str, value: Any, allowed: str, wanted: str
) -> None:
    error = config_error(**{name: value})
    assert error.code == code
    message = str(error)
    assert f"option {name!r}" in message
    assert f"keyword {name}={value!r}" in message
    assert f"Allowed: {allowed};" in message
    assert error.fix == f"pass {name}= {wanted}."


@pytest.mark.parametrize(
    ("code", "name", "text", "allowed"),
    [
        ("TR-CONFIG-RANGE", "batch_flush_interval", "0.01", "0.1 – 60"),
        ("TR-CONFIG-TYPE", "max_retries", "five", "0 – 100"),
        ("TR-CONFIG-CHOICE", "compression", "brotli", "gzip | zstd | none"),
    ],
)
def test_a_bad_environment_variable_is_named_with_its_value(
    build: Build, code: str, name: str, text: str, allowed: str
) -> None:
    env = OPTIONS[name].env
    with pytest.raises(ConfigError) as raised:
        build({env: text})
    error = raised.value
    assert error.code == code
    assert f"environment variable {env}={text!r}" in str(error)
    assert f"Allowed: {allowed};" in str(error)
    assert error.fix is not None
    assert error.fix.startswith(f"set {env} to ")
    assert error.fix.endswith(", or unset it.")


def test_the_message_shows_the_default() -> None:
    assert "default: 100." in str(config_error(batch_max_size=0))
    assert "default: deferred." in str(config_error(mode="fast"))


def test_an_unknown_keyword_suggests_the_close_name() -> None:
    with pytest.raises(ConfigError) as raised:
        tracerelay.init(batch_max_sise=5, environ={})
    assert raised.value.code == "TR-CONFIG-UNKNOWN"
    assert "'batch_max_sise'" in str(raised.value)
    assert "'batch_max_size'" in str(raised.value)
    assert tracerelay.get_client() is None


def test_an_unknown_keyword_without_a_close_name_points_to_the_docs() -> None:
    with pytest.raises(ConfigError) as raised:
        tracerelay.Client(colour="blue", environ={})
    assert raised.value.code == "TR-CONFIG-UNKNOWN"
    assert "docs/configuration.md" in str(raised.value)


def test_config_itself_rejects_unknown_keywords() -> None:
    with pytest.raises(TypeError, match="batch_max_sise"):
        tracerelay.Config(batch_max_sise=5)  # type: ignore[call-arg]


def test_min_batch_size_above_max_batch_size_conflicts(build: Build) -> None:
    with pytest.raises(ConfigError) as raised:
        build({}, min_batch_size=600)
    assert raised.value.code == "TR-CONFIG-CONFLICT"
    assert "min_batch_size=600" in str(raised.value)
    assert "max_batch_size=500" in str(raised.value)
    with pytest.raises(ConfigError, match="TR-CONFIG-CONFLICT"):
        build({"TRACERELAY_MAX_BATCH_SIZE": "5"})
    equal = build({}, min_batch_size=50, max_batch_size=50)
    assert (equal.min_batch_size, equal.max_batch_size) == (50, 50)


# --- secrets ----------------------------------------------------------------------------


def _everything_printed(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


@pytest.mark.parametrize("bad", [SECRET.encode(), [SECRET], {"key": SECRET}])
def test_a_bad_api_key_is_never_shown(bad: Any) -> None:
    error = config_error(api_key=bad)
    assert error.code == "TR-CONFIG-TYPE"
    assert "<hidden>" in str(error)
    assert SECRET not in _everything_printed(error)
    assert SECRET not in repr(error)


def test_the_api_key_is_not_in_the_repr(build: Build) -> None:
    from_keyword = build({}, api_key=SECRET)
    assert from_keyword.api_key == SECRET
    assert SECRET not in repr(from_keyword)
    from_env = build({"TRACERELAY_API_KEY": SECRET})
    assert from_env.api_key == SECRET
    assert SECRET not in repr(from_env)
    assert "api_key" not in repr(from_env)


def test_other_errors_do_not_leak_the_api_key() -> None:
    error = config_error(api_key=SECRET, batch_max_size=-1)
    assert SECRET not in _everything_printed(error)
    with pytest.raises(ConfigError) as raised:
        tracerelay.init(api_key=SECRET, min_batch_size=900, environ={})
    assert SECRET not in _everything_printed(raised.value)


def test_the_client_repr_does_not_show_the_api_key() -> None:
    client = tracerelay.Client(api_key=SECRET, environ={}, synchronous=True)
    assert SECRET not in repr(client)
    client.shutdown()


# --- ranges, for any value --------------------------------------------------------------


def _in_range(opt: Option) -> st.SearchStrategy[Any]:
    assert opt.lo is not None
    assert opt.hi is not None
    if opt.kind == "float":
        return st.floats(opt.lo, opt.hi, allow_nan=False)
    return st.integers(int(opt.lo), int(opt.hi))


def _out_of_range(opt: Option) -> st.SearchStrategy[Any]:
    assert opt.lo is not None
    assert opt.hi is not None
    if opt.kind == "float":
        below = st.floats(max_value=opt.lo, exclude_max=True, allow_nan=False)
        return below | st.floats(min_value=opt.hi, exclude_min=True, allow_nan=False)
    return st.integers(max_value=int(opt.lo) - 1) | st.integers(min_value=int(opt.hi) + 1)


def _as_env_text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


RANGE_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.mark.parametrize("name", RANGED)
@RANGE_SETTINGS
@given(data=st.data())
def test_any_in_range_value_is_accepted_unchanged(name: str, data: st.DataObject) -> None:
    opt = OPTIONS[name]
    value = data.draw(_in_range(opt), label=name)
    extra = COMPANIONS.get(name, {})
    assert getattr(config(**{name: value}, **extra), name) == value
    environ = {opt.env: _as_env_text(value)} | {OPTIONS[k].env: str(v) for k, v in extra.items()}
    assert getattr(config(environ=environ), name) == value


@pytest.mark.parametrize("name", RANGED)
@RANGE_SETTINGS
@given(data=st.data())
def test_any_out_of_range_value_is_a_range_error(name: str, data: st.DataObject) -> None:
    opt = OPTIONS[name]
    value = data.draw(_out_of_range(opt), label=name)
    error = config_error(**{name: value})
    assert error.code == "TR-CONFIG-RANGE", str(error)
    assert f"Allowed: {opt.allowed()};" in str(error)
    from_env = config_error(environ={opt.env: _as_env_text(value)})
    if not (opt.kind == "bytes" and value < 0):  # "-5" is not a size at all
        assert from_env.code == "TR-CONFIG-RANGE", str(from_env)


@pytest.mark.parametrize("name", [n for n in RANGED if OPTIONS[n].kind == "float"])
def test_nan_is_never_in_range(name: str) -> None:
    assert config_error(**{name: math.nan}).code == "TR-CONFIG-RANGE"
    assert config_error(environ={OPTIONS[name].env: "nan"}).code == "TR-CONFIG-RANGE"


def test_range_ends_are_inclusive() -> None:
    for name in RANGED:
        opt = OPTIONS[name]
        extra = COMPANIONS.get(name, {})
        for end in (opt.lo, opt.hi):
            assert end is not None
            value = end if opt.kind == "float" else int(end)
            assert getattr(config(**{name: value}, **extra), name) == value


def test_os_environ_is_untouched() -> None:
    before = dict(os.environ)
    config(environ={"TRACERELAY_SERVICE": "x"})
    tracerelay.Client(service="y", environ={}).shutdown()
    assert dict(os.environ) == before

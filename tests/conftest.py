"""Suite-wide guards: no test may leave tracing installed, and no internal error may pass unseen.

The SDK swallows its own errors so they never reach traced code. Here every
swallowed error becomes a test failure, unless the test asks for the
``internal_errors`` fixture, which hands it the list to assert on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import tracerelay
from tracerelay import _diagnostics


@pytest.fixture(autouse=True, scope="session")
def _private_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Default spool directories go under a temporary cache home, never the user's."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache-home"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


class _Seen(list[tuple[str, BaseException]]):
    expected = False


@pytest.fixture(autouse=True)
def _guard_internal_errors() -> Iterator[_Seen]:
    seen = _Seen()

    def hook(where: str, exc: BaseException) -> None:
        seen.append((where, exc))

    _diagnostics.add_hook(hook)
    try:
        yield seen
    finally:
        _diagnostics.remove_hook(hook)
        tracerelay.shutdown(timeout=2.0)
    if seen and not seen.expected:
        where, exc = seen[0]
        pytest.fail(
            f"tracerelay swallowed {len(seen)} internal error(s); first in {where}: {exc!r}"
        )


@pytest.fixture
def internal_errors(_guard_internal_errors: _Seen) -> _Seen:
    """The internal errors the SDK swallows during this test, for the test to assert on."""
    _guard_internal_errors.expected = True
    return _guard_internal_errors

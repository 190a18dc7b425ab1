"""How the SDK reports its own failures without ever raising them into traced code.

Every place that catches an internal error calls ``internal_error``: the error
is counted by place, logged once per place on the ``tracerelay`` logger, and
passed to any registered hook. The test suite registers a hook that turns each
swallowed error into a test failure, so "never raise" cannot hide bugs.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable

__all__ = ["add_hook", "counts", "internal_error", "logger", "remove_hook", "warn_once"]

logger = logging.getLogger("tracerelay")

Hook = Callable[[str, BaseException], None]

counts: Counter[str] = Counter()
_hooks: list[Hook] = []
_warned: set[str] = set()
_lock = threading.Lock()


def internal_error(where: str, exc: BaseException) -> None:
    """Record an error the SDK caught in itself; never raises."""
    try:
        with _lock:
            counts[where] += 1
            first = counts[where] == 1
        if first:
            logger.warning(
                "tracerelay internal error in %s (later ones here are counted, not logged)",
                where,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        for hook in list(_hooks):
            hook(where, exc)
    except Exception:
        pass  # reporting must not become a second failure


def warn_once(key: str, message: str, *args: object) -> None:
    """Log a user-facing warning the first time ``key`` is seen."""
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(message, *args)


def add_hook(hook: Hook) -> None:
    """Call ``hook(where, exc)`` for every internal error (used by the test suite)."""
    _hooks.append(hook)


def remove_hook(hook: Hook) -> None:
    """Stop calling a hook added with ``add_hook``."""
    if hook in _hooks:
        _hooks.remove(hook)

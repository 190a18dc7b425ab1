"""Carrying the current span into threads and executors.

``contextvars`` already follow ``await`` and asyncio tasks (each task starts
with a copy of its creator's context, so concurrent tasks never see each
other's spans) and ``asyncio.to_thread``. Plain threads and executors start
with an empty context; these helpers copy the caller's context into them:

- ``wrap(fn)``: a callable that runs ``fn`` in the context it was wrapped in;
  use it for ``loop.run_in_executor(None, wrap(fn))`` or any callback;
- ``Thread``: a ``threading.Thread`` whose target runs in its creator's context;
- ``ThreadPoolExecutor``: an executor whose ``submit``/``map`` carry the caller's context.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

__all__ = ["Thread", "ThreadPoolExecutor", "wrap"]

P = ParamSpec("P")
R = TypeVar("R")


def wrap(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` bound to the current context: it runs with today's current span as parent.

    Each call runs in its own copy of that context, so the wrapped callable may
    run in several threads at once.
    """
    context = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return context.copy().run(fn, *args, **kwargs)

    return run


class Thread(threading.Thread):
    """A thread whose ``run`` sees the context (current span included) of its creator."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tracerelay_context = contextvars.copy_context()

    def run(self) -> None:
        """Run the target inside the creator's context."""
        self._tracerelay_context.run(super().run)


class ThreadPoolExecutor(concurrent.futures.ThreadPoolExecutor):
    """A thread pool whose tasks run in the context of whoever submitted them."""

    def submit(
        self, fn: Callable[..., R], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[R]:
        """Schedule ``fn(*args, **kwargs)`` in a copy of the caller's context."""
        context = contextvars.copy_context()
        return super().submit(context.run, fn, *args, **kwargs)

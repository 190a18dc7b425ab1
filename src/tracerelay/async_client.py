"""``AsyncClient``: the client for asyncio apps, its pipeline drained on the event loop.

The same options, processors, exporters, ``submit``, ``submit_batch_event`` and
``metrics()`` as ``Client`` (both are a ``ClientBase``); the pipeline is an
``AsyncioPipeline`` (``tracerelay.asyncio_pipeline``), and flush and shutdown
are coroutines that never block the loop::

    async with tracerelay.AsyncClient(service="api") as aclient:
        ...
        await aclient.flush()

``tracerelay.init(asyncio=True, ...)`` builds one and installs it, so that
``@trace`` and ``tracerelay.span`` feed it. Kept out of ``tracerelay.client``
so that importing tracerelay does not import asyncio.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from tracerelay.asyncio_pipeline import AsyncioPipeline
from tracerelay.client import ClientBase

__all__ = ["AsyncClient"]


class AsyncClient(ClientBase):
    """``Client`` for asyncio apps: the queue drains on the event loop; ``await`` flush/shutdown.

    Takes the same keyword arguments as ``Client``. The drain task starts on
    the running loop with ``await start()``, on entering ``async with``, or by
    itself with the first record ended while a loop runs. Records from threads
    without a loop are drained by that task too. The blocking network work
    stays on the HTTP exporter's sender thread. With ``synchronous=True`` each
    record is processed as it ends, as for ``Client``.
    """

    _pipeline_class = AsyncioPipeline

    async def start(self) -> None:
        """Start draining on the running loop now (otherwise the first record starts it)."""
        if isinstance(self.pipeline, AsyncioPipeline):
            self.pipeline.start()

    async def flush(self, timeout: float | None = None) -> bool:
        """Export everything recorded so far and wait for delivery without blocking the loop.

        True once it all left within ``timeout`` seconds (spool included, for HTTP).
        """
        pipeline = self.pipeline
        if isinstance(pipeline, AsyncioPipeline):
            return await pipeline.flush_async(timeout)
        return await asyncio.to_thread(pipeline.flush, timeout)

    async def shutdown(self, timeout: float | None = None) -> bool:
        """Flush within ``timeout`` (default ``shutdown_timeout``), release exporters.

        Later records are refused and counted (``dropped_by_reason["shutdown"]``).
        """
        timeout = self._shutdown_timeout(timeout)
        if self._announcer is not None:
            self._announcer.close()
        pipeline = self.pipeline
        if isinstance(pipeline, AsyncioPipeline):
            return await pipeline.shutdown_async(timeout)
        return await asyncio.to_thread(pipeline.shutdown, timeout)

    async def __aenter__(self) -> AsyncClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

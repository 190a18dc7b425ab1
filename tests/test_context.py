"""Context flows into threads, executors and asyncio tasks, and never crosses between tasks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading

import tracerelay
from tracerelay.testing import capture


def test_plain_threads_lose_the_parent_but_tracerelay_thread_keeps_it() -> None:
    def work(label: str) -> None:
        with tracerelay.span(label):
            pass

    with capture() as spans:
        with tracerelay.span("request") as root:
            plain = threading.Thread(target=work, args=("plain",))
            helper = tracerelay.Thread(target=work, args=("helper",))
            for t in (plain, helper):
                t.start()
                t.join()
    assert spans.by_name("helper").parent_span_id == root.span_id
    assert spans.by_name("helper").trace_id == root.trace_id
    # A plain thread starts with an empty context: a new trace (documented limitation).
    assert spans.by_name("plain").parent_span_id is None


def test_executor_and_wrap_keep_the_parent() -> None:
    def work(i: int) -> int:
        with tracerelay.span(f"task-{i}"):
            return i * i

    with capture() as spans:
        with tracerelay.span("batch") as root:
            with tracerelay.ThreadPoolExecutor(max_workers=4) as pool:
                assert list(pool.map(work, range(8))) == [i * i for i in range(8)]
                assert pool.submit(work, 8).result() == 64
            with concurrent.futures.ThreadPoolExecutor(max_workers=2) as plain_pool:
                assert plain_pool.submit(tracerelay.wrap(work), 9).result() == 81
    tasks = [s for s in spans if s.name.startswith("task-")]
    assert len(tasks) == 10
    assert {s.parent_span_id for s in tasks} == {root.span_id}


def test_wrapped_callable_runs_in_several_threads_at_once() -> None:
    barrier = threading.Barrier(4)

    def work() -> None:
        barrier.wait(timeout=5)
        with tracerelay.span("concurrent"):
            pass

    with capture() as spans:
        with tracerelay.span("root") as root:
            wrapped = tracerelay.wrap(work)
            threads = [threading.Thread(target=wrapped) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    assert [s.parent_span_id for s in spans if s.name == "concurrent"] == [root.span_id] * 4


def test_run_in_executor_keeps_the_parent_with_wrap_or_the_sdk_executor() -> None:
    def blocking(label: str) -> str:
        with tracerelay.span(label):
            return label

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with tracerelay.span("handler"):
            await loop.run_in_executor(None, tracerelay.wrap(blocking), "wrapped")
            with tracerelay.ThreadPoolExecutor(max_workers=1) as pool:
                await loop.run_in_executor(pool, blocking, "sdk-executor")
            await asyncio.to_thread(blocking, "to_thread")

    with capture() as spans:
        asyncio.run(main())
    handler = spans.by_name("handler")
    for name in ("wrapped", "sdk-executor", "to_thread"):
        assert spans.by_name(name).parent_span_id == handler.span_id, name


def test_thousand_concurrent_tasks_never_see_each_others_spans() -> None:
    n = 1000
    mismatches: list[str] = []

    async def task(i: int) -> None:
        with tracerelay.span(f"task-{i}") as mine:
            for _ in range(3):
                await asyncio.sleep(random.random() / 1000)
                if tracerelay.current_span() is not mine:
                    mismatches.append(f"task-{i}")
                with tracerelay.span(f"child-{i}"):
                    await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(*(task(i) for i in range(n)))

    with capture() as spans:
        asyncio.run(main())
    assert mismatches == []
    by_id = {s.span_id: s for s in spans}
    children = [s for s in spans if s.name.startswith("child-")]
    assert len(children) == 3 * n
    for child in children:
        parent = by_id[child.parent_span_id]
        assert parent.name == "task-" + child.name.split("-")[1]
        assert parent.trace_id == child.trace_id
    assert len({s.trace_id for s in spans if s.name.startswith("task-")}) == n


def test_sync_inside_async_inside_sync() -> None:
    @tracerelay.trace
    def sync_leaf() -> int:
        return 1

    @tracerelay.trace
    async def async_mid() -> int:
        await asyncio.sleep(0)
        return sync_leaf()

    @tracerelay.trace
    def sync_root() -> int:
        return asyncio.run(async_mid())

    with capture() as spans:
        assert sync_root() == 1
    assert spans.tree() == [
        (0, sync_root.__qualname__),
        (1, async_mid.__qualname__),
        (2, sync_leaf.__qualname__),
    ]


def test_tasks_created_inside_a_span_are_its_children() -> None:
    async def worker(i: int) -> None:
        with tracerelay.span(f"worker-{i}"):
            await asyncio.sleep(0)

    async def main() -> None:
        with tracerelay.span("fan-out"):
            await asyncio.gather(*(asyncio.create_task(worker(i)) for i in range(5)))
        with tracerelay.span("after"):
            pass

    with capture() as spans:
        asyncio.run(main())
    fan_out = spans.by_name("fan-out")
    assert len(spans.children(fan_out)) == 5
    assert spans.by_name("after").parent_span_id is None

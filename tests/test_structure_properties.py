"""Property: any tree of nested sync, async, threaded and generator calls is recorded exactly.

Hypothesis draws a call tree. Each node is a traced call named by its path
("0.2.1"), entered in one of several ways (plain call, coroutine, thread,
generator), and runs its children one after another or all at once (tasks in
async code, a thread pool in sync code). Whatever the mix, the recorded spans
must have exactly the expected parent links, one trace, and — for sequential
children — start order equal to call order.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracerelay
from tracerelay.testing import capture

ENTRIES = ("call", "coroutine", "thread", "generator")


@dataclass
class Node:
    entry: str
    concurrent: bool
    children: list[Node] = field(default_factory=list)


leaves = st.builds(Node, st.sampled_from(ENTRIES), st.booleans(), st.just([]))
trees = st.recursive(
    leaves,
    lambda kids: st.builds(
        Node, st.sampled_from(ENTRIES), st.booleans(), st.lists(kids, max_size=4)
    ),
    max_leaves=20,
)


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_sync(node: Node, path: str) -> None:
    """Enter ``node`` from synchronous code."""
    if node.entry == "call":
        traced_call(node, path)
    elif node.entry == "generator":
        assert list(traced_generator(node, path)) == [path]
    elif node.entry == "thread" or _in_loop():
        # A coroutine cannot start its own loop inside a running one: give it a thread.
        target = (
            (lambda: asyncio.run(traced_coroutine(node, path)))
            if node.entry == "coroutine"
            else (lambda: traced_call(node, path))
        )
        thread = tracerelay.Thread(target=target)
        thread.start()
        thread.join()
    else:
        asyncio.run(traced_coroutine(node, path))


async def run_async(node: Node, path: str) -> None:
    """Enter ``node`` from a coroutine."""
    if node.entry == "coroutine":
        await traced_coroutine(node, path)
    elif node.entry == "thread":
        await asyncio.to_thread(traced_call, node, path)
    else:
        run_sync(node, path)


def children_sync(node: Node, path: str) -> None:
    if node.concurrent and node.children:
        with tracerelay.ThreadPoolExecutor(max_workers=3) as pool:
            futures = [pool.submit(run_sync, c, f"{path}.{i}") for i, c in enumerate(node.children)]
            for f in futures:
                f.result()
    else:
        for i, child in enumerate(node.children):
            run_sync(child, f"{path}.{i}")


async def children_async(node: Node, path: str) -> None:
    if node.concurrent and node.children:
        await asyncio.gather(*(run_async(c, f"{path}.{i}") for i, c in enumerate(node.children)))
    else:
        for i, child in enumerate(node.children):
            await run_async(child, f"{path}.{i}")


def traced_call(node: Node, path: str) -> None:
    with tracerelay.span(path):
        children_sync(node, path)


async def traced_coroutine(node: Node, path: str) -> None:
    async with tracerelay.span(path):
        await asyncio.sleep(0)
        await children_async(node, path)


@tracerelay.trace
def _generator(node: Node, path: str) -> Iterator[str]:
    tracerelay.current_span().update_name(path)
    children_sync(node, path)
    yield path


def traced_generator(node: Node, path: str) -> Iterator[str]:
    return _generator(node, path)


def expected_paths(node: Node, path: str = "0") -> list[str]:
    out = [path]
    for i, child in enumerate(node.children):
        out.extend(expected_paths(child, f"{path}.{i}"))
    return out


def sequential_parents(node: Node, path: str = "0") -> list[tuple[str, int]]:
    out = [(path, len(node.children))] if not node.concurrent and len(node.children) > 1 else []
    for i, child in enumerate(node.children):
        out.extend(sequential_parents(child, f"{path}.{i}"))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_any_call_tree_is_recorded_with_exact_links(tree: Node) -> None:
    with capture() as spans:
        run_sync(tree, "0")
    by_name = {s.name: s for s in spans}
    assert sorted(by_name) == sorted(expected_paths(tree))
    assert len(spans) == len(by_name), "a span was recorded twice"
    assert len({s.trace_id for s in spans}) == 1
    for name, span in by_name.items():
        parent = name.rpartition(".")[0]
        if parent:
            assert span.parent_span_id == by_name[parent].span_id, name
        else:
            assert span.parent_span_id is None
        assert span.end_time_unix_nano >= span.start_time_unix_nano
    for parent, count in sequential_parents(tree):
        kids = [by_name[f"{parent}.{i}"] for i in range(count)]
        assert [k.sequence for k in kids] == sorted(k.sequence for k in kids), parent
        # A sequential child starts after its elder sibling has ended.
        for elder, younger in itertools.pairwise(kids):
            assert younger.start_time_unix_nano >= elder.end_time_unix_nano


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=30))
def test_exceptions_mark_exactly_the_spans_they_cross(depths: list[int]) -> None:
    """An exception raised at depth d and caught at depth c errors spans c+1..d only."""

    def dive(level: int, raise_at: int, catch_at: int) -> None:
        with tracerelay.span(f"level-{level}"):
            if level == raise_at:
                raise LookupError(level)
            try:
                dive(level + 1, raise_at, catch_at)
            except LookupError:
                if level != catch_at:
                    raise

    for depth in depths:
        catch_at = depth // 2
        with capture() as spans:
            dive(0, depth + 1, catch_at)
        status = {s.name: s.status["code"] for s in spans}
        for level in range(depth + 2):
            expected = "error" if level > catch_at else "unset"
            assert status[f"level-{level}"] == expected, (depth, level)

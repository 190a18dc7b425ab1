"""A traced sample agent workload: what ``tracerelay demo`` runs.

It records through the public API only, the way an application would, so its
traces show what instrumented code produces: an agent run (``agent``) that
plans with a model call (``generation``, with usage and cost), retrieves
documents (``retrieval``), calls tools in parallel through
``tracerelay.ThreadPoolExecutor``, gathers context in an asyncio step, survives
a tool that fails (an ``error`` span), answers with a second model call, then
scores itself and sets the trace's user and session.

It is deterministic (the same spans, attributes and token counts on every run;
only ids and timings differ), touches no network and sleeps well under a
millisecond per trace. Initialise tracing first; without ``init()`` it runs
untraced. Call it from synchronous code: the asyncio step runs its own loop.
"""

from __future__ import annotations

import asyncio
import time

import tracerelay

__all__ = ["DemoToolError", "run_demo"]

MODEL = "demo-model"
# Dollars per token (input, output): a small hosted model's list price.
_PRICE = (0.15e-6, 0.60e-6)
_QUESTIONS = (
    ("Where is my order #1042?", "order 1042 shipped on Monday and arrives Thursday"),
    ("How far is a marathon in kilometres?", "a marathon is 42.195 km"),
    ("Can I still change my delivery address?", "yes, until the parcel leaves the depot"),
    ("Which plan includes priority support?", "the Pro plan includes priority support"),
)
_DOCUMENTS = ("shipping-policy.md", "returns-faq.md", "plans-and-pricing.md", "units.md")


class DemoToolError(RuntimeError):
    """The failure the demo's inventory tool raises, so one error span appears per trace."""


def _tokens(text: str) -> int:
    # Roughly four characters per token, as for English text with common tokenizers.
    return max(1, len(text) // 4)


def _complete(prompt: str, completion: str) -> str:
    """Stand in for a model call: record its input, output, usage and cost on the current span."""
    span = tracerelay.current_span()
    span.set_input(prompt)
    span.set_output(completion)
    input_tokens, output_tokens = _tokens(prompt), _tokens(completion)
    tracerelay.record_usage(
        model=MODEL,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=input_tokens * _PRICE[0] + output_tokens * _PRICE[1],
    )
    tracerelay.set_attributes({"llm.temperature": 0.0, "llm.max_tokens": 256})
    return completion


@tracerelay.trace(name="plan", type="generation")
def _plan(question: str) -> list[str]:
    tools = ["lookup_order", "convert_units", "get_weather"]
    _complete(f"Plan the tool calls that answer: {question}", "call " + ", ".join(tools))
    return tools


@tracerelay.trace(name="retrieve_documents", type="retrieval")
def _retrieve(question: str, top_k: int = 3) -> list[str]:
    ranked = sorted(_DOCUMENTS, key=lambda name: (-len(set(name) & set(question.lower())), name))
    hits = ranked[:top_k]
    tracerelay.set_attributes({"retrieval.top_k": top_k, "retrieval.documents": hits})
    return hits


def _tool(name: str, argument: str) -> str:
    # A few hundred microseconds of "I/O", so the parallel calls visibly overlap.
    with tracerelay.span(name, type="tool", attributes={"tool.argument": argument}) as span:
        time.sleep(0.0002)
        result = f"{name}({argument}) ok"
        span.set_attribute("tool.result", result)
        return result


async def _fetch(source: str, key: str) -> str:
    async with tracerelay.span(f"fetch_{source}", type="tool", attributes={"key": key}):
        await asyncio.sleep(0)
        return f"{source}:{key}"


async def _gather_context(user_id: str) -> list[str]:
    async with tracerelay.span("gather_context", attributes={"sources": 2}):
        # Two concurrent tasks: each sees its own span as current, never the other's.
        return list(await asyncio.gather(_fetch("profile", user_id), _fetch("history", user_id)))


@tracerelay.trace(name="check_inventory", type="tool")
def _check_inventory(sku: str) -> int:
    raise DemoToolError(f"inventory service unavailable for {sku} (demo failure)")


@tracerelay.trace(name="write_answer", type="generation")
def _answer(question: str, facts: list[str], draft: str) -> str:
    prompt = f"Answer {question!r} using: " + "; ".join(facts)
    return _complete(prompt, draft.capitalize() + ".")


def _run_agent(index: int, pool: tracerelay.ThreadPoolExecutor) -> str:
    question, draft = _QUESTIONS[index % len(_QUESTIONS)]
    user_id = f"user-{index % 2 + 1}"
    attributes = {"agent.name": "support-bot", "question": question, "demo.run": index + 1}
    with tracerelay.span("answer_question", type="agent", attributes=attributes) as run:
        tracerelay.update_trace(user_id=user_id, session_id="demo-session", tags=["demo"])
        tools = _plan(question)
        facts = _retrieve(question)
        argument = f"#{1042 + index}"
        facts += pool.map(_tool, tools, [argument] * len(tools))
        facts += asyncio.run(_gather_context(user_id))
        try:
            _check_inventory(f"sku-{index}")
        except DemoToolError:
            # The agent carries on without stock data, as a real one would.
            run.set_attribute("agent.fallback", "no_inventory")
            tracerelay.event("agent.fallback", {"tool": "check_inventory"})
        answer = _answer(question, facts, draft)
        run.set_attribute("answer.chars", len(answer))
        tracerelay.score("answer_relevance", 0.9 - 0.1 * (index % 3), comment="demo heuristic")
        return run.trace_id


def run_demo(traces: int = 3) -> list[str]:
    """Run ``traces`` agent runs, each one trace; flush or shut tracing down to see them.
    Returns their trace ids."""
    with tracerelay.ThreadPoolExecutor(max_workers=3, thread_name_prefix="demo-tool") as pool:
        trace_ids = [_run_agent(index, pool) for index in range(traces)]
    tracerelay.metric("demo.traces", traces, kind="counter", unit="traces")
    return trace_ids

"""The agent loop: LangChain's ``create_agent`` (a LangGraph graph: model → tools →
model …) with the conversation's model and tools, and chatsite's rules for tools.

``stream`` yields, in the order they happen, the model's message chunks and each tool
call's start and end. The rules, applied around every call (``ToolGuard``):

- a call has ``CHAT_TOOL_TIMEOUT_S`` to answer, else it fails with ``tool_timeout``
  and the agent goes on (the model is told);
- a tool that raises fails its own call only (``tool_failed``), in-band;
- an output longer than ``CHAT_TOOL_OUTPUT_MAX_CHARS`` is cut, with a visible marker;
- outputs and arguments are untrusted text: made storable here (text.sanitize), and
  rendered as text, never HTML, wherever they are shown;
- the model may take ``CHAT_AGENT_MAX_STEPS`` turns; one more ends the stream with
  ``ModelStalled(agent_step_limit)``.
"""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelCallLimitMiddleware
from langchain.agents.middleware.model_call_limit import ModelCallLimitExceededError
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.tools import BaseTool

from conversations import errors, llm
from conversations.text import sanitize


@dataclass
class CallEvent:
    """A tool call started (``call`` is ``{id, name, args}``) or ended (the whole call)."""

    kind: str  # "started" | "completed"
    call: dict


def clean(value: Any) -> Any:
    """JSON from a model or a tool made storable: every string sanitised."""
    if isinstance(value, str):
        return sanitize(value)
    if isinstance(value, dict):
        return {sanitize(str(k)): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def output_text(content: Any) -> str:
    """A tool message's content as text (MCP tools answer with content blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and block.get("type") == "text":
                parts.append(block.get("text") or "")
            else:
                parts.append(json.dumps(block, ensure_ascii=False, default=str))
        return "\n".join(parts)
    return json.dumps(content, ensure_ascii=False, default=str)


def truncated(text: str) -> str:
    limit = settings.CHAT_TOOL_OUTPUT_MAX_CHARS
    if len(text) <= limit:
        return text
    return (
        text[:limit] + f"\n[… output truncated: {len(text):,} characters, the first "
        f"{limit:,} shown]"
    )


class ToolGuard(AgentMiddleware):
    """Times, bounds and reports every tool call (see the module's rules)."""

    async def awrap_tool_call(self, request, handler):
        asked = request.tool_call
        call = {
            "id": asked.get("id") or f"call_{uuid.uuid4().hex[:24]}",
            "name": sanitize(asked["name"]),
            "args": clean(asked.get("args") or {}),
        }
        write = request.runtime.stream_writer if request.runtime else (lambda _: None)
        write(CallEvent("started", dict(call)))
        started = time.monotonic()
        error = None
        try:
            async with asyncio.timeout(settings.CHAT_TOOL_TIMEOUT_S):
                result = await handler(request)
        except TimeoutError:
            error = errors.tool_timeout(settings.CHAT_TOOL_TIMEOUT_S)
        except Exception as exc:
            error = errors.tool_failed(sanitize(str(exc) or type(exc).__name__)[:2000])
        else:
            if not isinstance(result, ToolMessage):
                return result  # a Command from a tool that steers the graph itself
            text = truncated(sanitize(output_text(result.content)))
            if result.status == "error":
                error = errors.tool_failed(text)
        ended = {
            **call,
            "status": "failed" if error else "completed",
            "output": None if error else text,
            "error": error,
            "duration_ms": round((time.monotonic() - started) * 1000),
        }
        write(CallEvent("completed", ended))
        return ToolMessage(
            content=f"Error: {error['detail']}" if error else text,
            tool_call_id=call["id"],
            name=call["name"],
            status="error" if error else "success",
        )


def build(*, model: BaseChatModel, tools: list[BaseTool]):
    limit = ModelCallLimitMiddleware(run_limit=settings.CHAT_AGENT_MAX_STEPS, exit_behavior="error")
    return create_agent(model, tools, middleware=[limit, ToolGuard()])


async def stream(
    *, model: BaseChatModel, tools: list[BaseTool], messages: list[BaseMessage]
) -> AsyncIterator[AIMessageChunk | CallEvent]:
    """The model's chunks and the tool calls' events of one agent run, in order.
    Raises ModelStalled ``agent_step_limit`` when the model wants more turns than it
    may take."""
    graph = build(model=model, tools=tools)
    # Each model turn takes a few of the graph's steps (the limit's hook, the model, the
    # tools); the turns are counted by the middleware, not by this safety net.
    config = {"recursion_limit": 10 * settings.CHAT_AGENT_MAX_STEPS + 10}
    try:
        async for mode, payload in graph.astream(
            {"messages": messages}, config, stream_mode=["messages", "custom"]
        ):
            if mode == "custom":
                if isinstance(payload, CallEvent):
                    yield payload
            elif isinstance(payload[0], AIMessage) and payload[1].get("langgraph_node") == "model":
                # Chunks as the model streams; a whole message from a model that does not.
                yield payload[0]
    except ModelCallLimitExceededError:
        raise llm.ModelStalled(
            errors.AGENT_STEP_LIMIT, errors.ChatError(errors.AGENT_STEP_LIMIT).detail
        ) from None

"""A reply with tools: the Run (run.py) with the agent loop (agents/loop.py) as its
model, and tool calls as frames in the reply's numbered stream.

A conversation without tools never comes here. With tools, the reply is still one run
and one assistant message: the model's text streams as ``token`` frames exactly as in
run.py, and each tool call adds a ``tool.started`` and a ``tool.completed`` frame, each
taking the next seq like a token (its text part is empty, so ``content`` stays the
text). So gap fills, SSE resumes and snapshots work on tool events unchanged.

The calls as published (``calls``) are saved with the text at every flush, and shown
in snapshots of a reply streaming here, so a viewer joining mid-reply, a reload or a
resume sees the calls so far exactly as live viewers did. At the end a call still
running is saved ``cancelled`` (Stop) or ``failed``; the sweeper saves it
``interrupted`` when the worker died (services/sweeper.py).
"""

import time
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk

from .. import events, llm
from ..db import db_call
from ..live import control
from ..live.hub import hub
from ..llm.chain import PROMPT
from ..models import Message
from ..text import sanitize
from .run import Run, launch

RUNNING = "running"


def ended_calls(calls: list[dict], status: str, code: str, detail: str) -> list[dict]:
    """Calls with those still running ended as ``status`` (the reply ended under them)."""
    return [
        {**call, "status": status, "error": {"code": code, "detail": detail}}
        if call.get("status") == RUNNING
        else call
        for call in calls
    ]


def with_options(model: BaseChatModel, options: dict) -> BaseChatModel:
    """The model with one reply's options (temperature, max_tokens) set on a copy that
    shares its HTTP client; the agent binds its tools to it, which a ``bind()`` of the
    options would not survive. Options a model does not have are left out."""
    fields = type(model).model_fields
    given = {k: v for k, v in options.items() if v is not None and k in fields}
    return model.model_copy(update=given) if given else model


class AgentRun(Run):
    def __init__(
        self,
        *,
        message: Message,
        inputs: dict,
        tools: list[str],
        owner_id: Any,
        model: BaseChatModel,
        options: dict,
    ):
        super().__init__(message=message, inputs=inputs, chain=with_options(model, options))
        self.tool_names = tools
        self.owner_id = owner_id
        self.calls: list[dict] = []  # as published: calls[i] as of the last frame sent
        self.tools_running = 0
        self._usage = {"prompt_tokens": 0, "completion_tokens": 0}

    # A tool may take its own time limit (CHAT_TOOL_TIMEOUT_S) without the model's
    # silence limit (CHAT_CHUNK_TIMEOUT_S, watch_timeouts) failing the reply meanwhile.
    @property
    def last_chunk_at(self) -> float:
        return time.monotonic() if self.tools_running else self._last_chunk_at

    @last_chunk_at.setter
    def last_chunk_at(self, value: float) -> None:
        self._last_chunk_at = value

    def saved_fields(self) -> dict[str, Any]:
        return {"tool_calls": [dict(call) for call in self.calls]}

    async def read_model(self) -> None:
        stream = None
        try:
            from agents import loop, registry  # loaded with the first reply that uses tools

            tools = await db_call(registry.tools_for, self.tool_names, owner_id=self.owner_id)
            messages = (await PROMPT.ainvoke(self.inputs)).to_messages()
            stream = loop.stream(model=self.chain, tools=tools, messages=messages)
            async for item in stream:
                self.last_chunk_at = time.monotonic()
                if isinstance(item, loop.CallEvent):
                    self.tools_running += 1 if item.kind == "started" else -1
                    self.waiting.append(item)
                    self._wake.set()
                    continue
                self._read_chunk(item)
        except llm.ModelStalled as stalled:  # the step limit: the text so far is kept
            self.failure = stalled
        finally:
            self.tools_running = 0
            if stream is not None:
                await stream.aclose()  # cancels the graph, and a tool call under way
            self._wake.set()

    def _read_chunk(self, chunk: AIMessageChunk) -> None:
        if chunk.usage_metadata:  # one per model turn: the reply's usage is their sum
            self._usage["prompt_tokens"] += chunk.usage_metadata.get("input_tokens", 0)
            self._usage["completion_tokens"] += chunk.usage_metadata.get("output_tokens", 0)
            self.usage = dict(self._usage)
        text = chunk.content if isinstance(chunk.content, str) else chunk.text
        if text:
            if self.first_token_at is None:
                self.first_token_at = self.last_chunk_at
            self.waiting.append(sanitize(text))
            self._wake.set()

    # --- publishing: text and calls in the order they came ------------------------------

    async def publish_frame(self, *, send: bool = True) -> None:
        """Publish what waits: each run of text as one token frame (run.py), each call
        event as a frame of its own, in order."""
        while self.waiting:
            mark = next(
                (i for i, item in enumerate(self.waiting) if not isinstance(item, str)), None
            )
            if mark is None:
                await super().publish_frame(send=send)
                return
            if mark == 0:
                await self._publish_call(self.waiting.pop(0), send=send)
                continue
            rest = self.waiting[mark:]
            del self.waiting[mark:]
            await super().publish_frame(send=send)
            # What the model sent while that frame went out comes after the rest.
            self.waiting[:0] = rest

    async def _publish_call(self, item, *, send: bool) -> None:
        seq = len(self.frames) + 1
        if item.kind == "started":
            self.calls.append({**item.call, "status": RUNNING, "output": None, "error": None})
            event = events.tool_started(self.conversation_id, self.message_id, seq, item.call)
        else:
            index = next((i for i, c in enumerate(self.calls) if c["id"] == item.call["id"]), None)
            if index is None:
                self.calls.append(item.call)
            else:
                self.calls[index] = item.call
            event = events.tool_completed(self.conversation_id, self.message_id, seq, item.call)
        message = control.frame(event, self.conversation_id)
        self.frames.append(message["json"])
        self.parts.append("")
        if send:
            try:
                await hub().publish(self.conversation_id, message)
            except Exception:
                self.layer_down = True  # viewers resync from the database, as for text

    async def save_final(self, *, status: str, **fields: Any) -> Message | None:
        if status == Message.Status.CANCELLED:
            calls = ended_calls(
                self.calls, "cancelled", "cancelled", "Stopped before the tool answered."
            )
        else:
            calls = ended_calls(
                self.calls, "failed", "reply_ended", "The reply ended before the tool answered."
            )
        return await super().save_final(status=status, tool_calls=calls, **fields)


def start_agent_run(
    *,
    message: Message,
    inputs: dict,
    tools: list[str],
    owner_id,
    model: BaseChatModel,
    options: dict,
) -> AgentRun:
    """Start a reply with tools as a task of this process, like run.start_run."""
    return launch(
        AgentRun(
            message=message,
            inputs=inputs,
            tools=tools,
            owner_id=owner_id,
            model=model,
            options=options,
        )
    )

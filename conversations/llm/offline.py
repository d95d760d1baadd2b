"""The built-in offline demo model: a real LangChain chat model that needs no network.

It does not understand anything. It writes a deterministic Markdown answer from the
conversation — paragraphs, a list and a code block — and streams it word by word at a
realistic pace, so a fresh install shows what streaming looks like.

It calls tools too, so the default setup shows them: bound to tools that include
``calculator`` (``bind_tools``), a message holding an arithmetic expression makes it
call the calculator, and once the result is back it answers with it.
"""

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

OFFLINE_MODEL_NAME = "offline-demo"

_TOKEN = re.compile(r"\s*\S+|\s+")


def _plain(text: str, limit: int) -> str:
    """The user's words, safe to quote inline: one line, no Markdown code marks."""
    words = " ".join(text.replace("`", "'").split())
    return words if len(words) <= limit else words[: limit - 1].rstrip() + "…"


def compose_answer(messages: list[BaseMessage]) -> str:
    human = [m for m in messages if isinstance(m, HumanMessage)]
    last = human[-1].text if human else ""
    words = last.split()
    longest = max(words, key=len) if words else ""
    turn = len(human)
    return (
        "Hello! I am chatsite's **offline demo model**. I don't understand what you "
        "write, but I answer every message the same careful way, so you can see how a "
        "reply streams, renders and is saved.\n\n"
        f"Here is what I noticed about your message:\n\n"
        f"- It has **{len(words)}** words and {len(last)} characters.\n"
        f"- It begins with “{_plain(last, 40)}”.\n"
        f"- Its longest word is “{_plain(longest, 30)}”.\n"
        f"- It is message number {turn} from you in this conversation.\n\n"
        "A code block, to show how code renders:\n\n"
        "```python\n"
        "def reply(message: str) -> str:\n"
        f"    # your message had {len(words)} words\n"
        "    return message.upper()\n"
        "```\n\n"
        "To talk to a real model, set `OPENAI_API_KEY` (and `OPENAI_BASE_URL` for vLLM, "
        "Ollama or llama.cpp's server) and `CHAT_MODEL`, then restart chatsite."
    )


# Two or more numbers joined by arithmetic operators, parentheses allowed.
_NUMBER = r"[(\s]*-?\d+(?:\.\d+)?[)\s]*"
_ARITHMETIC = re.compile(rf"{_NUMBER}(?:(?:\*\*|[-+*/%^\u00d7\u00f7]){_NUMBER})+")


def arithmetic_in(text: str) -> str | None:
    """The first arithmetic expression in a message (``1234 * 5678``), or None."""
    found = _ARITHMETIC.search(text)
    if found is None:
        return None
    expression = found.group().strip()
    # Unbalanced parentheses around the match (a sentence's own) are left out.
    while expression.count("(") > expression.count(")") and expression.startswith("("):
        expression = expression[1:].strip()
    while expression.count(")") > expression.count("(") and expression.endswith(")"):
        expression = expression[:-1].strip()
    return expression


def tool_names(tools: list[dict] | None) -> set[str]:
    return {tool["function"]["name"] for tool in tools or [] if tool.get("type") == "function"}


def answer_with(result: ToolMessage, call_args: dict) -> str:
    expression = call_args.get("expression", "")
    if result.status == "error":
        return f"The calculator could not work out `{_plain(expression, 80)}`: {result.text}"
    return f"I asked the calculator: **{_plain(expression, 80)} = {result.text}**."


def tokenize(text: str) -> list[str]:
    """Word-sized pieces whose concatenation is exactly the text."""
    return _TOKEN.findall(text)


class OfflineChatModel(BaseChatModel):
    """Streams :func:`compose_answer` one word at a time, ``delay_ms`` apart."""

    delay_ms: float = 20.0

    @property
    def _llm_type(self) -> str:
        return OFFLINE_MODEL_NAME

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": OFFLINE_MODEL_NAME, "delay_ms": self.delay_ms}

    def _usage(self, messages: list[BaseMessage], answer: str) -> dict[str, int]:
        prompt = count_tokens_approximately(messages)
        completion = len(tokenize(answer))
        return {
            "input_tokens": prompt,
            "output_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(tools=[convert_to_openai_tool(tool) for tool in tools], **kwargs)

    def _call(self, messages: list[BaseMessage], tools: list[dict] | None) -> dict | None:
        """The calculator call to make instead of answering, if any."""
        if "calculator" not in tool_names(tools) or not messages:
            return None
        if not isinstance(messages[-1], HumanMessage):
            return None
        expression = arithmetic_in(messages[-1].text)
        if expression is None:
            return None
        return {
            "name": "calculator",
            "args": {"expression": expression},
            "id": f"call_{uuid.uuid4().hex[:24]}",
        }

    def _answer(self, messages: list[BaseMessage], max_tokens: int | None) -> list[str]:
        """The answer's pieces, cut after ``max_tokens`` like a real model's."""
        last = messages[-1] if messages else None
        if isinstance(last, ToolMessage):
            asked = next(
                (
                    call["args"]
                    for message in reversed(messages)
                    if isinstance(message, AIMessage)
                    for call in message.tool_calls
                    if call["id"] == last.tool_call_id
                ),
                {},
            )
            pieces = tokenize(answer_with(last, asked))
        else:
            pieces = tokenize(compose_answer(messages))
        return pieces[:max_tokens] if max_tokens is not None else pieces

    def _call_chunk(self, messages: list[BaseMessage], call: dict) -> ChatGenerationChunk:
        chunk = {"name": call["name"], "args": json.dumps(call["args"]), "id": call["id"]}
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=[{**chunk, "index": 0}],
                usage_metadata=self._usage(messages, ""),
            )
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if call := self._call(messages, kwargs.get("tools")):
            message = AIMessage(
                content="", tool_calls=[call], usage_metadata=self._usage(messages, "")
            )
            return ChatResult(generations=[ChatGeneration(message=message)])
        answer = "".join(self._answer(messages, kwargs.get("max_tokens")))
        message = AIMessage(content=answer, usage_metadata=self._usage(messages, answer))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        if call := self._call(messages, kwargs.get("tools")):
            time.sleep(self.delay_ms / 1000)
            yield self._call_chunk(messages, call)
            return
        pieces = self._answer(messages, kwargs.get("max_tokens"))
        answer = "".join(pieces)
        for piece in pieces:
            time.sleep(self.delay_ms / 1000)
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", usage_metadata=self._usage(messages, answer))
        )

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        if call := self._call(messages, kwargs.get("tools")):
            await asyncio.sleep(self.delay_ms / 1000)
            yield self._call_chunk(messages, call)
            return
        pieces = self._answer(messages, kwargs.get("max_tokens"))
        answer = "".join(pieces)
        for piece in pieces:
            await asyncio.sleep(self.delay_ms / 1000)
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", usage_metadata=self._usage(messages, answer))
        )

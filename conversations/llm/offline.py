"""The built-in offline demo model: a real LangChain chat model that needs no network.

It does not understand anything. It writes a deterministic Markdown answer from the
conversation — paragraphs, a list and a code block — and streams it word by word at a
realistic pace, so a fresh install shows what streaming looks like.
"""

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

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

    def _answer(self, messages: list[BaseMessage], max_tokens: int | None) -> list[str]:
        """The answer's pieces, cut after ``max_tokens`` like a real model's."""
        pieces = tokenize(compose_answer(messages))
        return pieces[:max_tokens] if max_tokens is not None else pieces

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
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
        pieces = self._answer(messages, kwargs.get("max_tokens"))
        answer = "".join(pieces)
        for piece in pieces:
            await asyncio.sleep(self.delay_ms / 1000)
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", usage_metadata=self._usage(messages, answer))
        )

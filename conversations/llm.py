"""The model layer: which chat model answers, and the chain that feeds it.

``prompt | llm``, where the prompt is the system prompt, the conversation's history
(trimmed to a token budget) and the new message. ``llm`` is ``ChatOpenAI`` when an
OpenAI-compatible server is configured, else the built-in offline demo model.
"""

import functools
from collections.abc import AsyncIterator
from typing import Any

import httpx
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    BaseMessageChunk,
    HumanMessage,
    trim_messages,
)
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable, RunnableSequence

from .offline import OFFLINE_MODEL_NAME, OfflineChatModel

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
OFFLINE_LABEL = "Offline demo model — set OPENAI_API_KEY or OPENAI_BASE_URL to connect a real one"

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "{system}"),
        MessagesPlaceholder("history"),
        ("human", "{input}"),
    ]
)


def uses_real_model() -> bool:
    return bool(settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL)


def model_name() -> str:
    """The name saved on each reply and shown in the UI."""
    if uses_real_model():
        return settings.CHAT_MODEL or DEFAULT_OPENAI_MODEL
    return OFFLINE_MODEL_NAME


def model_label(name: str | None = None) -> str:
    """What a person sees: the offline model always says what it is."""
    name = name or model_name()
    return OFFLINE_LABEL if name == OFFLINE_MODEL_NAME else name


@functools.cache
def get_llm() -> BaseChatModel:
    if not uses_real_model():
        return OfflineChatModel(delay_ms=settings.CHAT_OFFLINE_DELAY_MS)
    from langchain_openai import ChatOpenAI

    client_options = {
        # Servers such as vLLM or llama.cpp accept any key; the SDK insists on one.
        "api_key": settings.OPENAI_API_KEY or "unused",
        "base_url": settings.OPENAI_BASE_URL or None,
        # The read timeout bounds the silence between two chunks on the wire; the run's
        # watchdog bounds the silence between parsed chunks (see runs.py), so the
        # per-chunk wrapper, which costs a task per chunk, stays off.
        "timeout": httpx.Timeout(
            settings.CHAT_CHUNK_TIMEOUT_S, connect=settings.CHAT_CONNECT_TIMEOUT_S
        ),
        "max_retries": settings.CHAT_MODEL_RETRIES,
    }
    client = _chunk_dict_client()(**client_options)
    return ChatOpenAI(
        model=model_name(),
        stream_usage=True,
        stream_chunk_timeout=None,
        root_async_client=client,
        async_client=client.chat.completions,
        **client_options,
    )


@functools.cache
def _chunk_dict_client() -> type:
    """The openai SDK's async client, except that streamed chat chunks stay the dicts
    parsed from the wire.

    ``ChatOpenAI`` reads a chunk as a dict, and calls ``model_dump()`` on anything else:
    building the SDK's object for every chunk only to dump it again was most of the CPU
    a reply cost (bench/, figure 3). Everything else is the SDK's own.
    """
    import openai
    from openai.types.chat import ChatCompletionChunk

    class ChunkDictClient(openai.AsyncOpenAI):
        def _process_response_data(self, *, data, cast_to, response):
            if cast_to is ChatCompletionChunk and isinstance(data, dict):
                return data
            return super()._process_response_data(data=data, cast_to=cast_to, response=response)

    return ChunkDictClient


# Per-reply options an integration may set (OpenAI's names); anything else is ignored.
MODEL_OPTIONS = ("max_tokens", "temperature")


def get_chain(options: dict | None = None) -> Runnable:
    """``prompt | llm``; ``options`` bind to the model call of one reply only."""
    options = {k: v for k, v in (options or {}).items() if k in MODEL_OPTIONS and v is not None}
    if options:
        return PROMPT | get_llm().bind(**options)
    return _default_chain()


@functools.cache
def _default_chain() -> Runnable:
    return PROMPT | get_llm()


async def astream(chain: Runnable, inputs: dict) -> AsyncIterator[BaseMessageChunk]:
    """The reply's chunks: ``chain.astream(inputs)``, with ``prompt | model`` run as the
    prompt, then the model's own stream.

    Streaming a RunnableSequence runs every chunk through a task of its own and adds it
    to a running total (for tracing callbacks chatsite does not use); the model's
    ``astream`` yields the same chunks without either. Close the returned stream to
    close the model's HTTP stream.
    """
    if isinstance(chain, RunnableSequence) and len(chain.steps) == 2:
        return chain.last.astream(await chain.first.ainvoke(inputs))
    return chain.astream(inputs)


@receiver(setting_changed)
def _forget_models(**kwargs: Any) -> None:
    get_llm.cache_clear()
    _default_chain.cache_clear()


def history_messages(turns: list[tuple[str, str]]) -> list[BaseMessage]:
    """Earlier turns as chat messages, the oldest dropped to fit the token budget."""
    messages = [
        HumanMessage(content) if role == "user" else AIMessage(content)
        for role, content in turns
        if content
    ]
    return trim_messages(
        messages,
        max_tokens=settings.CHAT_HISTORY_MAX_TOKENS,
        token_counter=count_tokens_approximately,
        strategy="last",
        start_on="human",
    )


def chain_inputs(*, system_prompt: str, turns: list[tuple[str, str]], content: str) -> dict:
    return {
        "system": system_prompt or settings.CHAT_SYSTEM_PROMPT,
        "history": history_messages(turns),
        "input": content,
    }

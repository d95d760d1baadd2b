"""The model layer: which chat model answers, and the chain that feeds it.

``prompt | llm``, where the prompt is the system prompt, the conversation's history
(trimmed to a token budget) and the new message. ``llm`` is ``ChatOpenAI`` when an
OpenAI-compatible server is configured, else the built-in offline demo model.
"""

import functools
from typing import Any

import httpx
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, trim_messages
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable

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

    return ChatOpenAI(
        model=model_name(),
        # Servers such as vLLM or llama.cpp accept any key; the SDK insists on one.
        api_key=settings.OPENAI_API_KEY or "unused",
        base_url=settings.OPENAI_BASE_URL or None,
        stream_usage=True,
        # The read timeout bounds the silence between two chunks on the wire; the run's
        # watchdog bounds the silence between parsed chunks (see runs.py), so the
        # per-chunk wrapper, which costs a task per chunk, stays off.
        timeout=httpx.Timeout(
            settings.CHAT_CHUNK_TIMEOUT_S, connect=settings.CHAT_CONNECT_TIMEOUT_S
        ),
        stream_chunk_timeout=None,
        max_retries=settings.CHAT_MODEL_RETRIES,
    )


@functools.cache
def get_chain() -> Runnable:
    return PROMPT | get_llm()


@receiver(setting_changed)
def _forget_models(**kwargs: Any) -> None:
    get_llm.cache_clear()
    get_chain.cache_clear()


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

"""The chain that feeds the model: ``prompt | llm``, where the prompt is the system
prompt, the conversation's history (trimmed to a token budget) and the new message."""

from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
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

from . import catalog
from .client import forget_models, get_llm, per_loop

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "{system}"),
        MessagesPlaceholder("history"),
        ("human", "{input}"),
    ]
)


# Per-reply options an integration may set (OpenAI's names); anything else is ignored.
MODEL_OPTIONS = ("max_tokens", "temperature")


def get_chain(options: dict | None = None, model: str | None = None) -> Runnable:
    """``prompt | llm`` of a catalog model (the default when None); ``options`` bind to
    the model call of one reply only."""
    options = {k: v for k, v in (options or {}).items() if k in MODEL_OPTIONS and v is not None}
    if options:
        return PROMPT | get_llm(model).bind(**options)
    return _model_chain(catalog.for_reply(model).name)  # one per configured model


@per_loop
def _model_chain(model: str | None) -> Runnable:
    return PROMPT | get_llm(model)


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
    forget_models()
    _model_chain.cache_clear()


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

"""Conversations: creating one (with the earlier turns an integration brings), starting
one with its first message (a refusal saves nothing), its settings (model, system
prompt), renaming and deleting."""

import functools
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction

from agents import registry

from .. import errors, events, hooks
from ..db import db_call
from ..errors import ChatError
from ..live import control
from ..llm import catalog
from ..models import ApiKey, Conversation, Message
from ..text import check_text
from . import checks, replies
from .replies import Exchange


def check_new(*, title: str, system_prompt: str, turns: Sequence[tuple]) -> None:
    """What a new conversation may start with (every surface, before anything is saved)."""
    check_text(title, "title")
    check_system_prompt(system_prompt)
    for _, content, *_ in turns:
        check_text(content, "messages")
        if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
            raise errors.too_long("message", len(content), settings.CHAT_MAX_MESSAGE_CHARS)


def conversation_create(
    *,
    owner,
    source: str = Conversation.Source.WEB,
    title: str = "",
    system_prompt: str = "",
    turns: Sequence[tuple] = (),
    model: str | None = None,
    temperature: float | None = None,
    tools: Sequence[str] | None = None,
    api_key: ApiKey | None = None,
) -> Conversation:
    """A new conversation; ``turns`` (role, content, and for a /v1 client's tool calls
    or results a dict of more fields) are earlier messages it starts with, as an
    integration that sends a whole chat history brings them. ``model``: a catalog name
    (None: the default). ``tools``: the names of the tools its model may call (None:
    CHAT_DEFAULT_TOOLS). ``api_key``: the key it is made through, which marks it as API
    traffic."""
    check_new(title=title, system_prompt=system_prompt, turns=turns)
    conversation = Conversation(
        owner=owner,
        source=source,
        **through(api_key),
        title=title,
        system_prompt=system_prompt,
        model=catalog.check(model) if model is not None else catalog.default().name,
        temperature=temperature,
    )
    with transaction.atomic():
        _save_new(conversation, turns, tools)
    return conversation


def through(api_key: ApiKey | None) -> dict:
    """A new conversation's fields that say which API key made it (API traffic)."""
    return {"api_key": api_key, "api_traffic": api_key is not None}


def _save_new(
    conversation: Conversation, turns: Sequence[tuple], tools: Sequence[str] | None
) -> None:
    """Save a new conversation (with its ``tools``, None: the default ones) and the turns
    it starts with, one branch in the order given (in the caller's transaction)."""
    conversation.tools = registry.default_names() if tools is None else registry.check_names(tools)
    conversation.save(force_insert=True)
    if turns:
        messages = [
            # A turn may bring more fields: an /v1 client's tool calls or tool results.
            Message(conversation=conversation, role=role, content=content, **dict(*more))
            for role, content, *more in turns
        ]
        for parent, message in zip([None, *messages], messages, strict=False):
            message.parent = parent  # one branch, in the order given
        messages = Message.objects.bulk_create(messages)
        # One clock reading can serve several rows; the history's order must not tie.
        start = messages[0].created_at
        for index, message in enumerate(messages):
            message.created_at = start + timedelta(microseconds=index)
        Message.objects.bulk_update(messages, ["created_at"])
    hooks.run(hooks.conversation_created, conversation)


async def conversation_start(
    *,
    owner,
    content: str,
    source: str = Conversation.Source.WEB,
    system_prompt: str = "",
    turns: Sequence[tuple[str, str]] = (),
    client_id: str | None = None,
    options: dict | None = None,
    watch: bool = False,
    model: str | None = None,
    temperature: float | None = None,
    tools: Sequence[str] | None = None,
    api_key: ApiKey | None = None,
) -> tuple[Conversation, Exchange]:
    """A new conversation and its first message's reply, or nothing at all: the
    conversation is saved in the same transaction as the message and the reply, so a
    refusal (a limit, the live layer down) leaves no trace. The new-chat page and
    ``/v1`` both start here."""
    check_new(title="", system_prompt=system_prompt, turns=turns)
    first = next((text for role, text, *_ in turns if role == "user"), content)
    conversation = Conversation(
        id=uuid.uuid4(),
        owner=owner,
        source=source,
        **through(api_key),
        title=checks.title_from(first) if turns else "",
        system_prompt=system_prompt,
        model=catalog.check(model) if model is not None else catalog.default().name,
        temperature=temperature,
    )
    exchange = await replies.reply_start(
        conversation=conversation,
        content=content,
        client_id=client_id,
        options=options,
        watch=watch,
        new=functools.partial(_save_new, conversation, turns, tools),
    )
    if exchange.created and source == Conversation.Source.WEB:
        # Not for /v1's: one per call, and no sidebar shows them by themselves.
        await control.tell_user(owner.pk, events.conversations_changed(conversation.id, "created"))
    return conversation, exchange


def check_system_prompt(system_prompt: str) -> str:
    check_text(system_prompt, "system_prompt")
    if len(system_prompt) > settings.CHAT_MAX_SYSTEM_PROMPT_CHARS:
        raise errors.too_long(
            "system prompt", len(system_prompt), settings.CHAT_MAX_SYSTEM_PROMPT_CHARS
        )
    return system_prompt


_UNSET: Any = object()


async def conversation_configure(
    *,
    conversation: Conversation,
    model: str | None = _UNSET,
    system_prompt: str = _UNSET,
    temperature: float | None = _UNSET,
) -> Conversation:
    """Change what writes the next reply: the model (a catalog name), the system prompt
    (empty: the server's default), the temperature (None: the model's own). A reply
    streaming now keeps what it started with; every open viewer hears of the change."""
    fields = []
    if model is not _UNSET:
        conversation.model = catalog.check(model)
        fields.append("model")
    if system_prompt is not _UNSET:
        conversation.system_prompt = check_system_prompt(system_prompt)
        fields.append("system_prompt")
    if temperature is not _UNSET:
        conversation.temperature = temperature
        fields.append("temperature")
    if fields:
        await conversation.asave(update_fields=fields)
        await control.publish(conversation.id, events.conversation_updated(conversation))
    return conversation


# --- the sidebar: renaming and deleting -------------------------------------------------


async def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    """Give a conversation the title a person chose; every open viewer hears of it."""
    title = " ".join(check_text(str(title), "title").split())
    limit = Conversation._meta.get_field("title").max_length
    if not title:
        raise ChatError(errors.EMPTY_TITLE)
    if len(title) > limit:
        raise errors.title_too_long(limit)
    conversation.title = title
    # Not `updated_at`: a rename is not activity, so the history keeps its order.
    await conversation.asave(update_fields=["title"])
    await control.publish(conversation.id, events.conversation_updated(conversation))
    await control.tell_user(
        conversation.owner_id, events.conversations_changed(conversation.id, "updated")
    )
    return conversation


async def conversation_delete(*, conversation: Conversation) -> None:
    """Delete a conversation and its messages, stopping a reply that still streams."""
    try:
        await replies.reply_stop(conversation=conversation)
    except ChatError:
        pass  # nothing streams, or its worker is gone: its saves then match no row
    conversation_id = conversation.id  # deleting clears it
    await db_call(_delete, conversation)
    await control.tell_user(
        conversation.owner_id, events.conversations_changed(conversation_id, "deleted")
    )


@transaction.atomic  # the deletion and what hooks record of it commit together
def _delete(conversation: Conversation) -> None:
    hooks.run(hooks.conversation_deleted, conversation)
    conversation.delete()


async def conversation_set_tools(
    *, conversation: Conversation, tools: Sequence[str]
) -> Conversation:
    """Choose the tools a conversation's model may call from its next reply on; every
    open viewer hears of it (``conversation.updated``)."""
    conversation.tools = await db_call(registry.check_names, tools)
    await conversation.asave(update_fields=["tools"])
    await control.publish(conversation.id, events.conversation_updated(conversation))
    return conversation

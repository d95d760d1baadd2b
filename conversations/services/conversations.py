"""Conversations: creating one (with the earlier turns an integration brings), starting
one with its first message (a refusal saves nothing), renaming and deleting."""

from collections.abc import Sequence
from datetime import timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction

from agents import registry

from .. import errors, events, llm
from ..errors import ChatError
from ..live import control
from ..models import Conversation, Message
from ..text import check_text
from . import replies
from .replies import Exchange


def conversation_create(
    *,
    owner,
    source: str = Conversation.Source.WEB,
    title: str = "",
    system_prompt: str = "",
    turns: Sequence[tuple] = (),
    tools: Sequence[str] | None = None,
) -> Conversation:
    """A new conversation; ``turns`` (role, content) are earlier messages it starts with,
    as an integration that sends a whole chat history brings them. ``tools``: the names
    of the tools its model may call (None: CHAT_DEFAULT_TOOLS)."""
    tools = registry.default_names() if tools is None else registry.check_names(tools)
    check_text(title, "title")
    check_text(system_prompt, "system_prompt")
    if len(system_prompt) > settings.CHAT_MAX_SYSTEM_PROMPT_CHARS:
        raise errors.too_long(
            "system prompt", len(system_prompt), settings.CHAT_MAX_SYSTEM_PROMPT_CHARS
        )
    for _, content, *_ in turns:
        check_text(content, "messages")
        if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
            raise errors.too_long("message", len(content), settings.CHAT_MAX_MESSAGE_CHARS)
    with transaction.atomic():
        conversation = Conversation.objects.create(
            owner=owner,
            source=source,
            title=title,
            system_prompt=system_prompt,
            model=llm.model_name(),
            tools=tools,
        )
        if turns:
            messages = Message.objects.bulk_create(
                # A turn may bring more fields: an /v1 client's tool calls or tool results.
                Message(conversation=conversation, role=role, content=content, **dict(*more))
                for role, content, *more in turns
            )
            # One clock reading can serve several rows; the history's order must not tie.
            start = messages[0].created_at
            for index, message in enumerate(messages):
                message.created_at = start + timedelta(microseconds=index)
            Message.objects.bulk_update(messages, ["created_at"])
    return conversation


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
    tools: Sequence[str] | None = None,
) -> tuple[Conversation, Exchange]:
    """A new conversation and its first message's reply, or nothing at all: every check
    runs before anything is saved, and a refusal from the start of the reply deletes
    the conversation made for it. The new-chat page and ``/v1`` both start here."""
    replies.check_send(content, client_id)
    await database_sync_to_async(replies.check_streaming_limit)(owner_id=owner.pk)
    first = next((text for role, text in turns if role == "user"), content)
    conversation = await database_sync_to_async(conversation_create)(
        owner=owner,
        source=source,
        title=replies.title_from(first) if turns else "",
        system_prompt=system_prompt,
        turns=turns,
        tools=tools,
    )
    try:
        exchange = await replies.reply_start(
            conversation=conversation,
            content=content,
            client_id=client_id,
            options=options,
            watch=watch,
        )
    except ChatError:
        await conversation.adelete()  # nothing streams in it: the start was refused
        raise
    return conversation, exchange


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
    return conversation


async def conversation_delete(*, conversation: Conversation) -> None:
    """Delete a conversation and its messages, stopping a reply that still streams."""
    try:
        await replies.reply_stop(conversation=conversation)
    except ChatError:
        pass  # nothing streams, or its worker is gone: its saves then match no row
    await conversation.adelete()


async def conversation_set_tools(
    *, conversation: Conversation, tools: Sequence[str]
) -> Conversation:
    """Choose the tools a conversation's model may call from its next reply on; every
    open viewer hears of it (``conversation.updated``)."""
    conversation.tools = await database_sync_to_async(registry.check_names)(tools)
    await conversation.asave(update_fields=["tools"])
    await control.publish(conversation.id, events.conversation_updated(conversation))
    return conversation

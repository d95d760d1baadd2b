"""Every read: who may see what, what a viewer is shown when it joins (a snapshot, a
page of history), whether replies have ended, where an SSE stream resumes, and the
sidebar's search."""

import uuid
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db.models import Q, QuerySet
from django.db.models.functions import Length

from . import errors, events
from .errors import ChatError
from .models import ApiKey, Conversation, Message
from .runs import registry


def conversations_for(user) -> QuerySet[Conversation]:
    """The conversations a user may see: their own. The rule lives only here."""
    if not user.is_authenticated:
        return Conversation.objects.none()
    return Conversation.objects.filter(owner=user)


def conversation_for(user, conversation_id: Any) -> Conversation | None:
    try:
        conversation_id = uuid.UUID(str(conversation_id))
    except ValueError:
        return None
    return conversations_for(user).filter(pk=conversation_id).first()


aconversation_for = database_sync_to_async(conversation_for)


async def aowned_conversation(user, conversation_id: Any) -> Conversation:
    """The user's conversation, or ChatError not_found: another user's conversation looks
    exactly like one that does not exist."""
    conversation = await aconversation_for(user, conversation_id)
    if conversation is None:
        raise ChatError(errors.NOT_FOUND)
    return conversation


def latest_messages(conversation_id, *, before: Message | None = None) -> tuple[list, bool]:
    """A page of a conversation's messages, the newest first chosen, returned oldest
    first: at most ``CHAT_PAGE_MESSAGES`` of them and, beyond the first two (the latest
    exchange, whatever its size), no more than ``CHAT_PAGE_CHARS`` characters of text.
    Returns (messages, whether older ones exist)."""
    newest_first = Message.objects.filter(conversation_id=conversation_id).order_by(
        "-created_at", "-pk"
    )
    if before is not None:
        newest_first = newest_first.filter(created_at__lt=before.created_at)
    limit = settings.CHAT_PAGE_MESSAGES
    sizes = list(
        newest_first.annotate(size=Length("content")).values_list("pk", "size")[: limit + 1]
    )
    chosen, total = [], 0
    for pk, size in sizes[:limit]:
        total += size or 0
        if len(chosen) >= 2 and total > settings.CHAT_PAGE_CHARS:
            break
        chosen.append(pk)
    messages = list(Message.objects.filter(pk__in=chosen).order_by("created_at", "pk"))
    return messages, len(sizes) > len(chosen)


@database_sync_to_async
def _conversation_and_messages(conversation_id, *, page: bool):
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        return None
    if not page:
        return conversation, list(conversation.messages.all()), False
    return conversation, *latest_messages(conversation_id)


def _as_published(messages: list[Message]) -> None:
    """A reply streaming in this process is shown from its run, exactly as far as its
    frames have been published; one streaming elsewhere is shown as last flushed, and
    the viewer fills the difference (see live/viewer.py)."""
    for message in messages:
        if message.status == Message.Status.STREAMING and (run := registry.local_run(message.id)):
            message.content, message.seq = run.text(), run.seq
            for name, value in run.saved_fields().items():  # an agent's tool calls
                setattr(message, name, value)


async def snapshot(conversation_id, *, page: bool = True) -> events.Event | None:
    """The conversation as it stands, for a viewer that joins or resyncs: its latest
    messages (a page of them; ``page=False``: all)."""
    found = await _conversation_and_messages(conversation_id, page=page)
    if found is None:
        return None
    conversation, messages, has_more = found
    _as_published(messages)
    return events.snapshot(conversation, messages, has_more=has_more)


@database_sync_to_async
def _older(conversation_id, before_id) -> tuple[list, bool] | None:
    before = Message.objects.filter(conversation_id=conversation_id, pk=before_id).first()
    if before is None:
        return None
    return latest_messages(conversation_id, before=before)


async def history(conversation_id, before_id: uuid.UUID) -> events.Event | None:
    """The page of messages before one a client holds; None if that message is not one
    of the conversation's."""
    found = await _older(conversation_id, before_id)
    if found is None:
        return None
    messages, has_more = found
    _as_published(messages)
    return events.history(str(conversation_id), messages, has_more=has_more)


def conversations_matching(user, query: str) -> QuerySet[Conversation]:
    """The sidebar search: a user's conversations whose title or any message contains
    ``query``, newest activity first.

    A plain case-insensitive ``icontains`` scan (on SQLite, case-insensitive for ASCII
    only): enough for one person's history; a full-text index would replace it here.
    """
    found = conversations_for(user)
    query = query.strip()
    if not query:
        return found
    return found.filter(
        Q(title__icontains=query) | Q(messages__content__icontains=query)
    ).distinct()


# --- whether replies ended -----------------------------------------------------------------


def ended_replies(message_ids: list[str]) -> list[Message]:
    """Those of the replies that are no longer streaming (in a final state)."""
    return list(Message.objects.filter(pk__in=message_ids).exclude(status=Message.Status.STREAMING))


aended_replies = database_sync_to_async(ended_replies)


def saved_message(message_id: Any) -> Message | None:
    """A message as the database holds it now (None once deleted)."""
    return Message.objects.filter(pk=message_id).first()


asaved_message = database_sync_to_async(saved_message)


@database_sync_to_async
def astreaming_reply(conversation: Conversation, message_id: str | None) -> Message | None:
    """The conversation's streaming reply (the one named, if any)."""
    replies = Message.objects.filter(conversation=conversation, status=Message.Status.STREAMING)
    if message_id:
        replies = replies.filter(pk=message_id)
    return replies.first()


@database_sync_to_async
def aresume_point(conversation_id: Any, message_id: str) -> tuple[Message, bool] | None:
    """The reply an SSE ``Last-Event-ID`` names, and whether anything came after it."""
    try:
        message_id = uuid.UUID(message_id)
    except ValueError:
        return None
    reply = Message.objects.filter(
        pk=message_id, conversation_id=conversation_id, role=Message.Role.ASSISTANT
    ).first()
    if reply is None:
        return None
    newer = Message.objects.filter(
        conversation_id=conversation_id, created_at__gt=reply.created_at
    ).exists()
    return reply, newer


# --- API keys --------------------------------------------------------------------------------


def keys_for(owner) -> list[ApiKey]:
    return list(ApiKey.objects.filter(owner=owner))
